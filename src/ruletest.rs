//! `tocsin test FILE...`: rule unit tests with a simulated clock, as
//! `promtool test rules` does for Prometheus. Each test starts from empty
//! state with the clock at its first step; a step moves the clock (time
//! passing fires `for:`, `absent` and ends `count` windows), feeds records
//! through a source, and lists exactly the notifications it expects.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::{
    ChannelConfig, ChannelKind, Config, FileSource, HealthConfig, Mode, SourceConfig, SourceKind,
};
use crate::diag::{Diagnostic, Diags, Pos, SourceFile};
use crate::engine::Engine;
use crate::notification::Notification;
use crate::record::{Fields, Record, RecordKind, Row, with_constants};
use crate::rules::RuleSet;
use crate::yaml::read::{entries, required, string, strings};
use crate::yaml::{Kind, MapReader, Node};

/// A test file, read and compiled.
struct Suite {
    sources: Vec<SourceConfig>,
    tests: Vec<Test>,
    engine_config: Config,
    rules: RuleSet,
}

struct Test {
    name: String,
    steps: Vec<Step>,
}

struct Step {
    at: DateTime<Utc>,
    source: Option<String>,
    records: Vec<Fields>,
    expect: Vec<serde_json::Map<String, Value>>,
}

/// The files to run: each file given, and the `*.yaml`/`*.yml` files of
/// each folder given, by name; a folder without any is an error.
fn test_files(given: &[PathBuf], out: &mut String) -> (Vec<PathBuf>, bool) {
    let mut files = Vec::new();
    let mut ok = true;
    for g in given {
        if !g.is_dir() {
            files.push(g.clone());
            continue;
        }
        let found = crate::rules::rule_files(g).unwrap_or_default();
        if found.is_empty() {
            let _ = writeln!(
                out,
                "{}: error: no *.yaml test files in this folder; name test files, or a folder of them",
                g.display()
            );
            ok = false;
        }
        files.extend(found);
    }
    (files, ok)
}

/// The outcome of a run over several files (or folders of them): 0 all
/// passed, 1 a test failed, 2 a file could not be used.
pub fn run(given: &[PathBuf], out: &mut String) -> i32 {
    let (files, ok) = test_files(given, out);
    let mut worst = if ok { 0 } else { 2 };
    let (mut passed, mut failed) = (0, 0);
    for f in &files {
        match load(f) {
            Err(diags) => {
                out.push_str(&crate::diag::render_all(&diags));
                worst = 2;
            }
            Ok(suite) => {
                let _ = writeln!(out, "{}", f.display());
                for t in &suite.tests {
                    match run_test(&suite, t) {
                        Ok(()) => {
                            passed += 1;
                            let _ = writeln!(out, "  PASS  {}", t.name);
                        }
                        Err(report) => {
                            failed += 1;
                            worst = worst.max(1);
                            let _ = writeln!(out, "  FAIL  {}", t.name);
                            out.push_str(&report);
                        }
                    }
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "{} tests, {passed} passed, {failed} failed",
        passed + failed
    );
    worst
}

fn load(path: &Path) -> Result<Suite, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic {
            file: path.to_path_buf(),
            pos: Pos::default(),
            severity: crate::diag::Severity::Error,
            message: format!("cannot read the test file: {e}"),
            hint: None,
            line_text: None,
        }]
    })?;
    let src = SourceFile::new(path, text.as_str());
    let mut d = Diags::new(&src);
    let dir = path.parent().unwrap_or(Path::new("."));
    let node = match crate::yaml::parse(&text) {
        Ok(n) => n,
        Err(e) => {
            d.error(e.pos, e.message, None);
            return Err(d.out);
        }
    };
    let suite = read_suite(path, dir, &node, &mut d);
    match suite {
        Some(s) if !d.has_errors() => Ok(s),
        _ => Err(d.out),
    }
}

fn read_suite(path: &Path, dir: &Path, node: &Node, d: &mut Diags) -> Option<Suite> {
    let mut m = MapReader::new(node, "test file", d)?;
    let rule_files = required(
        &mut m,
        "rules",
        "write `rules: [../rules/tariffs.yaml]`: the rule files under test, relative to this file",
        d,
    )
    .map(|n| strings(n, "rules", d))
    .unwrap_or_default();
    let config = m.get("config").and_then(|n| {
        let p = dir.join(string(n, "config", d)?);
        match Config::load(&p) {
            Ok(c) => Some(c),
            Err(problems) => {
                d.error(
                    n.pos(),
                    format!(
                        "the config `{}` does not load ({} problems; run `tocsin check -c {}`)",
                        p.display(),
                        problems.0.len(),
                        p.display()
                    ),
                    None,
                );
                None
            }
        }
    });
    let mut sources: Vec<SourceConfig> = config.map(|c| c.sources).unwrap_or_default();
    if let Some(list) = m.get("sources") {
        match &list.kind {
            Kind::Seq(items) => {
                for item in items {
                    if let Some(s) = read_source(item, d) {
                        sources.retain(|o| o.name != s.name);
                        sources.push(s);
                    }
                }
            }
            _ => d.error(list.pos(), "`sources` must be a list", None),
        }
    }
    let tests_node = required(&mut m, "tests", "add `tests:` with a list of tests", d);
    m.finish(d);

    // The rules under test.
    let mut texts = Vec::new();
    for (f, pos) in &rule_files {
        let p = dir.join(f);
        match std::fs::read_to_string(&p) {
            Ok(t) => texts.push((p, t)),
            Err(e) => d.error(
                *pos,
                format!("cannot read `{}`: {e}", p.display()),
                Some("paths are relative to this test file".into()),
            ),
        }
    }
    let (rules, diags) = RuleSet::parse(texts.iter().map(|(p, t)| (p.as_path(), t.as_str())));
    let rule_errors = diags.iter().any(Diagnostic::is_error);
    d.out.extend(diags);
    if rule_errors {
        return None;
    }
    // Sources the rules name and the file does not define are logs.
    for r in &rules.rules {
        for (s, _) in &r.sources {
            if !sources.iter().any(|o| &o.name == s) {
                sources.push(source_config(s, Mode::Log, Vec::new(), Fields::new()));
            }
        }
    }
    // Channels need not be defined: nothing is sent.
    let mut channels: Vec<ChannelConfig> = Vec::new();
    for r in &rules.rules {
        for (c, _) in &r.notify {
            if !channels.iter().any(|o| &o.name == c) {
                channels.push(ChannelConfig {
                    name: c.clone(),
                    kind: ChannelKind::Log,
                    digest: None,
                    retry_budget: Duration::from_secs(86400),
                });
            }
        }
    }
    let engine_config = Config {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        state: PathBuf::new().into(),
        ha: Default::default(),
        rules: PathBuf::new(),
        http: None,
        sources: sources.clone(),
        channels,
        health: HealthConfig::default(),
        log: Default::default(),
        evidence: Default::default(),
    };

    let mut tests = Vec::new();
    if let Some(n) = tests_node {
        match &n.kind {
            Kind::Seq(items) => {
                for item in items {
                    if let Some(t) = read_test(item, &sources, d) {
                        tests.push(t);
                    }
                }
            }
            _ => d.error(n.pos(), "`tests` must be a list", None),
        }
    }
    Some(Suite {
        sources,
        tests,
        engine_config,
        rules,
    })
}

fn source_config(name: &str, mode: Mode, key: Vec<String>, fields: Fields) -> SourceConfig {
    SourceConfig {
        name: name.to_string(),
        kind: SourceKind::File(FileSource {
            path: PathBuf::new(),
            format: None,
            mode,
            key,
            id_field: "id".into(),
            retention: crate::config::read::DEFAULT_RETENTION,
        }),
        fields,
        fail_after: 3,
    }
}

/// `{ name, type: file|feed|http, mode: table|log, key: [...], fields: {...} }`:
/// only what shapes records; no paths or URLs.
fn read_source(n: &Node, d: &mut Diags) -> Option<SourceConfig> {
    let mut m = MapReader::new(n, "source", d)?;
    let name = required(
        &mut m,
        "name",
        "give the source's `name:`, as the rules name it",
        d,
    )
    .and_then(|n| string(n, "name", d));
    let ty = m.get("type").and_then(|n| string(n, "type", d));
    let mode = m.get("mode").and_then(|n| string(n, "mode", d));
    let key: Vec<String> = m
        .get("key")
        .map(|n| strings(n, "key", d).into_iter().map(|(s, _)| s).collect())
        .unwrap_or_default();
    let mut fields = Fields::new();
    if let Some(f) = m.get("fields") {
        for (k, v) in entries(f, "fields", d) {
            if let Some(k) = string(k, "a field name", d) {
                fields.insert(k, v.to_json());
            }
        }
    }
    m.allow(&[
        "path", "url", "every", "schedule", "timezone", "format", "items",
    ]);
    m.finish(d);
    let table = match (ty.as_deref(), mode.as_deref()) {
        (Some("feed"), _) => false,
        (Some("http"), _) => true,
        (_, Some("log")) => false,
        (_, Some("table")) | (_, None) => !key.is_empty(),
        (_, Some(other)) => {
            d.error(
                n.pos(),
                format!("unknown mode `{other}`"),
                Some("write `mode: table` or `mode: log`".into()),
            );
            false
        }
    };
    if table && key.is_empty() {
        d.error(
            n.pos(),
            "a table source needs a `key`",
            Some("add e.g. `key: [partner, product]`".into()),
        );
    }
    let mode = if table { Mode::Table } else { Mode::Log };
    Some(source_config(&name?, mode, key, fields))
}

fn read_test(n: &Node, sources: &[SourceConfig], d: &mut Diags) -> Option<Test> {
    let mut m = MapReader::new(n, "test", d)?;
    let name =
        required(&mut m, "name", "give the test a `name:`", d).and_then(|n| string(n, "name", d));
    let steps_node = required(
        &mut m,
        "steps",
        "add `steps:`, each with `at:` and `expect:`",
        d,
    );
    m.finish(d);
    let mut steps = Vec::new();
    let mut last: Option<DateTime<Utc>> = None;
    if let Some(Node {
        kind: Kind::Seq(items),
        ..
    }) = steps_node
    {
        for item in items {
            let Some(mut s) = MapReader::new(item, "step", d) else {
                continue;
            };
            let at = match s.get("at") {
                Some(a) => {
                    let t = string(a, "at", d).unwrap_or_default();
                    match DateTime::parse_from_rfc3339(t.trim()) {
                        Ok(t) => Some(t.with_timezone(&Utc)),
                        Err(e) => {
                            d.error(
                                a.pos(),
                                format!("`{t}` is not a time: {e}"),
                                Some(
                                    "write an RFC 3339 time such as `2026-04-09T00:00:00Z`".into(),
                                ),
                            );
                            None
                        }
                    }
                }
                None => last,
            };
            if at.is_none() && last.is_none() && !s.has("at") {
                d.error(
                    item.pos(),
                    "the first step needs `at:`",
                    Some("write e.g. `at: 2026-04-01T00:00:00Z`".into()),
                );
            }
            let source = s.get("source").and_then(|n| {
                let name = string(n, "source", d)?;
                if !sources.iter().any(|o| o.name == name) {
                    let hint =
                        crate::diag::did_you_mean(&name, sources.iter().map(|o| o.name.as_str()))
                            .unwrap_or_else(|| {
                                "name a source the rules read, or define it under `sources:`".into()
                            });
                    d.error(n.pos(), format!("unknown source `{name}`"), Some(hint));
                }
                Some(name)
            });
            let mut records = Vec::new();
            if let Some(r) = s.get("records") {
                match &r.kind {
                    Kind::Seq(items) => {
                        for i in items {
                            match i.to_json() {
                                Value::Object(f) => records.push(f),
                                _ => d.error(
                                    i.pos(),
                                    "a record is a mapping of fields",
                                    Some("write e.g. `{partner: CN, rate_pct: 160}`".into()),
                                ),
                            }
                        }
                    }
                    _ => d.error(r.pos(), "`records` must be a list of mappings", None),
                }
                if source.is_none() {
                    d.error(
                        r.pos(),
                        "records need a `source:`",
                        Some("add `source:` to the step".into()),
                    );
                }
            }
            let mut expect = Vec::new();
            match s.get("expect") {
                Some(e) => match &e.kind {
                    Kind::Seq(items) => {
                        for i in items {
                            match i.to_json() {
                                Value::Object(f) => expect.push(f),
                                _ => d.error(i.pos(), "an expected notification is a mapping of payload fields", Some("write e.g. `{rule: us-cn-tariff-above-157, key: \"CN|8505\", state: firing}`".into())),
                            }
                        }
                    }
                    Kind::Null => {}
                    _ => d.error(
                        e.pos(),
                        "`expect` must be a list",
                        Some("write `expect: []` for no notification".into()),
                    ),
                },
                None => d.error(
                    item.pos(),
                    "the step has no `expect:`",
                    Some("list the notifications the step makes; `expect: []` for none".into()),
                ),
            }
            s.finish(d);
            if let Some(t) = at {
                if last.is_some_and(|l| t < l)
                    && let Some(a) = item_key(item, "at")
                {
                    d.error(
                        a,
                        "steps go forward in time",
                        Some("give a time after the previous step's".into()),
                    );
                }
                last = Some(t);
                steps.push(Step {
                    at: t,
                    source,
                    records,
                    expect,
                });
            }
        }
    } else if let Some(n) = steps_node {
        d.error(n.pos(), "`steps` must be a list", None);
    }
    Some(Test { name: name?, steps })
}

fn item_key(n: &Node, key: &str) -> Option<Pos> {
    match &n.kind {
        Kind::Map(e) => e
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v.pos()),
        _ => None,
    }
}

fn run_test(suite: &Suite, t: &Test) -> Result<(), String> {
    let compiled = crate::engine::compile(&suite.engine_config, &suite.rules)
        .map_err(|p| crate::diag::render_all(&p.0))?;
    let mut engine = Engine::new(compiled);
    let mut tables: HashMap<String, crate::rows::Table> = HashMap::new();
    let mut lines = 0usize;
    let mut report = String::new();
    if let Some(first) = t.steps.first() {
        engine.arm(first.at);
    }
    for (i, step) in t.steps.iter().enumerate() {
        let mut out = Vec::new();
        engine.tick(step.at, &mut out);
        if let Some(src) = &step.source {
            let cfg = suite.sources.iter().find(|s| &s.name == src);
            let name: Arc<str> = Arc::from(src.as_str());
            let constants = cfg.map(|c| c.fields.clone()).unwrap_or_default();
            let table_key = cfg
                .filter(|c| !c.is_event_source())
                .map(|c| c.key_fields().to_vec());
            match table_key {
                Some(key) => {
                    let rows = tables.entry(src.clone()).or_default();
                    let parsed = step.records.iter().cloned().map(|f| (0, f)).collect();
                    let mk = |f: Row, k: String, prev: Option<Row>, kind: RecordKind| Record {
                        source: name.clone(),
                        key: k,
                        fields: with_constants(f, &constants),
                        prev,
                        observed: step.at,
                        kind,
                        doc: None,
                        line: 0,
                    };
                    match crate::source::diff_table(rows, parsed, &key, mk) {
                        Ok(diff) => {
                            for r in &diff.records {
                                engine.observe(r, step.at, &mut out);
                            }
                        }
                        Err((_, m)) => {
                            let _ =
                                writeln!(report, "        step {} at {}: {m}", i + 1, ts(step.at));
                            return Err(report);
                        }
                    }
                }
                None => {
                    for f in &step.records {
                        lines += 1;
                        let key = f
                            .get("id")
                            .and_then(|v| crate::record::as_text(v).map(|s| s.into_owned()))
                            .unwrap_or_else(|| format!("{src}:{lines}"));
                        let r = Record {
                            source: name.clone(),
                            key,
                            fields: with_constants(Row::new(f.clone()), &constants),
                            prev: None,
                            observed: step.at,
                            kind: RecordKind::Event,
                            doc: None,
                            line: 0,
                        };
                        engine.observe(&r, step.at, &mut out);
                    }
                }
            }
        }
        if let Some(diff) = compare(&step.expect, &out) {
            let _ = writeln!(report, "        step {} at {}:", i + 1, ts(step.at));
            report.push_str(&diff);
            return Err(report);
        }
    }
    Ok(())
}

fn ts(t: DateTime<Utc>) -> String {
    crate::notification::format_ts(t)
}

/// Pairs each expectation with a notification it matches; `None` when all
/// pair up and none is left over, else the report.
fn compare(expect: &[serde_json::Map<String, Value>], got: &[Notification]) -> Option<String> {
    let payloads: Vec<Value> = got
        .iter()
        .map(|n| serde_json::to_value(n).unwrap_or(Value::Null))
        .collect();
    let mut used = vec![false; payloads.len()];
    let mut missing = Vec::new();
    for e in expect {
        match payloads
            .iter()
            .enumerate()
            .find(|(k, p)| !used[*k] && matches(&Value::Object(e.clone()), p))
        {
            Some((k, _)) => used[k] = true,
            None => missing.push(e),
        }
    }
    let extra: Vec<&Value> = payloads
        .iter()
        .enumerate()
        .filter(|(k, _)| !used[*k])
        .map(|(_, p)| p)
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return None;
    }
    // The fields worth showing of an actual notification: those the
    // expectations name, and always rule, key and state.
    let mut shown: Vec<String> = vec!["rule".into(), "key".into(), "state".into()];
    for e in expect {
        for k in e.keys() {
            if !shown.contains(k) {
                shown.push(k.clone());
            }
        }
    }
    let brief = |p: &Value| -> String {
        let parts: Vec<String> = shown
            .iter()
            .filter_map(|k| p.get(k).map(|v| format!("{k}: {}", show(v))))
            .collect();
        format!("{{{}}}", parts.join(", "))
    };
    let exp: Vec<String> = expect
        .iter()
        .map(|e| {
            let parts: Vec<String> = e.iter().map(|(k, v)| format!("{k}: {}", show(v))).collect();
            format!("{{{}}}", parts.join(", "))
        })
        .collect();
    let act: Vec<String> = payloads.iter().map(brief).collect();
    let mut s = String::new();
    let width = exp.iter().map(String::len).max().unwrap_or(0).clamp(10, 60);
    let _ = writeln!(s, "          {:<width$}   actual", "expected");
    for k in 0..exp.len().max(act.len()) {
        let e = exp
            .get(k)
            .map(String::as_str)
            .unwrap_or(if k == 0 { "(none)" } else { "" });
        let a = act
            .get(k)
            .map(String::as_str)
            .unwrap_or(if k == 0 { "(none)" } else { "" });
        let _ = writeln!(s, "          {e:<width$}   {a}");
    }
    for m in missing {
        let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {}", show(v))).collect();
        let _ = writeln!(s, "          missing: {{{}}}", parts.join(", "));
    }
    for x in extra {
        let _ = writeln!(s, "          unexpected: {}", brief(x));
    }
    Some(s)
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `actual` has every field `want` names, with the same value;
/// mappings match on the fields they name; numbers and their text alike.
fn matches(want: &Value, actual: &Value) -> bool {
    match (want, actual) {
        (Value::Object(w), Value::Object(a)) => w
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|x| matches(v, x))),
        (Value::Array(w), Value::Array(a)) => {
            w.len() == a.len() && w.iter().zip(a).all(|(x, y)| matches(x, y))
        }
        (Value::Null, Value::Null) => true,
        // A number matches its text (`160` and "160"); two texts match
        // only as text, so the code `"007"` is not `"7"`.
        (w, a) => {
            let (ws, as_) = (crate::record::as_text(w), crate::record::as_text(a));
            match (ws, as_) {
                (Some(x), Some(y)) => {
                    x == y
                        || (w.is_number() || a.is_number())
                            && matches!(
                                (crate::record::parse_number(&x), crate::record::parse_number(&y)),
                                (Some(p), Some(q)) if p == q
                            )
                }
                _ => w == a,
            }
        }
    }
}
