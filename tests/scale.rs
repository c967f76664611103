//! Files at the scale users have: rules files of 100,000 rules load, and a
//! file past the YAML reading limits is refused with its place, the limit
//! it broke and how to split it.

mod common;

use std::fmt::Write as _;
use std::path::Path;

use common::tocsin;

fn check(config: &Path) -> (i32, String) {
    tocsin(config, &["check"])
}

fn setup(rules: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tocsin.yaml"),
        "state: state.db\nrules: rules.yaml\nsources:\n  - { name: rates, type: file, path: rates.csv, key: [partner, product] }\nchannels:\n  - { name: out, type: file, path: out.jsonl }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
    dir
}

#[test]
fn a_file_of_100000_rules_loads() {
    let mut rules = String::from("rules:\n");
    for i in 0..100_000 {
        writeln!(
            rules,
            "  - {{ id: r{i}, source: rates, where: {{ partner: P{} }}, when: {{ field: rate, above: {} }}, notify: [out] }}",
            i % 200,
            i % 1000
        )
        .unwrap();
    }
    let dir = setup(&rules);
    let (code, out) = check(&dir.path().join("tocsin.yaml"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("100000 rules") || out.contains("100,000 rules"),
        "{out}"
    );
}

#[test]
fn a_file_past_the_value_limit_is_refused_with_its_place_and_how_to_split_it() {
    // 4,000,001 list entries: one past the limit of values in a file.
    let mut rules = String::from("lists:\n  codes: [");
    rules.reserve(9_000_000);
    for _ in 0..4_000_001 {
        rules.push_str("a,");
    }
    rules.push_str("a]\nrules: []\n");
    let dir = setup(&rules);
    let (code, out) = check(&dir.path().join("tocsin.yaml"));
    assert_eq!(code, 1, "{out}");
    let first = out.lines().next().unwrap_or_default();
    assert!(first.contains("rules.yaml:2:"), "not located: {first}");
    assert!(first.contains("more than 4,000,000 YAML values"), "{first}");
    assert!(out.contains("split it into several files"), "{out}");
    assert!(!out.contains("budget breached"), "{out}");
}

#[test]
fn a_file_nested_too_deep_is_refused_with_its_place() {
    let mut rules = String::from("rules:\n  - id: deep\n    source: rates\n    when: ");
    for _ in 0..70 {
        rules.push_str("{ all: [");
    }
    rules.push_str("{ field: rate, above: 1 }");
    for _ in 0..70 {
        rules.push_str("] }");
    }
    rules.push_str("\n    notify: [out]\n");
    let dir = setup(&rules);
    let (code, out) = check(&dir.path().join("tocsin.yaml"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("rules.yaml:4:"), "not located: {out}");
    assert!(
        out.contains("nests mappings and lists more than 64 deep"),
        "{out}"
    );
}
