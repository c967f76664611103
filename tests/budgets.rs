//! Evaluation budgets with the real daemon: a template that loops for ever
//! and an expression whose comprehensions would run for minutes are cut
//! off, counted per rule in `/metrics` and logged once a minute, while the
//! other rules keep firing.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn runaway_templates_and_expressions_are_cut_off_and_the_rest_keeps_firing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let port = free_port();
    std::fs::write(
        p.join("tocsin.yaml"),
        format!(
            r#"
state: state.db
rules: rules.yaml
http: {{ listen: "127.0.0.1:{port}" }}
sources:
  - {{ name: news, type: file, path: news.jsonl, mode: log }}
channels:
  - {{ name: audit, type: file, path: alerts.jsonl }}
"#
        ),
    )
    .unwrap();
    std::fs::write(
        p.join("rules.yaml"),
        r#"
rules:
  - id: loops
    source: news
    when: { text: [title], any: [alert] }
    summary: "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}"
    notify: [audit]
  - id: comprehensions
    source: news
    when: { expr: "items.exists(a, items.exists(b, items.exists(c, a + b + c < 0)))" }
    notify: [audit]
  - id: plain
    source: news
    when: { text: [title], any: [alert] }
    notify: [audit]
"#,
    )
    .unwrap();
    std::fs::write(p.join("news.jsonl"), "").unwrap();
    let d = Daemon::start(&p.join("tocsin.yaml"), &[]);
    let items: Vec<u32> = (0..1000).collect();
    let line = |title: &str| format!("{}\n", serde_json::json!({"title": title, "items": items}));
    let t = Instant::now();
    append(&p.join("news.jsonl"), &line("alert one"));
    let alerts = p.join("alerts.jsonl");
    let v = wait_for(Duration::from_secs(20), || {
        let v = read_jsonl(&alerts);
        (v.len() >= 2).then_some(v)
    })
    .unwrap_or_else(|| panic!("no alerts:\n{}", d.log()));
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "cut off early, not after minutes: {:?}",
        t.elapsed()
    );
    let mut rules: Vec<&str> = v.iter().map(|n| n["rule"].as_str().unwrap()).collect();
    rules.sort();
    assert_eq!(rules, ["loops", "plain"], "{v:?}");
    let looped = v.iter().find(|n| n["rule"] == "loops").unwrap();
    assert!(
        looped["body"]
            .as_str()
            .unwrap()
            .contains("the summary template failed: ran past its budget"),
        "{looped}"
    );
    assert!(
        !looped["summary"].as_str().unwrap().contains("xxx"),
        "the default summary stands in: {looped}"
    );

    // A second record: counted again, logged once within the minute.
    append(&p.join("news.jsonl"), &line("alert two"));
    wait_for(Duration::from_secs(20), || {
        (read_jsonl(&alerts).len() >= 4).then_some(())
    })
    .unwrap_or_else(|| panic!("no second alerts:\n{}", d.log()));
    let m = wait_for(Duration::from_secs(10), || {
        let m = get(port, "/metrics").1;
        (sample(
            &m,
            "tocsin_evaluation_budget_exceeded_total{rule=\"comprehensions\"}",
        ) >= 2.0)
            .then_some(m)
    })
    .unwrap_or_else(|| panic!("not counted:\n{}", get(port, "/metrics").1));
    assert_eq!(
        sample(
            &m,
            "tocsin_evaluation_budget_exceeded_total{rule=\"loops\"}"
        ),
        2.0,
        "{m}"
    );
    let log = d.stop();
    assert_eq!(
        log.matches("rule comprehensions: its expression or a template ran past")
            .count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("rule loops: its expression").count(),
        1,
        "{log}"
    );
}
