//! Man pages and shell completion as a package installs them: the pages
//! render with the real `man`, and bash completes the real commands.

mod common;

use std::process::Command;

use common::BIN;

const COMMANDS: [&str; 10] = [
    "run",
    "check",
    "eval",
    "test",
    "schema",
    "send-test",
    "silence",
    "backup",
    "alerts",
    "completions",
];

#[test]
fn a_man_page_per_command_renders_with_man() {
    let dir = tempfile::tempdir().unwrap();
    common::succeed(Command::new(BIN).arg("man").arg(dir.path()));
    for page in
        std::iter::once("tocsin".to_string()).chain(COMMANDS.iter().map(|c| format!("tocsin-{c}")))
    {
        let path = dir.path().join(format!("{page}.1"));
        assert!(path.exists(), "no {page}.1");
        let shown = Command::new("man")
            .env("MANWIDTH", "100")
            .env("MAN_KEEP_FORMATTING", "0")
            .arg("-l")
            .arg(&path)
            .output()
            .expect("man (apt-get install man-db; .ci/run installs it)");
        // Bold and underline as a terminal gets them (`N\x08N`), undone.
        let raw = String::from_utf8_lossy(&shown.stdout).to_string();
        let mut text = String::new();
        for c in raw.chars() {
            if c == '\u{8}' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        assert!(
            shown.status.success(),
            "{page}: {}",
            String::from_utf8_lossy(&shown.stderr)
        );
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{page}:\n{text}"
        );
    }
    let main = std::fs::read_to_string(dir.path().join("tocsin.1")).unwrap();
    assert!(main.contains(".TH tocsin 1"), "{main}");
    assert!(main.contains("Alerting daemon"), "{main}");
}

#[test]
fn bash_completes_the_commands_and_their_options() {
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    let complete = |words: &str, cword: usize| -> Vec<String> {
        let probe = format!(
            "{script}\nCOMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE=\"{words}\"; COMP_POINT=${{#COMP_LINE}}; _tocsin tocsin \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let out = Command::new("bash").arg("-c").arg(&probe).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let all = complete("tocsin ''", 1);
    for c in COMMANDS {
        assert!(all.iter().any(|w| w == c), "{c} not offered: {all:?}");
    }
    assert_eq!(complete("tocsin ba", 1), ["backup"]);
    let alerts = complete("tocsin alerts --f", 2);
    assert!(
        alerts.contains(&"--firing".to_string()) && alerts.contains(&"--failed".to_string()),
        "{alerts:?}"
    );
}

#[test]
fn zsh_and_fish_completion_name_the_commands() {
    for shell in ["zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for c in ["backup", "send-test", "silence"] {
            assert!(text.contains(c), "{shell} lacks {c}");
        }
    }
}
