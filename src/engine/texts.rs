//! The texts of a notification: its key (a rule's `key:` template), the
//! default summary and body, and those a rule's templates render with the
//! notification's context.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::condition::Expr;
use super::rule::{Compiled, Rule};
use crate::notification::{
    AlertState, Evidence, Matched, Notification, format_ts, notification_id, push_ts,
};
use crate::record::{Changed, Fields, Record, Row, as_text, lookup};

/// The key a rule's `key:` template gives `rec`; a template that names
/// one text field borrows it.
pub(super) fn render_key<'a>(
    c: &Compiled,
    name: &str,
    rule: &Rule,
    rec: &'a Record,
) -> Cow<'a, str> {
    if let Some(f) = &rule.key_field {
        return match lookup(&rec.fields, f).and_then(as_text) {
            Some(Cow::Borrowed(t)) => Cow::Borrowed(crate::record::trim(t)),
            Some(Cow::Owned(t)) => Cow::Owned(t.trim().to_string()),
            None => Cow::Borrowed(""),
        };
    }
    let ctx = minijinja::context! {
        source => &*rec.source,
        rule => minijinja::context!{ id => &*rule.id, title => &rule.title },
        ..minijinja::Value::from(minijinja::value::Serde(&rec.fields))
    };
    match c.env.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(k) => Cow::Owned(k.trim().to_string()),
        Err(e) => {
            if crate::channel::template::out_of_fuel(&e) {
                rule.over_budget
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Cow::Borrowed(&rec.key)
        }
    }
}

/// The key of an `absent` or `count` rule: its `key:` template, else one
/// key for the rule (borrowed, not copied for each record).
pub(super) fn window_key<'a>(c: &Compiled, rule: &'a Rule, rec: &'a Record) -> Cow<'a, str> {
    match &rule.key {
        Some(t) => render_key(c, t, rule, rec),
        None => Cow::Borrowed(&rule.absent_key),
    }
}

/// [`make`] for the record at hand.
pub(super) fn make_for(
    c: &Compiled,
    rule: &Rule,
    key: &str,
    state: AlertState,
    rec: &Record,
    started_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Notification {
    make(
        c,
        rule,
        key,
        state,
        &rec.source,
        &rec.fields,
        rec.prev.as_ref(),
        started_at,
        now,
        evidence(c, Some((rule, rec))),
    )
}

/// The evidence of a notification caused by `rec` (by time passing, when
/// `None`): where and when the record was read, the document's hash, and
/// the rules in force.
pub(super) fn evidence(c: &Compiled, rec: Option<(&Rule, &Record)>) -> Evidence {
    let mut e = Evidence {
        rules_sha256: Some(c.rules_sha256.clone()),
        ..Default::default()
    };
    let Some((rule, rec)) = rec else { return e };
    if let Some(expr) = &rule.expr {
        matched(c, expr, rec, &mut e.matched);
    }
    e.read_at = Some(format_ts(rec.observed));
    if let Some(doc) = &rec.doc {
        e.document_sha256 = Some(doc.sha256().to_string());
        e.url = doc.url.clone();
        e.http = doc.http.clone();
        e.location = doc.file.as_ref().map(|f| match rec.line {
            0 => f.display().to_string(),
            l => format!("{}:{l}", f.display()),
        });
    }
    e
}

/// Builds one notification, rendering `summary` and `body`.
#[allow(clippy::too_many_arguments)]
pub fn make(
    c: &Compiled,
    rule: &Rule,
    key: &str,
    state: AlertState,
    source: &Arc<str>,
    fields: &Row,
    prev: Option<&Row>,
    started_at: DateTime<Utc>,
    now: DateTime<Utc>,
    evidence: Evidence,
) -> Notification {
    // Only fields that changed are worth showing as "previous".
    let prev_changed = prev.map(|p| Changed::new(Arc::clone(p), Arc::clone(fields)));
    let link = ["link", "url"]
        .iter()
        .find_map(|k| crate::record::get(fields, k).and_then(Value::as_str))
        .map(str::to_string);
    let mut n = Notification {
        id: notification_id(&rule.id, key, state, now),
        rule: rule.id.clone(),
        title: rule.title.clone(),
        severity: rule.severity,
        state,
        key: key.to_string(),
        summary: String::new(),
        body: String::new(),
        source: source.clone(),
        labels: rule.labels.clone(),
        fields: Arc::clone(fields),
        prev: prev_changed,
        link,
        started_at,
        at: now,
        evidence,
        notify: rule.notify.clone(),
    };
    let mut errors = Vec::new();
    if rule.summary.is_some() || rule.body.is_some() {
        let ctx = template_context(&n, rule, prev.map(|p| &**p));
        for (which, name) in [("summary", &rule.summary), ("body", &rule.body)] {
            let Some(name) = name else { continue };
            match c.env.get_template(name).and_then(|t| t.render(ctx.clone())) {
                Ok(text) => {
                    if which == "summary" {
                        n.summary = text.trim().to_string();
                    } else {
                        n.body = text;
                    }
                }
                Err(e) => {
                    if crate::channel::template::out_of_fuel(&e) {
                        rule.over_budget
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    errors.push(format!(
                        "the {which} template failed: {}",
                        crate::channel::template::describe(&e)
                    ))
                }
            }
        }
    }
    let default_body = n.body.is_empty() || !errors.is_empty();
    if n.summary.is_empty() || default_body {
        let (summary, body) = default_texts(&n, rule);
        if n.summary.is_empty() {
            n.summary = summary;
        }
        if default_body {
            n.body = body;
        }
    }
    for e in errors {
        n.body.push_str("\n\n(");
        n.body.push_str(&e);
        n.body.push(')');
    }
    n
}

pub(super) fn template_context(
    n: &Notification,
    rule: &Rule,
    prev: Option<&Fields>,
) -> minijinja::Value {
    use minijinja::{Value as V, context, value::Serde};
    context! {
        rule => context! {
            id => &*rule.id,
            title => &rule.title,
            severity => rule.severity.as_str(),
            labels => V::from(Serde(&*rule.labels)),
        },
        key => &n.key,
        state => n.state.as_str(),
        prev => V::from(Serde(prev)),
        source => &n.source,
        started_at => format_ts(n.started_at),
        now => format_ts(n.at),
        link => &n.link,
        evidence => V::from(Serde(&n.evidence)),
        fields => V::from(Serde(&n.fields)),
        ..V::from(Serde(&n.fields))
    }
}

/// A field value as shown to people: text bare, anything else as JSON.
pub(super) fn push_value(b: &mut String, v: &Value) {
    match v {
        Value::String(s) => b.push_str(s),
        other => {
            let _ = write!(b, "{other}");
        }
    }
}

/// The first lines of the default body: the title, state and severity, and
/// the condition.
pub(crate) fn body_head(rule: &Rule, state: AlertState) -> String {
    format!(
        "{} ({}, {})\nCondition: {}\n",
        rule.title,
        state.as_str(),
        rule.severity.as_str(),
        rule.condition
    )
}

/// The default summary (the title, key and the values compared) and body:
/// what happened, in a few lines: the condition, the values it compared (or
/// every field, when it compared none), where and when. Written together,
/// each value looked up and written once, with `push_str`: `tocsin eval`
/// may make hundreds of thousands. The email adds every payload field below
/// the body.
pub(super) fn default_texts(n: &Notification, rule: &Rule) -> (String, String) {
    let mut s = String::with_capacity(rule.title.len() + n.key.len() + 32);
    s.push_str(&rule.title);
    s.push_str(": ");
    s.push_str(&n.key);
    let mut b = String::with_capacity(256);
    b.push_str(&rule.heads[usize::from(n.state == AlertState::Resolved)]);
    // One line of the body: the value `v` (as the summary wrote it, when it
    // did), and what it was before when that differs.
    let field = |b: &mut String, k: &str, v: &Value, written: Option<&str>| {
        b.push_str("  ");
        b.push_str(k);
        b.push_str(" = ");
        match written {
            Some(text) => b.push_str(text),
            None => push_value(b, v),
        }
        if let Some(p) = n.prev.as_ref().and_then(|p| p.was(k, v)) {
            b.push_str(" (was ");
            push_value(b, p);
            b.push(')');
        }
        b.push('\n');
    };
    let mut shown = false;
    for f in &rule.shown_fields {
        if let Some(v) = lookup(&n.fields, f) {
            s.push_str(if shown { ", " } else { " (" });
            shown = true;
            s.push_str(f);
            s.push_str(" = ");
            let at = s.len();
            push_value(&mut s, v);
            field(&mut b, f, v, Some(&s[at..]));
        }
    }
    if shown {
        s.push(')');
    } else {
        // Every field, as a person reads it: empty ones left out, HTML
        // (feed summaries and contents) as text, long texts cut.
        for (k, v) in n
            .fields
            .iter()
            .filter(|(_, v)| !crate::notification::is_blank(v))
        {
            match v {
                Value::String(t) => field(&mut b, k, v, Some(&crate::html::readable(t, 1000))),
                _ => field(&mut b, k, v, None),
            }
        }
    }
    // A feed item is known by its title, not its id.
    if rule.feed
        && let Some(Value::String(t)) = lookup(&n.fields, "title")
    {
        let title = crate::html::readable(t, 200);
        if !title.is_empty() {
            s = title.into_owned();
        }
    }
    let line = |b: &mut String, label: &str, value: &str| {
        b.push_str(label);
        b.push_str(value);
        b.push('\n');
    };
    line(&mut b, "Source: ", &n.source);
    line(&mut b, "Key: ", &n.key);
    if n.started_at != n.at {
        b.push_str("Since: ");
        push_ts(&mut b, n.started_at);
        b.push('\n');
    }
    b.push_str("At: ");
    push_ts(&mut b, n.at);
    b.push('\n');
    if let Some(l) = &n.link {
        line(&mut b, "Link: ", l);
    }
    (s, b)
}

/// The phrases and patterns of `expr` found in `rec`'s fields (not under
/// `not`, whose matches are what did not happen), each once.
fn matched(c: &Compiled, expr: &Expr, rec: &Record, out: &mut Vec<Matched>) {
    let text_of = |slot: usize| -> Option<(String, Cow<str>)> {
        let name = c.slot_names.get(slot)?;
        let Value::String(t) = lookup(&rec.fields, name)? else {
            return None;
        };
        // The text as the engine matched on it.
        Some((name.clone(), crate::html::normalize(t)))
    };
    let mut push = |m: Matched| {
        if !out.contains(&m) {
            out.push(m);
        }
    };
    match expr {
        Expr::Text(t) => {
            for &ts in &t.tslots {
                let Some((field, text)) = c.text_slots.get(ts).and_then(|&s| text_of(s)) else {
                    continue;
                };
                // The field's words read once for all the phrases.
                let placed = super::words::Placed::new(&text);
                for &p in t.any.iter().chain(&t.all) {
                    if let Some(found) = c.phrases.find(p, &placed) {
                        let mut phrase = c.phrases.words(p.pid).to_string();
                        if p.prefix {
                            phrase.push('*');
                        }
                        push(Matched {
                            field: field.clone(),
                            phrase: Some(phrase),
                            regex: None,
                            text: found.to_string(),
                        });
                    }
                }
            }
        }
        Expr::Regex { slots, re } => {
            for &ts in slots {
                if let Some((field, text)) = c.text_slots.get(ts).and_then(|&s| text_of(s))
                    && let Some(m) = re.find(&text)
                {
                    push(Matched {
                        field,
                        phrase: None,
                        regex: Some(re.as_str().to_string()),
                        text: m.as_str().chars().take(200).collect(),
                    });
                }
            }
        }
        Expr::All(v) | Expr::Any(v) => v.iter().for_each(|e| matched(c, e, rec, out)),
        _ => {}
    }
}
