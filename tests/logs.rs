//! Log files with the real daemon: reading costs what was appended, a
//! rewritten log is read again from its beginning, a line that is not UTF-8
//! is skipped with its place and never fires.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
    alerts: PathBuf,
}

fn setup(content: &[u8]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    std::fs::write(
        p.join("tocsin.yaml"),
        r#"
state: state.db
rules: rules.yaml
sources:
  - { name: news, type: file, path: data/news.jsonl, mode: log }
channels:
  - { name: audit, type: file, path: out/alerts.jsonl }
"#,
    )
    .unwrap();
    std::fs::write(
        p.join("rules.yaml"),
        "rules:\n  - { id: ec, source: news, when: { text: [title], any: [\"export control*\"] }, notify: [audit] }\n",
    )
    .unwrap();
    std::fs::create_dir_all(p.join("data")).unwrap();
    let s = Setup {
        config: p.join("tocsin.yaml"),
        log: p.join("data/news.jsonl"),
        alerts: p.join("out/alerts.jsonl"),
        _dir: dir,
    };
    std::fs::write(&s.log, content).unwrap();
    s
}

/// Bytes the process has read through system calls so far.
fn rchar(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[test]
fn appending_a_line_to_a_200_mb_log_reads_the_line_not_the_log() {
    let line = "{\"title\": \"weather and markets, nothing else of note today\", \"n\": 0}\n";
    let mut big = Vec::with_capacity(200 << 20);
    while big.len() < 200 << 20 {
        big.extend_from_slice(line.as_bytes());
    }
    let lines = big.len() / line.len();
    let s = setup(&big);
    drop(big);
    let d = Daemon::start(&s.config, &[]);
    let pid = d.child.id();
    let mut readings = Vec::new();
    for i in 0..3 {
        let before = rchar(pid);
        append(
            &s.log,
            &format!("{{\"title\": \"new export controls {i}\"}}\n"),
        );
        let v = wait_for(T, || {
            let v = read_jsonl(&s.alerts);
            (v.len() > i).then_some(v)
        })
        .unwrap_or_else(|| panic!("no alert:\n{}", d.log()));
        assert_eq!(v[i]["key"], format!("news.jsonl:{}", lines + 1 + i));
        readings.push(rchar(pid) - before);
    }
    assert!(
        readings.iter().all(|&r| r < 1 << 20),
        "bytes read per appended line: {readings:?}"
    );
    d.stop();
}

#[test]
fn a_log_rewritten_in_place_is_read_from_its_beginning() {
    let s = setup(b"{\"title\": \"old export controls\"}\n{\"title\": \"weather\"}\n");
    let d = Daemon::start(&s.config, &[]);
    // Same file (inode), other content, longer than before: not an append.
    write_in_place(
        &s.log,
        "{\"title\": \"rewritten export controls\"}\n{\"title\": \"weather\"}\n{\"title\": \"more\"}\n",
    );
    let v = wait_for(T, || {
        let v = read_jsonl(&s.alerts);
        (!v.is_empty()).then_some(v)
    })
    .unwrap_or_else(|| panic!("no alert:\n{}", d.log()));
    assert_eq!(v[0]["key"], "news.jsonl:1");
    assert_eq!(v[0]["fields"]["title"], "rewritten export controls");
    d.stop();
}

#[test]
fn a_line_that_is_not_utf8_is_skipped_with_its_place_and_never_fires() {
    let s = setup(b"");
    let d = Daemon::start(&s.config, &[]);
    write_bytes_in_place(
        &s.log,
        b"{\"title\": \"export controls \xff\xfe\"}\n{\"title\": \"export controls, clean\"}\n",
    );
    let v = wait_for(T, || {
        let v = read_jsonl(&s.alerts);
        (!v.is_empty()).then_some(v)
    })
    .unwrap_or_else(|| panic!("no alert:\n{}", d.log()));
    d.wait_log("news.jsonl:1: not valid UTF-8 (byte 28 of the line)", T);
    std::thread::sleep(Duration::from_millis(500));
    let v2 = read_jsonl(&s.alerts);
    assert_eq!(v2.len(), 1, "{v2:?}");
    assert_eq!(v[0]["key"], "news.jsonl:2");
    assert!(!v[0].to_string().contains('\u{fffd}'));
    d.stop();
}
