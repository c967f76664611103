//! The daemon as ops run it: systemd notifications, reloads on SIGHUP and
//! on rule edits.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(15);

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
    rules: PathBuf,
    alerts: PathBuf,
}

fn setup(rules: &str, extra_config: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    std::fs::write(
        p.join("tocsin.yaml"),
        format!(
            r#"
state: state.db
rules: rules.yaml
sources:
  - {{ name: tariffs, type: file, path: data/tariffs.csv, mode: table, key: [partner] }}
channels:
  - {{ name: audit, type: file, path: out/alerts.jsonl }}
{extra_config}"#
        ),
    )
    .unwrap();
    std::fs::write(p.join("rules.yaml"), rules).unwrap();
    std::fs::create_dir_all(p.join("data")).unwrap();
    std::fs::write(
        p.join("data/tariffs.csv"),
        table(&[("CN", 100), ("JP", 100)]),
    )
    .unwrap();
    Setup {
        config: p.join("tocsin.yaml"),
        rules: p.join("rules.yaml"),
        alerts: p.join("out/alerts.jsonl"),
        dir: p,
        _dir: dir,
    }
}

fn table(rows: &[(&str, u32)]) -> String {
    let mut s = "partner,rate_pct\n".to_string();
    for (p, r) in rows {
        s.push_str(&format!("{p},{r}\n"));
    }
    s
}

fn rule(id: &str, partner: &str, above: u32) -> String {
    format!(
        "  - {{ id: {id}, source: tariffs, where: {{ partner: {partner} }}, when: {{ field: rate_pct, above: {above} }}, notify: [audit] }}\n"
    )
}

fn wait_count(path: &Path, n: usize) -> Vec<serde_json::Value> {
    wait_for(T, || {
        let v = read_jsonl(path);
        (v.len() >= n).then_some(v)
    })
    .unwrap_or_else(|| panic!("expected {n} notifications, got {:?}", read_jsonl(path)))
}

/// Messages the daemon sends to `$NOTIFY_SOCKET`, one datagram each.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket { sock, path }
    }

    /// Reads datagrams until one has `line` as one of its lines; returns
    /// every message read on the way, that one last.
    fn until(&self, line: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let end = std::time::Instant::now() + T;
        let mut buf = [0u8; 4096];
        while std::time::Instant::now() < end {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                let hit = msg.lines().any(|l| l == line);
                seen.push(msg);
                if hit {
                    return seen;
                }
            }
        }
        panic!("never received {line:?}; got {seen:?}");
    }
}

#[test]
fn systemd_hears_ready_watchdog_reloading_ready_and_stopping_in_order() {
    let s = setup(&format!("rules:\n{}", rule("cn", "CN", 157)), "");
    let sock = NotifySocket::bind(&s.dir);
    let d = Daemon::start(
        &s.config,
        &[
            ("NOTIFY_SOCKET", sock.path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let first = sock.until("READY=1");
    assert_eq!(first.len(), 1, "READY=1 comes first: {first:?}");
    assert!(
        first[0].contains("STATUS=1 rules, 1 sources, 0 failing, 0 queued"),
        "{first:?}"
    );
    // The watchdog at half of WatchdogSec=1s.
    sock.until("WATCHDOG=1");
    sock.until("WATCHDOG=1");

    d.signal("HUP");
    let reload = sock.until("RELOADING=1");
    let msg = reload.last().unwrap();
    assert!(
        msg.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 carries MONOTONIC_USEC: {msg:?}"
    );
    let after = sock.until("READY=1");
    assert!(after.iter().all(|m| !m.contains("STOPPING")), "{after:?}");
    d.wait_log("reloaded", T);

    d.signal("TERM");
    sock.until("STOPPING=1");
    let log = d.stop();
    assert!(log.contains("tocsin stopped"), "{log}");
}

#[test]
fn a_broken_rules_edit_is_refused_whole_and_a_fixed_one_applies_with_state_kept() {
    let s = setup(
        &format!("rules:\n{}{}", rule("cn", "CN", 157), rule("jp", "JP", 50)),
        "",
    );
    let csv = s.dir.join("data/tariffs.csv");
    let d = Daemon::start(&s.config, &[]);
    // JP fires on the rules as started.
    write_by_rename(&csv, &table(&[("CN", 100), ("JP", 60)]));
    let v = wait_count(&s.alerts, 1);
    assert_eq!(v[0]["rule"], "jp");

    // A broken edit: a typo in one rule; the whole edit is refused, also
    // the good rule it adds.
    std::fs::write(
        &s.rules,
        format!(
            "rules:\n{}{}  - {{ id: cn, source: tariffs, when: {{ field: rate_pct, abov: 10 }}, notify: [audit] }}\n",
            rule("jp", "JP", 50),
            rule("jp-high", "JP", 55)
        ),
    )
    .unwrap();
    d.signal("HUP");
    d.wait_log("reload refused", T);
    let log = d.log();
    assert!(
        log.contains("rules.yaml:4:"),
        "the problem with its position: {log}"
    );
    // The old rules keep firing: CN crosses 157 under the old `cn` rule.
    write_by_rename(&csv, &table(&[("CN", 160), ("JP", 60)]));
    let v = wait_count(&s.alerts, 2);
    assert_eq!(v[1]["rule"], "cn");

    // Fixed by an editor's save (no signal): the rules folder is watched.
    write_by_rename(
        &s.rules,
        &format!(
            "rules:\n{}{}{}",
            rule("cn", "CN", 157),
            rule("jp", "JP", 50),
            rule("jp-high", "JP", 55)
        ),
    );
    wait_for(T, || {
        (d.log().matches("reloaded").count() >= 1).then_some(())
    })
    .unwrap_or_else(|| panic!("no reload after the fix: {}", d.log()));
    // State kept: `cn` and `jp` stay firing without a second alert; the new
    // rule fires on the next change of the table.
    write_by_rename(&csv, &table(&[("CN", 161), ("JP", 61)]));
    let v = wait_count(&s.alerts, 3);
    assert_eq!(v[2]["rule"], "jp-high", "{v:?}");
    std::thread::sleep(Duration::from_millis(500));
    let v = read_jsonl(&s.alerts);
    assert_eq!(v.len(), 3, "no repeat of cn or jp: {v:?}");
    d.stop();
}
