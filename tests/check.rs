//! `tocsin check` on invalid fixtures: every problem of every file, each at
//! its `file:line:col`, with the offending line, a caret and a hint. The
//! expected output sits beside each fixture in `expected.txt`.

mod common;

use std::path::Path;
use std::process::Command;

use common::BIN;

fn check(config: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn invalid_fixtures_report_each_problem_at_its_position() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check");
    let mut cases = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let expected = std::fs::read_to_string(dir.join("expected.txt")).unwrap();
        let (code, out) = check(&dir.join("tocsin.yaml"));
        let out = out.replace(&format!("{}/", dir.display()), "$DIR/");
        assert_eq!(code, 1, "{}: exit code\n{out}", dir.display());
        assert_eq!(out, expected, "{}: output differs", dir.display());
        cases += 1;
    }
    assert!(cases >= 4);
}

#[test]
fn some_problems_in_detail() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check");
    let (_, out) = check(&root.join("bad-rules/tocsin.yaml"));
    let out = out.replace(&format!("{}/", root.join("bad-rules").display()), "");
    // Unknown key, with a did-you-mean and the offending line under a caret.
    assert!(out.contains("rules/a.yaml:5:5: error: unknown key `sevrity` in rule\n 5 |     sevrity: critical\n   |     ^^^^^^^\n   = hint: did you mean `severity`?\n"), "{out}");
    // References to undefined sources, channels and lists, with suggestions.
    assert!(
        out.contains("rules/a.yaml:14:13: error: unknown source `us-tarifs`"),
        "{out}"
    );
    assert!(out.contains("did you mean `us-tariffs`?"), "{out}");
    assert!(out.contains("did you mean `compliance-mail`?"), "{out}");
    assert!(out.contains("did you mean `$allies`?"), "{out}");
    assert!(
        out.contains("rules/b.yaml:2:9: error: rule id `unknown-key` is already used"),
        "{out}"
    );
    assert!(out.contains("15 problems found"), "{out}");
}

#[test]
fn the_shipped_config_and_rules_pass() {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tocsin.yaml");
    let (code, out) = check(&cfg);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": ok: "), "{out}");
}

#[test]
fn a_missing_config_names_the_path_and_the_fix() {
    let (code, out) = check(Path::new("/nonexistent/tocsin.yaml"));
    assert_eq!(code, 1);
    assert!(
        out.contains("/nonexistent/tocsin.yaml: error: cannot read the config file"),
        "{out}"
    );
    assert!(out.contains("hint: pass the config with -c PATH"), "{out}");
}

#[test]
fn warnings_are_printed_and_exit_0() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/warnings");
    let expected = std::fs::read_to_string(dir.join("expected.txt")).unwrap();
    let (code, out) = check(&dir.join("tocsin.yaml"));
    let out = out.replace(&format!("{}/", dir.display()), "$DIR/");
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, expected);
    // Unused list, a field the table's header lacks (with a suggestion),
    // a rule that notifies nobody.
    assert!(out.contains("warning: list `unused` is not used by any rule"));
    assert!(
        !out.contains("cel-only"),
        "a list read by an expression is used: {out}"
    );
    assert!(out.contains("reads `rate`, but $DIR/t.csv has no such column"));
    assert!(out.contains("did you mean `rate_pct`?"));
    assert!(out.contains("rule `b` notifies no channel"));
    assert!(
        out.contains("$DIR/tocsin.yaml:3:38: warning: source `later`: $DIR/incoming/*.csv matches no file now"),
        "{out}"
    );
    // The shipped demo has none.
    let (code, out) = check(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tocsin.yaml"));
    assert_eq!(code, 0);
    assert!(!out.contains("warning"), "{out}");
}

/// An expression of 50,000 terms: `check` answers at once with its place,
/// and `run` refuses the rules with the same message instead of aborting
/// (a stack overflow would kill it by a signal, with no exit code).
#[test]
fn a_huge_expression_is_refused_with_its_place_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("tocsin.yaml"),
        "state: state.db\nrules: rules.yaml\nsources:\n  - { name: log, type: file, path: log.jsonl, mode: log }\nchannels:\n  - { name: out, type: log }\n",
    )
    .unwrap();
    let expr = vec!["a"; 50_000].join(" + ");
    std::fs::write(
        p.join("rules.yaml"),
        format!("rules:\n  - id: huge\n    source: log\n    when: {{ expr: \"{expr} > 0\" }}\n    notify: [out]\n"),
    )
    .unwrap();
    std::fs::write(p.join("log.jsonl"), "").unwrap();
    let t = std::time::Instant::now();
    let (code, out) = check(&p.join("tocsin.yaml"));
    let took = t.elapsed();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "rules.yaml:4:4116: error: the expression is 200001 bytes long, more than 4096"
        ),
        "{}",
        &out[..out.len().min(400)]
    );
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    // The line is shown around the place, not whole.
    assert!(out.len() < 1000, "{out}");
    assert!(out.contains(" 4 | …") && out.contains("a + a…\n"), "{out}");
    let run = Command::new(BIN)
        .arg("run")
        .arg("-c")
        .arg(p.join("tocsin.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{}", &err[..err.len().min(400)]);
    assert!(
        err.contains("the expression is 200001 bytes long"),
        "{}",
        &err[..err.len().min(400)]
    );
}

/// Every secret the config names must be there and not empty: `check`
/// says so at the key (`--offline` only warns), and `run` refuses to start.
#[test]
fn missing_and_empty_secrets_are_errors_of_check() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("empty"), "\n").unwrap();
    std::fs::write(
        p.join("tocsin.yaml"),
        format!(
            "state: state.db\nrules: rules.yaml\nsources:\n  - {{ name: log, type: file, path: log.jsonl, mode: log }}\nchannels:\n  - {{ name: hook, type: webhook, url: \"https://hooks.example.org/x\", secret_env: TOCSIN_TEST_UNSET_VAR }}\n  - {{ name: hook2, type: webhook, url: \"https://hooks.example.org/y\", secret_file: {} }}\n",
            p.join("empty").display()
        ),
    )
    .unwrap();
    std::fs::write(p.join("rules.yaml"), "rules: []\n").unwrap();
    std::fs::write(p.join("log.jsonl"), "").unwrap();
    let (code, out) = check(&p.join("tocsin.yaml"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("tocsin.yaml:6:82: error: `secret_env`: environment variable TOCSIN_TEST_UNSET_VAR is not set"),
        "{out}"
    );
    assert!(
        out.contains("error: `secret_file`: secret file") && out.contains("is empty"),
        "{out}"
    );
    let offline = Command::new(BIN)
        .args(["check", "--offline", "-c"])
        .arg(p.join("tocsin.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&offline.stdout);
    assert_eq!(offline.status.code(), Some(0), "{text}");
    assert!(text.contains("warning: `secret_env`"), "{text}");
    let run = Command::new(BIN)
        .arg("run")
        .arg("-c")
        .arg(p.join("tocsin.yaml"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("TOCSIN_TEST_UNSET_VAR is not set"));
}
