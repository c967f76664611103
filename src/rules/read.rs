//! Walks the YAML tree of a rules file into [`RuleDef`]s, reporting every
//! problem with its position.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::diag::{Diags, Pos, did_you_mean};
use crate::yaml::read::{
    boolean, describe, duration, entries, number, required, string, string_map, strings,
};
use crate::yaml::{Kind, MapReader, Node};

pub(super) fn file(idx: usize, node: &Node, set: &mut RuleSet, d: &mut Diags) {
    if node.is_null() {
        return; // an empty file holds no rules
    }
    let Some(mut m) = MapReader::new(node, "rules file", d) else {
        return;
    };
    if let Some(lists) = m.get("lists") {
        for (k, v) in entries(lists, "lists", d) {
            let Some(name) = string(k, "a list name", d) else {
                continue;
            };
            let items: Vec<String> = strings(v, "a list item", d)
                .into_iter()
                .map(|(s, _)| s)
                .collect();
            // Files are read one at a time (lists of other files are
            // checked when the files are put together): two keys that read
            // as one name (`007` and "007").
            if let Some(prev) = set.lists.get(&name) {
                d.error(
                    k.pos(),
                    format!("list `{name}` is defined twice in this file"),
                    Some(format!("first at line {}; keep one", prev.pos.line)),
                );
                continue;
            }
            set.lists.insert(
                name,
                ListDef {
                    items,
                    file: idx,
                    pos: k.pos(),
                },
            );
        }
    }
    if let Some(rules) = required(&mut m, "rules", "add `rules:` with a list of rules", d) {
        match &rules.kind {
            Kind::Seq(items) => {
                for r in items {
                    if let Some(rule) = rule(idx, r, d) {
                        set.rules.push(rule);
                    }
                }
            }
            Kind::Null => {}
            _ => d.error(
                rules.pos(),
                format!(
                    "`rules` must be a list (items starting with `- `), found {}",
                    rules.type_name()
                ),
                None,
            ),
        }
    }
    m.finish(d);
}

pub(super) fn rule(file: usize, n: &Node, d: &mut Diags) -> Option<RuleDef> {
    let mut m = MapReader::new(n, "rule", d)?;
    let id_node = required(
        &mut m,
        "id",
        "add `id:` with a unique, stable name such as `us-cn-tariff-above-157`",
        d,
    );
    let id = id_node.and_then(|i| string(i, "id", d));
    if let (Some(id), Some(node)) = (&id, id_node)
        && (id.is_empty() || !id.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c)))
    {
        d.error(
            node.pos(),
            format!("`{id}` is not a valid rule id"),
            Some("use letters, digits, `-`, `_` and `.`, e.g. `us-cn-tariff-above-157`".into()),
        );
    }
    let title = m.get("title").and_then(|t| string(t, "title", d));
    let severity = match m.get("severity") {
        Some(s) => match string(s, "severity", d)
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("info") => Severity::Info,
            Some("warning") => Severity::Warning,
            Some("critical") => Severity::Critical,
            Some(other) => {
                let hint = did_you_mean(other, ["info", "warning", "critical"])
                    .unwrap_or_else(|| "write one of: info, warning, critical".into());
                d.error(s.pos(), format!("unknown severity `{other}`"), Some(hint));
                Severity::Warning
            }
            None => Severity::Warning,
        },
        None => Severity::Warning,
    };
    let labels: BTreeMap<String, String> = m
        .get("labels")
        .map(|l| string_map(l, "labels", d))
        .unwrap_or_default()
        .into_iter()
        .collect();
    let sources = required(
        &mut m,
        "source",
        "add `source:` with the name of a source from the config",
        d,
    )
    .map(|s| strings(s, "source", d))
    .unwrap_or_default();
    let mut conds = Vec::new();
    if let Some(w) = m.get("where") {
        conds.extend(where_(w, d));
    }
    let when_node = m.get("when");
    if let Some(w) = when_node {
        conds.extend(cond(w, d));
    }
    if m.get("where").is_none() && when_node.is_none() {
        d.error(Pos::new(n.line, n.col, 1), "the rule has no condition", Some("add `when:`, e.g. `when: { field: rate_pct, above: 157 }`, or `where:` for equality filters".into()));
    }
    let when = match conds.len() {
        0 => None,
        1 => conds.pop(),
        _ => Some(Cond::All(conds)),
    };
    let (when, window) = split_absent(when, d);
    if let (Some(Window::Count { .. }), Some(f)) = (window, m.key_node("for"))
        && !matches!(f.kind, Kind::Int(0))
    {
        d.error(
            f.pos(),
            "`for:` has no meaning with `count`: the window is the wait",
            Some("remove `for:`; raise `count` or widen `within` instead".into()),
        );
    }
    let for_node = m.get("for");
    let for_ = for_node
        .and_then(|f| duration(f, "for", d))
        .unwrap_or(Duration::ZERO);
    let repeat = m.get("repeat").and_then(|r| {
        let v = duration(r, "repeat", d)?;
        if v.is_zero() {
            d.error(
                r.pos(),
                "`repeat: 0s` would notify on every evaluation",
                Some("give a reminder interval such as `24h`, or remove `repeat`".into()),
            );
            return None;
        }
        Some(v)
    });
    let resolve = m.get("resolve").and_then(|r| boolean(r, "resolve", d));
    let notify = m
        .get("notify")
        .map(|x| strings(x, "notify", d))
        .unwrap_or_default();
    let summary = template(&mut m, "summary", d);
    let body = template(&mut m, "body", d);
    let key = template(&mut m, "key", d);
    let mut field_refs = Vec::new();
    if let Some(w) = m.get("where")
        && let Kind::Map(entries) = &w.kind
    {
        field_refs.extend(
            entries
                .iter()
                .filter_map(|(k, _)| Some((k.as_str()?.to_string(), k.pos()))),
        );
    }
    if let Some(w) = when_node {
        named_fields(w, &mut field_refs);
    }
    m.finish(d);
    let (id, id_node) = (id?, id_node?);
    Some(RuleDef {
        file,
        pos: Pos::new(n.line, n.col, 1),
        title: title.unwrap_or_else(|| id.clone()),
        id,
        id_pos: id_node.pos(),
        severity,
        labels,
        sources,
        when,
        window,
        for_,
        for_pos: for_node.map(Node::pos),
        repeat,
        resolve,
        notify,
        summary,
        body,
        key,
        field_refs,
    })
}

/// The fields a condition names (`field:`, `text:`), with their places.
fn named_fields(n: &Node, out: &mut Vec<(String, Pos)>) {
    match &n.kind {
        Kind::Map(entries) => {
            for (k, v) in entries {
                match k.as_str() {
                    Some("field") => out.extend(v.as_str().map(|s| (s.to_string(), v.pos()))),
                    Some("text") => match &v.kind {
                        Kind::Seq(items) => out.extend(
                            items
                                .iter()
                                .filter_map(|i| Some((i.as_str()?.to_string(), i.pos()))),
                        ),
                        _ => out.extend(v.as_str().map(|s| (s.to_string(), v.pos()))),
                    },
                    Some("all" | "any" | "not") => named_fields(v, out),
                    _ => {}
                }
            }
        }
        Kind::Seq(items) => items.iter().for_each(|i| named_fields(i, out)),
        _ => {}
    }
}

/// A template, checked; one that does not check is reported here and
/// left out, so that nothing later reports it again.
fn template(m: &mut MapReader, key: &'static str, d: &mut Diags) -> Option<(String, Pos)> {
    let n = m.get(key)?;
    let text = string(n, key, d)?;
    crate::channel::template::check_at(&text, n, key, d).then(|| (text, n.pos()))
}

fn where_(n: &Node, d: &mut Diags) -> Vec<Cond> {
    let Some(m) = MapReader::new(n, "where", d) else {
        return vec![];
    };
    let Kind::Map(entries) = &m.node.kind else {
        return vec![];
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let Some(field) = string(k, "a field name", d) else {
            continue;
        };
        match &v.kind {
            Kind::Seq(_) => out.push(Cond::In {
                field,
                items: items(v, d),
                negate: false,
            }),
            Kind::Str(s) if s.starts_with('$') => out.push(Cond::In {
                field,
                items: items(v, d),
                negate: false,
            }),
            Kind::Map(_) => d.error(
                v.pos(),
                format!(
                    "`where: {{ {field}: … }}` needs a value to compare with, found {}",
                    v.type_name()
                ),
                Some(
                    "write e.g. `where: { partner: CN }`; use `when:` for other comparisons".into(),
                ),
            ),
            // A `where` value is text as written: `NO`, `007`, `8505`, `~`.
            _ => match v.scalar_text() {
                Some(text) => out.push(Cond::Cmp {
                    field,
                    op: CmpOp::Equals,
                    value: serde_json::Value::String(text),
                }),
                None => d.error(
                    v.pos(),
                    format!(
                        "`where: {{ {field}: … }}` needs a value to compare with, found nothing"
                    ),
                    Some(
                        "write e.g. `where: { partner: CN }`; use `when:` for other comparisons"
                            .into(),
                    ),
                ),
            },
        }
    }
    out
}

const FIELD_OPS: [&str; 12] = [
    "above",
    "below",
    "at_least",
    "at_most",
    "equals",
    "not_equals",
    "in",
    "not_in",
    "exists",
    "changed",
    "increased_by",
    "decreased_by",
];
pub(super) fn cond(n: &Node, d: &mut Diags) -> Option<Cond> {
    let mut m = MapReader::new(n, "condition", d)?;
    let out = if let Some(e) = m.get("expr") {
        expr(e, d)
    } else if m.has("count") || m.has("within") {
        count_cond(&mut m, n, d)
    } else if let Some(a) = m.get("absent") {
        duration(a, "absent", d).map(|dur| {
            if dur.is_zero() {
                d.error(
                    a.pos(),
                    "`absent: 0s` would always hold",
                    Some("give how long a silence is worth an alert, e.g. `absent: 48h`".into()),
                );
            }
            Cond::Absent { dur, pos: a.pos() }
        })
    } else if m.has("text") {
        text_cond(&mut m, d)
    } else if m.has("field") {
        field_cond(&mut m, d)
    } else if m.has("all") || m.has("any") || m.has("not") {
        let mut parts = Vec::new();
        for key in ["all", "any"] {
            if let Some(list) = m.get(key) {
                let Kind::Seq(items) = &list.kind else {
                    d.error(
                        list.pos(),
                        format!("`{key}` must be a list of conditions"),
                        Some(format!(
                            "write `{key}:` followed by lines starting with `- `"
                        )),
                    );
                    continue;
                };
                let subs: Vec<Cond> = items.iter().filter_map(|i| cond(i, d)).collect();
                parts.push(if key == "all" {
                    Cond::All(subs)
                } else {
                    Cond::Any(subs)
                });
            }
        }
        if let Some(x) = m.get("not") {
            parts.extend(cond(x, d).map(|c| Cond::Not(Box::new(c))));
        }
        if parts.len() == 1 {
            parts.pop()
        } else {
            Some(Cond::All(parts))
        }
    } else {
        m.allow(&["field", "text", "all", "any", "not"]);
        d.error(n.pos(), "this condition says neither `field:`, `text:` nor `all:`/`any:`/`not:`", Some("write e.g. `{ field: rate_pct, above: 157 }` or `{ text: [title], any: [\"export control*\"] }`".into()));
        None
    };
    m.finish(d);
    out
}

/// `{expr: "..."}`: compiled now, within its budgets; a problem is
/// reported at its place inside the expression.
fn expr(n: &Node, d: &mut Diags) -> Option<Cond> {
    let source = string(n, "expr", d)?;
    match crate::expr::Program::compile(&source) {
        Ok(program) => Some(Cond::Expr(CelExpr {
            source,
            pos: n.pos(),
            vars: program.vars.clone(),
            program: std::sync::Arc::new(program),
        })),
        Err(problems) => {
            // The value's position is its first character: a quote when
            // quoted. Problems count lines and columns from 1 in the text.
            let line = d.src.line(n.line).unwrap_or_default();
            let quoted = line
                .chars()
                .nth(n.col.saturating_sub(1))
                .is_some_and(|c| c == '"' || c == '\'');
            for p in problems {
                let pos = if p.line == 1 {
                    Pos::new(n.line, n.col + quoted as usize + p.col - 1, 1)
                } else {
                    Pos::new(n.line + p.line - 1, p.col, 1)
                };
                d.error(pos, p.message, Some(p.hint));
            }
            None
        }
    }
}

/// `{count: N, within: D}`.
fn count_cond(m: &mut MapReader, n: &Node, d: &mut Diags) -> Option<Cond> {
    let count = m.get("count");
    let within = m.get("within");
    let (Some(c), Some(w)) = (count, within) else {
        d.error(
            n.pos(),
            "`count` and `within` go together",
            Some(
                "write e.g. `{ count: 5, within: 1h }`: at least 5 matching records within an hour"
                    .into(),
            ),
        );
        return None;
    };
    let n_val = number(c, "count", d)?;
    if n_val < 1.0 || n_val.fract() != 0.0 || n_val > u32::MAX as f64 {
        d.error(
            c.pos(),
            "`count` must be a whole number of at least 1",
            Some("write e.g. `count: 5`".into()),
        );
        return None;
    }
    let within_dur = duration(w, "within", d)?;
    if within_dur.is_zero() {
        d.error(
            w.pos(),
            "`within: 0s` holds no record",
            Some("give the window, e.g. `within: 1h`".into()),
        );
        return None;
    }
    Some(Cond::Count {
        n: n_val as u32,
        within: within_dur,
        pos: c.pos(),
    })
}

/// `absent` and `count` are properties of the whole rule: the condition itself, or a
/// member of its top-level `all` (the other members then say which records
/// count). Anywhere else (under `any` or `not`) it is reported.
fn split_absent(when: Option<Cond>, d: &mut Diags) -> (Option<Cond>, Option<Window>) {
    fn take(c: Cond, found: &mut Vec<(Window, Pos)>) -> Option<Cond> {
        match c {
            Cond::Absent { dur, pos } => {
                found.push((Window::Absent(dur), pos));
                None
            }
            Cond::Count { n, within, pos } => {
                found.push((Window::Count { n, within }, pos));
                None
            }
            Cond::All(parts) => {
                let rest: Vec<Cond> = parts.into_iter().filter_map(|p| take(p, found)).collect();
                match rest.len() {
                    0 => None,
                    _ => Some(Cond::All(rest)),
                }
            }
            other => Some(other),
        }
    }
    fn misplaced(c: &Cond, d: &mut Diags) {
        match c {
            Cond::Absent { pos, .. } | Cond::Count { pos, .. } => d.error(
                *pos,
                "`absent` and `count` apply to the whole rule: they cannot sit under `any` or `not`",
                Some("make it the rule's condition, or a member of its top-level `all` beside the conditions that say which records count".into()),
            ),
            Cond::All(v) | Cond::Any(v) => v.iter().for_each(|c| misplaced(c, d)),
            Cond::Not(c) => misplaced(c, d),
            _ => {}
        }
    }
    let Some(c) = when else { return (None, None) };
    let mut found = Vec::new();
    let rest = take(c, &mut found);
    if let Some(r) = &rest {
        misplaced(r, d);
    }
    if found.len() > 1 {
        d.error(
            found[1].1,
            "a rule has one `absent` or `count`",
            Some("keep one; write another rule for the other".into()),
        );
    }
    (rest, found.first().map(|(w, _)| *w))
}

fn field_cond(m: &mut MapReader, d: &mut Diags) -> Option<Cond> {
    let field = m.get("field").and_then(|f| string(f, "field", d))?;
    let mut parts = Vec::new();
    for op in FIELD_OPS {
        let Some(v) = m.get(op) else { continue };
        let c = match op {
            "above" | "below" | "at_least" | "at_most" => number(v, op, d).map(|x| Cond::Cmp {
                field: field.clone(),
                op: match op {
                    "above" => CmpOp::Above,
                    "below" => CmpOp::Below,
                    "at_least" => CmpOp::AtLeast,
                    _ => CmpOp::AtMost,
                },
                value: serde_json::Value::from(x),
            }),
            "equals" | "not_equals" => match &v.kind {
                _ if v.scalar_text().is_none() => {
                    d.error(
                        v.pos(),
                        format!("`{op}` compares with one value, found {}", v.type_name()),
                        Some(format!(
                            "for several values write `{}: [..]`",
                            if op == "equals" { "in" } else { "not_in" }
                        )),
                    );
                    None
                }
                _ => Some(Cond::Cmp {
                    field: field.clone(),
                    op: if op == "equals" {
                        CmpOp::Equals
                    } else {
                        CmpOp::NotEquals
                    },
                    value: v.to_json(),
                }),
            },
            "in" | "not_in" => Some(Cond::In {
                field: field.clone(),
                items: items(v, d),
                negate: op == "not_in",
            }),
            "exists" => boolean(v, op, d).map(|want| Cond::Exists {
                field: field.clone(),
                want,
            }),
            "changed" => boolean(v, op, d).map(|want| {
                let c = Cond::Changed {
                    field: field.clone(),
                };
                if want { c } else { Cond::Not(Box::new(c)) }
            }),
            _ => delta(v, op, d).map(|(amount, percent)| Cond::Delta {
                field: field.clone(),
                up: op == "increased_by",
                amount,
                percent,
            }),
        };
        parts.extend(c);
    }
    if parts.is_empty() && !FIELD_OPS.iter().any(|o| m.has(o)) {
        let fn_pos = m.key_node("field").map(Node::pos).unwrap_or_default();
        d.error(fn_pos, format!("the condition on `{field}` says nothing about it"), Some("add a comparison: above, below, at_least, at_most, equals, not_equals, in, not_in, exists, changed, increased_by or decreased_by".into()));
    }
    if parts.len() == 1 {
        parts.pop()
    } else {
        Some(Cond::All(parts))
    }
}

/// `10` or `"10%"`.
fn delta(v: &Node, op: &str, d: &mut Diags) -> Option<(f64, bool)> {
    if let Kind::Str(s) = &v.kind
        && let Some(p) = s.trim().strip_suffix('%')
        && let Ok(x) = p.trim().parse::<f64>()
    {
        return Some((x, true));
    }
    let x = number(v, op, d)?;
    Some((x, false))
}

fn items(n: &Node, d: &mut Diags) -> Items {
    if let Kind::Str(s) = &n.kind
        && let Some(name) = s.strip_prefix('$')
    {
        return Items::List {
            name: name.to_string(),
            pos: n.pos(),
        };
    }
    Items::Inline(
        strings(n, "a list item", d)
            .into_iter()
            .map(|(s, _)| s)
            .collect(),
    )
}

fn text_cond(m: &mut MapReader, d: &mut Diags) -> Option<Cond> {
    let fields_node = m.get("text")?;
    let fields: Vec<String> = strings(fields_node, "text", d)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    if let Some(r) = m.get("regex") {
        for k in ["any", "all", "none"] {
            if let Some(kn) = m.key_node(k) {
                d.error(
                    kn.pos(),
                    format!("`regex` and `{k}` cannot be combined in one condition"),
                    Some("put them in two conditions under `all:`".into()),
                );
            }
        }
        m.allow(&["any", "all", "none"]);
        let pattern = string(r, "regex", d)?;
        return match regex::RegexBuilder::new(&pattern)
            .size_limit(1 << 22)
            .build()
        {
            Ok(regex) => Some(Cond::Regex { fields, regex }),
            Err(e) => {
                let msg = e.to_string();
                let last = msg
                    .lines()
                    .rev()
                    .find(|l| l.starts_with("error:"))
                    .unwrap_or(&msg)
                    .to_string();
                d.error(
                    r.pos(),
                    format!(
                        "invalid regular expression: {}",
                        last.trim_start_matches("error: ")
                    ),
                    Some("check brackets and escapes; for plain words prefer `any: [..]`".into()),
                );
                None
            }
        };
    }
    let mut phrases = |key: &'static str, d: &mut Diags| -> Option<Items> {
        let n = m.get(key)?;
        let it = items(n, d);
        if let Items::Inline(v) = &it {
            check_phrases(n, v, d);
        }
        Some(it)
    };
    let any = phrases("any", d);
    let all = phrases("all", d);
    let none = phrases("none", d);
    if any.is_none() && all.is_none() && none.is_none() {
        d.error(
            fields_node.pos(),
            format!(
                "the text condition on {} names no phrases",
                describe(fields_node)
            ),
            Some(
                "add `any: [\"export control*\"]`, `all: [..]`, `none: [..]` or `regex: \"..\"`"
                    .into(),
            ),
        );
        return None;
    }
    Some(Cond::Text {
        fields,
        any,
        all,
        none,
    })
}

fn check_phrases(n: &Node, phrases: &[String], d: &mut Diags) {
    let nodes: Vec<&Node> = match &n.kind {
        Kind::Seq(items) => items.iter().collect(),
        _ => vec![n],
    };
    for (p, node) in phrases.iter().zip(nodes) {
        let body = p.strip_suffix('*').unwrap_or(p);
        if body.trim().is_empty() {
            d.error(
                node.pos(),
                "empty phrase",
                Some("write words, e.g. `\"export control*\"`".into()),
            );
        } else if !body.chars().any(char::is_alphanumeric) {
            d.error(
                node.pos(),
                format!("the phrase `{p}` has no words: punctuation only separates words"),
                Some("write the words, e.g. `\"rare earth*\"` for \"rare-earth\"".into()),
            );
        } else if body.contains('*') {
            d.error(
                node.pos(),
                format!("`*` may only end a phrase, as in `control*`: `{p}`"),
                Some("for other patterns use `regex:`".into()),
            );
        }
    }
}
