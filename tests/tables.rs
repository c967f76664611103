//! Table files are read only when whole: the real daemon, real writes
//! (a stray quote, a duplicate key, a line cut short, a writer slow enough
//! to be caught between rows). For each bad or unsettled version: no
//! spurious `resolved` or `firing`, one located error per bad version, and
//! the next good version fires exactly the real change.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(15);

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    csv: PathBuf,
    alerts: PathBuf,
}

const RULES: &str = r#"
rules:
  - id: cn-high
    source: tariffs
    where: { partner: CN }
    when: { field: rate_pct, above: 157 }
    notify: [audit]
  - id: jp-low
    source: tariffs
    where: { partner: JP }
    when: { field: rate_pct, above: 5 }
    notify: [audit]
"#;

fn table(cn: u32, jp: u32) -> String {
    format!("partner,product,rate_pct\nCN,8505,{cn}\nJP,8505,{jp}\n")
}

/// A daemon over `tariffs.csv` holding CN 200 and JP 10: both fire at start.
fn start() -> (Setup, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    std::fs::write(
        p.join("tocsin.yaml"),
        r#"
state: state.db
rules: rules.yaml
sources:
  - { name: tariffs, type: file, path: data/tariffs.csv, mode: table, key: [partner, product] }
channels:
  - { name: audit, type: file, path: out/alerts.jsonl }
"#,
    )
    .unwrap();
    std::fs::write(p.join("rules.yaml"), RULES).unwrap();
    std::fs::create_dir_all(p.join("data")).unwrap();
    let s = Setup {
        config: p.join("tocsin.yaml"),
        csv: p.join("data/tariffs.csv"),
        alerts: p.join("out/alerts.jsonl"),
        _dir: dir,
    };
    std::fs::write(&s.csv, table(200, 10)).unwrap();
    let d = Daemon::start(&s.config, &[]);
    let v = wait_count(&s.alerts, 2, &d);
    assert!(v.iter().all(|n| n["state"] == "firing"), "{v:?}");
    (s, d)
}

fn wait_count(path: &Path, n: usize, d: &Daemon) -> Vec<serde_json::Value> {
    wait_for(T, || {
        let v = read_jsonl(path);
        (v.len() >= n).then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "expected {n} notifications, got {:?}\n{}",
            read_jsonl(path),
            d.log()
        )
    })
}

/// The notifications after the first `n`, as (rule, state).
fn after(path: &Path, n: usize) -> Vec<(String, String)> {
    read_jsonl(path)
        .iter()
        .skip(n)
        .map(|v| {
            (
                v["rule"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A bad version is refused with its place, once (the metadata poll runs
/// every 5 s and must not report it again); nothing resolves; the next
/// good version fires exactly its real change.
fn refused_once_then_the_real_change(bad: &str, error: &str) {
    let (s, d) = start();
    write_by_rename(&s.csv, bad);
    d.wait_log(error, T);
    // Past a metadata poll: the same version is not reported again.
    std::thread::sleep(Duration::from_millis(6000));
    assert_eq!(d.log().matches(error).count(), 1, "{}", d.log());
    assert_eq!(after(&s.alerts, 2), [] as [(String, String); 0]);
    write_by_rename(&s.csv, &table(200, 3));
    wait_count(&s.alerts, 3, &d);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(after(&s.alerts, 2), [("jp-low".into(), "resolved".into())]);
    d.stop();
}

#[test]
fn a_stray_quote_refuses_the_version() {
    refused_once_then_the_real_change(
        "partner,product,rate_pct\nCN,8505,\"200\nJP,8505,10\nKR,8505,1\n",
        "tariffs.csv:2: a quoted field opened here is never closed",
    );
}

#[test]
fn a_duplicate_key_refuses_the_version_naming_both_lines() {
    refused_once_then_the_real_change(
        "partner,product,rate_pct\nCN,8505,200\nJP,8505,10\nCN,8505,100\n",
        "tariffs.csv:4: lines 2 and 4 have the same key `CN|8505` (partner, product)",
    );
}

/// `JP,8505,1` without its newline, cut from `JP,8505,12`, then finished:
/// read as the whole table it would resolve JP and fire it again.
#[test]
fn a_last_line_without_its_newline_is_waited_for() {
    let (s, d) = start();
    let full = table(200, 12);
    let cut = &full[..full.len() - 2];
    write_in_place(&s.csv, cut);
    std::thread::sleep(Duration::from_millis(400));
    write_in_place(&s.csv, &full);
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(
        after(&s.alerts, 2),
        [] as [(String, String); 0],
        "{}",
        d.log()
    );
    d.stop();
}

/// A writer putting one byte every 5 ms, in place (the file is truncated
/// first): between its rows the file parses, but is not the table.
#[test]
fn a_slow_writer_is_not_caught_between_rows() {
    let (s, d) = start();
    let content = table(201, 11);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&s.csv)
        .unwrap();
    for b in content.as_bytes() {
        f.write_all(&[*b]).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(f);
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(
        after(&s.alerts, 2),
        [] as [(String, String); 0],
        "{}",
        d.log()
    );
    // The real change of the next version, exactly.
    write_by_rename(&s.csv, &table(100, 11));
    wait_count(&s.alerts, 3, &d);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(after(&s.alerts, 2), [("cn-high".into(), "resolved".into())]);
    d.stop();
}

/// A FIFO where the table was: refused with its reason, never opened (an
/// open would block until a writer came); nothing resolves; `/healthz`
/// answers and SIGTERM stops the daemon at once. A symlink loop is named
/// too. The next regular file fires its real change.
#[test]
fn a_fifo_or_a_symlink_loop_is_refused_and_the_daemon_stays_responsive() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    let port = free_port();
    std::fs::write(
        p.join("tocsin.yaml"),
        format!(
            r#"
state: state.db
rules: rules.yaml
http: {{ listen: "127.0.0.1:{port}" }}
sources:
  - {{ name: tariffs, type: file, path: data/tariffs.csv, mode: table, key: [partner, product] }}
channels:
  - {{ name: audit, type: file, path: out/alerts.jsonl }}
"#
        ),
    )
    .unwrap();
    std::fs::write(p.join("rules.yaml"), RULES).unwrap();
    std::fs::create_dir_all(p.join("data")).unwrap();
    let csv = p.join("data/tariffs.csv");
    let alerts = p.join("out/alerts.jsonl");
    std::fs::write(&csv, table(200, 10)).unwrap();
    let d = Daemon::start(&p.join("tocsin.yaml"), &[]);
    wait_count(&alerts, 2, &d);

    std::fs::remove_file(&csv).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&csv)
        .status()
        .unwrap();
    assert!(made.success());
    d.wait_log(
        "tariffs.csv: cannot read: is a FIFO (named pipe), not a regular file",
        T,
    );
    assert_eq!(get(port, "/healthz").0, 200, "{}", d.log());

    std::fs::remove_file(&csv).unwrap();
    std::os::unix::fs::symlink(p.join("data/loop"), &csv).unwrap();
    std::os::unix::fs::symlink(&csv, p.join("data/loop")).unwrap();
    d.wait_log(
        "tariffs.csv: cannot read: Too many levels of symbolic links",
        T,
    );
    std::thread::sleep(Duration::from_millis(6000));
    assert_eq!(
        d.log().matches("a FIFO").count() + d.log().matches("symbolic links").count(),
        2,
        "each reported once, not at every poll:\n{}",
        d.log()
    );
    assert_eq!(after(&alerts, 2), [] as [(String, String); 0]);

    std::fs::remove_file(&csv).unwrap();
    write_by_rename(&csv, &table(200, 3));
    wait_count(&alerts, 3, &d);
    assert_eq!(after(&alerts, 2), [("jp-low".into(), "resolved".into())]);

    // A FIFO again, then SIGTERM: stopped at once, cleanly.
    std::fs::remove_file(&csv).unwrap();
    std::process::Command::new("mkfifo")
        .arg(&csv)
        .status()
        .unwrap();
    wait_for(T, || (d.log().matches("a FIFO").count() == 2).then_some(()))
        .unwrap_or_else(|| panic!("the second FIFO is not reported:\n{}", d.log()));
    let t = std::time::Instant::now();
    let mut d = d;
    d.signal("TERM");
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", d.log());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// `path: data/*.csv` is one table per file: a row of one file never
/// resolves the same key of another, and keys start with the file's name.
#[test]
fn a_glob_is_one_table_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    std::fs::write(
        p.join("tocsin.yaml"),
        r#"
state: state.db
rules: rules.yaml
sources:
  - { name: rates, type: file, path: "data/*.csv", mode: table, key: [partner] }
channels:
  - { name: audit, type: file, path: out/alerts.jsonl }
"#,
    )
    .unwrap();
    std::fs::write(
        p.join("rules.yaml"),
        "rules:\n  - { id: high, source: rates, when: { field: rate, above: 10 }, notify: [audit] }\n",
    )
    .unwrap();
    std::fs::create_dir_all(p.join("data")).unwrap();
    let (one, two) = (p.join("data/one.csv"), p.join("data/two.csv"));
    let alerts = p.join("out/alerts.jsonl");
    std::fs::write(&one, "partner,rate\nX,20\n").unwrap();
    std::fs::write(&two, "partner,rate\nX,5\n").unwrap();
    let d = Daemon::start(&p.join("tocsin.yaml"), &[]);
    let v = wait_count(&alerts, 1, &d);
    assert_eq!(v[0]["key"], "one.csv|X");
    // A low row in two.csv says nothing of one.csv's X.
    write_by_rename(&two, "partner,rate\nX,3\nY,1\n");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        after(&alerts, 1),
        [] as [(String, String); 0],
        "{}",
        d.log()
    );
    // two.csv going away keeps its rows: nothing resolves or fires.
    std::fs::remove_file(&two).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        after(&alerts, 1),
        [] as [(String, String); 0],
        "{}",
        d.log()
    );
    write_by_rename(&one, "partner,rate\nX,5\n");
    let v = wait_count(&alerts, 2, &d);
    assert_eq!(
        (v[1]["key"].as_str(), v[1]["state"].as_str()),
        (Some("one.csv|X"), Some("resolved"))
    );
    d.stop();
}

/// A file source with no readable file for `health.missing_after` is
/// unhealthy, and says so (`/healthz` too); it recovers with its file.
/// A bad version refused `fail_after` times in a row is unhealthy too,
/// each refused version counting once.
#[test]
fn a_missing_file_makes_the_source_unhealthy_after_missing_after() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    let port = free_port();
    std::fs::write(
        p.join("tocsin.yaml"),
        format!(
            r#"
state: state.db
rules: rules.yaml
http: {{ listen: "127.0.0.1:{port}" }}
sources:
  - {{ name: tariffs, type: file, path: data/tariffs.csv, mode: table, key: [partner, product], fail_after: 2 }}
channels:
  - {{ name: audit, type: file, path: out/alerts.jsonl }}
health: {{ notify: [audit], missing_after: 1s }}
"#
        ),
    )
    .unwrap();
    std::fs::write(p.join("rules.yaml"), RULES).unwrap();
    std::fs::create_dir_all(p.join("data")).unwrap();
    let csv = p.join("data/tariffs.csv");
    let alerts = p.join("out/alerts.jsonl");
    std::fs::write(&csv, table(200, 10)).unwrap();
    let d = Daemon::start(&p.join("tocsin.yaml"), &[]);
    wait_count(&alerts, 2, &d);

    std::fs::remove_file(&csv).unwrap();
    let v = wait_count(&alerts, 3, &d);
    assert_eq!(v[2]["rule"], "source-unhealthy", "{v:?}");
    assert!(
        v[2]["summary"]
            .as_str()
            .unwrap()
            .starts_with("source tariffs has had no readable file for"),
        "{}",
        v[2]["summary"]
    );
    assert!(
        v[2]["body"]
            .as_str()
            .unwrap()
            .contains("tariffs.csv does not exist")
    );
    assert_eq!(get(port, "/healthz").0, 503);
    // Back, unchanged: recovers; nothing of the rules moves.
    write_by_rename(&csv, &table(200, 10));
    let v = wait_count(&alerts, 4, &d);
    assert_eq!(
        (v[3]["rule"].as_str(), v[3]["state"].as_str()),
        (Some("source-unhealthy"), Some("resolved"))
    );
    assert_eq!(get(port, "/healthz").0, 200);

    // Two different bad versions in a row: unhealthy, saying so.
    write_by_rename(&csv, "partner,product,rate_pct\nCN,8505,\"1\n");
    d.wait_log("never closed", T);
    write_by_rename(&csv, "partner,product,rate_pct\nCN,8505,1\nCN,8505,2\n");
    let v = wait_count(&alerts, 5, &d);
    assert!(
        v[4]["summary"]
            .as_str()
            .unwrap()
            .contains("2 failures in a row"),
        "{}",
        v[4]["summary"]
    );
    assert_eq!(after(&alerts, 4).len(), 1, "{}", d.log());
    d.stop();
}
