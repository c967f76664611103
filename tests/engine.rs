//! The engine with a simulated clock: per-key state machine (`for`,
//! `repeat`, `resolve`), conditions and their edge cases, templates.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};

use tocsin::config::Config;
use tocsin::engine::{Engine, compile};
use tocsin::notification::{AlertState, Notification};
use tocsin::record::{Fields, Record, RecordKind};
use tocsin::rules::RuleSet;

const CONFIG: &str = r#"
rules: rules.yaml
sources:
  - { name: tariffs, type: file, path: t.csv, key: [partner, product] }
  - { name: news, type: file, path: n.jsonl, mode: log }
channels:
  - { name: out, type: log }
"#;

fn engine(rules: &str) -> Engine {
    let config = Config::parse(Path::new("/cfg/tocsin.yaml"), CONFIG).unwrap();
    let (set, diags) = RuleSet::parse([(Path::new("/cfg/rules.yaml"), rules)]);
    assert!(diags.is_empty(), "{}", tocsin::diag::render_all(&diags));
    Engine::new(compile(&config, &set).unwrap())
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap()
}

fn fields(v: Value) -> Fields {
    v.as_object().unwrap().clone()
}

fn row(v: Value) -> Record {
    let f = fields(v);
    let key = format!(
        "{}|{}",
        f["partner"].as_str().unwrap(),
        f["product"].as_str().unwrap()
    );
    Record {
        source: Arc::from("tariffs"),
        key,
        fields: f.into(),
        prev: None,
        observed: t0(),
        kind: RecordKind::Row,
        doc: None,
        line: 0,
    }
}

/// Feeds rows the way the table source does: with the previous row of the key.
struct Table {
    rows: std::collections::HashMap<String, tocsin::record::Row>,
}

impl Table {
    fn new() -> Table {
        Table {
            rows: Default::default(),
        }
    }
    fn set(&mut self, e: &mut Engine, v: Value, now: DateTime<Utc>) -> Vec<Notification> {
        let mut r = row(v);
        r.prev = self.rows.insert(r.key.clone(), r.fields.clone());
        let mut out = Vec::new();
        e.observe(&r, now, &mut out);
        out
    }
    fn remove(&mut self, e: &mut Engine, key: &str, now: DateTime<Utc>) -> Vec<Notification> {
        let f = self.rows.remove(key).unwrap();
        let r = Record {
            source: Arc::from("tariffs"),
            key: key.into(),
            fields: f,
            prev: None,
            observed: now,
            kind: RecordKind::Removed,
            doc: None,
            line: 0,
        };
        let mut out = Vec::new();
        e.observe(&r, now, &mut out);
        out
    }
}

fn event(v: Value, line: usize) -> Record {
    Record {
        source: Arc::from("news"),
        key: format!("n.jsonl:{line}"),
        fields: fields(v).into(),
        prev: None,
        observed: t0(),
        kind: RecordKind::Event,
        doc: None,
        line: line as u32,
    }
}

fn observe(e: &mut Engine, r: &Record, now: DateTime<Utc>) -> Vec<Notification> {
    let mut out = Vec::new();
    e.observe(r, now, &mut out);
    out
}

fn tick(e: &mut Engine, now: DateTime<Utc>) -> Vec<Notification> {
    let mut out = Vec::new();
    e.tick(now, &mut out);
    out
}

fn states(v: &[Notification]) -> Vec<(String, AlertState)> {
    v.iter().map(|n| (n.rule.to_string(), n.state)).collect()
}

#[test]
fn default_texts_say_what_happened_line_by_line() {
    // Two fields compared as numbers; the body shows each with what it was.
    let mut e = engine(
        r#"
rules:
  - id: two
    title: Rate and quota
    severity: warning
    source: tariffs
    when: { all: [ { field: rate_pct, above: 150 }, { field: quota, below: 10 } ] }
    notify: [out]
  - id: plain
    title: Any Mexican row
    source: tariffs
    where: { partner: MX }
    notify: [out]
"#,
    );
    let mut t = Table::new();
    t.set(
        &mut e,
        json!({"partner": "CN", "product": "8505", "rate_pct": 145, "quota": 5}),
        t0(),
    );
    let n = t.set(
        &mut e,
        json!({"partner": "CN", "product": "8505", "rate_pct": 160.5, "quota": 5, "link": "https://x.test/8505"}),
        t0() + Duration::hours(1),
    );
    assert_eq!(n.len(), 1);
    assert_eq!(
        n[0].summary,
        "Rate and quota: CN|8505 (rate_pct = 160.5, quota = 5)"
    );
    assert_eq!(
        n[0].body,
        "Rate and quota (firing, warning)\n\
         Condition: rate_pct above 150 and quota below 10\n  \
         rate_pct = 160.5 (was 145)\n  \
         quota = 5\n\
         Source: tariffs\n\
         Key: CN|8505\n\
         At: 2026-04-01T01:00:00Z\n\
         Link: https://x.test/8505\n"
    );
    let n = t.set(
        &mut e,
        json!({"partner": "CN", "product": "8505", "rate_pct": 140, "quota": 5}),
        t0() + Duration::hours(2),
    );
    assert_eq!(
        n[0].summary,
        "Rate and quota: CN|8505 (rate_pct = 140, quota = 5)"
    );
    assert_eq!(
        n[0].body,
        "Rate and quota (resolved, warning)\n\
         Condition: rate_pct above 150 and quota below 10\n  \
         rate_pct = 140 (was 160.5)\n  \
         quota = 5\n\
         Source: tariffs\n\
         Key: CN|8505\n\
         Since: 2026-04-01T01:00:00Z\n\
         At: 2026-04-01T02:00:00Z\n"
    );
    // Nothing compared as a number: the summary names the key alone, and
    // the body lists every field.
    let n = t.set(
        &mut e,
        json!({"partner": "MX", "product": "0101", "note": "new"}),
        t0() + Duration::hours(3),
    );
    assert_eq!(n[0].summary, "Any Mexican row: MX|0101");
    assert_eq!(
        n[0].body,
        "Any Mexican row (firing, warning)\n\
         Condition: partner equals MX\n  \
         partner = MX\n  \
         product = 0101\n  \
         note = new\n\
         Source: tariffs\n\
         Key: MX|0101\n\
         At: 2026-04-01T03:00:00Z\n"
    );
}

const CN_157: &str = r#"
rules:
  - id: cn
    title: US tariff on Chinese goods above 157%
    severity: critical
    source: tariffs
    where: { partner: CN }
    when: { field: rate_pct, above: 157 }
    notify: [out]
"#;

#[test]
fn crossing_fires_once_then_resolves() {
    let mut e = engine(CN_157);
    let mut t = Table::new();
    assert!(
        t.set(
            &mut e,
            json!({"partner": "CN", "product": "8505", "rate_pct": 145}),
            t0()
        )
        .is_empty()
    );
    let n = t.set(
        &mut e,
        json!({"partner": "CN", "product": "8505", "rate_pct": 160}),
        t0() + Duration::days(8),
    );
    assert_eq!(states(&n), [("cn".into(), AlertState::Firing)]);
    assert_eq!(n[0].key, "CN|8505");
    assert_eq!(n[0].prev.as_ref().unwrap()["rate_pct"], 145);
    assert_eq!(
        n[0].summary,
        "US tariff on Chinese goods above 157%: CN|8505 (rate_pct = 160)"
    );
    assert!(
        n[0].body
            .contains("Condition: partner equals CN and rate_pct above 157"),
        "{}",
        n[0].body
    );
    assert!(
        t.set(
            &mut e,
            json!({"partner": "CN", "product": "8505", "rate_pct": 170}),
            t0() + Duration::days(9)
        )
        .is_empty()
    );
    // A partner the rule does not watch changes nothing.
    assert!(
        t.set(
            &mut e,
            json!({"partner": "JP", "product": "8505", "rate_pct": 500}),
            t0() + Duration::days(9)
        )
        .is_empty()
    );
    let n = t.set(
        &mut e,
        json!({"partner": "CN", "product": "8505", "rate_pct": 157}),
        t0() + Duration::days(10),
    );
    assert_eq!(
        states(&n),
        [("cn".into(), AlertState::Resolved)],
        "equal to the threshold is not above it"
    );
    assert_eq!(n[0].started_at, t0() + Duration::days(8));
    assert_eq!(n[0].at, t0() + Duration::days(10));
    assert_eq!(e.active(), 0);
}

#[test]
fn ids_are_stable_per_notification_and_differ_between_them() {
    let mut a = engine(CN_157);
    let mut b = engine(CN_157);
    let (mut ta, mut tb) = (Table::new(), Table::new());
    let x = ta.set(
        &mut a,
        json!({"partner": "CN", "product": "1", "rate_pct": 200}),
        t0(),
    );
    let y = tb.set(
        &mut b,
        json!({"partner": "CN", "product": "1", "rate_pct": 200}),
        t0(),
    );
    assert_eq!(x[0].id, y[0].id, "the same notification has the same id");
    let z = ta.set(
        &mut a,
        json!({"partner": "CN", "product": "1", "rate_pct": 1}),
        t0(),
    );
    assert_ne!(x[0].id, z[0].id);
}

#[test]
fn removed_rows_resolve_and_resolve_false_keeps_quiet() {
    let mut e = engine(&format!(
        "{CN_157}  - {{ id: quiet, source: tariffs, when: {{ field: rate_pct, above: 157 }}, resolve: false }}\n"
    ));
    let mut t = Table::new();
    let n = t.set(
        &mut e,
        json!({"partner": "CN", "product": "1", "rate_pct": 200}),
        t0(),
    );
    assert_eq!(
        states(&n),
        [
            ("cn".into(), AlertState::Firing),
            ("quiet".into(), AlertState::Firing)
        ]
    );
    let n = t.remove(&mut e, "CN|1", t0() + Duration::hours(1));
    assert_eq!(states(&n), [("cn".into(), AlertState::Resolved)]);
    assert_eq!(
        n[0].fields["rate_pct"], 200,
        "a removed row reports its last values"
    );
}

#[test]
fn for_waits_and_ends_pending_without_a_word() {
    let rules = CN_157.replace("notify: [out]", "notify: [out]\n    for: 10m");
    let mut e = engine(&rules);
    let mut t = Table::new();
    assert!(
        t.set(
            &mut e,
            json!({"partner": "CN", "product": "1", "rate_pct": 200}),
            t0()
        )
        .is_empty()
    );
    assert_eq!(e.next_deadline(), Some(t0() + Duration::minutes(10)));
    assert!(tick(&mut e, t0() + Duration::minutes(9)).is_empty());
    let n = tick(&mut e, t0() + Duration::minutes(10));
    assert_eq!(states(&n), [("cn".into(), AlertState::Firing)]);
    assert_eq!(
        n[0].started_at,
        t0(),
        "started when the condition began to hold"
    );
    assert_eq!(n[0].fields["rate_pct"], 200);
    assert!(
        tick(&mut e, t0() + Duration::hours(5)).is_empty(),
        "fires once"
    );
    // A second key that stops holding before `for` passes never notifies.
    assert!(
        t.set(
            &mut e,
            json!({"partner": "CN", "product": "2", "rate_pct": 200}),
            t0() + Duration::hours(6)
        )
        .is_empty()
    );
    assert!(
        t.set(
            &mut e,
            json!({"partner": "CN", "product": "2", "rate_pct": 100}),
            t0() + Duration::hours(6) + Duration::minutes(5)
        )
        .is_empty()
    );
    assert!(tick(&mut e, t0() + Duration::hours(7)).is_empty());
    // A row seen again after `for` fires on that observation too.
    assert!(
        t.set(
            &mut e,
            json!({"partner": "CN", "product": "3", "rate_pct": 200}),
            t0() + Duration::hours(8)
        )
        .is_empty()
    );
    let n = t.set(
        &mut e,
        json!({"partner": "CN", "product": "3", "rate_pct": 201}),
        t0() + Duration::hours(8) + Duration::minutes(10),
    );
    assert_eq!(states(&n), [("cn".into(), AlertState::Firing)]);
}

#[test]
fn repeat_reminds_while_firing() {
    let rules = CN_157.replace("notify: [out]", "notify: [out]\n    repeat: 1h");
    let mut e = engine(&rules);
    let mut t = Table::new();
    assert_eq!(
        t.set(
            &mut e,
            json!({"partner": "CN", "product": "1", "rate_pct": 200}),
            t0()
        )
        .len(),
        1
    );
    assert_eq!(e.next_deadline(), Some(t0() + Duration::hours(1)));
    assert!(tick(&mut e, t0() + Duration::minutes(59)).is_empty());
    let n = tick(&mut e, t0() + Duration::hours(1));
    assert_eq!(states(&n), [("cn".into(), AlertState::Firing)]);
    assert_eq!(n[0].started_at, t0());
    // A clock that jumps ahead sends one reminder, not one per hour missed.
    assert_eq!(tick(&mut e, t0() + Duration::hours(30)).len(), 1);
    assert!(tick(&mut e, t0() + Duration::hours(30)).is_empty());
    let n = t.set(
        &mut e,
        json!({"partner": "CN", "product": "1", "rate_pct": 1}),
        t0() + Duration::hours(31),
    );
    assert_eq!(states(&n), [("cn".into(), AlertState::Resolved)]);
    assert_eq!(e.next_deadline(), None);
}

const NEWS: &str = r#"
lists:
  allies: [EU, Japan, JP, UK]
rules:
  - id: statement
    source: news
    when:
      all:
        - { field: country, in: $allies }
        - text: [title, summary]
          any: ["export control*", "rare earth*"]
          none: [webinar]
    notify: [out]
"#;

#[test]
fn each_matching_event_fires_once_without_state() {
    let mut e = engine(NEWS);
    let cases = [
        (
            json!({"country": "japan", "title": "New <b>export</b>\n controls", "summary": ""}),
            true,
        ),
        (
            // Hyphens separate words: "rare-earth" is "rare earth".
            json!({"country": "JP", "title": "Rare-earth magnets", "summary": "x"}),
            true,
        ),
        (
            json!({"country": "JP", "title": "Rare earths", "summary": "x"}),
            true,
        ),
        (
            json!({"country": "JP", "title": "Export controls webinar", "summary": ""}),
            false,
        ),
        (
            json!({"country": "US", "title": "Export controls", "summary": ""}),
            false,
        ),
        (
            json!({"country": ["US", "EU"], "title": "x", "summary": "critical rare earth supply"}),
            true,
        ),
        (json!({"title": "Export controls", "summary": ""}), false),
        (
            json!({"country": "JP", "title": "Exported controls", "summary": ""}),
            false,
        ),
    ];
    for (i, (v, fires)) in cases.iter().enumerate() {
        let n = observe(&mut e, &event(v.clone(), i + 1), t0());
        assert_eq!(n.len(), usize::from(*fires), "case {i}: {v}");
        if *fires {
            assert_eq!(n[0].key, format!("n.jsonl:{}", i + 1));
        }
    }
    assert_eq!(e.active(), 0, "one-off events keep no state");
}

#[test]
fn a_key_template_groups_events() {
    let rules = r#"
rules:
  - id: by-country
    source: news
    key: "{{ country }}"
    repeat: 1h
    when: { text: title, any: [sanction*] }
    notify: [out]
"#;
    let mut e = engine(rules);
    let hit = |c: &str| json!({"country": c, "title": "New sanctions"});
    assert_eq!(observe(&mut e, &event(hit("EU"), 1), t0()).len(), 1);
    assert!(observe(&mut e, &event(hit("EU"), 2), t0() + Duration::minutes(5)).is_empty());
    assert!(
        observe(
            &mut e,
            &event(json!({"country": "EU", "title": "weather"}), 3),
            t0() + Duration::minutes(6)
        )
        .is_empty(),
        "no resolve for events by default"
    );
    assert_eq!(
        observe(&mut e, &event(hit("UK"), 4), t0() + Duration::minutes(7))[0].key,
        "UK"
    );
    let n = observe(&mut e, &event(hit("EU"), 5), t0() + Duration::hours(2));
    assert_eq!(n.len(), 1, "a reminder after `repeat`");
    assert_eq!(n[0].started_at, t0());
}

fn holds(rule_when: &str, prev: Option<Value>, v: Value) -> bool {
    let rules = format!("rules:\n  - {{ id: r, source: tariffs, when: {rule_when} }}\n");
    let mut e = engine(&rules);
    let mut r = row(v);
    r.prev = prev.map(|p| fields(p).into());
    !observe(&mut e, &r, t0()).is_empty()
}

#[test]
fn conditions_and_their_edges() {
    let base =
        |rate: Value| json!({"partner": "CN", "product": "1", "rate_pct": rate, "note": "Steel"});
    // Numbers written as text compare as numbers.
    assert!(holds(
        "{ field: rate_pct, above: 157 }",
        None,
        base(json!("157.5%"))
    ));
    assert!(holds(
        "{ field: rate_pct, above: 1000 }",
        None,
        base(json!("1,250.5"))
    ));
    assert!(holds(
        "{ field: rate_pct, at_least: 157 }",
        None,
        base(json!(" 157 "))
    ));
    assert!(!holds(
        "{ field: rate_pct, above: 157 }",
        None,
        base(json!(157))
    ));
    assert!(holds(
        "{ field: rate_pct, at_most: 157 }",
        None,
        base(json!(157))
    ));
    assert!(holds(
        "{ field: rate_pct, below: 0 }",
        None,
        base(json!(-1))
    ));
    // Text that is not a number never compares, and a missing field neither.
    assert!(!holds(
        "{ field: rate_pct, below: 1000 }",
        None,
        base(json!("n/a"))
    ));
    assert!(!holds(
        "{ field: missing, below: 1000 }",
        None,
        base(json!(1))
    ));
    assert!(!holds(
        "{ field: missing, not_equals: x }",
        None,
        base(json!(1))
    ));
    assert!(holds(
        "{ field: missing, exists: false }",
        None,
        base(json!(1))
    ));
    assert!(!holds(
        "{ field: note, exists: false }",
        None,
        base(json!(1))
    ));
    assert!(holds(
        "{ field: rate_pct, exists: false }",
        None,
        base(json!("  "))
    ));
    // Equality: numbers as numbers, text without regard to case.
    assert!(holds("{ field: product, equals: 1 }", None, base(json!(1))));
    assert!(holds(
        "{ field: note, equals: STEEL }",
        None,
        base(json!(1))
    ));
    assert!(holds(
        "{ field: note, not_equals: copper }",
        None,
        base(json!(1))
    ));
    assert!(holds(
        "{ field: note, in: [copper, steel] }",
        None,
        base(json!(1))
    ));
    assert!(holds(
        "{ field: note, not_in: [copper] }",
        None,
        base(json!(1))
    ));
    assert!(!holds(
        "{ not: { field: note, in: [steel] } }",
        None,
        base(json!(1))
    ));
    assert!(holds(
        "{ any: [ { field: note, equals: x }, { field: rate_pct, above: 0 } ] }",
        None,
        base(json!(1))
    ));
    assert!(holds(
        "{ field: rate_pct, above: 0, below: 10 }",
        None,
        base(json!(5))
    ));
    assert!(!holds(
        "{ field: rate_pct, above: 0, below: 10 }",
        None,
        base(json!(50))
    ));
    // Against the previous row; never on a first observation.
    assert!(!holds(
        "{ field: rate_pct, changed: true }",
        None,
        base(json!(5))
    ));
    assert!(holds(
        "{ field: rate_pct, changed: true }",
        Some(base(json!(4))),
        base(json!(5))
    ));
    assert!(!holds(
        "{ field: rate_pct, changed: true }",
        Some(base(json!("5"))),
        base(json!(5))
    ));
    assert!(holds(
        "{ field: rate_pct, increased_by: 10 }",
        Some(base(json!(100))),
        base(json!(110))
    ));
    assert!(!holds(
        "{ field: rate_pct, increased_by: 10 }",
        Some(base(json!(100))),
        base(json!(109))
    ));
    assert!(holds(
        "{ field: rate_pct, increased_by: \"25%\" }",
        Some(base(json!(100))),
        base(json!(125))
    ));
    assert!(!holds(
        "{ field: rate_pct, increased_by: \"25%\" }",
        Some(base(json!(0))),
        base(json!(125))
    ));
    assert!(holds(
        "{ field: rate_pct, decreased_by: \"50%\" }",
        Some(base(json!(100))),
        base(json!(50))
    ));
    assert!(holds(
        "{ text: note, regex: \"^St\" }",
        None,
        base(json!(1))
    ));
}

#[test]
fn previous_values_are_found_by_name_when_columns_move() {
    let mut e = engine(
        "rules:\n  - { id: up, source: tariffs, when: { field: rate_pct, increased_by: 10 }, notify: [out] }\n  - { id: moved, source: tariffs, when: { field: rate_pct, changed: true }, notify: [out] }\n",
    );
    use AlertState::{Firing, Resolved};
    let steps: [(Value, &[(&str, AlertState)]); 6] = [
        (
            json!({"partner": "CN", "product": "1", "rate_pct": 100, "note": "a"}),
            &[],
        ),
        // The same key with its columns in another order: compared by name.
        (
            json!({"note": "a", "rate_pct": 110, "product": "1", "partner": "CN"}),
            &[("up", Firing), ("moved", Firing)],
        ),
        (
            json!({"rate_pct": 110, "partner": "CN", "product": "1", "note": "b"}),
            &[("up", Resolved), ("moved", Resolved)],
        ),
        // A field missing from the row now, or before, is a change.
        (
            json!({"partner": "CN", "product": "1", "note": "b"}),
            &[("moved", Firing)],
        ),
        // Still changed, and no increase from nothing.
        (
            json!({"partner": "CN", "product": "1", "rate_pct": 125}),
            &[],
        ),
        (
            json!({"product": "1", "rate_pct": 140, "partner": "CN"}),
            &[("up", Firing)],
        ),
    ];
    let mut t = Table::new();
    for (m, (row, want)) in steps.into_iter().enumerate() {
        let n = t.set(&mut e, row, t0() + Duration::minutes(m as i64));
        let want: Vec<(String, AlertState)> =
            want.iter().map(|(r, s)| (r.to_string(), *s)).collect();
        assert_eq!(states(&n), want, "step {m}");
    }
}

#[test]
fn non_numeric_comparisons_are_counted() {
    let mut e = engine(CN_157);
    observe(
        &mut e,
        &row(json!({"partner": "CN", "product": "1", "rate_pct": "n/a"})),
        t0(),
    );
    assert_eq!(e.stats.non_numeric, 1);
}

#[test]
fn a_failing_template_still_sends_with_the_default_text() {
    let rules = CN_157.replace("notify: [out]", "notify: [out]\n    summary: \"{{ rate_pct / 0 }}\"\n    body: \"{{ partner }} at {{ rate_pct }}% ({{ rule.id }}, {{ state }}, was {{ prev.rate_pct }})\"");
    let mut e = engine(&rules);
    let mut t = Table::new();
    t.set(
        &mut e,
        json!({"partner": "CN", "product": "1", "rate_pct": 100}),
        t0(),
    );
    let n = t.set(
        &mut e,
        json!({"partner": "CN", "product": "1", "rate_pct": 200}),
        t0(),
    );
    assert_eq!(
        n[0].summary,
        "US tariff on Chinese goods above 157%: CN|1 (rate_pct = 200)"
    );
    assert!(
        n[0].body.contains("the summary template failed"),
        "{}",
        n[0].body
    );
    let rules = CN_157.replace("notify: [out]", "notify: [out]\n    body: \"{{ partner }} at {{ rate_pct }}% ({{ rule.id }}, {{ state }}, was {{ prev.rate_pct }})\"");
    let mut e = engine(&rules);
    let mut t = Table::new();
    t.set(
        &mut e,
        json!({"partner": "CN", "product": "1", "rate_pct": 100}),
        t0(),
    );
    let n = t.set(
        &mut e,
        json!({"partner": "CN", "product": "1", "rate_pct": 200}),
        t0(),
    );
    assert_eq!(n[0].body, "CN at 200% (cn, firing, was 100)");
}

#[test]
fn new_rules_keep_state_by_id() {
    let mut e = engine(CN_157);
    let mut t = Table::new();
    assert_eq!(
        t.set(
            &mut e,
            json!({"partner": "CN", "product": "1", "rate_pct": 200}),
            t0()
        )
        .len(),
        1
    );
    let config = Config::parse(Path::new("/cfg/tocsin.yaml"), CONFIG).unwrap();
    let rules = format!(
        "{CN_157}  - {{ id: other, source: tariffs, when: {{ field: rate_pct, above: 1 }} }}\n"
    );
    let (set, _) = RuleSet::parse([(Path::new("/cfg/rules.yaml"), rules.as_str())]);
    let dropped = e.replace_rules(compile(&config, &set).unwrap());
    assert!(dropped.is_empty());
    // Still firing: an edit that keeps it above sends nothing for `cn`.
    let n = t.set(
        &mut e,
        json!({"partner": "CN", "product": "1", "rate_pct": 201}),
        t0(),
    );
    assert_eq!(states(&n), [("other".into(), AlertState::Firing)]);
    let (set, _) = RuleSet::parse([(Path::new("/cfg/rules.yaml"), "rules: []")]);
    let mut dropped = e.replace_rules(compile(&config, &set).unwrap());
    dropped.sort();
    assert_eq!(dropped, ["cn", "other"]);
}

#[test]
fn absent_fires_after_silence_resolves_on_a_record_and_counts_from_start() {
    let mut e = engine(
        "rules:\n  - { id: quiet, title: News quiet, source: news, when: { absent: 48h }, repeat: 24h, notify: [out] }\n",
    );
    e.arm(t0());
    assert_eq!(e.next_deadline(), Some(t0() + Duration::hours(48)));
    assert!(tick(&mut e, t0() + Duration::hours(47)).is_empty());
    let out = tick(&mut e, t0() + Duration::hours(48));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].state, AlertState::Firing);
    assert_eq!(out[0].key, "news");
    assert_eq!(out[0].started_at, t0() + Duration::hours(48));
    // Still silent: nothing until the reminder.
    assert!(tick(&mut e, t0() + Duration::hours(60)).is_empty());
    assert_eq!(tick(&mut e, t0() + Duration::hours(72)).len(), 1);
    // A record ends the silence: resolved, and the clock starts again.
    let at = t0() + Duration::hours(80);
    let mut out = Vec::new();
    e.observe(&event(json!({"title": "x"}), 1), at, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].state, AlertState::Resolved);
    assert_eq!(e.next_deadline(), Some(at + Duration::hours(48)));
    assert!(tick(&mut e, at + Duration::hours(47)).is_empty());
    assert_eq!(tick(&mut e, at + Duration::hours(48)).len(), 1);
}

#[test]
fn absent_with_filters_and_keys() {
    // Only records passing the rest of `all` count; `key:` gives each key
    // its own clock, started by its first record.
    let mut e = engine(
        "rules:\n  - id: partner-quiet\n    title: Partner quiet\n    source: news\n    key: \"{{ country }}\"\n    when:\n      all:\n        - { field: kind, equals: statement }\n        - { absent: 1h }\n    notify: [out]\n",
    );
    e.arm(t0());
    assert_eq!(e.next_deadline(), None, "no key seen yet");
    let mut out = Vec::new();
    e.observe(
        &event(json!({"country": "JP", "kind": "statement"}), 1),
        t0(),
        &mut out,
    );
    e.observe(
        &event(json!({"country": "EU", "kind": "statement"}), 1),
        t0() + Duration::minutes(30),
        &mut out,
    );
    // A record that does not pass the filter does not reset JP's clock.
    e.observe(
        &event(json!({"country": "JP", "kind": "webinar"}), 1),
        t0() + Duration::minutes(50),
        &mut out,
    );
    assert!(out.is_empty());
    let out = tick(&mut e, t0() + Duration::minutes(60));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].key, "JP");
    let out = tick(&mut e, t0() + Duration::minutes(90));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].key, "EU");
    assert_eq!(out[0].fields["country"], "EU", "the last record's fields");
}

#[test]
fn absent_clock_survives_a_restart_and_a_clock_jump() {
    let rules = "rules:\n  - { id: quiet, title: Quiet, source: news, when: { absent: 2h }, notify: [out] }\n";
    let mut e = engine(rules);
    e.arm(t0());
    let stored: Vec<_> = e
        .take_changes()
        .into_iter()
        .filter_map(|(r, k, s)| Some((r.to_string(), k.to_string(), s?)))
        .collect();
    // Restarted an hour later: the clock keeps its start.
    let mut e = engine(rules);
    assert!(e.restore(stored).is_empty());
    e.arm(t0() + Duration::hours(1));
    assert_eq!(e.next_deadline(), Some(t0() + Duration::hours(2)));
    // The wall clock jumps a day ahead: one alert, not one per missed hour.
    assert_eq!(tick(&mut e, t0() + Duration::hours(26)).len(), 1);
    assert!(tick(&mut e, t0() + Duration::hours(27)).is_empty());
    // And back: nothing fires or resolves by itself.
    assert!(tick(&mut e, t0()).is_empty());
}

#[test]
fn absent_under_any_is_refused() {
    let config = Config::parse(Path::new("/cfg/tocsin.yaml"), CONFIG).unwrap();
    let (_, diags) = RuleSet::parse([(
        Path::new("/cfg/rules.yaml"),
        "rules:\n  - id: q\n    source: news\n    when:\n      any:\n        - { absent: 1h }\n        - { field: x, equals: y }\n",
    )]);
    let text = tocsin::diag::render_all(&diags);
    assert!(
        text.contains("rules.yaml:6:21: error: `absent` and `count` apply to the whole rule"),
        "{text}"
    );
    let _ = config;
}

#[test]
fn count_fires_at_n_within_the_window_and_resolves_as_records_age() {
    let mut e = engine(
        "rules:\n  - id: burst\n    title: Burst of statements\n    source: news\n    key: \"{{ country }}\"\n    when:\n      all:\n        - { text: [title], any: [\"export control*\"] }\n        - { count: 3, within: 1h }\n    notify: [out]\n",
    );
    let jp = |title: &str| event(json!({"country": "JP", "title": title}), 1);
    let m = Duration::minutes;
    assert!(observe(&mut e, &jp("export controls"), t0()).is_empty());
    // A record that does not match does not count.
    assert!(observe(&mut e, &jp("trade fair"), t0() + m(5)).is_empty());
    assert!(observe(&mut e, &jp("export controls"), t0() + m(10)).is_empty());
    // Another key has its own window.
    let eu = event(json!({"country": "EU", "title": "export controls"}), 2);
    assert!(observe(&mut e, &eu, t0() + m(15)).is_empty());
    let out = observe(&mut e, &jp("export controls"), t0() + m(20));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].state, AlertState::Firing);
    assert_eq!(out[0].key, "JP");
    // Still at 3 or more: no second notification.
    assert!(observe(&mut e, &jp("export controls"), t0() + m(30)).is_empty());
    // The window keeps the last three (t0+10, +20, +30): it falls under
    // three when t0+10 is an hour old.
    assert_eq!(e.next_deadline(), Some(t0() + m(70)));
    assert!(tick(&mut e, t0() + m(69)).is_empty());
    let out = tick(&mut e, t0() + m(70));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].state, AlertState::Resolved);
    assert_eq!(out[0].key, "JP");
    // A record exactly at the window's edge is out of it.
    let mut e = engine(
        "rules:\n  - { id: two, title: Two, source: news, when: { count: 2, within: 1h }, notify: [out] }\n",
    );
    assert!(observe(&mut e, &jp("a"), t0()).is_empty());
    assert!(observe(&mut e, &jp("b"), t0() + m(60)).is_empty());
    let out = observe(&mut e, &jp("c"), t0() + m(61));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].key, "news", "one key per rule without key:");
}

#[test]
fn count_windows_are_instants_across_dst_and_survive_restarts_and_clock_jumps() {
    let rules = "rules:\n  - { id: two, title: Two, source: news, when: { count: 2, within: 90m }, notify: [out] }\n";
    // 29 March 2026 in Brussels: 01:30 CET and 03:30 CEST are an hour apart.
    let a = Utc.with_ymd_and_hms(2026, 3, 29, 0, 30, 0).unwrap();
    let b = Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0).unwrap();
    let mut e = engine(rules);
    assert!(observe(&mut e, &event(json!({"t": 1}), 1), a).is_empty());
    // Restart between the two records: the window comes back from the store.
    let stored: Vec<_> = e
        .take_changes()
        .into_iter()
        .filter_map(|(r, k, s)| Some((r.to_string(), k.to_string(), s?)))
        .collect();
    assert_eq!(stored.len(), 1);
    let mut e = engine(rules);
    assert!(e.restore(stored).is_empty());
    let out = observe(&mut e, &event(json!({"t": 2}), 2), b);
    assert_eq!(out.len(), 1, "two records 60 minutes apart");
    // The wall clock jumps a day ahead: one resolve, then nothing.
    let out = tick(&mut e, b + Duration::days(1));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].state, AlertState::Resolved);
    assert!(tick(&mut e, b + Duration::days(1) + Duration::hours(1)).is_empty());
    assert_eq!(e.active(), 0, "an empty window is forgotten");
}

#[test]
fn count_with_for_is_refused() {
    let (_, diags) = RuleSet::parse([(
        Path::new("/cfg/rules.yaml"),
        "rules:\n  - id: q\n    source: news\n    for: 5m\n    when: { count: 2, within: 1h }\n",
    )]);
    let text = tocsin::diag::render_all(&diags);
    assert!(
        text.contains("rules.yaml:4:5: error: `for:` has no meaning with `count`"),
        "{text}"
    );
    let (_, diags) = RuleSet::parse([(
        Path::new("/cfg/rules.yaml"),
        "rules:\n  - id: q\n    source: news\n    when: { count: 2 }\n",
    )]);
    let text = tocsin::diag::render_all(&diags);
    assert!(text.contains("`count` and `within` go together"), "{text}");
}

#[test]
fn expr_reads_fields_prev_and_lists() {
    let mut e = engine(
        r#"
lists:
  watched: [CN, VN]
rules:
  - id: crossing
    title: Crossing 157
    source: tariffs
    when: { expr: "rate_pct > 157.0 && prev.rate_pct <= 157.0" }
    notify: [out]
  - id: watched
    title: Watched partner over 100
    source: tariffs
    when: { expr: "partner in lists.watched && rate_pct >= 100" }
    notify: [out]
"#,
    );
    let mut t = Table::new();
    // First observation of a key: no `prev`, so `prev.rate_pct` fails and
    // the expression does not hold; text that reads as a number is one.
    let out = t.set(
        &mut e,
        json!({"partner": "CN", "product": "1", "rate_pct": "160"}),
        t0(),
    );
    let rules: Vec<&str> = out.iter().map(|n| &*n.rule).collect();
    assert_eq!(rules, ["watched"]);
    assert!(
        e.stats.expr_errors >= 1,
        "the failed `prev` read is counted"
    );
    // Down to 145: `watched` still holds (already firing), no crossing.
    let out = t.set(
        &mut e,
        json!({"partner": "CN", "product": "1", "rate_pct": "145"}),
        t0(),
    );
    assert!(out.is_empty());
    let out = t.set(
        &mut e,
        json!({"partner": "CN", "product": "1", "rate_pct": 157}),
        t0(),
    );
    assert!(out.is_empty(), "157 is not above 157");
    let out = t.set(
        &mut e,
        json!({"partner": "CN", "product": "1", "rate_pct": "157.5%"}),
        t0(),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(&*out[0].rule, "crossing");
    // A partner not in the list, first seen: nothing.
    let out = t.set(
        &mut e,
        json!({"partner": "JP", "product": "1", "rate_pct": 300}),
        t0(),
    );
    assert!(out.is_empty());
}

#[test]
fn expr_that_fails_or_gives_no_boolean_does_not_hold_and_is_counted() {
    let mut e = engine(
        "rules:\n  - { id: sum, title: S, source: news, when: { expr: \"rate + 1\" }, notify: [out] }\n  - { id: text, title: T, source: news, when: { expr: \"title > 3\" }, notify: [out] }\n",
    );
    let out = observe(
        &mut e,
        &event(json!({"rate": 5, "title": "not a number"}), 1),
        t0(),
    );
    assert!(out.is_empty());
    assert_eq!(e.stats.expr_errors, 2);
    let out = observe(&mut e, &event(json!({}), 2), t0());
    assert!(out.is_empty(), "missing fields");
    assert_eq!(e.stats.expr_errors, 4);
}

#[test]
fn expr_syntax_errors_point_inside_the_expression() {
    let (_, diags) = RuleSet::parse([(
        Path::new("/cfg/rules.yaml"),
        "rules:\n  - id: q\n    source: news\n    when: { expr: \"rate_pct > > 157\" }\n",
    )]);
    let text = tocsin::diag::render_all(&diags);
    // `    when: { expr: "` is 19 characters: the expression starts at column 20.
    assert!(
        text.contains("rules.yaml:4:31: error: the expression does not parse"),
        "{text}"
    );
}

#[test]
fn the_source_health_rule_id_is_reserved() {
    let (_, diags) = RuleSet::parse([(
        Path::new("/cfg/rules.yaml"),
        "rules:\n  - { id: source-unhealthy, source: news, when: { absent: 1h } }\n",
    )]);
    let text = tocsin::diag::render_all(&diags);
    assert!(
        text.contains("rules.yaml:2:11: error: rule id `source-unhealthy` is reserved"),
        "{text}"
    );
}

#[test]
fn take_changes_lists_each_changed_key_once_per_batch() {
    let rules = CN_157.replace("notify: [out]", "notify: [out]\n    for: 1h");
    let mut e = engine(&rules);
    let mut t = Table::new();
    let cn = |rate: u32| json!({"partner": "CN", "product": "1", "rate_pct": rate});
    // Pending, then a new snapshot twice: one change to store.
    t.set(&mut e, cn(160), t0());
    t.set(&mut e, cn(161), t0() + Duration::minutes(1));
    t.set(&mut e, cn(162), t0() + Duration::minutes(2));
    let c = e.take_changes();
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!((&*c[0].0, c[0].1.as_str()), ("cn", "CN|1"));
    assert!(c[0].2.as_ref().is_some_and(|st| !st.firing));
    assert!(e.take_changes().is_empty(), "nothing changed since");
    // Fires from time passing, then resolves in the same batch: the key is
    // listed as gone.
    assert_eq!(tick(&mut e, t0() + Duration::hours(2)).len(), 1);
    t.set(&mut e, cn(100), t0() + Duration::hours(2));
    let c = e.take_changes();
    assert!(
        !c.is_empty() && c.iter().all(|(_, _, st)| st.is_none()),
        "{c:?}"
    );
    // Comes back: listed with its new state.
    t.set(&mut e, cn(170), t0() + Duration::hours(3));
    let c = e.take_changes();
    assert_eq!(c.len(), 1);
    assert!(c[0].2.is_some());
}

#[test]
fn a_batch_gives_what_its_records_give_one_by_one() {
    // Short keys are kept inline by the state tables, long ones on the
    // heap: both kinds, over every kind of rule state.
    let rules = r#"
rules:
  - id: high
    title: High
    source: tariffs
    when: { field: rate_pct, above: 150 }
    notify: [out]
  - id: moved
    title: Moved
    source: tariffs
    when: { field: rate_pct, changed: true }
    notify: [out]
  - id: bursts
    title: Bursts
    source: tariffs
    key: "{{ partner }}"
    when: { count: 3, within: 1h }
    notify: [out]
  - id: waits
    title: Waits
    source: tariffs
    when: { field: rate_pct, above: 100 }
    for: 30m
    notify: [out]
"#;
    let mut one = engine(rules);
    let mut batched = engine(rules);
    let mut prev: std::collections::HashMap<String, tocsin::record::Row> = Default::default();
    let mut x: u64 = 11;
    for round in 0..6 {
        let now = t0() + Duration::minutes(20 * round);
        let mut recs = Vec::new();
        for k in 0..200u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let partner = if k % 3 == 0 {
                format!("a partner with a long name number {k}")
            } else {
                format!("P{k}")
            };
            let mut r = row(json!({"partner": partner, "product": "1", "rate_pct": 90 + x % 80}));
            r.prev = prev.insert(r.key.clone(), r.fields.clone());
            recs.push(r);
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for r in &recs {
            one.observe(r, now, &mut a);
        }
        batched.observe_batch(&recs, now, &mut b);
        one.tick(now, &mut a);
        batched.tick(now, &mut b);
        let ids = |v: &[Notification]| v.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
        assert!(!a.is_empty(), "round {round} notifies something");
        assert_eq!(ids(&a), ids(&b), "round {round}");
        let changes = |e: &mut Engine| {
            e.take_changes()
                .into_iter()
                .map(|(r, k, st)| (r.to_string(), k, st.map(|s| (s.firing, s.since.millis()))))
                .collect::<Vec<_>>()
        };
        assert_eq!(changes(&mut one), changes(&mut batched), "round {round}");
    }
    assert_eq!(one.active(), batched.active());
    assert!(one.active() > 200, "long and short keys hold state");
}

#[test]
fn one_off_events_reach_the_rules_their_guards_let_through() {
    // Events without a `key:` rule in their source visit only the rules
    // behind no guard and those a guard lets through: by the field's value,
    // by a value in a list, or by a phrase found in the text.
    let mut e = engine(concat!(
        "rules:\n",
        "  - { id: cn, title: CN, source: news, when: { field: country, equals: CN }, notify: [out] }\n",
        "  - { id: eu, title: EU, source: news, when: { field: country, in: [EU, DE] }, notify: [out] }\n",
        "  - { id: controls, title: Controls, source: news, when: { text: [title], any: [\"export control*\"] }, notify: [out] }\n",
        "  - { id: titled, title: Titled, source: news, when: { field: title, exists: true }, notify: [out] }\n",
    ));
    let mut fired = |v: Value, line: usize| -> Vec<String> {
        let mut ids: Vec<String> = observe(&mut e, &event(v, line), t0())
            .iter()
            .map(|n| n.rule.to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        fired(json!({"country": "cn", "title": "trade fair"}), 1),
        ["cn", "titled"]
    );
    assert_eq!(
        fired(
            json!({"country": ["US", "DE"], "title": "new export controls"}),
            2
        ),
        ["controls", "eu", "titled"]
    );
    assert_eq!(
        fired(json!({"country": "US", "title": "weather"}), 3),
        ["titled"]
    );
    assert!(fired(json!({"country": "US"}), 4).is_empty());
}

/// `increased_by: 10` means "by at least 10" against the previous row
/// (15 → 25 fires); the key stays firing while it keeps holding, so a
/// second jump sends nothing, unless the rule's `key:` includes the value.
#[test]
fn a_change_condition_fires_on_its_edge_by_at_least_its_amount() {
    use AlertState::{Firing, Resolved};
    let rules = |key: &str| {
        format!(
            "rules:\n  - {{ id: up, source: tariffs, when: {{ field: rate_pct, increased_by: 10 }}, notify: [out]{key} }}\n"
        )
    };
    let steps: [(f64, &[(&str, AlertState)]); 6] = [
        (15.0, &[]),
        // Exactly the amount: fires.
        (25.0, &[("up", Firing)]),
        // A second jump while firing: still holding, nothing new.
        (40.0, &[]),
        // Less than the amount: resolves.
        (49.5, &[("up", Resolved)]),
        (59.0, &[]),
        (69.0, &[("up", Firing)]),
    ];
    let mut e = engine(&rules(""));
    let mut t = Table::new();
    for (m, (rate, want)) in steps.iter().enumerate() {
        let n = t.set(
            &mut e,
            json!({"partner": "CN", "product": "1", "rate_pct": rate}),
            t0() + Duration::minutes(m as i64),
        );
        let want: Vec<(String, AlertState)> =
            want.iter().map(|(r, s)| (r.to_string(), *s)).collect();
        assert_eq!(states(&n), want, "step {m}: {rate}");
    }
    // With the value in the key, each jump is an alert of its own.
    let mut e = engine(&rules(
        ", key: \"{{ partner }} {{ rate_pct }}\", resolve: false",
    ));
    let mut t = Table::new();
    let mut fired = Vec::new();
    for (m, rate) in [15, 25, 40, 45].iter().enumerate() {
        let n = t.set(
            &mut e,
            json!({"partner": "CN", "product": "1", "rate_pct": rate}),
            t0() + Duration::minutes(m as i64),
        );
        fired.extend(n.iter().map(|n| n.key.to_string()));
    }
    assert_eq!(fired, ["CN 25", "CN 40"]);
}

/// A stream of one-off events takes its source's rules once
/// (`Engine::events`); once the rules are replaced, the same handle
/// evaluates with the new ones, never through the old plan.
#[test]
fn an_event_stream_follows_replaced_rules() {
    let mut e = engine(
        "rules:\n  - { id: first, source: news, when: { field: level, above: 5 }, notify: [out] }\n",
    );
    let events = e.events("news");
    let slot = |e: &Engine| {
        let wanted = e.wanted_fields("news");
        assert_eq!(wanted.len(), 1, "{wanted:?}");
        assert_eq!(wanted[0].0, "level");
        (wanted[0].1, e.slot_count())
    };
    let record = || Record {
        source: Arc::from("news"),
        key: "n.jsonl:1".into(),
        fields: fields(json!({"level": 9})).into(),
        prev: None,
        observed: t0(),
        kind: RecordKind::Event,
        doc: None,
        line: 1,
    };
    let level = json!(9);
    let fire = |e: &mut Engine, events: &tocsin::engine::Events| {
        let (s, n) = slot(e);
        let mut vals = vec![None; n];
        vals[s] = Some(&level);
        let mut out = Vec::new();
        e.observe_event(events, &vals, &mut record.clone(), t0(), &mut out);
        out.iter().map(|n| n.rule.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(fire(&mut e, &events), ["first"]);
    let config = Config::parse(Path::new("/cfg/tocsin.yaml"), CONFIG).unwrap();
    let rules = "rules:\n  - { id: added, source: news, when: { field: level, above: 100 }, notify: [out] }\n  - { id: second, source: news, when: { field: level, above: 1 }, notify: [out] }\n";
    let (set, _) = RuleSet::parse([(Path::new("/cfg/rules.yaml"), rules)]);
    assert_eq!(e.replace_rules(compile(&config, &set).unwrap()), ["first"]);
    assert_eq!(fire(&mut e, &events), ["second"]);
    // A fresh handle says the same.
    let fresh = e.events("news");
    assert_eq!(fire(&mut e, &fresh), ["second"]);
}
