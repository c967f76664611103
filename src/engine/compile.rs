//! Rules + config → the engine form: conditions with interned field slots,
//! one phrase automaton, templates parsed once, rules indexed by source.
//! Reference checks that need the config (sources, channels, `for:` on
//! event sources) are reported here, at the rule's `file:line:col`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::condition::{Expr, NumOp, TextCond};
use super::rule::{Compiled, Guard, Rule, SourcePlan};
use super::text::{PhraseRef, PhraseSetBuilder};
use crate::config::Config;
use crate::diag::{Diagnostic, Diags, Problems, closest};
use crate::notification::AlertState;
use crate::record::parse_number;
use crate::rules::{CmpOp, Cond, Items, RuleSet, Window};
use rustc_hash::FxHashMap;

#[derive(Default)]
struct Interner {
    slots: Vec<String>,
    ids: HashMap<String, usize>,
    tslots: Vec<usize>,
    tids: HashMap<usize, usize>,
    /// Every list as a CEL value, built once per compile for the
    /// expressions that read `lists`.
    lists: Option<cel::Value>,
}

impl Interner {
    fn slot(&mut self, name: &str) -> usize {
        if let Some(&i) = self.ids.get(name) {
            return i;
        }
        self.slots.push(name.to_string());
        self.ids.insert(name.to_string(), self.slots.len() - 1);
        self.slots.len() - 1
    }

    fn tslot(&mut self, name: &str) -> usize {
        let s = self.slot(name);
        if let Some(&t) = self.tids.get(&s) {
            return t;
        }
        self.tslots.push(s);
        self.tids.insert(s, self.tslots.len() - 1);
        self.tslots.len() - 1
    }
}

pub fn compile(config: &Config, set: &RuleSet) -> Result<Compiled, Problems> {
    let mut out: Vec<Diagnostic> = Vec::new();
    let mut interner = Interner::default();
    let mut phrases = PhraseSetBuilder::default();
    let mut env = crate::channel::template::environment();
    let mut rules = Vec::with_capacity(set.rules.len());
    let mut by_source: HashMap<String, Vec<usize>> = HashMap::new();
    let mut source_slots: HashMap<String, HashSet<usize>> = HashMap::new();
    let mut guards: Vec<Option<GuardSpec>> = Vec::with_capacity(set.rules.len());

    for def in &set.rules {
        let mut d = Diags::new(&set.files[def.file]);
        let mut all_events = true;
        for (name, pos) in &def.sources {
            match config.source(name) {
                Some(s) => all_events &= s.is_event_source(),
                None => {
                    let hint = closest(name, config.sources.iter().map(|s| s.name.as_str()))
                        .map(|c| format!("did you mean `{c}`?"))
                        .unwrap_or_else(|| {
                            format!(
                                "the config defines: {}",
                                names(config.sources.iter().map(|s| s.name.as_str()))
                            )
                        });
                    d.error(*pos, format!("unknown source `{name}`"), Some(hint));
                }
            }
        }
        for (name, pos) in &def.notify {
            if config.channel(name).is_none() {
                let hint = closest(name, config.channels.iter().map(|c| c.name.as_str()))
                    .map(|c| format!("did you mean `{c}`?"))
                    .unwrap_or_else(|| {
                        format!(
                            "the config defines: {}",
                            names(config.channels.iter().map(|c| c.name.as_str()))
                        )
                    });
                d.error(*pos, format!("unknown channel `{name}`"), Some(hint));
            }
        }
        // A rule over feeds alone can only read the fields feed items have.
        let feeds: Vec<&crate::config::SourceConfig> = def
            .sources
            .iter()
            .filter_map(|(name, _)| config.source(name))
            .collect();
        let feed_only = !feeds.is_empty()
            && feeds.len() == def.sources.len()
            && feeds
                .iter()
                .all(|s| matches!(s.kind, crate::config::SourceKind::Feed(_)));
        if feed_only {
            let known = |f: &str| {
                crate::source::feed::FIELDS.contains(&f)
                    || feeds.iter().any(|s| s.fields.contains_key(f))
            };
            for (field, pos) in &def.field_refs {
                let top = field.split('.').next().unwrap_or(field);
                if known(field) || known(top) {
                    continue;
                }
                let mut all: Vec<&str> = crate::source::feed::FIELDS.to_vec();
                all.extend(
                    feeds
                        .iter()
                        .flat_map(|s| s.fields.keys().map(String::as_str)),
                );
                let hint = closest(field, all.iter().copied())
                    .map(|c| format!("did you mean `{c}`?"))
                    .unwrap_or_else(|| format!("a feed item has: {}", all.join(", ")));
                d.error(
                    *pos,
                    format!("feed items have no field `{field}`: the rule would never see one"),
                    Some(hint),
                );
            }
        }
        if let Some(pos) = def.for_pos
            && !def.for_.is_zero()
            && all_events
            && def.key.is_none()
            && !def.sources.is_empty()
        {
            d.error(pos, "`for:` needs a state that lasts, but this rule's sources only produce one-off events (log lines or feed items)", Some("remove `for:`, give the rule a `key:` so events of one key share a state, or use a `table` source".into()));
        }
        let expr = def
            .when
            .as_ref()
            .map(|c| lower(c, set, &mut interner, &mut phrases));
        let mut tmpl =
            |what: &str, t: &Option<(String, crate::diag::Pos)>, d: &mut Diags| -> Option<String> {
                let (text, pos) = t.as_ref()?;
                let name = format!("{}#{what}", def.id);
                match env.add_template_owned(name.clone(), text.clone()) {
                    Ok(()) => Some(name),
                    Err(e) => {
                        d.error(
                            *pos,
                            format!(
                                "the `{what}` template does not parse: {}",
                                crate::channel::template::describe(&e)
                            ),
                            None,
                        );
                        None
                    }
                }
            };
        let summary = tmpl("summary", &def.summary, &mut d);
        let body = tmpl("body", &def.body, &mut d);
        let key = tmpl("key", &def.key, &mut d);
        let mut shown = Vec::new();
        if let Some(c) = &def.when {
            shown_fields(c, &mut shown);
        }
        let idx = rules.len();
        guards.push(expr.as_ref().and_then(guard_of));
        for (name, _) in &def.sources {
            by_source.entry(name.clone()).or_default().push(idx);
            if let Some(e) = &expr {
                let slots = source_slots.entry(name.clone()).or_default();
                collect_slots(e, &interner, slots);
            }
        }
        let mut rule = Rule {
            id: Arc::from(def.id.as_str()),
            title: def.title.as_str().into(),
            severity: def.severity,
            labels: Arc::new(def.labels.clone()),
            expr,
            for_: chrono::Duration::from_std(def.for_).unwrap_or(chrono::Duration::MAX),
            repeat: def
                .repeat
                .map(|r| chrono::Duration::from_std(r).unwrap_or(chrono::Duration::MAX)),
            resolve: def.resolve,
            notify: def.notify.iter().map(|(n, _)| n.clone()).collect(),
            summary,
            body,
            key,
            condition: {
                let when = def.when.as_ref().map(describe);
                match (def.window, when) {
                    (Some(Window::Absent(a)), None) => {
                        format!("no record for {}", humantime::format_duration(a))
                    }
                    (Some(Window::Absent(a)), Some(w)) => {
                        format!("no record where {w} for {}", humantime::format_duration(a))
                    }
                    (Some(Window::Count { n, within }), w) => format!(
                        "at least {n} records{} within {}",
                        w.map(|w| format!(" where {w}")).unwrap_or_default(),
                        humantime::format_duration(within)
                    ),
                    (None, w) => w.unwrap_or_else(|| "every record".into()),
                }
            },
            over_budget: Default::default(),
            absent: match def.window {
                Some(Window::Absent(a)) => {
                    Some(chrono::Duration::from_std(a).unwrap_or(chrono::Duration::MAX))
                }
                _ => None,
            },
            count: match def.window {
                Some(Window::Count { n, within }) => Some((
                    n,
                    chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX),
                )),
                _ => None,
            },
            key_field: def.key.as_ref().and_then(|(t, _)| {
                let inner = t.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
                let plain = !inner.is_empty()
                    && inner.chars().all(|c| c.is_alphanumeric() || c == '_')
                    && !matches!(inner, "source" | "rule");
                plain.then(|| inner.to_string())
            }),
            absent_key: def
                .sources
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>()
                .join(",")
                .into(),
            shown_fields: shown,
            feed: feed_only,
            heads: Default::default(),
        };
        rule.heads =
            [AlertState::Firing, AlertState::Resolved].map(|s| super::texts::body_head(&rule, s));
        rules.push(rule);
        out.append(&mut d.out);
    }
    if out.iter().any(Diagnostic::is_error) {
        return Err(Problems(out));
    }
    let mut plans = FxHashMap::default();
    for (name, rule_ids) in by_source {
        let mut slots: Vec<usize> = source_slots
            .remove(&name)
            .unwrap_or_default()
            .into_iter()
            .collect();
        slots.sort_unstable();
        let mut guarded = vec![false; rule_ids.len()];
        let mut guard_at = vec![None; rule_ids.len()];
        let mut plan_guards: Vec<Guard> = Vec::new();
        for (pos, &ri) in rule_ids.iter().enumerate() {
            let Some((slot, values, at)) = &guards[ri] else {
                continue;
            };
            guarded[pos] = true;
            guard_at[pos] = Some(at.unwrap_or(usize::MAX));
            let g = match plan_guards.iter_mut().position(|g| g.slot == *slot) {
                Some(i) => &mut plan_guards[i],
                None => {
                    plan_guards.push(Guard {
                        slot: *slot,
                        values: FxHashMap::default(),
                        all: Vec::new(),
                    });
                    plan_guards.last_mut().expect("just pushed")
                }
            };
            g.all.push(pos);
            for v in values {
                let list = g.values.entry(v.clone()).or_default();
                if !list.contains(&pos) {
                    list.push(pos);
                }
            }
        }
        let mut text_guarded = vec![false; rule_ids.len()];
        let mut phrase_rules: Vec<Vec<usize>> = Vec::new();
        let mut text_guard_slots: Vec<usize> = Vec::new();
        for (pos, &ri) in rule_ids.iter().enumerate() {
            let Some((tslots, pids)) = rules[ri].expr.as_ref().and_then(text_guard_of) else {
                continue;
            };
            text_guarded[pos] = true;
            for t in tslots {
                if !text_guard_slots.contains(&t) {
                    text_guard_slots.push(t);
                }
            }
            for pid in pids {
                let pid = pid as usize;
                if phrase_rules.len() <= pid {
                    phrase_rules.resize(pid + 1, Vec::new());
                }
                if !phrase_rules[pid].contains(&pos) {
                    phrase_rules[pid].push(pos);
                }
            }
        }
        let unguarded = (0..rule_ids.len())
            .filter(|&p| !guarded[p] && !text_guarded[p])
            .collect();
        let keyed = rule_ids.iter().any(|&ri| rules[ri].key.is_some());
        plans.insert(
            name,
            Arc::new(SourcePlan {
                unguarded,
                keyed,
                rules: rule_ids,
                slots,
                guarded,
                guard_at,
                guards: plan_guards,
                text_guarded,
                phrase_rules,
                text_guard_slots,
            }),
        );
    }
    Ok(Compiled {
        rules,
        plans,
        slot_names: interner.slots,
        text_slots: interner.tslots,
        phrases: phrases.build(),
        env,
        rules_sha256: rules_sha256(set),
    })
}

/// The SHA-256 of the rule files in force: each file's path and text, in
/// the order they were read, each ended by a zero byte.
fn rules_sha256(set: &RuleSet) -> String {
    let mut all = Vec::new();
    for f in &set.files {
        all.extend_from_slice(f.path.to_string_lossy().as_bytes());
        all.push(0);
        all.extend_from_slice(f.text.as_bytes());
        all.push(0);
    }
    crate::record::sha256_hex(&all)
}

/// A condition that must hold for the rule to hold and that names the
/// exact text values a field must have (`where: {partner: CN}`, `in: [..]`):
/// rules behind such a guard are only evaluated for records that pass it.
/// A value guard: the field slot, the lowercased values it lets through,
/// and which child of the rule's `all` it is (`None`: the whole condition).
type GuardSpec = (usize, Vec<String>, Option<usize>);

fn guard_of(e: &Expr) -> Option<GuardSpec> {
    match e {
        Expr::Eq {
            slot,
            num: None,
            text,
            negate: false,
        } => Some((*slot, vec![text.clone()], None)),
        Expr::In {
            slot,
            lower,
            negate: false,
            ..
        } => Some((*slot, lower.clone(), None)),
        Expr::All(children) => children.iter().enumerate().find_map(|(i, c)| match c {
            Expr::Eq { .. } | Expr::In { .. } => guard_of(c).map(|(s, v, _)| (s, v, Some(i))),
            _ => None,
        }),
        _ => None,
    }
}

/// A phrase condition that must hold for the rule to hold: the rule can
/// only hold for records in which one of these phrases was found.
fn text_guard_of(e: &Expr) -> Option<(Vec<usize>, Vec<u32>)> {
    match e {
        Expr::Text(t) => {
            let phrases = if !t.any.is_empty() { &t.any } else { &t.all };
            (!phrases.is_empty())
                .then(|| (t.tslots.clone(), phrases.iter().map(|p| p.pid).collect()))
        }
        Expr::All(children) => children.iter().find_map(|c| match c {
            Expr::Text(_) => text_guard_of(c),
            _ => None,
        }),
        _ => None,
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn collect_slots(e: &Expr, interner: &Interner, out: &mut HashSet<usize>) {
    match e {
        Expr::Num { slot, .. }
        | Expr::Eq { slot, .. }
        | Expr::In { slot, .. }
        | Expr::Exists { slot, .. }
        | Expr::Changed { slot, .. }
        | Expr::Delta { slot, .. } => {
            out.insert(*slot);
        }
        Expr::Text(t) => out.extend(t.tslots.iter().map(|&t| interner.tslots[t])),
        Expr::Regex { slots, .. } => out.extend(slots.iter().map(|&t| interner.tslots[t])),
        Expr::All(v) | Expr::Any(v) => v.iter().for_each(|e| collect_slots(e, interner, out)),
        Expr::Not(e) => collect_slots(e, interner, out),
        Expr::Cel { fields, .. } => out.extend(fields.iter().map(|(_, s)| *s)),
    }
}

fn lower(c: &Cond, set: &RuleSet, it: &mut Interner, ph: &mut PhraseSetBuilder) -> Expr {
    match c {
        // Taken out of the condition by the reader; holds if it were left.
        Cond::Absent { .. } | Cond::Count { .. } => Expr::All(Vec::new()),
        Cond::Expr(e) => {
            let lists = e.vars.iter().any(|v| v == "lists").then(|| {
                it.lists
                    .get_or_insert_with(|| {
                        let map: std::collections::HashMap<String, cel::Value> = set
                            .lists
                            .iter()
                            .map(|(name, l)| {
                                let items: Vec<cel::Value> = l
                                    .items
                                    .iter()
                                    .map(|i| cel::Value::String(Arc::new(i.clone())))
                                    .collect();
                                (name.clone(), cel::Value::List(Arc::new(items)))
                            })
                            .collect();
                        cel::Value::from(map)
                    })
                    .clone()
            });
            Expr::Cel {
                program: e.program.clone(),
                fields: e
                    .vars
                    .iter()
                    .filter(|v| *v != "prev" && *v != "lists")
                    .map(|v| (v.clone(), it.slot(v)))
                    .collect(),
                prev: e.vars.iter().any(|v| v == "prev"),
                lists,
            }
        }
        Cond::Cmp { field, op, value } => {
            let slot = it.slot(field);
            let x = match value {
                serde_json::Value::Number(n) => n.as_f64(),
                serde_json::Value::String(s) => parse_number(s),
                _ => None,
            };
            let num_op = match op {
                CmpOp::Above => Some(NumOp::Above),
                CmpOp::Below => Some(NumOp::Below),
                CmpOp::AtLeast => Some(NumOp::AtLeast),
                CmpOp::AtMost => Some(NumOp::AtMost),
                _ => None,
            };
            match (num_op, x) {
                (Some(op), Some(x)) => Expr::Num { slot, op, x },
                // Written as a number, it compares as one; written as text
                // (`where:` values always are), as text.
                _ => Expr::Eq {
                    slot,
                    num: value.as_f64(),
                    text: crate::record::as_text(value)
                        .map(|t| t.trim().to_lowercase())
                        .unwrap_or_default(),
                    negate: *op == CmpOp::NotEquals,
                },
            }
        }
        Cond::In {
            field,
            items,
            negate,
        } => {
            let list = set.list(items);
            let mut lower: Vec<String> = list.iter().map(|i| i.trim().to_lowercase()).collect();
            lower.sort();
            lower.dedup();
            let set = (lower.len() > 8).then(|| lower.iter().cloned().collect());
            Expr::In {
                slot: it.slot(field),
                lower,
                set,
                negate: *negate,
            }
        }
        Cond::Exists { field, want } => Expr::Exists {
            slot: it.slot(field),
            want: *want,
        },
        Cond::Text {
            fields,
            any,
            all,
            none,
        } => {
            let tslots = fields.iter().map(|f| it.tslot(f)).collect();
            let mut refs = |items: &Option<Items>| -> Vec<PhraseRef> {
                items
                    .as_ref()
                    .map(|i| {
                        set.list(i)
                            .iter()
                            .filter(|p| !p.trim().is_empty())
                            .map(|p| ph.add(p))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            Expr::Text(TextCond {
                tslots,
                any: refs(any),
                all: refs(all),
                none: refs(none),
            })
        }
        Cond::Regex { fields, regex } => Expr::Regex {
            slots: fields.iter().map(|f| it.tslot(f)).collect(),
            re: regex.clone(),
        },
        Cond::Changed { field } => Expr::Changed {
            slot: it.slot(field),
            name: field.clone(),
        },
        Cond::Delta {
            field,
            up,
            amount,
            percent,
        } => Expr::Delta {
            slot: it.slot(field),
            name: field.clone(),
            up: *up,
            amount: *amount,
            percent: *percent,
        },
        Cond::All(v) => Expr::All(v.iter().map(|c| lower(c, set, it, ph)).collect()),
        Cond::Any(v) => Expr::Any(v.iter().map(|c| lower(c, set, it, ph)).collect()),
        Cond::Not(c) => Expr::Not(Box::new(lower(c, set, it, ph))),
    }
}

/// Fields whose values make the default summary say "the value and the
/// threshold": those compared as numbers.
fn shown_fields(c: &Cond, out: &mut Vec<String>) {
    match c {
        Cond::Cmp { field, op, .. }
            if !matches!(op, CmpOp::Equals | CmpOp::NotEquals) && !out.contains(field) =>
        {
            out.push(field.clone());
        }
        Cond::Delta { field, .. } | Cond::Changed { field } if !out.contains(field) => {
            out.push(field.clone());
        }
        Cond::All(v) | Cond::Any(v) => v.iter().for_each(|c| shown_fields(c, out)),
        _ => {}
    }
}

fn show_value(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => crate::record::as_text(v).unwrap_or_default().into_owned(),
    }
}

/// A list as written: `$name` or `[a, b]`.
pub fn items_label(i: &Items) -> String {
    match i {
        Items::List { name, .. } => format!("${name}"),
        Items::Inline(v) => format!("[{}]", v.join(", ")),
    }
}

/// The condition in words, for the default body: `rate_pct above 157`.
pub fn describe(c: &Cond) -> String {
    let items = items_label;
    match c {
        Cond::Cmp { field, op, value } => format!(
            "{field} {} {}",
            op.key().replace('_', " "),
            show_value(value)
        ),
        Cond::In {
            field,
            items: i,
            negate,
        } => format!(
            "{field} {} {}",
            if *negate { "not in" } else { "in" },
            items(i)
        ),
        Cond::Exists { field, want } => {
            format!("{field} {}", if *want { "exists" } else { "is missing" })
        }
        Cond::Text {
            fields,
            any,
            all,
            none,
        } => {
            let mut parts = Vec::new();
            if let Some(i) = any {
                parts.push(format!("any of {}", items(i)));
            }
            if let Some(i) = all {
                parts.push(format!("all of {}", items(i)));
            }
            if let Some(i) = none {
                parts.push(format!("none of {}", items(i)));
            }
            format!("{} mention {}", fields.join("/"), parts.join(", "))
        }
        Cond::Regex { fields, regex } => format!("{} match /{}/", fields.join("/"), regex.as_str()),
        Cond::Changed { field } => format!("{field} changed"),
        Cond::Delta {
            field,
            up,
            amount,
            percent,
        } => format!(
            "{field} {} by {amount}{}",
            if *up { "increased" } else { "decreased" },
            if *percent { "%" } else { "" }
        ),
        Cond::All(v) => v.iter().map(describe).collect::<Vec<_>>().join(" and "),
        Cond::Any(v) => format!(
            "({})",
            v.iter().map(describe).collect::<Vec<_>>().join(" or ")
        ),
        Cond::Not(c) => format!("not ({})", describe(c)),
        Cond::Absent { dur, .. } => format!("no record for {}", humantime::format_duration(*dur)),
        Cond::Count { n, within, .. } => format!(
            "at least {n} records within {}",
            humantime::format_duration(*within)
        ),
        Cond::Expr(e) => format!("`{}`", e.source),
    }
}
