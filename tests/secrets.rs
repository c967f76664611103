//! Secrets stay secret: a daemon run at `RUST_LOG=trace` with credentials
//! in URL paths, user-info, query strings, headers, an SMTP password and a
//! webhook signing secret, a failing source and failing deliveries. None of
//! them may appear in the log, `/healthz`, `/metrics`, the store's bytes,
//! `alerts --json` or any notification sent.

mod common;

use std::time::Duration;

use common::*;

const PATH_TOKEN: &str = "pathTOKEN0123456789abcdefXYZ";
const USER_PW: &str = "us3rInfoPassw0rdValue";
const QUERY_KEY: &str = "qu3ryKeyValueSecret";
const HEADER: &str = "h3aderValueSecretXYZ";
const SMTP_PW: &str = "smtpPassw0rdSecretValue";
const HOOK_SECRET: &str = "hookSigningSecretValue42";
const HOOK_TOKEN: &str = "hookTOKEN9876543210zyxwvuQ";

fn d_wait_closed(log: &str) {
    assert!(
        log.contains("source=\"down\"") || log.contains("source=down"),
        "the unreachable source's failure is logged:\n{}",
        log.lines()
            .filter(|l| l.contains("down"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn no_secret_reaches_logs_endpoints_store_history_or_payloads() {
    let r = Receiver::start();
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let port = free_port();
    // The source's server answers 500: it fails, and says so in the logs,
    // in `source-unhealthy` and on /healthz.
    for _ in 0..200 {
        r.answers.lock().unwrap().push_back(500);
    }
    let source_url = format!(
        "http://reader:{USER_PW}@{}/api/{PATH_TOKEN}/rates.json?api_key={QUERY_KEY}&page=2",
        r.addr
    );
    let hook_url = format!("http://{}/hooks/{HOOK_TOKEN}?token={QUERY_KEY}", r.addr);
    std::fs::write(
        p.join("tocsin.yaml"),
        format!(
            r#"
state: state.db
rules: rules.yaml
http: {{ listen: "127.0.0.1:{port}" }}
sources:
  - name: rates
    type: http
    url: "{source_url}"
    every: 1s
    key: [partner]
    fail_after: 1
    headers: {{ X-Api-Key_env: TEST_HEADER, X-Team: compliance }}
  - name: down
    type: feed
    url: "http://reader:{USER_PW}@127.0.0.1:{closed}/feeds/{PATH_TOKEN}.xml?token={QUERY_KEY}"
    every: 1s
    fail_after: 1
channels:
  - name: hook
    type: webhook
    url: "{hook_url}"
    secret_env: TEST_HOOK_SECRET
  - name: mail
    type: email
    smtp: {{ host: 127.0.0.1, port: {}, tls: none, username: alerts, password_env: TEST_SMTP_PW }}
    from: tocsin@example.org
    to: [ops@example.org]
health: {{ notify: [hook, mail] }}
"#,
            smtp.addr.port(),
            closed = free_port(),
        ),
    )
    .unwrap();
    std::fs::write(p.join("rules.yaml"), "rules: []\n").unwrap();
    let env = [
        ("RUST_LOG", "trace"),
        ("TEST_HEADER", HEADER),
        ("TEST_HOOK_SECRET", HOOK_SECRET),
        ("TEST_SMTP_PW", SMTP_PW),
    ];
    let d = Daemon::start(&p.join("tocsin.yaml"), &env);
    // The unhealthy alert reaches the hook (and the 500s make its first
    // tries fail, stored as errors).
    let hook_path = format!("/hooks/{HOOK_TOKEN}");
    wait_for(Duration::from_secs(30), || {
        r.requests
            .lock()
            .unwrap()
            .iter()
            .any(|q| q.path == hook_path && q.header("webhook-signature").is_some())
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no notification at the hook:\n{}", d.log()));
    // The mail channel tries too (the test server offers no AUTH, so the
    // send fails, and its error is stored).
    d.wait_log("channel=mail", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500));
    // The source sent its header: the secret was used, not lost.
    assert!(
        r.requests
            .lock()
            .unwrap()
            .iter()
            .any(|q| q.header("x-api-key") == Some(HEADER))
    );

    let mut seen: Vec<(&str, String)> = vec![
        ("log", d.log()),
        ("stdout", d.stdout()),
        ("/healthz", get(port, "/healthz").1),
        ("/metrics", get(port, "/metrics").1),
    ];
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .arg("-c")
            .arg(p.join("tocsin.yaml"))
            .envs(env)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    seen.push(("alerts --json", cli(&["alerts", "--json"])));
    seen.push(("alerts --failed", cli(&["alerts", "--failed"])));
    d.stop();
    let mut store = Vec::new();
    for f in ["state.db", "state.db-wal"] {
        store.extend(std::fs::read(p.join(f)).unwrap_or_default());
    }
    seen.push(("store", String::from_utf8_lossy(&store).to_string()));
    for q in r
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|q| q.path == hook_path)
    {
        seen.push((
            "webhook payload",
            String::from_utf8_lossy(&q.body).to_string(),
        ));
    }
    for m in smtp.mails.lock().unwrap().iter() {
        seen.push(("mail", format!("{m:?}")));
    }
    // A connection error quotes the URL: masked.
    d_wait_closed(&seen[0].1);
    // The source's failure is reported with its URL masked.
    let log = &seen[0].1;
    assert!(
        log.contains(&format!(
            "http://***@{}/api/***/rates.json?api_key=***&page=2",
            r.addr
        )),
        "{}",
        log.lines()
            .filter(|l| l.contains("rates"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for (what, text) in &seen {
        for secret in [
            PATH_TOKEN,
            USER_PW,
            QUERY_KEY,
            HEADER,
            SMTP_PW,
            HOOK_SECRET,
            HOOK_TOKEN,
        ] {
            assert!(
                !text.contains(secret),
                "{secret} appears in {what}:\n{}",
                text.lines()
                    .filter(|l| l.contains(secret))
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}
