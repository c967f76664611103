//! `tocsin schema`: the schemas accept every shipped config and rules file
//! and reject the invalid fixtures (checked with the jsonschema crate).

mod common;

use std::path::Path;
use std::process::Command;

use common::BIN;

fn schema(which: &str) -> jsonschema::Validator {
    let out = Command::new(BIN).args(["schema", which]).output().unwrap();
    assert!(out.status.success());
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        s["description"].as_str().is_some_and(|d| !d.is_empty()),
        "descriptions from the doc comments"
    );
    jsonschema::validator_for(&s).unwrap()
}

fn json_of(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    tocsin::yaml::parse(&text)
        .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.message))
        .to_json()
}

fn errors(v: &jsonschema::Validator, path: &Path) -> Vec<String> {
    v.iter_errors(&json_of(path))
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_schemas_accept_the_shipped_files_and_reject_the_invalid_fixtures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = schema("config");
    let rules = schema("rules");
    let e = errors(&config, &root.join("config/tocsin.yaml"));
    assert!(e.is_empty(), "config/tocsin.yaml: {e:?}");
    let mut n = 0;
    for dir in [
        "rules",
        "tests/fixtures/ruletest",
        "tests/fixtures/warnings",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.extension().is_some_and(|x| x == "yaml") && name.contains("rules")
                || dir == "rules" && p.is_file()
            {
                let e = errors(&rules, &p);
                assert!(e.is_empty(), "{}: {e:?}", p.display());
                n += 1;
            }
        }
    }
    assert!(n >= 4, "{n} rule files checked");
    // Invalid: an unknown source type and an unknown key.
    let e = errors(
        &config,
        &root.join("tests/fixtures/check/bad-config/tocsin.yaml"),
    );
    assert!(!e.is_empty());
    let e = errors(
        &rules,
        &root.join("tests/fixtures/check/bad-rules/rules/a.yaml"),
    );
    assert!(e.iter().any(|m| m.contains("sevrity")), "{e:?}");
}

#[test]
fn the_test_schema_accepts_the_shipped_rule_tests_and_rejects_a_misspelt_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let test = schema("test");
    let mut n = 0;
    for dir in ["rules/tests", "tests/fixtures/ruletest"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            // The fixtures hold rules beside their tests, and a file made
            // unusable on purpose.
            if name.contains("rules") || name.contains("unusable") {
                continue;
            }
            let e = errors(&test, &p);
            assert!(e.is_empty(), "{}: {e:?}", p.display());
            n += 1;
        }
    }
    assert!(n >= 4, "{n} test files checked");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "rules: [r.yaml]\ntests:\n  - name: t\n    steps:\n      - at: 2026-01-01T00:00:00Z\n        expects: []\n",
    )
    .unwrap();
    let e = errors(&test, &bad);
    assert!(e.iter().any(|m| m.contains("expects")), "{e:?}");
}

/// `tocsin schema rules | head -1`: the reader is gone before tocsin
/// writes (the read end is closed as soon as it starts), and tocsin ends
/// quietly instead of panicking on the closed pipe.
#[test]
fn a_reader_that_stops_early_gets_no_panic() {
    let mut child = Command::new(BIN)
        .args(["schema", "rules"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}
