//! The systemd unit as shipped: `systemd-analyze verify` accepts it, and
//! its exposure under `systemd-analyze security` stays low.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tocsin");

/// The shipped unit with ExecStart pointing at the binary under test
/// (verify checks that the programs it runs exist).
fn unit_under_test() -> (tempfile::TempDir, std::path::PathBuf) {
    let unit = std::fs::read_to_string("config/tocsin.service").unwrap();
    assert!(unit.contains("/usr/local/bin/tocsin"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tocsin.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/tocsin", BIN)).unwrap();
    (dir, path)
}

fn analyze(args: &[&str], unit: &std::path::Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze (apt-get install systemd; .ci/run installs it)")
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let (_dir, unit) = unit_under_test();
    let out = analyze(&["verify"], &unit);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.trim().is_empty(),
        "verify warns about the unit:\n{stderr}"
    );
}

#[test]
fn the_unit_exposure_is_low() {
    let (_dir, unit) = unit_under_test();
    let out = analyze(&["security", "--offline=yes"], &unit);
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for tocsin.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(level <= 2.0, "exposure {level}:\n{text}");
}
