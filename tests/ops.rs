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
    let port = free_port();
    let s = setup(
        &format!("rules:\n{}{}", rule("cn", "CN", 157), rule("jp", "JP", 50)),
        &format!("http: {{ listen: 127.0.0.1:{port} }}\n"),
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
    let m = get(port, "/metrics").1;
    assert_eq!(sample(&m, "tocsin_last_reload_success"), 0.0, "{m}");
    assert!(
        sample(&m, "tocsin_reloads_total{result=\"refused\"}") >= 1.0,
        "{m}"
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
    let log = d.log();
    assert!(
        log.contains("restarted_sources=[] restarted_channels=[]"),
        "a rules edit restarts no source or channel: {log}"
    );
    // The metrics follow the log line by a moment.
    let m = wait_for(T, || {
        let m = get(port, "/metrics").1;
        (sample(&m, "tocsin_last_reload_success") == 1.0).then_some(m)
    })
    .unwrap_or_else(|| panic!("the reload not in /metrics: {}", get(port, "/metrics").1));
    assert_eq!(
        sample(&m, "tocsin_reloads_total{result=\"applied\"}"),
        1.0,
        "{m}"
    );
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

#[test]
fn metrics_move_with_records_and_alerts_and_healthz_turns_503_for_an_unhealthy_source() {
    let port = free_port();
    let s = setup(
        &format!("rules:\n{}", rule("cn", "CN", 157)),
        &format!("  - {{ name: console, type: log }}\nhttp: {{ listen: 127.0.0.1:{port} }}\n"),
    );
    let d = Daemon::start(&s.config, &[]);
    let (status, body) = get(port, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let m0 = get(port, "/metrics").1;
    assert!(m0.contains("tocsin_build_info{version=\""), "{m0}");
    assert_eq!(sample(&m0, "tocsin_last_reload_success"), 1.0);
    let read0 = sample(&m0, "tocsin_records_total{source=\"tariffs\"}");

    write_by_rename(
        &s.dir.join("data/tariffs.csv"),
        &table(&[("CN", 160), ("JP", 100)]),
    );
    wait_count(&s.alerts, 1);
    let m = wait_for(T, || {
        let m = get(port, "/metrics").1;
        (sample(&m, "tocsin_deliveries_total{channel=\"audit\"}") >= 1.0).then_some(m)
    })
    .unwrap_or_else(|| panic!("no delivery counted: {}", get(port, "/metrics").1));
    assert_eq!(
        sample(&m, "tocsin_records_total{source=\"tariffs\"}") - read0,
        1.0,
        "one changed row: {m}"
    );
    assert_eq!(
        sample(
            &m,
            "tocsin_notifications_total{rule=\"cn\",state=\"firing\"}"
        ),
        1.0,
        "{m}"
    );
    assert!(
        sample(&m, "tocsin_rule_evaluations_total{rule=\"cn\"}") >= 1.0,
        "{m}"
    );
    assert!(
        sample(
            &m,
            "tocsin_source_last_success_timestamp_seconds{source=\"tariffs\"}"
        ) > 1.7e9,
        "{m}"
    );
    assert_eq!(sample(&m, "tocsin_outbox_pending"), 0.0, "{m}");
    d.stop();

    // A feed that does not parse, failing after one try: /healthz says so.
    std::fs::write(s.dir.join("data/broken.xml"), "<rss><channel><item>").unwrap();
    let config = std::fs::read_to_string(&s.config).unwrap().replace(
        "sources:\n",
        "sources:\n  - { name: news, type: feed, url: \"file:data/broken.xml\", every: 1s, fail_after: 1 }\n",
    );
    std::fs::write(&s.config, config).unwrap();
    let d = Daemon::start(&s.config, &[]);
    let (status, body) = wait_for(T, || {
        let r = get(port, "/healthz");
        (r.0 == 503).then_some(r)
    })
    .unwrap_or_else(|| {
        panic!(
            "healthz never turned 503: {:?}\n{}",
            get(port, "/healthz"),
            d.log()
        )
    });
    assert_eq!(status, 503);
    assert!(body.contains("source news unhealthy"), "{body}");
    let m = get(port, "/metrics").1;
    assert!(
        sample(&m, "tocsin_source_errors_total{source=\"news\"}") >= 1.0,
        "{m}"
    );
    d.stop();
}

#[test]
fn a_listener_off_loopback_must_be_asked_for() {
    let s = setup(
        &format!("rules:\n{}", rule("cn", "CN", 157)),
        "http: { listen: 0.0.0.0:9187 }\n",
    );
    let (code, text) = tocsin(&s.config, &["check"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("tocsin.yaml:8:17: error: `0.0.0.0:9187` is not a loopback address"),
        "{text}"
    );
    assert!(text.contains("public: true"), "{text}");
}

#[test]
fn logs_are_json_lines_when_asked() {
    let s = setup(
        &format!("rules:\n{}", rule("cn", "CN", 157)),
        "  - { name: console, type: log }\nlog: { format: json }\n",
    );
    let d = Daemon::start(&s.config, &[]);
    write_by_rename(
        &s.dir.join("data/tariffs.csv"),
        &table(&[("CN", 160), ("JP", 100)]),
    );
    wait_count(&s.alerts, 1);
    d.wait_log("delivered", T);
    let log = d.stop();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "tocsin started" && l["level"] == "INFO"),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l["fields"]["channel"] == "audit"),
        "fields stay fields: {log}"
    );
}

#[test]
fn secrets_from_env_and_files_appear_in_no_output_and_nowhere_in_the_store() {
    const ENV_SECRET: &str = "hook-secret-7f3a9c21e";
    const FILE_SECRET: &str = "smtp-pass-41d8b0e6";
    let hook = Receiver::start();
    let refused = free_port();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("smtp-password");
    std::fs::write(&creds, format!("{FILE_SECRET}\n")).unwrap();
    let s = setup(
        "rules:\n  - { id: cn, source: tariffs, where: { partner: CN }, when: { field: rate_pct, above: 157 }, notify: [audit, hook, mail] }\n",
        &format!(
            "  - {{ name: hook, type: webhook, url: \"{}\", secret_env: TOCSIN_TEST_HOOK_SECRET }}\n  - {{ name: mail, type: email, smtp: {{ host: 127.0.0.1, port: {refused}, tls: none, username: alerts, password_file: {} }}, from: a@example.org, to: [b@example.org] }}\n",
            hook.url("/hook"),
            creds.display()
        ),
    );
    // The most talkative log there is, to give a secret every chance.
    let d = Daemon::start(
        &s.config,
        &[
            ("TOCSIN_TEST_HOOK_SECRET", ENV_SECRET),
            ("RUST_LOG", "trace"),
        ],
    );
    write_by_rename(
        &s.dir.join("data/tariffs.csv"),
        &table(&[("CN", 160), ("JP", 100)]),
    );
    wait_count(&s.alerts, 1);
    assert_eq!(hook.wait_requests(1, T).len(), 1);
    // The mail server refuses: the failure (and its retry) is logged.
    d.wait_log("delivery failed, will retry", T);
    d.signal("HUP");
    d.wait_log("reloaded", T);
    let stdout = d.stdout();
    let log = d.stop() + &stdout;

    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let forms = [
        ENV_SECRET.to_string(),
        FILE_SECRET.to_string(),
        b64(ENV_SECRET),
        b64(FILE_SECRET),
        b64(&format!("\0alerts\0{FILE_SECRET}")),
    ];
    for form in &forms {
        assert!(
            !log.contains(form.as_str()),
            "{form:?} in stderr or stdout:\n{log}"
        );
    }
    // Every file the daemon wrote: the store (and its WAL), the alerts, its
    // stderr and stdout.
    for e in std::fs::read_dir(&s.dir)
        .unwrap()
        .chain(std::fs::read_dir(s.dir.join("out")).unwrap())
    {
        let p = e.unwrap().path();
        if !p.is_file() {
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        for form in &forms {
            assert!(
                !bytes.windows(form.len()).any(|w| w == form.as_bytes()),
                "{form:?} in {}",
                p.display()
            );
        }
    }
    let store = std::fs::read(s.dir.join("state.db")).unwrap();
    assert!(
        store.windows(b"cn".len()).any(|w| w == b"cn"),
        "the store was read"
    );
}

#[test]
fn a_silenced_rule_sends_nothing_until_the_silence_expires() {
    let s = setup(
        &format!("rules:\n{}{}", rule("cn", "CN", 157), rule("jp", "JP", 50)),
        "",
    );
    let csv = s.dir.join("data/tariffs.csv");
    let d = Daemon::start(&s.config, &[]);
    let (code, text) = tocsin(
        &s.config,
        &[
            "silence",
            "add",
            "cn:CN",
            "--for",
            "5s",
            "--reason",
            "planned tariff load",
            "--by",
            "ops",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with("silence 1 added: rule cn key CN until "),
        "{text}"
    );
    let added = std::time::Instant::now();
    let (_, list) = tocsin(&s.config, &["silence", "list"]);
    assert!(
        list.contains("rule cn key CN") && list.contains("by ops: planned tariff load"),
        "{list}"
    );

    // CN crosses while silenced; JP, not silenced, shows the daemon has
    // caught up.
    write_by_rename(&csv, &table(&[("CN", 160), ("JP", 100)]));
    let v = wait_count(&s.alerts, 1);
    assert_eq!(v[0]["rule"], "jp", "{v:?}");
    // The change is read once it has settled: CN's notification is then
    // recorded as silenced, and not sent.
    wait_for(T, || {
        let (_, history) = tocsin(&s.config, &["alerts", "--json"]);
        history.contains("\"outcome\":\"silenced\"").then_some(())
    })
    .unwrap_or_else(|| panic!("no silenced notification:\n{}", d.log()));
    assert_eq!(read_jsonl(&s.alerts).len(), 1, "nothing for cn");
    assert!(
        added.elapsed() < Duration::from_secs(5),
        "the machine was too slow for this test"
    );

    // After it expires, the next notification goes out.
    std::thread::sleep(
        Duration::from_secs(5).saturating_sub(added.elapsed()) + Duration::from_millis(200),
    );
    assert!(
        tocsin(&s.config, &["silence", "list"])
            .1
            .contains("no silences")
    );
    write_by_rename(&csv, &table(&[("CN", 100), ("JP", 100)]));
    let v = wait_count(&s.alerts, 2);
    let cn: Vec<_> = v.iter().filter(|n| n["rule"] == "cn").collect();
    assert_eq!(cn.len(), 1, "{v:?}");
    assert_eq!(cn[0]["state"], "resolved");
    d.stop();

    // Removing ends a silence; a rule that does not exist is refused.
    let (_, text) = tocsin(
        &s.config,
        &["silence", "add", "jp", "--for", "1h", "--reason", "x"],
    );
    assert!(
        text.starts_with("silence 2 added: rule jp (every key)"),
        "{text}"
    );
    assert_eq!(tocsin(&s.config, &["silence", "remove", "2"]).0, 0);
    assert!(
        tocsin(&s.config, &["silence", "list"])
            .1
            .contains("no silences")
    );
    let (code, text) = tocsin(
        &s.config,
        &["silence", "add", "cnn", "--for", "1h", "--reason", "x"],
    );
    assert_eq!(code, 1);
    assert!(
        text.contains("no rule `cnn`") && text.contains("did you mean `cn`?"),
        "{text}"
    );
}

#[test]
fn send_test_goes_through_each_channel_and_reports_the_answer() {
    let smtp = SmtpServer::start();
    let hook = Receiver::start();
    let refused = free_port();
    let s = setup(
        &format!("rules:\n{}", rule("cn", "CN", 157)),
        &format!(
            "  - {{ name: mail, type: email, smtp: {{ host: 127.0.0.1, port: {}, tls: none }}, from: a@example.org, to: [b@example.org] }}\n  - {{ name: hook, type: webhook, url: \"{}\", secret_env: TOCSIN_TEST_SECRET }}\n  - {{ name: down, type: webhook, url: \"http://127.0.0.1:{refused}/x\" }}\n",
            smtp.addr.port(),
            hook.url("/hook")
        ),
    );
    let (code, text) = tocsin(&s.config, &["send-test", "mail"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with("sent to mail: 250"),
        "the server's answer: {text}"
    );
    let mails = smtp.wait_mails(1, T);
    assert!(
        mails[0]
            .header("Subject")
            .is_some_and(|s| s.contains("Test message from tocsin to channel mail")),
        "{:?}",
        mails[0].headers()
    );

    let out = std::process::Command::new(BIN)
        .args(["send-test", "hook", "-c"])
        .arg(&s.config)
        .env("TOCSIN_TEST_SECRET", "whsec_dGVzdA==")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("sent to hook: HTTP 200"), "{text}");
    let r = &hook.wait_requests(1, T)[0];
    assert_eq!(r.json()["rule"], "tocsin-send-test");
    assert!(
        r.header("webhook-signature")
            .is_some_and(|s| s.starts_with("v1,"))
    );

    let (code, text) = tocsin(&s.config, &["send-test", "down"]);
    assert_eq!(code, 1);
    assert!(text.contains("error: channel `down`"), "{text}");
    let (code, text) = tocsin(&s.config, &["send-test", "mial"]);
    assert_eq!(code, 1);
    assert!(
        text.contains("no channel `mial`") && text.contains("did you mean `mail`?"),
        "{text}"
    );
}

#[test]
fn healthz_names_a_failing_channel_and_journal_lines_carry_no_timestamp() {
    let port = free_port();
    let refused = free_port();
    let s = setup(
        "rules:\n  - { id: cn, source: tariffs, where: { partner: CN }, when: { field: rate_pct, above: 157 }, notify: [audit, down] }\n",
        &format!(
            "  - {{ name: down, type: webhook, url: \"http://127.0.0.1:{refused}/x\" }}\nhttp: {{ listen: 127.0.0.1:{port} }}\n"
        ),
    );
    let d = Daemon::start(&s.config, &[("JOURNAL_STREAM", "8:12345")]);
    assert_eq!(get(port, "/healthz").0, 200);
    write_by_rename(
        &s.dir.join("data/tariffs.csv"),
        &table(&[("CN", 160), ("JP", 100)]),
    );
    wait_count(&s.alerts, 1);
    let (status, body) = wait_for(T, || {
        let r = get(port, "/healthz");
        (r.0 == 503).then_some(r)
    })
    .unwrap_or_else(|| panic!("healthz never turned 503:\n{}", d.log()));
    assert_eq!(status, 503);
    assert!(body.starts_with("channel down failing: "), "{body}");
    let m = get(port, "/metrics").1;
    assert!(
        sample(&m, "tocsin_delivery_retries_total{channel=\"down\"}") >= 1.0,
        "{m}"
    );
    assert!(sample(&m, "tocsin_outbox_pending") >= 1.0, "{m}");

    // The channel fixed by a reload: only it restarts, and its successor
    // delivers what waited in the outbox.
    let hook = Receiver::start();
    let config = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(&format!("http://127.0.0.1:{refused}/x"), &hook.url("/x"));
    std::fs::write(&s.config, config).unwrap();
    d.signal("HUP");
    d.wait_log("reloaded", T);
    assert!(
        d.log()
            .contains("restarted_sources=[] restarted_channels=[\"down\"]"),
        "{}",
        d.log()
    );
    let r = hook.wait_requests(1, T);
    assert_eq!(r[0].json()["rule"], "cn");
    wait_for(T, || (get(port, "/healthz").0 == 200).then_some(()))
        .unwrap_or_else(|| panic!("still unhealthy: {:?}", get(port, "/healthz")));
    let log = d.stop();
    // The journal stamps lines itself: they start with the level.
    for l in log.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                .iter()
                .any(|lvl| l.trim_start().starts_with(lvl)),
            "a line with more than the level first: {l:?}"
        );
    }
}

#[test]
fn a_changed_log_source_restarts_where_it_was_without_repeating_lines() {
    let s = setup(
        "rules:\n  - { id: any, source: news, when: { field: title, exists: true }, notify: [audit] }\n",
        "",
    );
    let news = s.dir.join("data/news.jsonl");
    std::fs::write(&news, "").unwrap();
    let config = std::fs::read_to_string(&s.config).unwrap().replace(
        "sources:\n",
        "sources:\n  - { name: news, type: file, path: data/news.jsonl, mode: log }\n",
    );
    std::fs::write(&s.config, &config).unwrap();
    let d = Daemon::start(&s.config, &[]);
    // Lines go on arriving while the source's config changes: the reload
    // stops the old reader mid-stream and starts the new one after the old
    // one's last batch is committed.
    for i in 0..20 {
        append(&news, &format!("{{\"title\": \"line {i}\"}}\n"));
        if i == 10 {
            std::fs::write(
                &s.config,
                config.replace("mode: log }", "mode: log, fields: { desk: wire } }"),
            )
            .unwrap();
            d.signal("HUP");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    d.wait_log("reloaded", T);
    assert!(
        d.log().contains("restarted_sources=[\"news\"]"),
        "{}",
        d.log()
    );
    // The old reader stops at the end of the read it is in; the new one
    // starts where it got to. Lines written from then on are the new one's.
    let mut n = 0;
    let applied = wait_for(T, || {
        append(&news, &format!("{{\"title\": \"after {n}\"}}\n"));
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
        let v = read_jsonl(&s.alerts);
        v.iter()
            .any(|a| a["fields"]["desk"] == "wire")
            .then_some(())
    });
    assert!(
        applied.is_some(),
        "the new config never applied:\n{}",
        d.log()
    );
    wait_count(&s.alerts, 20 + n);
    std::thread::sleep(Duration::from_millis(300));
    let v = read_jsonl(&s.alerts);
    let mut titles: Vec<&str> = v
        .iter()
        .map(|a| a["fields"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles.len(), 20 + n, "each line once: {titles:?}");
    titles.sort();
    titles.dedup();
    assert_eq!(titles.len(), 20 + n, "no line twice");
    d.stop();
}

#[test]
fn send_test_to_a_log_channel_writes_the_line_it_sends() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(BIN)
        .args(["send-test", "console", "-c"])
        .arg(root.join("config/tocsin.yaml"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("sent to console: written to the log"),
        "{stdout}"
    );
    assert!(
        stderr.contains("Test message from tocsin to channel console")
            && stderr.contains("tocsin-send-test"),
        "the line appears where the log goes: {stderr}"
    );
}

/// An in-place write that pauses half-way leaves a file that is valid but
/// short (here: without `jp`). The reload waits for the write to end
/// (50 ms without an event, or the file closed) and reads the file once,
/// whole: `jp` keeps its state, and nothing is dropped.
#[test]
fn a_rules_file_written_in_place_with_a_pause_is_read_once_whole() {
    let s = setup(
        &format!("rules:\n{}{}", rule("cn", "CN", 157), rule("jp", "JP", 50)),
        "",
    );
    let csv = s.dir.join("data/tariffs.csv");
    let d = Daemon::start(&s.config, &[]);
    write_by_rename(&csv, &table(&[("CN", 100), ("JP", 60)]));
    assert_eq!(wait_count(&s.alerts, 1)[0]["rule"], "jp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&s.rules).unwrap();
        f.write_all(format!("rules:\n{}", rule("cn", "CN", 157)).as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(30));
        f.write_all(format!("{}{}", rule("jp", "JP", 50), rule("jp-high", "JP", 55)).as_bytes())
            .unwrap();
    }
    assert!(d.wait_log("reloaded", T), "{}", d.log());
    std::thread::sleep(Duration::from_millis(300));
    let log = d.log();
    assert_eq!(log.matches("reloaded").count(), 1, "{log}");
    assert!(
        !log.contains("dropping the state"),
        "the half-written file was applied: {log}"
    );
    write_by_rename(&csv, &table(&[("CN", 100), ("JP", 61)]));
    let v = wait_count(&s.alerts, 2);
    assert_eq!(v[1]["rule"], "jp-high", "{v:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read_jsonl(&s.alerts).len(), 2, "jp did not fire again");
}

/// One rule over every partner: a rate above 150 fires.
const HIGH: &str = "rules:\n  - { id: high, source: tariffs, when: { field: rate_pct, above: 150 }, notify: [audit] }\n";

/// Runs the real logrotate, forced, on the shipped config with its path
/// moved to `dir` (and `nocreate` swapped for `extra`, when given).
fn logrotate(dir: &Path, swap: Option<&str>) {
    let shipped = std::fs::read_to_string("config/tocsin.logrotate").unwrap();
    assert!(shipped.contains("/var/log/tocsin/*.jsonl"));
    let mut conf = shipped.replace(
        "/var/log/tocsin/",
        &format!("{}/", dir.join("out").display()),
    );
    if let Some(other) = swap {
        conf = conf.replace("nocreate", other);
    }
    let path = dir.join("logrotate.conf");
    std::fs::write(&path, conf).unwrap();
    let bin = ["/usr/sbin/logrotate", "logrotate"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok()
        })
        .expect("logrotate (apt-get install logrotate; .ci/run installs it)");
    succeed(
        std::process::Command::new(bin)
            .arg("-f")
            .arg("-s")
            .arg(dir.join("logrotate.state"))
            .arg(&path),
    );
}

#[test]
fn a_file_channel_goes_on_in_a_new_file_after_logrotate() {
    let s = setup(HIGH, "");
    let d = Daemon::start(&s.config, &[]);
    let csv = s.dir.join("data/tariffs.csv");
    write_by_rename(&csv, &table(&[("CN", 160), ("JP", 100)]));
    wait_count(&s.alerts, 1);

    // As shipped: the file is moved away, and the next alert makes it anew.
    logrotate(&s.dir, None);
    let rotated = s.dir.join("out/alerts.jsonl.1");
    assert_eq!(read_jsonl(&rotated).len(), 1);
    assert!(!s.alerts.exists());
    write_by_rename(&csv, &table(&[("CN", 160), ("JP", 170)]));
    let v = wait_count(&s.alerts, 1);
    assert_eq!(v[0]["key"], "JP");

    // copytruncate, as some sites have it: the same file, emptied, goes on
    // from its start.
    logrotate(&s.dir, Some("copytruncate"));
    assert_eq!(std::fs::metadata(&s.alerts).unwrap().len(), 0);
    write_by_rename(&csv, &table(&[("CN", 100), ("JP", 170)]));
    let v = wait_count(&s.alerts, 1);
    assert_eq!(
        (v[0]["key"].as_str(), v[0]["state"].as_str()),
        (Some("CN"), Some("resolved"))
    );
    let bytes = std::fs::read(&s.alerts).unwrap();
    assert_eq!(bytes[0], b'{', "no hole before the line");
    d.stop();
    assert_eq!(
        read_jsonl(&rotated).len(),
        1,
        "nothing more went to the rotated file"
    );
}

#[test]
fn a_backup_taken_while_the_daemon_writes_is_a_whole_store_with_the_alerts_sent() {
    let s = setup(HIGH, "");
    let d = Daemon::start(&s.config, &[]);
    let csv = s.dir.join("data/tariffs.csv");
    write_by_rename(&csv, &table(&[("CN", 160), ("JP", 170)]));
    wait_count(&s.alerts, 2);
    // The daemon goes on writing while the copy is taken.
    let mut rows: Vec<(String, u32)> = (0..500).map(|i| (format!("P{i}"), 100 + i % 3)).collect();
    rows.extend([("CN".to_string(), 160), ("JP".to_string(), 170)]);
    let refs: Vec<(&str, u32)> = rows.iter().map(|(p, r)| (p.as_str(), *r)).collect();
    write_by_rename(&csv, &table(&refs));
    let copy = s.dir.join("backup/state-copy.db");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let (code, text) = tocsin(&s.config, &["backup", copy.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with("copied ") && text.contains("state-copy.db"),
        "{text}"
    );
    d.stop();

    // A store of its own: no -wal beside it, and `alerts` reads it.
    assert!(!s.dir.join("backup/state-copy.db-wal").exists());
    let conf = s.dir.join("copy.yaml");
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &conf,
        text.replace("state: state.db", "state: backup/state-copy.db"),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["alerts", "--json", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let firing: Vec<&str> = (doc["firing"].as_array().unwrap().iter())
        .filter_map(|f| f["key"].as_str())
        .collect();
    assert!(firing.contains(&"CN") && firing.contains(&"JP"), "{doc}");

    // The store itself, or a store that is not there, is refused by name.
    let store = s.dir.join("state.db");
    let (code, text) = tocsin(&s.config, &["backup", store.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(text.contains("is the store itself"), "{text}");
}
