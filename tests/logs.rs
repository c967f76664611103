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
    // A new log's lines are history, counted in the background after the
    // start: a line appended before that count ends is history too. Warm
    // up until an appended line alerts.
    let mut warm = 0;
    while read_jsonl(&s.alerts).is_empty() {
        assert!(warm < 10, "no alert after {warm} lines:\n{}", d.log());
        append(&s.log, "{\"title\": \"export controls warm-up\"}\n");
        warm += 1;
        wait_for(Duration::from_secs(2), || {
            (!read_jsonl(&s.alerts).is_empty()).then_some(())
        });
    }
    // The warm-up lines that alerted (a slow alert may have drawn another).
    std::thread::sleep(Duration::from_millis(500));
    let base = read_jsonl(&s.alerts).len();
    let lines = lines + warm;
    let mut readings = Vec::new();
    for i in 0..3 {
        let before = rchar(pid);
        append(
            &s.log,
            &format!("{{\"title\": \"new export controls {i}\"}}\n"),
        );
        let v = wait_for(T, || {
            let v = read_jsonl(&s.alerts);
            (v.len() > base + i).then_some(v)
        })
        .unwrap_or_else(|| panic!("no alert:\n{}", d.log()));
        assert_eq!(v[base + i]["key"], format!("news.jsonl:{}", lines + 1 + i));
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
    // Evidence: the line's place and the hash of the line as read.
    let e = &v[0]["evidence"];
    assert_eq!(e["location"], format!("{}:1", s.log.display()));
    assert_eq!(
        e["document_sha256"],
        tocsin::record::sha256_hex(b"{\"title\": \"rewritten export controls\"}")
    );
    assert!(
        e["read_at"].is_string() && e["rules_sha256"].is_string(),
        "{e}"
    );
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

/// A JSON array log kept as a rolling window (the last 50 items, 3 added
/// at a time), rewritten 20 times in place or by `mv`, with a restart and a
/// `kill -9` on the way: exactly the 60 new items fire, once each.
#[test]
fn a_rolling_window_array_log_fires_each_new_item_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    std::fs::write(
        p.join("tocsin.yaml"),
        r#"
state: state.db
rules: rules.yaml
sources:
  - { name: items, type: file, path: data/items.json, mode: log }
channels:
  - { name: audit, type: file, path: out/alerts.jsonl }
"#,
    )
    .unwrap();
    std::fs::write(
        p.join("rules.yaml"),
        "rules:\n  - { id: ec, source: items, when: { text: [title], any: [\"export control*\"] }, notify: [audit] }\n",
    )
    .unwrap();
    std::fs::create_dir_all(p.join("data")).unwrap();
    let (json, alerts, config) = (
        p.join("data/items.json"),
        p.join("out/alerts.jsonl"),
        p.join("tocsin.yaml"),
    );
    let window = |last: usize| {
        let items: Vec<serde_json::Value> = (last.saturating_sub(49).max(1)..=last)
            .map(|i| serde_json::json!({"id": format!("i{i}"), "title": format!("export controls {i}")}))
            .collect();
        serde_json::to_string_pretty(&items).unwrap()
    };
    std::fs::write(&json, window(50)).unwrap();
    let mut d = Daemon::start(&config, &[]);
    d.wait_log("first look at this array log", T);
    let count_is = |n: usize, d: &Daemon| {
        wait_for(T, || (read_jsonl(&alerts).len() >= n).then_some(())).unwrap_or_else(|| {
            panic!(
                "expected {n}, got {}:\n{}",
                read_jsonl(&alerts).len(),
                d.log()
            )
        });
    };
    for round in 1..=20 {
        let content = window(50 + 3 * round);
        if round % 3 == 0 {
            write_by_rename(&json, &content);
        } else {
            write_in_place(&json, &content);
        }
        match round {
            7 => {
                count_is(3 * round, &d);
                d.stop();
                d = Daemon::start(&config, &[]);
            }
            14 => {
                // Killed whether or not it read this version yet.
                std::thread::sleep(Duration::from_millis(150));
                d.kill();
                d = Daemon::start(&config, &[]);
                count_is(3 * round, &d);
            }
            _ => count_is(3 * round, &d),
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    let v = read_jsonl(&alerts);
    let mut keys: Vec<String> = v
        .iter()
        .map(|n| n["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        v.len(),
        60,
        "{:?}",
        v.iter().map(|n| &n["key"]).collect::<Vec<_>>()
    );
    assert_eq!(keys.len(), 60);
    let mut want: Vec<String> = (51..=110).map(|i| format!("items.json:i{i}")).collect();
    want.sort();
    assert_eq!(keys, want);
    d.stop();
}
