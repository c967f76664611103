//! `tocsin eval --explain`: for each record, each rule of its source and
//! each condition, whether it held and with which values
//! (`rate_pct = 160 > 157 ✓`, `text: matched "export control*" in title`).
//! The notifications the engine made for the record close each rule.

use std::fmt::Write as _;

use serde_json::Value;

use crate::engine::condition::{eq_value, in_set};
use crate::engine::text::{PhraseSetBuilder, ScanBuf};
use crate::engine::words::words_of;
use crate::notification::Notification;
use crate::record::{Record, RecordKind, as_number, as_text, is_present, lookup};
use crate::rules::{CmpOp, Cond, RuleDef, RuleSet, Window};

/// Appends the explanation of one record.
pub fn record(set: &RuleSet, rec: &Record, notes: &[Notification], out: &mut String) {
    let kind = match rec.kind {
        RecordKind::Row => "row",
        RecordKind::Removed => "removed row",
        RecordKind::Event => "record",
    };
    let _ = writeln!(out, "── {} {kind} {}", rec.source, rec.key);
    for def in set
        .rules
        .iter()
        .filter(|d| d.sources.iter().any(|(s, _)| **s == *rec.source))
    {
        explain_rule(set, def, rec, notes, out);
    }
    out.push('\n');
}

fn explain_rule(
    set: &RuleSet,
    def: &RuleDef,
    rec: &Record,
    notes: &[Notification],
    out: &mut String,
) {
    let mut lines = String::new();
    let holds = match &def.when {
        Some(c) if rec.kind != RecordKind::Removed => cond(set, c, rec, 2, &mut lines),
        Some(_) => {
            lines.push_str("      the row was removed: no condition holds\n");
            false
        }
        None => true,
    };
    let mine: Vec<&Notification> = notes.iter().filter(|n| *n.rule == *def.id).collect();
    let verdict = if !mine.is_empty() {
        let states: Vec<String> = mine
            .iter()
            .map(|n| format!("{} {}", n.state.as_str(), n.key))
            .collect();
        format!("notifies: {}", states.join(", "))
    } else if holds {
        match def.window {
            Some(Window::Count { n, within }) => format!(
                "counts toward {n} within {}; no notification yet",
                humantime::format_duration(within)
            ),
            Some(Window::Absent(_)) => "resets its silence".into(),
            None => "holds; no notification (already firing, or waiting out `for:`)".into(),
        }
    } else {
        "does not hold".into()
    };
    let mark = if holds { "✓" } else { "✗" };
    let _ = writeln!(out, "   {mark} {}  → {verdict}", def.id);
    out.push_str(&lines);
}

fn pad(depth: usize) -> String {
    "   ".repeat(depth + 1)
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn line(out: &mut String, depth: usize, ok: bool, text: String) -> bool {
    let _ = writeln!(out, "{}{} {text}", pad(depth), if ok { "✓" } else { "✗" });
    ok
}

fn cond(set: &RuleSet, c: &Cond, rec: &Record, depth: usize, out: &mut String) -> bool {
    let f = &rec.fields;
    match c {
        Cond::Cmp { field, op, value } => {
            let v = lookup(f, field);
            let (sym, name) = match op {
                CmpOp::Above => (">", "above"),
                CmpOp::Below => ("<", "below"),
                CmpOp::AtLeast => ("≥", "at least"),
                CmpOp::AtMost => ("≤", "at most"),
                CmpOp::Equals => ("=", "equals"),
                CmpOp::NotEquals => ("≠", "not equals"),
            };
            let Some(v) = v.filter(|v| !v.is_null()) else {
                return line(
                    out,
                    depth,
                    false,
                    format!("{field} is missing ({name} {})", show(value)),
                );
            };
            match op {
                CmpOp::Equals | CmpOp::NotEquals => {
                    let text = as_text(value).map(|t| t.trim().to_lowercase());
                    let eq = eq_value(v, value.as_f64(), text.as_deref().unwrap_or_default());
                    let ok = eq == (*op == CmpOp::Equals);
                    line(
                        out,
                        depth,
                        ok,
                        format!("{field} = {}, {name} {}", show(v), show(value)),
                    )
                }
                _ => {
                    let x = as_number(value).unwrap_or(f64::NAN);
                    let Some(n) = as_number(v) else {
                        return line(
                            out,
                            depth,
                            false,
                            format!("{field} = {} is not a number ({name} {x})", show(v)),
                        );
                    };
                    let ok = match op {
                        CmpOp::Above => n > x,
                        CmpOp::Below => n < x,
                        CmpOp::AtLeast => n >= x,
                        _ => n <= x,
                    };
                    line(out, depth, ok, format!("{field} = {n} {sym} {x}"))
                }
            }
        }
        Cond::In {
            field,
            items,
            negate,
        } => {
            let list = set.list(items);
            let label = crate::engine::compile::items_label(items);
            let what = if *negate { "not in" } else { "in" };
            let Some(v) = lookup(f, field).filter(|v| !v.is_null()) else {
                return line(
                    out,
                    depth,
                    false,
                    format!("{field} is missing ({what} {label})"),
                );
            };
            let lower: Vec<String> = list.iter().map(|i| i.trim().to_lowercase()).collect();
            let one = |x: &Value| in_set(x, &lower, None);
            let found = match v {
                Value::Array(a) => a.iter().any(one),
                other => one(other),
            };
            line(
                out,
                depth,
                found != *negate,
                format!("{field} = {}, {what} {label}", show(v)),
            )
        }
        Cond::Exists { field, want } => {
            let present = is_present(lookup(f, field));
            let text = if present {
                format!("{field} is present")
            } else {
                format!("{field} is missing or empty")
            };
            line(out, depth, present == *want, text)
        }
        Cond::Text {
            fields,
            any,
            all,
            none,
        } => {
            let texts: Vec<(&String, String)> = fields
                .iter()
                .filter_map(|name| Some((name, text_of(lookup(f, name))?)))
                .collect();
            let found = |phrase: &str| -> Option<&String> {
                let mut b = PhraseSetBuilder::default();
                let r = b.add(phrase);
                let ps = b.build();
                let mut buf = ScanBuf::default();
                texts.iter().find_map(|(name, t)| {
                    let mut hit = false;
                    ps.scan(t, &mut buf, |pid, whole| {
                        hit |= pid == r.pid && (whole || r.prefix)
                    });
                    hit.then_some(*name)
                })
            };
            // Each phrase of a list that was found, with where.
            let hits_in = |list: &[String]| -> Vec<String> {
                list.iter()
                    .filter_map(|p| found(p).map(|n| format!("{p:?} in {n}")))
                    .collect()
            };
            let mut ok = true;
            let mut missed: Vec<String> = Vec::new();
            if let Some(items) = any {
                let list = set.list(items);
                let hits = hits_in(&list);
                if hits.is_empty() {
                    missed.extend(list.iter().cloned());
                }
                ok &= line(
                    out,
                    depth,
                    !hits.is_empty(),
                    if hits.is_empty() {
                        format!("text: none of {} in {}", quoted(&list), fields.join(", "))
                    } else {
                        format!("text: matched {}", hits.join(", "))
                    },
                );
            }
            if let Some(items) = all {
                for p in set.list(items) {
                    let hit = found(&p);
                    if hit.is_none() {
                        missed.push(p.clone());
                    }
                    ok &= line(
                        out,
                        depth,
                        hit.is_some(),
                        match hit {
                            Some(n) => format!("text: matched {p:?} in {n} (all)"),
                            None => format!("text: {p:?} not found (all)"),
                        },
                    );
                }
            }
            if let Some(items) = none {
                let list = set.list(items);
                let hits = hits_in(&list);
                ok &= line(
                    out,
                    depth,
                    hits.is_empty(),
                    if hits.is_empty() {
                        format!("text: none of the excluded {}", quoted(&list))
                    } else {
                        format!("text: found excluded {}", hits.join(", "))
                    },
                );
            }
            close_words(&texts, &missed, depth, out);
            ok
        }
        Cond::Regex { fields, regex } => {
            let hit = fields
                .iter()
                .find(|name| text_of(lookup(f, name)).is_some_and(|t| regex.is_match(&t)));
            line(
                out,
                depth,
                hit.is_some(),
                match hit {
                    Some(n) => format!("{n} matches /{}/", regex.as_str()),
                    None => format!("{} do not match /{}/", fields.join(", "), regex.as_str()),
                },
            )
        }
        Cond::Changed { field } => {
            let Some(prev) = &rec.prev else {
                return line(
                    out,
                    depth,
                    false,
                    format!("{field}: no previous row to compare with"),
                );
            };
            let (old, new) = (lookup(prev, field), lookup(f, field));
            let changed = match (old, new) {
                (Some(a), Some(b)) => match (as_number(a), as_number(b)) {
                    (Some(x), Some(y)) => x != y,
                    _ => a != b,
                },
                (None, None) => false,
                _ => true,
            };
            let s = |v: Option<&Value>| v.map(show).unwrap_or_else(|| "(missing)".into());
            line(
                out,
                depth,
                changed,
                format!("{field}: {} → {}", s(old), s(new)),
            )
        }
        Cond::Delta {
            field,
            up,
            amount,
            percent,
        } => {
            let Some(prev) = &rec.prev else {
                return line(
                    out,
                    depth,
                    false,
                    format!("{field}: no previous row to compare with"),
                );
            };
            let (Some(old), Some(new)) = (
                lookup(prev, field).and_then(as_number),
                lookup(f, field).and_then(as_number),
            ) else {
                return line(
                    out,
                    depth,
                    false,
                    format!("{field}: the old or new value is not a number"),
                );
            };
            let diff = if *up { new - old } else { old - new };
            let word = if *up { "up" } else { "down" };
            let unit = if *percent { "%" } else { "" };
            let (ok, by) = if *percent {
                let pct = if old != 0.0 {
                    diff / old.abs() * 100.0
                } else {
                    0.0
                };
                (old != 0.0 && pct >= *amount, format!("{pct:.1}%"))
            } else {
                (diff >= *amount, format!("{diff}"))
            };
            line(
                out,
                depth,
                ok,
                format!("{field}: {old} → {new}, {word} {by} (needs {amount}{unit})"),
            )
        }
        Cond::All(v) => {
            let _ = writeln!(out, "{}all of:", pad(depth));
            let mut ok = true;
            for c in v {
                ok &= cond(set, c, rec, depth + 1, out);
            }
            ok
        }
        Cond::Any(v) => {
            let _ = writeln!(out, "{}any of:", pad(depth));
            let mut ok = false;
            for c in v {
                ok |= cond(set, c, rec, depth + 1, out);
            }
            ok
        }
        Cond::Not(c) => {
            let _ = writeln!(out, "{}not (inverts):", pad(depth));
            !cond(set, c, rec, depth + 1, out)
        }
        Cond::Expr(e) => {
            let mut ctx = crate::expr::context();
            let mut shown = Vec::new();
            for v in &e.vars {
                match v.as_str() {
                    "prev" => {
                        let p = rec
                            .prev
                            .as_deref()
                            .map(crate::engine::condition::map_to_cel);
                        shown.push(format!(
                            "prev = {}",
                            if p.is_some() {
                                "(previous row)"
                            } else {
                                "(none)"
                            }
                        ));
                        ctx.add_variable_from_value(
                            "prev",
                            p.unwrap_or_else(|| {
                                cel::Value::from(
                                    std::collections::HashMap::<String, cel::Value>::new(),
                                )
                            }),
                        );
                    }
                    "lists" => {
                        let map: std::collections::HashMap<String, cel::Value> = set
                            .lists
                            .iter()
                            .map(|(k, l)| {
                                let items = l
                                    .items
                                    .iter()
                                    .map(|i| cel::Value::String(std::sync::Arc::new(i.clone())))
                                    .collect();
                                (k.clone(), cel::Value::List(std::sync::Arc::new(items)))
                            })
                            .collect();
                        ctx.add_variable_from_value("lists", cel::Value::from(map));
                    }
                    name => match lookup(f, name) {
                        Some(v) => {
                            shown.push(format!("{name} = {}", show(v)));
                            ctx.add_variable_from_value(name, crate::engine::condition::to_cel(v));
                        }
                        None => shown.push(format!("{name} is missing")),
                    },
                }
            }
            let (ok, result) = match e.program.execute(&ctx) {
                Ok(cel::Value::Bool(b)) => (b, b.to_string()),
                Ok(other) => (false, format!("{other:?}, not a boolean")),
                Err(err) => (false, format!("error: {err}")),
            };
            line(
                out,
                depth,
                ok,
                format!("expr `{}` → {result} ({})", e.source, shown.join(", ")),
            )
        }
        Cond::Absent { .. } | Cond::Count { .. } => true,
    }
}

fn quoted(list: &[String]) -> String {
    let q: Vec<String> = list.iter().map(|p| format!("{p:?}")).collect();
    format!("[{}]", q.join(", "))
}

/// For phrases that were not found but share a word with a text (`"rare
/// earth"` beside "rare earthenware"), the text as words were read, so the
/// analyst sees what the phrase was compared with.
fn close_words(texts: &[(&String, String)], missed: &[String], depth: usize, out: &mut String) {
    let phrase_words: Vec<String> = missed
        .iter()
        .flat_map(|p| {
            words_of(p.trim().trim_end_matches('*'))
                .split(' ')
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    if phrase_words.is_empty() {
        return;
    }
    for (name, text) in texts {
        let words = words_of(text);
        let close = words
            .split(' ')
            .any(|w| phrase_words.iter().any(|p| w.starts_with(p.as_str())));
        if close {
            let shown: String = words.chars().take(300).collect();
            let more = if shown.len() < words.len() {
                " …"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{}  words as read in {name}: {shown}{more}",
                pad(depth)
            );
        }
    }
}

fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|i| as_text(i).map(|t| t.into_owned()))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Value::Object(_) | Value::Null => None,
        other => as_text(other).map(|t| t.into_owned()),
    }
}
