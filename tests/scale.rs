//! Files at the scale users have: rules files of 100,000 rules load, a
//! file past the YAML reading limits is refused with its place, the limit
//! it broke and how to split it, and a table of a million rows goes
//! through a restart and a `kill -9` with exactly its changed rows alerting.

mod common;

use std::fmt::Write as _;
use std::path::Path;

use common::tocsin;

fn check(config: &Path) -> (i32, String) {
    tocsin(config, &["check"])
}

fn setup(rules: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tocsin.yaml"),
        "state: state.db\nrules: rules.yaml\nsources:\n  - { name: rates, type: file, path: rates.csv, key: [partner, product] }\nchannels:\n  - { name: out, type: file, path: out.jsonl }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
    dir
}

/// The daemon on the config in `d`, logging to `daemon.log`.
fn daemon(d: &Path) -> common::Daemon {
    let log = d.join("daemon.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tocsin"))
        .args(["run", "-c"])
        .arg(d.join("tocsin.yaml"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    common::Daemon { child, log }
}

#[test]
fn a_file_of_100000_rules_loads() {
    let mut rules = String::from("rules:\n");
    for i in 0..100_000 {
        writeln!(
            rules,
            "  - {{ id: r{i}, source: rates, where: {{ partner: P{} }}, when: {{ field: rate, above: {} }}, notify: [out] }}",
            i % 200,
            i % 1000
        )
        .unwrap();
    }
    let dir = setup(&rules);
    let (code, out) = check(&dir.path().join("tocsin.yaml"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("100000 rules") || out.contains("100,000 rules"),
        "{out}"
    );
}

#[test]
fn a_file_past_the_value_limit_is_refused_with_its_place_and_how_to_split_it() {
    // 4,000,001 list entries: one past the limit of values in a file.
    let mut rules = String::from("lists:\n  codes: [");
    rules.reserve(9_000_000);
    for _ in 0..4_000_001 {
        rules.push_str("a,");
    }
    rules.push_str("a]\nrules: []\n");
    let dir = setup(&rules);
    let (code, out) = check(&dir.path().join("tocsin.yaml"));
    assert_eq!(code, 1, "{out}");
    let first = out.lines().next().unwrap_or_default();
    assert!(first.contains("rules.yaml:2:"), "not located: {first}");
    assert!(first.contains("more than 4,000,000 YAML values"), "{first}");
    assert!(out.contains("split it into several files"), "{out}");
    assert!(!out.contains("budget breached"), "{out}");
}

#[test]
fn a_file_nested_too_deep_is_refused_with_its_place() {
    let mut rules = String::from("rules:\n  - id: deep\n    source: rates\n    when: ");
    for _ in 0..70 {
        rules.push_str("{ all: [");
    }
    rules.push_str("{ field: rate, above: 1 }");
    for _ in 0..70 {
        rules.push_str("] }");
    }
    rules.push_str("\n    notify: [out]\n");
    let dir = setup(&rules);
    let (code, out) = check(&dir.path().join("tocsin.yaml"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("rules.yaml:4:"), "not located: {out}");
    assert!(
        out.contains("nests mappings and lists more than 64 deep"),
        "{out}"
    );
}

/// A table of a million rows through a clean restart and a `kill -9`:
/// exactly the rows that changed alert, each once (a send not yet recorded
/// at the kill may come twice, with its one id), compared with the rows
/// the store kept (a `changed` rule fires only where there is a previous
/// row), and nothing of the first version alerts again.
#[test]
fn a_million_row_table_survives_restart_and_kill_with_exactly_the_changed_rows_alerting() {
    const ROWS: usize = 1_000_000;
    let dir = setup(
        "rules:\n  - { id: high, source: rates, when: { field: rate, above: 157 }, notify: [out] }\n  - { id: moved, source: rates, when: { field: rate, changed: true }, notify: [out] }\n",
    );
    let d = dir.path();
    // Row `i` is P(i % 250), product i; the rows in `high` are above the
    // threshold, and so is the sentinel S|0, which alerts with the first
    // version: its alert says that version's batch is committed.
    let table = |high: &[usize]| {
        let mut t = String::with_capacity(ROWS * 20);
        t.push_str("partner,product,rate\nS,0,200\n");
        for i in 0..ROWS {
            let rate = if high.contains(&i) { 200 } else { i % 97 };
            let _ = writeln!(t, "P{:03},{i},{rate}", i % 250);
        }
        t
    };
    let key = |i: usize| format!("P{:03}|{i}", i % 250);
    let csv = d.join("rates.csv");
    let out = d.join("out.jsonl");
    // Started without waiting for "tocsin started": with a million stored
    // rows, a debug build takes longer than `Daemon::start` waits.
    let start = || daemon(d);
    // The alerts, each id once, first seen first: a send not yet recorded
    // when the daemon is killed comes again with its id (README, "high
    // availability").
    let distinct = |lines: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        let mut seen = std::collections::HashSet::new();
        (lines.into_iter())
            .filter(|l| seen.insert(l["id"].as_str().unwrap_or_default().to_string()))
            .collect()
    };
    let alerted = |n: usize| {
        common::wait_for(std::time::Duration::from_secs(600), || {
            let lines = distinct(common::read_jsonl(&out));
            (lines.len() >= n).then_some(lines)
        })
        .unwrap_or_else(|| panic!("fewer than {n} alerts: {:?}", common::read_jsonl(&out)))
    };
    // (rule, key, previous rate) per alert, sorted, from `from` on.
    let keys = |lines: &[serde_json::Value], from: usize| -> Vec<(String, String, String)> {
        let mut k: Vec<_> = (lines[from..].iter())
            .map(|l| {
                let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
                (s(&l["rule"]), s(&l["key"]), s(&l["prev"]["rate"]))
            })
            .collect();
        k.sort();
        k
    };
    let both = |i: usize| {
        vec![
            ("high".to_string(), key(i), (i % 97).to_string()),
            ("moved".to_string(), key(i), (i % 97).to_string()),
        ]
    };

    common::write_by_rename(&csv, &table(&[]));
    let daemon = start();
    let first = alerted(1);
    assert_eq!(first[0]["key"], "S|0");
    daemon.stop();
    // Changed while stopped: read at the next start against the stored rows.
    common::write_by_rename(&csv, &table(&[10, 20]));
    let daemon = start();
    assert_eq!(keys(&alerted(5), 1), {
        let mut b = [both(10), both(20)].concat();
        b.sort();
        b
    });
    // One more change, then SIGKILL as soon as it alerted; another while down.
    common::write_by_rename(&csv, &table(&[10, 20, 30]));
    let before_kill = alerted(7);
    assert_eq!(keys(&before_kill, 5), both(30));
    daemon.kill();
    common::write_by_rename(&csv, &table(&[10, 20, 30, 40]));
    let daemon = start();
    assert_eq!(keys(&alerted(9), 7), both(40));
    std::thread::sleep(std::time::Duration::from_secs(3));
    daemon.stop();
    let all = common::read_jsonl(&out);
    assert_eq!(
        distinct(all.clone()).len(),
        9,
        "each change alerted once, nothing else: {all:?}"
    );
    // Only the sends of the kill may have come twice, each at most once more.
    let at_kill: Vec<&serde_json::Value> = before_kill[5..].iter().map(|l| &l["id"]).collect();
    let others = all.iter().filter(|l| !at_kill.contains(&&l["id"])).count();
    assert!(
        others == 7 && all.len() <= 9 + at_kill.len(),
        "repeated sends other than those of the kill: {all:?}"
    );
}

/// A first version of 300,000 rows is committed a part at a time: killed
/// with SIGKILL once its first parts are in the store, the daemon starts again
/// against the rows those parts stored, and every high row alerts, each
/// once (a send not yet recorded at the kill may come twice, with its one
/// id).
#[test]
fn a_large_first_version_killed_half_way_alerts_each_row_once() {
    const ROWS: usize = 300_000;
    let dir = setup(
        "rules:\n  - { id: high, source: rates, when: { field: rate, above: 157 }, notify: [out] }\n",
    );
    let d = dir.path();
    let mut t = String::from("partner,product,rate\n");
    for i in 0..ROWS {
        let rate = if i % 1000 == 0 { 200 } else { i % 97 };
        let _ = writeln!(t, "P{:03},{i},{rate}", i % 250);
    }
    common::write_by_rename(&d.join("rates.csv"), &t);
    let out = d.join("out.jsonl");
    let expected: std::collections::BTreeSet<String> = (0..ROWS)
        .step_by(1000)
        .map(|i| format!("P{:03}|{i}", i % 250))
        .collect();
    let stored = || -> usize {
        let db = rusqlite::Connection::open(d.join("state.db")).unwrap();
        (db.query_row("SELECT count(*) FROM table_rows", [], |r| {
            r.get::<_, i64>(0)
        }))
        .map_or(0, |n| n as usize)
    };
    let running = daemon(d);
    common::wait_for(std::time::Duration::from_secs(300), || {
        (d.join("state.db").exists() && stored() > 0).then_some(())
    })
    .expect("no part of the version committed");
    running.kill();
    let at_kill = stored();
    assert!(
        at_kill < ROWS,
        "the whole version was committed before the kill: the test needs a larger table"
    );
    let running = daemon(d);
    common::wait_for(std::time::Duration::from_secs(300), || {
        (common::read_jsonl(&out).len() >= expected.len()).then_some(())
    })
    .unwrap_or_else(|| panic!("fewer alerts than high rows: {}", running.log()));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let lines = common::read_jsonl(&out);
    running.stop();
    let mut ids: std::collections::BTreeMap<String, String> = Default::default();
    for l in &lines {
        let key = l["key"].as_str().unwrap().to_string();
        let id = l["id"].as_str().unwrap().to_string();
        assert_eq!(
            ids.entry(key.clone()).or_insert_with(|| id.clone()),
            &id,
            "{key} alerted twice as two notifications"
        );
    }
    let keys: std::collections::BTreeSet<String> = ids.into_keys().collect();
    assert_eq!(keys, expected);
    // A channel records its sends together, up to 32 of the last 10 ms:
    // only those not yet recorded at the kill may come again.
    assert!(
        lines.len() <= expected.len() + 32,
        "more repeats than the sends not yet recorded: {} lines",
        lines.len()
    );
}
