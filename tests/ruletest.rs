//! `tocsin test`: the shipped rule tests pass; a wrong expectation fails
//! with an expected-versus-actual report; an unusable file is exit 2 with
//! `file:line:col`.

mod common;

use std::path::Path;
use std::process::Command;

use common::BIN;

fn test(files: &[&str]) -> (i32, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BIN)
        .arg("test")
        .args(files.iter().map(|f| root.join(f)))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace(&format!("{}/", root.display()), "");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_shipped_rule_tests_pass() {
    let mut files: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/tests"))
            .unwrap()
            .map(|e| format!("rules/tests/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
    files.sort();
    assert!(files.len() >= 2);
    let refs: Vec<&str> = files.iter().map(String::as_str).collect();
    let (code, out) = test(&refs);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("  PASS  crossing 157% fires once, then resolves\n"),
        "{out}"
    );
    assert!(!out.contains("FAIL"), "{out}");
    // Every shipped rule file has tests.
    for rules in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap() {
        let p = rules.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                files.iter().any(|f| f.ends_with(&name)),
                "rules/{name} has no tests under rules/tests/"
            );
        }
    }
}

#[test]
fn a_wrong_expectation_fails_with_expected_and_actual() {
    let (code, out) = test(&["tests/fixtures/ruletest/wrong.yaml"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("  PASS  passes\n"), "{out}");
    assert!(out.contains("  FAIL  expects the wrong state\n"), "{out}");
    assert!(out.contains("step 2 at 2026-04-09T00:00:00Z:"), "{out}");
    let table = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("expected"))
        .nth(1)
        .unwrap_or_else(|| panic!("no table:\n{out}"));
    assert!(
        table.contains("{rule: us-cn-tariff-above-157, key: CN|8505, state: resolved}")
            && table.contains("{rule: us-cn-tariff-above-157, key: CN|8505, state: firing}"),
        "expected and actual side by side:\n{out}"
    );
    assert!(out.contains("2 tests, 1 passed, 1 failed"), "{out}");
}

#[test]
fn an_unusable_file_is_exit_2_with_its_position() {
    let (code, out) = test(&["tests/fixtures/ruletest/unusable.yaml"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(
            "tests/fixtures/ruletest/unusable.yaml:7:13: error: `9 April 2026` is not a time"
        ),
        "{out}"
    );
    assert!(
        out.contains("unusable.yaml:8:17: error: unknown source `us-tarifs`"),
        "{out}"
    );
    assert!(out.contains("did you mean `us-tariffs`?"), "{out}");
    // A failing file and an unusable one: the unusable wins.
    let (code, _) = test(&[
        "tests/fixtures/ruletest/wrong.yaml",
        "tests/fixtures/ruletest/unusable.yaml",
    ]);
    assert_eq!(code, 2);
}

#[test]
fn time_passing_fires_absent_ends_for_and_empties_count_windows() {
    let (code, out) = test(&["tests/fixtures/ruletest/time.yaml"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 tests, 1 passed, 0 failed"), "{out}");
}

#[test]
fn a_folder_runs_every_test_file_in_it_and_an_empty_one_is_an_error() {
    let (code, out) = test(&["rules/tests"]);
    assert_eq!(code, 0, "{out}");
    let (_, whole) = test(&["rules/tests/statements.yaml", "rules/tests/tariffs.yaml"]);
    assert_eq!(out, whole, "a folder runs its files in name order");
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("notes.txt"), "not a test").unwrap();
    let out = Command::new(BIN)
        .arg("test")
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no *.yaml test files in this folder"),
        "{text}"
    );
}
