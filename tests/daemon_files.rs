//! The daemon as a process over real files: table crossings by `mv` and by
//! in-place writes, log files, malformed changes.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(15);

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
    alerts: PathBuf,
}

fn setup(rules: &str, files: &[(&str, &str)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    std::fs::write(
        p.join("tocsin.yaml"),
        r#"
state: state.db
rules: rules.yaml
sources:
  - { name: tariffs, type: file, path: data/tariffs.csv, mode: table, key: [partner, product] }
  - { name: news, type: file, path: data/news.jsonl, mode: log }
  - { name: events, type: file, path: data/events.csv, mode: log }
channels:
  - { name: audit, type: file, path: out/alerts.jsonl }
  - { name: console, type: log }
"#,
    )
    .unwrap();
    std::fs::write(p.join("rules.yaml"), rules).unwrap();
    std::fs::create_dir_all(p.join("data")).unwrap();
    for (name, content) in files {
        std::fs::write(p.join("data").join(name), content).unwrap();
    }
    Setup {
        config: p.join("tocsin.yaml"),
        alerts: p.join("out/alerts.jsonl"),
        dir: p,
        _dir: dir,
    }
}

const TARIFF_RULES: &str = r#"
rules:
  - id: cn-above-157
    title: US tariff on Chinese goods above 157%
    severity: critical
    source: tariffs
    where: { partner: CN }
    when: { field: rate_pct, above: 157 }
    notify: [audit, console]
  - id: sentinel
    source: tariffs
    where: { partner: ZZ }
    notify: [audit]
"#;

fn table(rate: u32) -> String {
    format!("partner,product,rate_pct\nCN,8505,{rate}\nJP,8505,10\n")
}

fn wait_count(path: &Path, n: usize) -> Vec<serde_json::Value> {
    wait_for(T, || {
        let v = read_jsonl(path);
        (v.len() >= n).then_some(v)
    })
    .unwrap_or_else(|| panic!("expected {n} notifications, got {:?}", read_jsonl(path)))
}

#[test]
fn table_crossings_by_rename_and_in_place_write_notify_once_each() {
    let s = setup(TARIFF_RULES, &[("tariffs.csv", &table(145))]);
    let csv = s.dir.join("data/tariffs.csv");
    let d = Daemon::start(&s.config, &[]);

    write_by_rename(&csv, &table(160)); // crosses: fires
    let v = wait_count(&s.alerts, 1);
    assert_eq!(v[0]["rule"], "cn-above-157");
    assert_eq!(v[0]["state"], "firing");
    assert_eq!(v[0]["key"], "CN|8505");
    assert_eq!(v[0]["fields"]["rate_pct"], "160");
    assert_eq!(v[0]["prev"]["rate_pct"], "145");

    write_in_place(&csv, &table(170)); // stays above: nothing
    std::thread::sleep(Duration::from_millis(600));
    write_in_place(&csv, &table(150)); // drops below: resolves
    let v = wait_count(&s.alerts, 2);
    assert_eq!(v[1]["state"], "resolved", "{v:?}");

    write_in_place(&csv, &table(158)); // crosses again, in place: fires
    let v = wait_count(&s.alerts, 3);
    assert_eq!(v[2]["state"], "firing");

    write_by_rename(&csv, &table(100)); // below again, by rename: resolves
    let v = wait_count(&s.alerts, 4);
    assert_eq!(v[3]["state"], "resolved");

    // Same content again, then a sentinel row to know the daemon caught up.
    write_by_rename(&csv, &table(100));
    std::thread::sleep(Duration::from_millis(600));
    write_by_rename(&csv, &format!("{}ZZ,1,1\n", table(100)));
    let v = wait_count(&s.alerts, 5);
    assert_eq!(v[4]["rule"], "sentinel");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        read_jsonl(&s.alerts).len(),
        5,
        "{:?}",
        read_jsonl(&s.alerts)
    );
    let states: Vec<_> = v
        .iter()
        .take(4)
        .map(|n| n["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["firing", "resolved", "firing", "resolved"]);
    d.stop();
}

#[test]
fn editor_style_save_with_backup_file_is_seen_once() {
    let s = setup(TARIFF_RULES, &[("tariffs.csv", &table(145))]);
    let csv = s.dir.join("data/tariffs.csv");
    let d = Daemon::start(&s.config, &[]);
    // vim with `backupcopy=no`: rename the original to a backup, write anew.
    let backup = s.dir.join("data/tariffs.csv~");
    std::fs::rename(&csv, &backup).unwrap();
    std::fs::write(&csv, table(200)).unwrap();
    std::fs::remove_file(&backup).unwrap();
    let v = wait_count(&s.alerts, 1);
    assert_eq!(v[0]["state"], "firing");
    write_by_rename(&csv, &format!("{}ZZ,1,1\n", table(200)));
    let v = wait_count(&s.alerts, 2);
    assert_eq!(v[1]["rule"], "sentinel", "{v:?}");
    d.stop();
}

const NEWS_RULES: &str = r#"
rules:
  - id: export-controls
    source: news
    when: { text: [title], any: ["export control*"] }
    notify: [audit]
  - id: big-events
    source: events
    when: { field: size, at_least: 100 }
    notify: [audit]
"#;

#[test]
fn log_file_fires_once_per_matching_new_line_and_never_for_old_lines() {
    let old =
        "{\"title\": \"old export controls news\"}\n{\"title\": \"older export control item\"}\n";
    let s = setup(
        NEWS_RULES,
        &[("news.jsonl", old), ("events.csv", "name,size\nold,500\n")],
    );
    let news = s.dir.join("data/news.jsonl");
    let events = s.dir.join("data/events.csv");
    let d = Daemon::start(&s.config, &[]);

    append(
        &news,
        "{\"title\": \"New export controls on gallium\"}\n{\"title\": \"weather\"}\n",
    );
    // A line written in two parts counts once, when whole.
    append(&news, "{\"title\": \"More export ");
    std::thread::sleep(Duration::from_millis(500));
    append(&news, "controls\"}\n");
    let v = wait_count(&s.alerts, 2);
    assert_eq!(v[0]["key"], "news.jsonl:3");
    assert_eq!(v[0]["fields"]["title"], "New export controls on gallium");
    assert_eq!(v[1]["key"], "news.jsonl:5");

    append(&events, "small,5\nbig,250\n");
    let v = wait_count(&s.alerts, 3);
    assert_eq!(v[2]["rule"], "big-events");
    assert_eq!(v[2]["fields"]["name"], "big");
    assert_eq!(v[2]["key"], "events.csv:4");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read_jsonl(&s.alerts).len(), 3);

    // A replaced (rotated) log starts again from its beginning.
    write_by_rename(&news, "{\"title\": \"export controls after rotation\"}\n");
    let v = wait_count(&s.alerts, 4);
    assert_eq!(v[3]["key"], "news.jsonl:1");
    d.stop();
}

#[test]
fn malformed_change_is_logged_and_the_next_good_change_fires() {
    let s = setup(
        TARIFF_RULES,
        &[("tariffs.csv", &table(145)), ("news.jsonl", "")],
    );
    let csv = s.dir.join("data/tariffs.csv");
    let news = s.dir.join("data/news.jsonl");
    std::fs::write(
        s.dir.join("rules.yaml"),
        format!("{TARIFF_RULES}{}", NEWS_RULES.replace("rules:\n", "")),
    )
    .unwrap();
    let d = Daemon::start(&s.config, &[]);

    // A row with a missing field: refused whole, the old rows stand.
    write_in_place(&csv, "partner,product,rate_pct\nCN,8505,200\nJP,8505\n");
    d.wait_log("tariffs.csv:3: 2 fields, but the header has 3", T);
    // Invalid UTF-8 too.
    write_bytes_in_place(&csv, b"partner,product,rate_pct\nCN,8505,\xff\n");
    d.wait_log("tariffs.csv:2: not valid UTF-8", T);
    // A bad line in a log costs only itself.
    append(&news, "{not json\n{\"title\": \"export controls again\"}\n");
    d.wait_log("news.jsonl:1: invalid JSON", T);
    let v = wait_count(&s.alerts, 1);
    assert_eq!(v[0]["key"], "news.jsonl:2");

    write_by_rename(&csv, &table(190));
    let v = wait_count(&s.alerts, 2);
    assert_eq!(v[1]["rule"], "cn-above-157");
    assert_eq!(
        v[1]["prev"]["rate_pct"], "145",
        "the refused contents were never applied"
    );
    let log = d.stop();
    assert!(log.contains("tocsin stopped"), "{log}");
}

/// The shipped demo, as the README runs it: config/ and rules/ copied as
/// they are, the tariff edited the way the README says.
#[test]
fn the_shipped_demo_fires_and_resolves() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for sub in ["config", "config/demo", "rules"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for e in std::fs::read_dir(root.join(sub)).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_file() && name != "alerts.jsonl" && !name.starts_with("state.db") {
                std::fs::copy(&p, dir.path().join(sub).join(name)).unwrap();
            }
        }
    }
    let config = dir.path().join("config/tocsin.yaml");
    // The demo's HTTP port may be in use (the demo itself running): take
    // any free one.
    let port = free_port();
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("127.0.0.1:9187"));
    std::fs::write(
        &config,
        text.replace("127.0.0.1:9187", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let csv = dir.path().join("config/demo/tariffs.csv");
    let alerts = dir.path().join("config/demo/alerts.jsonl");
    let original = std::fs::read_to_string(&csv).unwrap();
    assert!(original.contains("CN,8505,Permanent magnets,145\n"));
    let d = Daemon::start(&config, &[]);
    // The demo feed's first poll backfills: its one export-control item.
    let v = wait_count(&alerts, 1);
    assert_eq!(v[0]["rule"], "allied-export-control-statement");
    assert_eq!(v[0]["key"], "meti-2026-0409-001");
    assert_eq!(
        v[0]["summary"],
        "METI (JP): Review of export controls on rare earth magnets"
    );

    write_in_place(
        &csv,
        &original.replace(
            "CN,8505,Permanent magnets,145",
            "CN,8505,Permanent magnets,160",
        ),
    );
    let v = wait_count(&alerts, 2);
    assert_eq!(v[1]["rule"], "us-cn-tariff-above-157");
    assert_eq!(v[1]["summary"], "CN 8505 tariff now 160% (threshold 157%)");
    d.wait_log("CN 8505 tariff now 160% (threshold 157%)", T);
    write_by_rename(&csv, &original);
    if wait_for(T, || (read_jsonl(&alerts).len() >= 3).then_some(())).is_none() {
        panic!("no resolve; log:\n{}", d.log());
    }
    let v = read_jsonl(&alerts);
    assert_eq!(v[2]["state"], "resolved");

    let statements = dir.path().join("config/demo/statements.jsonl");
    append(
        &statements,
        "{\"country\": \"JP\", \"issuer\": \"METI\", \"title\": \"New export controls on rare earth magnets\"}\n",
    );
    let v = wait_count(&alerts, 4);
    assert_eq!(v[3]["rule"], "allied-export-control-statement");
    assert_eq!(
        v[3]["summary"],
        "METI (JP): New export controls on rare earth magnets"
    );
    d.stop();
}

#[test]
fn a_log_written_to_without_pause_is_still_read() {
    let s = setup(NEWS_RULES, &[("news.jsonl", "")]);
    let news = s.dir.join("data/news.jsonl");
    let d = Daemon::start(&s.config, &[]);
    // A line every 50 ms for 3 s: never quiet for the 150 ms debounce; the
    // alerts must come while it goes on (reads at least every second).
    let started = std::time::Instant::now();
    let mut seen_while_busy = false;
    for i in 0..60 {
        append(&news, &format!("{{\"title\": \"export controls {i}\"}}\n"));
        std::thread::sleep(Duration::from_millis(50));
        if i > 45 && !read_jsonl(&s.alerts).is_empty() {
            seen_while_busy = true;
        }
    }
    assert!(
        seen_while_busy,
        "alerts only after the writer paused ({:?})",
        started.elapsed()
    );
    let v = wait_count(&s.alerts, 60);
    assert_eq!(v.len(), 60);
    d.stop();
}

#[test]
fn an_emptied_table_file_is_taken_as_being_written() {
    let s = setup(TARIFF_RULES, &[("tariffs.csv", &table(160))]);
    let csv = s.dir.join("data/tariffs.csv");
    let d = Daemon::start(&s.config, &[]);
    let v = wait_count(&s.alerts, 1);
    assert_eq!(v[0]["state"], "firing");
    // Truncated (the first half of an in-place write), then written back.
    write_in_place(&csv, "");
    std::thread::sleep(Duration::from_millis(800));
    write_in_place(&csv, &format!("{}ZZ,1,1\n", table(160)));
    let v = wait_count(&s.alerts, 2);
    assert_eq!(
        v[1]["rule"], "sentinel",
        "no resolve and re-fire around the empty file: {v:?}"
    );
    // A header alone is a table with no rows: that resolves.
    write_in_place(&csv, "partner,product,rate_pct\n");
    let v = wait_count(&s.alerts, 3);
    assert_eq!(
        (v[2]["rule"].as_str(), v[2]["state"].as_str()),
        (Some("cn-above-157"), Some("resolved"))
    );
    d.stop();
}
