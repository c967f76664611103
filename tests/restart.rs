//! Restarts and outages with the store: nothing lost, nothing repeated.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

fn setup(channels: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("tocsin.yaml"),
        format!(
            r#"
state: state.db
rules: rules.yaml
sources:
  - {{ name: tariffs, type: file, path: tariffs.csv, key: [partner, product] }}
  - {{ name: news, type: file, path: news.jsonl, mode: log }}
channels:
  - {{ name: audit, type: file, path: alerts.jsonl }}
{channels}
"#
        ),
    )
    .unwrap();
    let notify = if channels.is_empty() {
        "[audit]"
    } else {
        "[audit, out]"
    };
    std::fs::write(
        p.join("rules.yaml"),
        format!(
            r#"
rules:
  - {{ id: cn, source: tariffs, where: {{ partner: CN }}, when: {{ field: rate_pct, above: 157 }}, notify: {notify} }}
  - {{ id: news, source: news, when: {{ text: title, any: [export control*] }}, notify: {notify} }}
"#
        ),
    )
    .unwrap();
    std::fs::write(
        p.join("tariffs.csv"),
        "partner,product,rate_pct\nCN,1,200\nCN,2,100\n",
    )
    .unwrap();
    std::fs::write(
        p.join("news.jsonl"),
        "{\"title\": \"old export controls\"}\n",
    )
    .unwrap();
    let cfg = p.join("tocsin.yaml");
    (dir, cfg)
}

/// The `out` channel: email to an SMTP server on loopback `port`.
fn email_channel(port: u16, extra: &str) -> String {
    format!(
        "  - {{ name: out, type: email, {extra}smtp: {{ host: 127.0.0.1, port: {port}, tls: none }}, from: a@example.org, to: [b@example.org] }}"
    )
}

fn count(path: &Path) -> usize {
    read_jsonl(path).len()
}

#[test]
fn restarts_send_only_what_changed_while_down() {
    let (dir, cfg) = setup("");
    let alerts = dir.path().join("alerts.jsonl");
    // First start: CN|1 is over the threshold; the old news line is history.
    let d = Daemon::start(&cfg, &[]);
    wait_for(T, || (count(&alerts) == 1).then_some(())).expect("first alert");
    d.stop();

    // Unchanged files: nothing.
    let d = Daemon::start(&cfg, &[]);
    std::thread::sleep(Duration::from_millis(800));
    d.stop();
    assert_eq!(count(&alerts), 1, "{:?}", read_jsonl(&alerts));

    // Changed while down: exactly what the change implies, once.
    std::fs::write(
        dir.path().join("tariffs.csv"),
        "partner,product,rate_pct\nCN,1,100\nCN,2,300\n",
    )
    .unwrap();
    append(
        &dir.path().join("news.jsonl"),
        "{\"title\": \"new export controls\"}\n{\"title\": \"weather\"}\n",
    );
    let d = Daemon::start(&cfg, &[]);
    let v = wait_for(T, || {
        let v = read_jsonl(&alerts);
        (v.len() >= 4).then_some(v)
    })
    .expect("the changes made while down");
    std::thread::sleep(Duration::from_millis(500));
    d.stop();
    let v2 = read_jsonl(&alerts);
    assert_eq!(v2.len(), 4, "{v2:?}");
    let mut got: Vec<(String, String, String)> = v[1..]
        .iter()
        .map(|n| {
            (
                n["rule"].as_str().unwrap().into(),
                n["key"].as_str().unwrap().into(),
                n["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("cn".into(), "CN|1".into(), "resolved".into()),
            ("cn".into(), "CN|2".into(), "firing".into()),
            ("news".into(), "news.jsonl:2".into(), "firing".into()),
        ]
    );

    // And once more with nothing changed: still nothing.
    let d = Daemon::start(&cfg, &[]);
    std::thread::sleep(Duration::from_millis(800));
    d.stop();
    assert_eq!(count(&alerts), 4);
}

#[test]
fn an_alert_committed_while_smtp_is_down_survives_kill_9() {
    // A port with nobody listening: connections are refused.
    let port = free_port();
    let (dir, cfg) = setup(&email_channel(port, ""));
    std::fs::write(
        dir.path().join("tariffs.csv"),
        "partner,product,rate_pct\nCN,1,100\n",
    )
    .unwrap();
    let d = Daemon::start(&cfg, &[]);
    write_by_rename(
        &dir.path().join("tariffs.csv"),
        "partner,product,rate_pct\nCN,1,200\n",
    );
    // Committed: the file channel has it; the mail is stuck retrying.
    wait_for(T, || {
        (count(&dir.path().join("alerts.jsonl")) == 1).then_some(())
    })
    .expect("committed");
    d.wait_log("delivery failed, will retry", T);
    let log = d.kill();
    assert!(!log.contains("tocsin stopped"));

    let smtp = SmtpServer::start_on(port);
    let d = Daemon::start(&cfg, &[]);
    let mails = smtp.wait_mails(1, T);
    assert!(
        mails[0]
            .header("Subject")
            .unwrap()
            .starts_with("[FIRING warning]")
    );
    d.stop();
    let store = tocsin::store::Store::open(dir.path().join("state.db")).unwrap();
    assert_eq!(
        store.outbox_counts().unwrap(),
        (0, 0),
        "the outbox is empty"
    );
    assert_eq!(
        count(&dir.path().join("alerts.jsonl")),
        1,
        "no repeat after the restart"
    );
    assert_eq!(smtp.mails.lock().unwrap().len(), 1);
}

#[test]
fn webhook_retries_on_500_and_fails_at_once_on_400() {
    let hook = Receiver::start();
    let (dir, cfg) = setup(&format!(
        "  - {{ name: out, type: webhook, url: \"{}\" }}",
        hook.url("/h")
    ));
    std::fs::write(
        dir.path().join("tariffs.csv"),
        "partner,product,rate_pct\nCN,1,100\n",
    )
    .unwrap();
    hook.answers.lock().unwrap().extend([500, 503]);
    let d = Daemon::start(&cfg, &[]);
    write_by_rename(
        &dir.path().join("tariffs.csv"),
        "partner,product,rate_pct\nCN,1,200\n",
    );
    let r = hook.wait_requests(3, T);
    let ids: Vec<_> = r
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "retries carry the same id: {ids:?}"
    );
    d.wait_log("delivered: HTTP 200", T);

    hook.answers.lock().unwrap().push_back(400);
    write_by_rename(
        &dir.path().join("tariffs.csv"),
        "partner,product,rate_pct\nCN,1,100\n",
    );
    hook.wait_requests(4, T);
    d.wait_log("delivery failed for good: HTTP 400", T);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        hook.requests.lock().unwrap().len(),
        4,
        "a 400 is not retried"
    );
    d.stop();
    let store = tocsin::store::Store::open(dir.path().join("state.db")).unwrap();
    assert_eq!(store.outbox_counts().unwrap(), (0, 1));

    // `tocsin alerts --failed` lists it; `--json` has the whole history.
    let alerts = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .arg("alerts")
            .arg("-c")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let failed = alerts(&["--failed"]);
    assert!(failed.starts_with("FAILED (1)\n"), "{failed}");
    assert!(
        failed.contains("out  cn  CN|1  resolved: HTTP 400"),
        "{failed}"
    );
    let doc: serde_json::Value = serde_json::from_str(&alerts(&["--json"])).unwrap();
    assert_eq!(doc["firing"].as_array().unwrap().len(), 0);
    assert_eq!(doc["failed"][0]["notification"]["state"], "resolved");
    let outcomes: Vec<(&str, &str, &str)> = doc["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["channel"] == "out")
        .map(|h| {
            (
                h["state"].as_str().unwrap(),
                h["outcome"].as_str().unwrap(),
                h["detail"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("firing", "delivered", "HTTP 200 ok"),
            ("resolved", "failed", "HTTP 400 ok")
        ]
    );
}

#[test]
fn a_burst_of_1000_alerts_survives_kill_9_midway() {
    let hook = Receiver::start();
    let (dir, cfg) = setup(&format!(
        "  - {{ name: out, type: webhook, url: \"{}\" }}",
        hook.url("/h")
    ));
    let rules = "rules:\n  - { id: all, source: tariffs, when: { field: rate_pct, above: 157 }, notify: [out] }\n";
    std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
    std::fs::write(dir.path().join("tariffs.csv"), "partner,product,rate_pct\n").unwrap();
    let d = Daemon::start(&cfg, &[]);
    let mut csv = String::from("partner,product,rate_pct\n");
    for i in 0..1000 {
        csv.push_str(&format!("P{i},1,200\n"));
    }
    write_by_rename(&dir.path().join("tariffs.csv"), &csv);
    wait_for(T, || {
        (hook.requests.lock().unwrap().len() >= 300).then_some(())
    })
    .expect("deliveries under way");
    d.kill();
    let at_kill = hook.requests.lock().unwrap().len();
    assert!(
        at_kill < 1000,
        "the kill came after every delivery ({at_kill})"
    );

    let d = Daemon::start(&cfg, &[]);
    let ids = wait_for(Duration::from_secs(60), || {
        let ids: std::collections::HashSet<String> = hook
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.header("webhook-id").unwrap().to_string())
            .collect();
        (ids.len() >= 1000).then_some(ids)
    })
    .expect("all 1000 delivered");
    d.stop();
    let total = hook.requests.lock().unwrap().len();
    let duplicates = total - ids.len();
    println!(
        "burst: {at_kill} delivered before kill -9, {total} requests for {} alerts, {duplicates} duplicate(s)",
        ids.len()
    );
    assert_eq!(ids.len(), 1000);
    // Sends are recorded together, up to 32 of the last 10 ms: only
    // those not yet recorded at the kill may repeat.
    assert!(
        duplicates <= 32,
        "only the sends not yet recorded may repeat: {duplicates}"
    );
    let store = tocsin::store::Store::open(dir.path().join("state.db")).unwrap();
    assert_eq!(store.outbox_counts().unwrap(), (0, 0));
}

#[test]
fn a_digest_channel_sends_one_message_per_tick_and_nothing_when_empty() {
    let smtp = SmtpServer::start();
    let (dir, cfg) = setup(&format!(
        "  - {{ name: out, type: email, digest: {{ every: 2s }}, smtp: {{ host: 127.0.0.1, port: {}, tls: none }}, from: a@example.org, to: [b@example.org] }}",
        smtp.addr.port()
    ));
    std::fs::write(dir.path().join("tariffs.csv"), "partner,product,rate_pct\n").unwrap();
    let d = Daemon::start(&cfg, &[]);
    write_by_rename(
        &dir.path().join("tariffs.csv"),
        "partner,product,rate_pct\nCN,1,200\nCN,2,300\n",
    );
    append(
        &dir.path().join("news.jsonl"),
        "{\"title\": \"export controls\"}\n",
    );
    wait_for(T, || {
        (count(&dir.path().join("alerts.jsonl")) == 3).then_some(())
    })
    .expect("three alerts");
    let mails = smtp.wait_mails(1, T);
    // Ticks with nothing pending send nothing.
    std::thread::sleep(Duration::from_secs(5));
    d.stop();
    let mails_after = smtp.mails.lock().unwrap().clone();
    let total: usize = mails_after
        .iter()
        .map(|m| m.body().matches("[FIRING warning]").count())
        .sum();
    assert_eq!(
        total, 3,
        "every notification in exactly one digest: {mails_after:?}"
    );
    assert!(
        mails_after.len() <= 2,
        "one message per tick with news, none for empty ticks: {}",
        mails_after.len()
    );
    assert!(
        mails[0].header("Subject").unwrap().starts_with("[DIGEST] "),
        "{:?}",
        mails[0].header("Subject")
    );
    let store = tocsin::store::Store::open(dir.path().join("state.db")).unwrap();
    assert_eq!(store.outbox_counts().unwrap(), (0, 0));
}

#[test]
fn alerts_raised_while_smtp_is_down_arrive_in_creation_order() {
    let port = free_port();
    let (dir, cfg) = setup(&email_channel(port, ""));
    std::fs::write(dir.path().join("tariffs.csv"), "partner,product,rate_pct\n").unwrap();
    let d = Daemon::start(&cfg, &[]);
    let mut csv = String::from("partner,product,rate_pct\n");
    for i in 1..=4 {
        csv.push_str(&format!("CN,{i},200\n"));
        write_by_rename(&dir.path().join("tariffs.csv"), &csv);
        wait_for(T, || {
            (count(&dir.path().join("alerts.jsonl")) == i).then_some(())
        })
        .expect("committed");
    }
    d.wait_log("delivery failed, will retry", T);
    let smtp = SmtpServer::start_on(port);
    let mails = smtp.wait_mails(4, Duration::from_secs(40));
    d.stop();
    let keys: Vec<String> = mails
        .iter()
        .map(|m| {
            let mime = mailparse::parse_mail(m.data.as_bytes()).unwrap();
            let text = mime.subparts[0].get_body().unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("Key: "))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(keys, ["CN|1", "CN|2", "CN|3", "CN|4"]);
}

#[test]
fn past_the_retry_budget_a_notification_is_marked_failed() {
    let port = free_port();
    let (dir, cfg) = setup(&email_channel(port, "retry_budget: 2s, "));
    std::fs::write(dir.path().join("tariffs.csv"), "partner,product,rate_pct\n").unwrap();
    let d = Daemon::start(&cfg, &[]);
    write_by_rename(
        &dir.path().join("tariffs.csv"),
        "partner,product,rate_pct\nCN,1,200\n",
    );
    d.wait_log("delivery failed for good", T);
    d.stop();
    let store = tocsin::store::Store::open(dir.path().join("state.db")).unwrap();
    assert_eq!(store.outbox_counts().unwrap(), (0, 1));
}
