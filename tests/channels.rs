//! Email over a real SMTP conversation and a signed webhook to a real HTTP
//! receiver, both on loopback, from the daemon as a process.

mod common;

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use common::*;

const T: Duration = Duration::from_secs(15);
const SECRET_B64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn setup(smtp: &SmtpServer, hook: &Receiver) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("tocsin.yaml"),
        format!(
            r#"
state: state.db
rules: rules.yaml
sources:
  - {{ name: us-tariffs, type: file, path: tariffs.csv, key: [partner, product] }}
channels:
  - name: compliance-mail
    type: email
    smtp: {{ host: 127.0.0.1, port: {}, tls: none }}
    from: "tocsin <alerts@example.org>"
    to: [trade-compliance@example.org]
  - name: ops-hook
    type: webhook
    url: {}
    format: json
    secret_env: TOCSIN_HOOK_SECRET
"#,
            smtp.addr.port(),
            hook.url("/tocsin")
        ),
    )
    .unwrap();
    std::fs::write(
        p.join("rules.yaml"),
        r#"
rules:
  - id: us-cn-tariff-above-157
    title: US tariff on Chinese goods above 157%
    severity: critical
    labels: { team: compliance }
    source: us-tariffs
    where: { partner: CN }
    when: { field: rate_pct, above: 157 }
    notify: [compliance-mail, ops-hook]
    summary: "{{ partner }} {{ product }} tariff now {{ rate_pct }}% ({{ note }})"
"#,
    )
    .unwrap();
    std::fs::write(
        p.join("tariffs.csv"),
        "partner,product,rate_pct,note\nCN,8505,145,ok\n",
    )
    .unwrap();
    let cfg = p.join("tocsin.yaml");
    (dir, cfg)
}

/// Verifies a Standard Webhooks signature independently of the daemon.
fn verify(secret_b64: &str, id: &str, ts: &str, body: &[u8], header: &str) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret_b64)
        .unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    header
        .split(' ')
        .any(|sig| sig.strip_prefix("v1,") == Some(expected.as_str()))
}

#[test]
fn email_and_signed_webhook_carry_the_same_notification() {
    let smtp = SmtpServer::start();
    let hook = Receiver::start();
    let (dir, cfg) = setup(&smtp, &hook);
    let secret = format!("whsec_{SECRET_B64}");
    let d = Daemon::start(&cfg, &[("TOCSIN_HOOK_SECRET", &secret)]);
    write_by_rename(
        &dir.path().join("tariffs.csv"),
        "partner,product,rate_pct,note\nCN,8505,160,up\n",
    );

    let reqs = hook.wait_requests(1, T);
    let r = &reqs[0];
    assert_eq!(r.path, "/tocsin");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let p = r.json();
    let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "rule",
            "title",
            "severity",
            "state",
            "key",
            "summary",
            "body",
            "source",
            "labels",
            "fields",
            "prev",
            "link",
            "started_at",
            "at",
            "evidence"
        ]
    );
    // The evidence: the row's file and line, the version's hash, when it
    // was read, the rules in force.
    let e = &p["evidence"];
    let csv = dir.path().join("tariffs.csv");
    assert_eq!(e["location"], format!("{}:2", csv.display()));
    let bytes = std::fs::read(&csv).unwrap();
    assert_eq!(e["document_sha256"], tocsin::record::sha256_hex(&bytes));
    let read_at = chrono::DateTime::parse_from_rfc3339(e["read_at"].as_str().unwrap()).unwrap();
    assert!(
        (chrono::Utc::now() - read_at.to_utc()).num_seconds() < 60,
        "{e}"
    );
    let rules = e["rules_sha256"].as_str().unwrap();
    assert!(
        rules.len() == 64 && rules.bytes().all(|b| b.is_ascii_hexdigit()),
        "{e}"
    );
    assert_eq!(p["rule"], "us-cn-tariff-above-157");
    assert_eq!(p["severity"], "critical");
    assert_eq!(p["state"], "firing");
    assert_eq!(p["key"], "CN|8505");
    assert_eq!(p["summary"], "CN 8505 tariff now 160% (up)");
    assert_eq!(p["source"], "us-tariffs");
    assert_eq!(p["labels"]["team"], "compliance");
    assert_eq!(p["fields"]["rate_pct"], "160");
    assert_eq!(p["prev"]["rate_pct"], "145");
    assert!(p["link"].is_null());
    let id = p["id"].as_str().unwrap();
    assert_eq!(r.header("webhook-id"), Some(id));
    let ts = r.header("webhook-timestamp").unwrap();
    let age = chrono::Utc::now().timestamp() - ts.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "timestamp {ts} is {age}s old");
    let sig = r.header("webhook-signature").expect("signed");
    assert!(
        verify(SECRET_B64, id, ts, &r.body, sig),
        "signature {sig} does not verify"
    );
    assert!(
        !verify("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", id, ts, &r.body, sig),
        "a wrong key must not verify"
    );

    let mails = smtp.wait_mails(1, T);
    let m = &mails[0];
    assert_eq!(m.from, "<alerts@example.org>");
    assert_eq!(m.to, ["<trade-compliance@example.org>"]);
    assert_eq!(
        m.header("Subject").as_deref(),
        Some("[FIRING critical] CN 8505 tariff now 160% (up)")
    );
    assert_eq!(m.header("Message-ID"), Some(format!("<{id}@tocsin>")));
    // A plain-text part and an HTML alternative, as a mail reader parses
    // them.
    let mime = mailparse::parse_mail(m.data.as_bytes()).expect("a MIME message");
    assert_eq!(mime.ctype.mimetype, "multipart/alternative");
    let part = |t: &str| {
        let p = (mime.subparts.iter())
            .find(|p| p.ctype.mimetype == t)
            .unwrap_or_else(|| panic!("no {t} part"));
        p.get_body().unwrap()
    };
    let text = part("text/plain");
    for needle in [
        format!("Alert id: {id}"),
        "Rule: us-cn-tariff-above-157 (".into(),
        "Source: us-tariffs".into(),
        "Key: CN|8505".into(),
        "rate_pct = 160 (was 145)".into(),
        "Labels: team=compliance".into(),
        format!("  location: {}:2", csv.display()),
        format!("  document_sha256: {}", tocsin::record::sha256_hex(&bytes)),
        "note = up".into(),
    ] {
        assert!(text.contains(&needle), "text lacks {needle:?}:\n{text}");
    }
    // Each value once (the evidence's hashes and the alert id, hex that
    // may hold any digits, left out of the count).
    let said = text.split("Evidence:").next().unwrap();
    for once in ["us-tariffs", "CN|8505", "160", "compliance"] {
        assert_eq!(
            said.matches(once).count(),
            1,
            "{once:?} more than once:\n{text}"
        );
    }
    let html = part("text/html");
    for needle in [
        "<th align=\"left\">Changed</th><td>rate_pct: 145 &rarr; 160</td>",
        "<td>us-tariffs</td>",
        "<td>CN|8505</td>",
        "team=compliance",
    ] {
        assert!(html.contains(needle), "html lacks {needle:?}:\n{html}");
    }

    // Falling back below resolves, on both channels.
    write_by_rename(
        &dir.path().join("tariffs.csv"),
        "partner,product,rate_pct,note\nCN,8505,100,down\n",
    );
    let mails = smtp.wait_mails(2, T);
    assert_eq!(
        mails[1].header("Subject").as_deref(),
        Some("[RESOLVED] CN 8505 tariff now 100% (down)")
    );
    let reqs = hook.wait_requests(2, T);
    assert_eq!(reqs[1].json()["state"], "resolved");

    let log = d.stop();
    assert!(!log.contains(SECRET_B64), "the secret leaked into the log");
}

#[test]
fn a_summary_with_cr_lf_cannot_add_an_email_header() {
    let smtp = SmtpServer::start();
    let hook = Receiver::start();
    let (dir, cfg) = setup(&smtp, &hook);
    let d = Daemon::start(&cfg, &[("TOCSIN_HOOK_SECRET", "plain-secret")]);
    write_by_rename(
        &dir.path().join("tariffs.csv"),
        "partner,product,rate_pct,note\nCN,8505,160,\"x\r\nBcc: victim@example.org\r\nX-Evil: 1\"\n",
    );
    let mails = smtp.wait_mails(1, T);
    let m = &mails[0];
    assert_eq!(
        m.to,
        ["<trade-compliance@example.org>"],
        "no extra recipient"
    );
    assert!(m.header("Bcc").is_none(), "{}", m.data);
    assert!(m.header("X-Evil").is_none(), "{}", m.data);
    let subject = m.header("Subject").unwrap();
    assert!(
        subject.starts_with("[FIRING critical] CN 8505 tariff now 160% (x"),
        "{subject}"
    );
    assert!(
        subject.contains("Bcc: victim@example.org"),
        "kept as text: {subject}"
    );
    d.stop();
}

#[test]
fn smtp_tls_none_is_refused_for_a_remote_host() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tocsin.yaml");
    std::fs::write(
        &cfg,
        "rules: r.yaml\nchannels:\n  - name: m\n    type: email\n    smtp: { host: smtp.example.org, tls: none }\n    from: a@example.org\n    to: [b@example.org]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("r.yaml"), "rules: []\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("tocsin.yaml:5:42: error: `tls: none` sends mail and passwords in clear"),
        "{text}"
    );
}
