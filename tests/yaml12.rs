//! YAML 1.2 values in every kind of file: `NO` (Norway), `n`, `Y`, `on`,
//! `off`, `yes`, `null`, `~` and codes such as `007` and `8505` are text,
//! as written, in rules (`where`, `in`, lists, field names), the config's
//! constant `fields:`, YAML data files and rule-test records and
//! expectations. Only `true` and `false` are booleans.

mod common;

use std::path::Path;
use std::process::Command;

use common::BIN;
use serde_json::Value;

const CONFIG: &str = r#"
state: state.db
rules: rules.yaml
sources:
  - name: codes
    type: file
    path: codes.csv
    key: [country, code]
    fields: { flag: NO, region: on, zero: 007, none: ~ }
  - name: codes-yaml
    type: file
    path: codes.yaml
    key: [country, code]
    fields: { flag: NO, region: on, zero: 007, none: ~ }
channels:
  - { name: audit, type: file, path: alerts.jsonl }
"#;

const RULES: &str = r#"
lists:
  answers: [yes, no, y, n, on, off, Y, N, null, ~]
rules:
  - id: norway
    source: [codes, codes-yaml]
    where: { country: NO }
    notify: [audit]
  - id: code-007
    source: [codes, codes-yaml]
    when: { field: code, in: [007, 8505] }
    notify: [audit]
  - id: answer-listed
    source: [codes, codes-yaml]
    when: { field: answer, in: $answers }
    notify: [audit]
  - id: field-n
    source: [codes, codes-yaml]
    when: { field: n, exists: true }
    notify: [audit]
  - id: flag-constant
    source: [codes, codes-yaml]
    where: { flag: NO, region: on, zero: 007, none: ~ }
    notify: [audit]
  - id: equals-code
    source: [codes, codes-yaml]
    when: { field: code, equals: 007 }
    notify: [audit]
"#;

const CSV: &str = "country,code,answer,n\nNO,007,on,x\nNO,7,maybe,\nSE,8505,Y,\nSE,0008,~,\n";

const YAML: &str = "\
- { country: NO, code: 007, answer: on, n: x }
- { country: NO, code: 7, answer: maybe }
- { country: SE, code: 8505, answer: Y }
- { country: SE, code: 0008, answer: ~ }
";

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("tocsin.yaml"), CONFIG).unwrap();
    std::fs::write(p.join("rules.yaml"), RULES).unwrap();
    std::fs::write(p.join("codes.csv"), CSV).unwrap();
    std::fs::write(p.join("codes.yaml"), YAML).unwrap();
    dir
}

fn eval(dir: &Path, source: &str, file: &str) -> Vec<Value> {
    let out = Command::new(BIN)
        .args(["eval", "-c"])
        .arg(dir.join("tocsin.yaml"))
        .args(["--source", source])
        .arg(dir.join(file))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn fired(n: &[Value], rule: &str) -> Vec<String> {
    let mut keys: Vec<String> = n
        .iter()
        .filter(|v| v["rule"] == rule)
        .map(|v| v["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

/// `answered`: the keys whose `answer` is in the list of words.
fn check_notifications(n: &[Value], answered: &[&str]) {
    assert_eq!(fired(n, "norway"), ["NO|007", "NO|7"]);
    // `007` is the code "007", not the number 7.
    assert_eq!(fired(n, "code-007"), ["NO|007", "SE|8505"]);
    assert_eq!(fired(n, "equals-code"), ["NO|007"]);
    assert_eq!(fired(n, "answer-listed"), answered);
    // A field named `n`, not `false`.
    assert_eq!(fired(n, "field-n"), ["NO|007"]);
    assert_eq!(fired(n, "flag-constant").len(), 4);
    let first = n.iter().find(|v| v["rule"] == "norway").unwrap();
    let f = &first["fields"];
    assert_eq!(f["flag"], "NO", "{first}");
    assert_eq!(f["region"], "on", "{first}");
    assert_eq!(f["zero"], "007", "{first}");
    assert_eq!(f["country"], "NO", "{first}");
}

#[test]
fn rules_config_and_csv_read_words_and_codes_as_text() {
    let dir = setup();
    let n = eval(dir.path(), "codes", "codes.csv");
    check_notifications(&n, &["NO|007", "SE|0008", "SE|8505"]);
}

#[test]
fn yaml_data_files_read_words_and_codes_as_text() {
    let dir = setup();
    let n = eval(dir.path(), "codes-yaml", "codes.yaml");
    // In a data file, written by a program, `~` is null: no answer.
    check_notifications(&n, &["NO|007", "SE|8505"]);
    let seven = n
        .iter()
        .find(|v| v["rule"] == "norway" && v["key"] == "NO|7")
        .unwrap();
    // A number written as one stays a number.
    assert_eq!(seven["fields"]["code"], 7, "{seven}");
}

#[test]
fn booleans_are_only_true_and_false() {
    let dir = setup();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - id: r\n    source: codes\n    when: { field: n, exists: yes }\n    resolve: on\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(dir.path().join("tocsin.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("rules.yaml:4:31: error: exists must be true or false, found `yes`"),
        "{text}"
    );
    assert!(
        text.contains("rules.yaml:5:14: error: resolve must be true or false, found `on`"),
        "{text}"
    );
}

#[test]
fn rule_test_records_and_expectations_read_words_and_codes_as_text() {
    let dir = setup();
    let p = dir.path();
    std::fs::write(
        p.join("test.yaml"),
        r#"
rules: [rules.yaml]
sources:
  - { name: codes, type: file, mode: table, key: [country, code], fields: { flag: NO } }
  - { name: codes-yaml, type: file, mode: table, key: [country, code] }
tests:
  - name: words and codes as written
    steps:
      - at: 2026-04-01T00:00:00Z
        source: codes
        records: [{country: NO, code: 007, answer: off, n: y}]
        expect:
          - { rule: norway, key: "NO|007", fields: { country: "NO", code: "007", answer: "off", n: "y", flag: "NO" } }
          - { rule: code-007, key: NO|007 }
          - { rule: equals-code, key: NO|007 }
          - { rule: answer-listed, key: NO|007 }
          - { rule: field-n, key: NO|007 }
  - name: a code is not its number
    steps:
      - at: 2026-04-01T00:00:00Z
        source: codes
        records: [{country: SE, code: 7}]
        expect: [{ rule: code-007, key: "SE|007" }]
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("test")
        .arg(p.join("test.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("  PASS  words and codes as written\n"),
        "{text}"
    );
    // The second test expects what does not happen: `7` is not `007`.
    assert!(
        text.contains("  FAIL  a code is not its number\n"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
}
