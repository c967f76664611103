//! `tocsin eval`: every record new, in document order, notifications as
//! JSON lines, nothing sent or written; bad lines named and skipped.

mod common;

use std::process::Command;

use common::BIN;

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("tocsin.yaml"),
        r#"
state: state.db
rules: rules.yaml
sources:
  - { name: tariffs, type: file, path: tariffs.csv, key: [partner, product] }
  - { name: news, type: file, path: news.jsonl, mode: log, fields: { issuer: wire } }
channels:
  - { name: audit, type: file, path: alerts.jsonl }
"#,
    )
    .unwrap();
    std::fs::write(
        p.join("rules.yaml"),
        r#"
rules:
  - id: cn-above-157
    source: tariffs
    where: { partner: CN }
    when: { field: rate_pct, above: 157 }
    notify: [audit]
  - id: export-controls
    source: news
    when: { text: [title], any: ["export control*"] }
    summary: "{{ issuer }}: {{ title }}"
    notify: [audit]
"#,
    )
    .unwrap();
    dir
}

fn eval(dir: &std::path::Path, source: &str, file: &str) -> (i32, Vec<serde_json::Value>, String) {
    eval_files(dir, source, &[file])
}

/// `tocsin eval` of `files` in order: exit code, notifications, stderr.
fn eval_files(
    dir: &std::path::Path,
    source: &str,
    files: &[&str],
) -> (i32, Vec<serde_json::Value>, String) {
    let out = Command::new(BIN)
        .args(["eval", "-c"])
        .arg(dir.join("tocsin.yaml"))
        .args(["--source", source])
        .args(files.iter().map(|f| dir.join(f)))
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.code().unwrap(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tables_and_logs_in_document_order_with_nothing_written() {
    let dir = setup();
    let p = dir.path();
    std::fs::write(
        p.join("sample.csv"),
        "partner,product,rate_pct\nCN,2,200\nJP,1,300\nCN,1,\"158%\"\nCN,3,100\n",
    )
    .unwrap();
    let (code, n, err) = eval(p, "tariffs", "sample.csv");
    assert_eq!(code, 0, "{err}");
    let keys: Vec<&str> = n.iter().map(|v| v["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["CN|2", "CN|1"]);
    assert!(
        n.iter()
            .all(|v| v["state"] == "firing" && v["prev"].is_null())
    );

    let mut sample =
        b"{\"title\": \"New export controls\"}\n{\"title\": \"weather\"}\n{not json\n".to_vec();
    sample.extend_from_slice(b"{\"title\": \"export controls \xff\"}\n");
    sample.extend_from_slice(b"{\"title\": \"export control list\", \"issuer\": \"METI\"}\n");
    std::fs::write(p.join("sample.jsonl"), sample).unwrap();
    let (code, n, err) = eval(p, "news", "sample.jsonl");
    assert_eq!(code, 1, "a bad line makes the exit code 1");
    assert!(err.contains("sample.jsonl:3: invalid JSON"), "{err}");
    assert!(
        err.contains("sample.jsonl:4: not valid UTF-8 (byte 28 of the line)"),
        "{err}"
    );
    let summaries: Vec<&str> = n.iter().map(|v| v["summary"].as_str().unwrap()).collect();
    assert_eq!(
        summaries,
        ["wire: New export controls", "METI: export control list"]
    );
    assert_eq!(n[0]["key"], "sample.jsonl:1");
    assert_eq!(
        n[1]["fields"]["issuer"], "METI",
        "a record's own field wins over the source's constant"
    );

    assert!(!p.join("alerts.jsonl").exists(), "eval sends nothing");
    assert!(!p.join("state.db").exists(), "eval writes nothing");
}

#[test]
fn an_unknown_source_is_named() {
    let dir = setup();
    std::fs::write(dir.path().join("x.csv"), "a\n1\n").unwrap();
    let (code, _, err) = eval(dir.path(), "tarifs", "x.csv");
    assert_eq!(code, 2);
    assert!(
        err.contains("no source named `tarifs`") && err.contains("tariffs, news"),
        "{err}"
    );
}

#[test]
fn a_feed_source_parses_the_file_as_a_feed_document() {
    // The shipped demo: its feed through the allied export-control rule.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BIN)
        .arg("eval")
        .arg("-c")
        .arg(root.join("config/tocsin.yaml"))
        .args(["--source", "meti-news"])
        .arg(root.join("config/demo/meti-news.xml"))
        .arg(root.join("tests/feeds/broken.xml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The export-control item fires; the webinar (`none`) and the trade
    // statistics do not.
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["key"], "meti-2026-0409-001");
    assert_eq!(lines[0]["fields"]["issuer"], "METI");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.xml: not a valid feed"), "{stderr}");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_feed_alert_is_summarised_by_its_title_and_its_body_reads_as_text() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tocsin.yaml"),
        "rules: rules.yaml\nsources:\n  - { name: news, type: feed, url: \"https://meti.example.jp/rss\", every: 10m }\nchannels:\n  - { name: out, type: log }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - { id: controls, title: Export controls, source: news, when: { text: [title, summary], any: [\"export control*\"] }, notify: [out] }\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["eval", "-c"])
        .arg(dir.path().join("tocsin.yaml"))
        .args(["--source", "news"])
        .arg(root.join("config/demo/meti-news.xml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = (stdout.lines())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["key"] == "meti-2026-0409-001")
        .expect("the item alerts");
    // Not `Export controls: meti-2026-0409-001`.
    assert_eq!(
        v["summary"],
        "Review of export controls on rare earth magnets"
    );
    let body = v["body"].as_str().unwrap();
    assert!(
        body.contains(
            "summary = METI announces a review of export controls on rare earth permanent magnets."
        ),
        "{body}"
    );
    for absent in ["<p>", "<b>", "&lt;", "= null", "= []"] {
        assert!(!body.contains(absent), "body has {absent:?}:\n{body}");
    }
    // Evidence: what the phrase found, in which field, as written there.
    let e = &v["evidence"];
    assert_eq!(
        e["matched"],
        serde_json::json!([
            {"field": "title", "phrase": "export control*", "text": "export controls"},
            {"field": "summary", "phrase": "export control*", "text": "export controls"},
        ])
    );
    assert_eq!(e["location"], serde_json::Value::Null);
    assert!(e["rules_sha256"].is_string(), "{e}");
}

#[test]
fn the_evidence_of_a_log_alert_names_its_line_and_what_matched() {
    let dir = setup();
    let rules = std::fs::read_to_string(dir.path().join("rules.yaml")).unwrap()
        + "  - id: hs-code\n    source: news\n    when: { text: [title], regex: \"HS [0-9]{4}\" }\n    notify: [audit]\n";
    std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
    let line = r#"{"title": "New EXPORT-CONTROLS on HS 8505 magnets"}"#;
    std::fs::write(
        dir.path().join("news.jsonl"),
        format!("{{\"title\": \"weather\"}}\n{line}\n"),
    )
    .unwrap();
    let (code, v, err) = eval(dir.path(), "news", "news.jsonl");
    assert_eq!(code, 0, "{err}");
    assert_eq!(v.len(), 2, "{v:?}");
    let news = dir.path().join("news.jsonl");
    for n in &v {
        let e = &n["evidence"];
        assert_eq!(e["location"], format!("{}:2", news.display()));
        assert_eq!(
            e["document_sha256"],
            tocsin::record::sha256_hex(line.as_bytes())
        );
        assert!(e["url"].is_null() && e["http"].is_null(), "{e}");
    }
    let matched: Vec<&serde_json::Value> = v.iter().map(|n| &n["evidence"]["matched"][0]).collect();
    assert_eq!(
        matched[0],
        &serde_json::json!({"field": "title", "phrase": "export control*", "text": "EXPORT-CONTROLS"})
    );
    assert_eq!(
        matched[1],
        &serde_json::json!({"field": "title", "regex": "HS [0-9]{4}", "text": "HS 8505"})
    );
}

#[test]
fn explain_shows_each_condition_with_its_values() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("tariffs.csv");
    std::fs::write(
        &csv,
        "partner,product,description,rate_pct\nCN,8505,Magnets,160\nJP,8505,Magnets,12\n",
    )
    .unwrap();
    let statements = dir.path().join("statements.jsonl");
    std::fs::write(
        &statements,
        "{\"country\": \"US\", \"title\": \"A webinar on export controls\"}\n",
    )
    .unwrap();
    let run = |source: &str, file: &std::path::Path| {
        let out = Command::new(BIN)
            .arg("eval")
            .arg("-c")
            .arg(root.join("config/tocsin.yaml"))
            .args(["--explain", "--source", source])
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run("us-tariffs", &csv);
    assert!(
        out.contains(
            "── us-tariffs row CN|8505\n   ✓ us-cn-tariff-above-157  → notifies: firing CN|8505\n"
        ),
        "{out}"
    );
    assert!(out.contains("✓ partner = \"CN\", equals \"CN\""), "{out}");
    assert!(out.contains("✓ rate_pct = 160 > 157"), "{out}");
    assert!(out.contains("✗ rate_pct = 12 > 157"), "{out}");
    assert!(
        out.contains("✗ rate_pct: no previous row to compare with"),
        "{out}"
    );
    let out = run("statements", &statements);
    assert!(out.contains("✗ country = \"US\", in $allies"), "{out}");
    assert!(
        out.contains("✓ text: matched \"export control*\" in title"),
        "{out}"
    );
    assert!(
        out.contains("✗ text: found excluded \"webinar\" in title"),
        "{out}"
    );
    assert!(
        out.contains("✗ allied-export-control-statement  → does not hold"),
        "{out}"
    );
}

#[test]
fn phrases_read_words_and_explain_shows_the_words_of_a_near_miss() {
    let dir = setup();
    let p = dir.path();
    std::fs::write(
        p.join("rules.yaml"),
        r#"
rules:
  - id: rare-earth-exact
    source: news
    when: { text: [title], any: ["rare earth"] }
    notify: [audit]
  - id: china
    source: news
    when: { text: [title], all: ["China's", "export control*"] }
    notify: [audit]
"#,
    )
    .unwrap();
    std::fs::write(
        p.join("news.jsonl"),
        concat!(
            "{\"title\": \"Rare earthenware exports\"}\n",
            "{\"title\": \"China’s export-control regime\"}\n",
            "{\"title\": \"RARE–EARTH rules\"}\n",
            "{\"title\": \"China's export figures\"}\n",
        ),
    )
    .unwrap();
    let (code, n, err) = eval(p, "news", "news.jsonl");
    assert_eq!(code, 0, "{err}");
    let fired: Vec<(&str, &str)> = n
        .iter()
        .map(|v| (v["rule"].as_str().unwrap(), v["key"].as_str().unwrap()))
        .collect();
    assert_eq!(
        fired,
        [
            ("china", "news.jsonl:2"),
            ("rare-earth-exact", "news.jsonl:3")
        ]
    );
    let out = Command::new(BIN)
        .args(["eval", "--explain", "-c"])
        .arg(p.join("tocsin.yaml"))
        .args(["--source", "news"])
        .arg(p.join("news.jsonl"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("✗ text: none of [\"rare earth\"] in title\n")
            && out.contains("words as read in title: rare earthenware exports\n"),
        "{out}"
    );
    assert!(
        out.contains("✗ text: \"export control*\" not found (all)\n")
            && out.contains("words as read in title: china's export figures\n"),
        "a missed `all` phrase shows them too:\n{out}"
    );
}

#[test]
fn table_files_are_successive_versions_compared_in_order() {
    let dir = setup();
    let p = dir.path();
    std::fs::write(
        p.join("rules.yaml"),
        r#"
rules:
  - id: jump
    source: tariffs
    when: { field: rate_pct, increased_by: 10 }
    notify: [audit]
  - id: cn-above-157
    source: tariffs
    where: { partner: CN }
    when: { field: rate_pct, above: 157 }
    notify: [audit]
"#,
    )
    .unwrap();
    std::fs::write(
        p.join("v1.csv"),
        "partner,product,rate_pct\nCN,8505,150\nJP,8505,15\n",
    )
    .unwrap();
    std::fs::write(p.join("v2.csv"), "partner,product,rate_pct\nCN,8505,160\n").unwrap();
    let (code, n, err) = eval_files(p, "tariffs", &["v1.csv", "v2.csv"]);
    assert_eq!(code, 0, "{err}");
    let seen: Vec<(&str, &str, &str)> = n
        .iter()
        .map(|v| {
            (
                v["rule"].as_str().unwrap(),
                v["key"].as_str().unwrap(),
                v["state"].as_str().unwrap(),
            )
        })
        .collect();
    // v1: every row new, no previous value; v2: CN up by 10 (from v1's
    // 150) and above 157; JP gone.
    assert_eq!(
        seen,
        [
            ("jump", "CN|8505", "firing"),
            ("cn-above-157", "CN|8505", "firing")
        ],
        "{n:?}"
    );
    assert_eq!(n[0]["prev"]["rate_pct"], "150");
}

#[test]
fn explain_reports_a_bad_log_line_and_goes_on() {
    let dir = setup();
    let p = dir.path();
    std::fs::write(
        p.join("news.jsonl"),
        "{\"title\": \"export controls one\"}\n{not json\n{\"title\": \"export controls two\"}\n",
    )
    .unwrap();
    for explain in [false, true] {
        let mut cmd = Command::new(BIN);
        cmd.args(["eval", "-c"]).arg(p.join("tocsin.yaml"));
        if explain {
            cmd.arg("--explain");
        }
        let out = cmd
            .args(["--source", "news"])
            .arg(p.join("news.jsonl"))
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("news.jsonl:2: invalid JSON"), "{stderr}");
        assert!(
            !stderr.contains("previous content stays in force"),
            "a log line is skipped, not a table refused: {stderr}"
        );
        for key in ["news.jsonl:1", "news.jsonl:3"] {
            assert!(stdout.contains(key), "explain={explain}: {stdout}");
        }
    }
}

#[test]
fn a_table_with_a_stray_quote_or_a_duplicate_key_is_an_error() {
    let dir = setup();
    let p = dir.path();
    std::fs::write(
        p.join("quote.csv"),
        "partner,product,rate_pct\nCN,1,\"200\nJP,1,300\n",
    )
    .unwrap();
    std::fs::write(
        p.join("dup.csv"),
        "partner,product,rate_pct\nCN,1,200\nCN,1,100\n",
    )
    .unwrap();
    let (code, n, err) = eval(p, "tariffs", "quote.csv");
    assert_eq!((code, n.len()), (1, 0), "{err}");
    assert!(
        err.contains("quote.csv:2: a quoted field opened here is never closed"),
        "{err}"
    );
    let (code, n, err) = eval(p, "tariffs", "dup.csv");
    assert_eq!((code, n.len()), (1, 0), "{err}");
    assert!(
        err.contains("dup.csv:3: lines 2 and 3 have the same key `CN|1`"),
        "{err}"
    );
}
