//! The engine: compiled rules and the per-(rule, key) state machine.
//! Pure and synchronous: `now` is passed in, nothing here reads a clock or
//! does I/O, so it is fast and tests drive it with a simulated clock.
//!
//! Each (rule, key) is inactive (absent from the map), pending (holds,
//! waiting out `for:`) or firing. Notifications go out on edges only.

pub mod compile;
pub mod condition;
pub mod text;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::record::{Fields, Record, RecordKind, as_text, lookup};
use crate::rules::Severity;
use condition::{EvalCtx, Expr, TextHits};
use text::{PhraseRef, PhraseSet};

pub use compile::compile;

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub id: Arc<str>,
    pub title: String,
    pub severity: Severity,
    pub labels: Arc<BTreeMap<String, String>>,
    pub expr: Option<Expr>,
    pub for_: Duration,
    pub repeat: Option<Duration>,
    pub resolve: Option<bool>,
    pub notify: Arc<[String]>,
    /// Template names in [`Compiled::env`].
    pub summary: Option<String>,
    pub body: Option<String>,
    pub key: Option<String>,
    /// The condition in words, for the default body.
    pub condition: String,
    /// Fields compared as numbers, shown in the default summary.
    pub shown_fields: Vec<String>,
}

impl Rule {
    fn keeps_snapshot(&self) -> bool {
        self.for_ > Duration::zero() || self.repeat.is_some()
    }
}

/// Rules in engine form. Built once per load; shared read-only.
pub struct Compiled {
    pub rules: Vec<Rule>,
    pub by_source: HashMap<String, Vec<usize>>,
    pub slot_names: Vec<String>,
    /// Field slot of each text slot.
    pub text_slots: Vec<usize>,
    /// Field slots each source's rules read.
    pub source_slots: HashMap<String, Vec<usize>>,
    pub phrases: PhraseSet,
    pub env: minijinja::Environment<'static>,
    pub source_events: HashMap<String, bool>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("rules", &self.rules.len())
            .field("phrases", &self.phrases.len())
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One notification: the webhook `json` payload, one line of `tocsin eval`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    pub rule: String,
    pub title: String,
    pub severity: Severity,
    pub state: AlertState,
    pub key: String,
    pub summary: String,
    pub body: String,
    pub source: String,
    pub labels: BTreeMap<String, String>,
    pub fields: Fields,
    pub prev: Option<Fields>,
    pub link: Option<String>,
    #[serde(with = "secs")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "secs")]
    pub at: DateTime<Utc>,
    /// Channels this notification goes to.
    #[serde(skip)]
    pub notify: Arc<[String]>,
}

/// The record a pending or firing key last matched, kept for rules that
/// notify later from `tick` (`for:` and `repeat:`).
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub source: Arc<str>,
    pub fields: Fields,
    pub prev: Option<Fields>,
}

#[derive(Clone, Debug)]
pub struct KeyState {
    pub firing: bool,
    /// When the condition began to hold.
    pub since: DateTime<Utc>,
    pub last_sent: Option<DateTime<Utc>>,
    pub snapshot: Option<Arc<Snapshot>>,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub records: u64,
    pub evaluations: u64,
    /// Numeric comparisons that met text that is not a number.
    pub non_numeric: u64,
}

pub struct Engine {
    compiled: Arc<Compiled>,
    /// Per rule (same index as `compiled.rules`): key → state.
    states: Vec<HashMap<String, KeyState>>,
    scratch: Scratch,
    pub stats: Stats,
}

impl Engine {
    pub fn new(compiled: Compiled) -> Engine {
        let n = compiled.rules.len();
        Engine {
            scratch: Scratch::new(&compiled),
            compiled: Arc::new(compiled),
            states: vec![HashMap::new(); n],
            stats: Stats::default(),
        }
    }

    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// Swaps in new rules, carrying state across by rule id; state of rules
    /// that are gone is dropped and their ids returned.
    pub fn replace_rules(&mut self, compiled: Compiled) -> Vec<String> {
        let mut old: HashMap<Arc<str>, HashMap<String, KeyState>> = self
            .compiled
            .rules
            .iter()
            .zip(std::mem::take(&mut self.states))
            .map(|(r, s)| (r.id.clone(), s))
            .collect();
        self.states = compiled
            .rules
            .iter()
            .map(|r| old.remove(&r.id).unwrap_or_default())
            .collect();
        self.scratch = Scratch::new(&compiled);
        self.compiled = Arc::new(compiled);
        old.into_keys().map(|k| k.to_string()).collect()
    }

    /// Number of (rule, key) pairs pending or firing.
    pub fn active(&self) -> usize {
        self.states.iter().map(HashMap::len).sum()
    }

    pub fn firing(&self) -> impl Iterator<Item = (&str, &str, &KeyState)> {
        self.compiled
            .rules
            .iter()
            .zip(&self.states)
            .flat_map(|(r, s)| {
                s.iter()
                    .filter(|(_, st)| st.firing)
                    .map(move |(k, st)| (&*r.id, k.as_str(), st))
            })
    }

    /// Evaluates one record against the rules of its source.
    pub fn observe(&mut self, rec: &Record, now: DateTime<Utc>, out: &mut Vec<Notification>) {
        let compiled = Arc::clone(&self.compiled);
        let c = &*compiled;
        let Some(rule_ids) = c.by_source.get(&*rec.source) else {
            return;
        };
        self.stats.records += 1;
        let mut vals: Vec<Option<&Value>> = vec![None; c.slot_names.len()];
        if let Some(slots) = c.source_slots.get(&*rec.source) {
            for &s in slots {
                vals[s] = lookup(&rec.fields, &c.slot_names[s]);
            }
        }
        self.scratch.next_record();
        for &ri in rule_ids {
            let rule = &c.rules[ri];
            self.stats.evaluations += 1;
            let holds = rec.kind != RecordKind::Removed
                && match &rule.expr {
                    None => true,
                    Some(e) => {
                        let mut hits = Hits {
                            scratch: &mut self.scratch,
                            phrases: &c.phrases,
                            vals: &vals,
                            text_slots: &c.text_slots,
                        };
                        let mut cx = EvalCtx {
                            vals: &vals,
                            prev: rec.prev.as_ref(),
                            text: &mut hits,
                            non_numeric: &mut self.stats.non_numeric,
                        };
                        e.eval(&mut cx)
                    }
                };
            self.transition(c, ri, rec, holds, now, out);
        }
    }

    fn transition(
        &mut self,
        c: &Compiled,
        ri: usize,
        rec: &Record,
        holds: bool,
        now: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) {
        let rule = &c.rules[ri];
        let event = rec.kind == RecordKind::Event;
        let key: Cow<str> = match &rule.key {
            Some(t) => Cow::Owned(render_key(c, t, rule, rec)),
            None => Cow::Borrowed(&rec.key),
        };
        if event && rule.key.is_none() {
            // One-off event with its own key: it fires once and holds no
            // state, since the same line or item is never read twice.
            if holds {
                out.push(make(
                    c,
                    rule,
                    &key,
                    AlertState::Firing,
                    &rec.source,
                    &rec.fields,
                    rec.prev.as_ref(),
                    now,
                    now,
                ));
            }
            return;
        }
        let resolve = rule.resolve.unwrap_or(!event);
        let snapshot = || {
            Arc::new(Snapshot {
                source: rec.source.clone(),
                fields: rec.fields.clone(),
                prev: rec.prev.clone(),
            })
        };
        let states = &mut self.states[ri];
        match (states.get_mut(key.as_ref()), holds) {
            (None, true) => {
                let firing = rule.for_ <= Duration::zero();
                if firing {
                    out.push(make(
                        c,
                        rule,
                        &key,
                        AlertState::Firing,
                        &rec.source,
                        &rec.fields,
                        rec.prev.as_ref(),
                        now,
                        now,
                    ));
                }
                states.insert(
                    key.into_owned(),
                    KeyState {
                        firing,
                        since: now,
                        last_sent: firing.then_some(now),
                        snapshot: rule.keeps_snapshot().then(snapshot),
                    },
                );
            }
            (Some(st), true) => {
                if rule.keeps_snapshot() {
                    st.snapshot = Some(snapshot());
                }
                if !st.firing {
                    if now - st.since >= rule.for_ {
                        st.firing = true;
                        st.last_sent = Some(now);
                        out.push(make(
                            c,
                            rule,
                            &key,
                            AlertState::Firing,
                            &rec.source,
                            &rec.fields,
                            rec.prev.as_ref(),
                            st.since,
                            now,
                        ));
                    }
                } else if let Some(rep) = rule.repeat
                    && st.last_sent.is_none_or(|t| now - t >= rep)
                {
                    st.last_sent = Some(now);
                    out.push(make(
                        c,
                        rule,
                        &key,
                        AlertState::Firing,
                        &rec.source,
                        &rec.fields,
                        rec.prev.as_ref(),
                        st.since,
                        now,
                    ));
                }
            }
            (Some(_), false) => {
                if event && !resolve {
                    return; // events that do not match leave a keyed alert alone
                }
                if let Some(st) = states.remove(key.as_ref())
                    && st.firing
                    && resolve
                {
                    out.push(make(
                        c,
                        rule,
                        &key,
                        AlertState::Resolved,
                        &rec.source,
                        &rec.fields,
                        rec.prev.as_ref(),
                        st.since,
                        now,
                    ));
                }
            }
            (None, false) => {}
        }
    }

    /// Time passing: pending keys whose `for:` has elapsed fire, firing keys
    /// due a `repeat:` remind.
    pub fn tick(&mut self, now: DateTime<Utc>, out: &mut Vec<Notification>) {
        let compiled = Arc::clone(&self.compiled);
        let c = &*compiled;
        for (ri, rule) in c.rules.iter().enumerate() {
            if !rule.keeps_snapshot() {
                continue;
            }
            for (key, st) in self.states[ri].iter_mut() {
                let due = if !st.firing {
                    now - st.since >= rule.for_
                } else {
                    rule.repeat
                        .is_some_and(|rep| st.last_sent.is_none_or(|t| now - t >= rep))
                };
                if !due {
                    continue;
                }
                let Some(snap) = st.snapshot.clone() else {
                    continue;
                };
                st.firing = true;
                st.last_sent = Some(now);
                out.push(make(
                    c,
                    rule,
                    key,
                    AlertState::Firing,
                    &snap.source,
                    &snap.fields,
                    snap.prev.as_ref(),
                    st.since,
                    now,
                ));
            }
        }
    }

    /// The next time `tick` has something to do.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        let mut best: Option<DateTime<Utc>> = None;
        for (ri, rule) in self.compiled.rules.iter().enumerate() {
            if !rule.keeps_snapshot() {
                continue;
            }
            for st in self.states[ri].values() {
                let t = if !st.firing {
                    Some(st.since + rule.for_)
                } else {
                    rule.repeat
                        .map(|rep| st.last_sent.unwrap_or(st.since) + rep)
                };
                if let Some(t) = t {
                    best = Some(best.map_or(t, |b| b.min(t)));
                }
            }
        }
        best
    }
}

/// Per-record scratch for phrase matches, stamped by record number so it
/// never needs clearing.
struct Scratch {
    stamp: u32,
    /// Per (text slot, phrase): record number of a whole-word match.
    exact: Vec<u32>,
    /// Per (text slot, phrase): record number of a prefix match.
    prefix: Vec<u32>,
    /// Per text slot: record number it was scanned at.
    scanned: Vec<u32>,
    phrases: usize,
}

impl Scratch {
    fn new(c: &Compiled) -> Scratch {
        let n = c.text_slots.len() * c.phrases.len();
        Scratch {
            stamp: 0,
            exact: vec![0; n],
            prefix: vec![0; n],
            scanned: vec![0; c.text_slots.len()],
            phrases: c.phrases.len(),
        }
    }

    fn next_record(&mut self) {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.exact.fill(0);
            self.prefix.fill(0);
            self.scanned.fill(0);
            self.stamp = 1;
        }
    }
}

struct Hits<'a> {
    scratch: &'a mut Scratch,
    phrases: &'a PhraseSet,
    vals: &'a [Option<&'a Value>],
    text_slots: &'a [usize],
}

impl TextHits for Hits<'_> {
    fn hit(&mut self, tslot: usize, p: PhraseRef) -> bool {
        let s = &mut *self.scratch;
        let stamp = s.stamp;
        if s.scanned[tslot] != stamp {
            s.scanned[tslot] = stamp;
            if let Some(text) = field_text(self.vals[self.text_slots[tslot]]) {
                let base = tslot * s.phrases;
                let (exact, prefix) = (&mut s.exact, &mut s.prefix);
                self.phrases.scan(&text, |pid, whole| {
                    prefix[base + pid as usize] = stamp;
                    if whole {
                        exact[base + pid as usize] = stamp;
                    }
                });
            }
        }
        let i = tslot * s.phrases + p.pid as usize;
        if p.prefix {
            s.prefix[i] == stamp
        } else {
            s.exact[i] == stamp
        }
    }

    fn text(&self, tslot: usize) -> Option<Cow<'_, str>> {
        let t = field_text(self.vals[self.text_slots[tslot]])?;
        Some(Cow::Owned(text::normalize(&t).into_owned()))
    }
}

/// A field as text for phrase matching; lists are joined by newlines.
fn field_text(v: Option<&Value>) -> Option<Cow<'_, str>> {
    match v? {
        Value::Array(items) => {
            let parts: Vec<Cow<str>> = items.iter().filter_map(|i| field_text(Some(i))).collect();
            Some(Cow::Owned(parts.join("\n")))
        }
        Value::Object(_) | Value::Null => None,
        other => as_text(other),
    }
}

fn render_key(c: &Compiled, name: &str, rule: &Rule, rec: &Record) -> String {
    let ctx = minijinja::context! {
        source => &*rec.source,
        rule => minijinja::context!{ id => &*rule.id, title => &rule.title },
        ..minijinja::Value::from(minijinja::value::Serde(&rec.fields))
    };
    match c.env.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(k) => k.trim().to_string(),
        Err(_) => rec.key.clone(),
    }
}

/// Builds one notification, rendering `summary` and `body`.
#[allow(clippy::too_many_arguments)]
pub fn make(
    c: &Compiled,
    rule: &Rule,
    key: &str,
    state: AlertState,
    source: &str,
    fields: &Fields,
    prev: Option<&Fields>,
    started_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Notification {
    // Only fields that changed are worth showing as "previous".
    let prev_changed: Option<Fields> = prev.map(|p| {
        p.iter()
            .filter(|(k, v)| fields.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    let link = ["link", "url"]
        .iter()
        .find_map(|k| fields.get(*k).and_then(Value::as_str))
        .map(str::to_string);
    let mut n = Notification {
        id: notification_id(&rule.id, key, state, now),
        rule: rule.id.to_string(),
        title: rule.title.clone(),
        severity: rule.severity,
        state,
        key: key.to_string(),
        summary: String::new(),
        body: String::new(),
        source: source.to_string(),
        labels: (*rule.labels).clone(),
        fields: fields.clone(),
        prev: prev_changed,
        link,
        started_at,
        at: now,
        notify: rule.notify.clone(),
    };
    let mut errors = Vec::new();
    if rule.summary.is_some() || rule.body.is_some() {
        let ctx = template_context(&n, rule, prev);
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
                Err(e) => errors.push(format!(
                    "the {which} template failed: {}",
                    crate::channel::template::describe(&e)
                )),
            }
        }
    }
    if n.summary.is_empty() {
        n.summary = default_summary(&n, rule);
    }
    if n.body.is_empty() || !errors.is_empty() {
        n.body = default_body(&n, rule);
    }
    for e in errors {
        n.body.push_str("\n\n(");
        n.body.push_str(&e);
        n.body.push(')');
    }
    n
}

fn template_context(n: &Notification, rule: &Rule, prev: Option<&Fields>) -> minijinja::Value {
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
        started_at => n.started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        now => n.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        link => &n.link,
        fields => V::from(Serde(&n.fields)),
        ..V::from(Serde(&n.fields))
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn default_summary(n: &Notification, rule: &Rule) -> String {
    let mut s = format!("{}: {}", rule.title, n.key);
    let shown: Vec<String> = rule
        .shown_fields
        .iter()
        .filter_map(|f| lookup(&n.fields, f).map(|v| format!("{f} = {}", value_text(v))))
        .collect();
    if !shown.is_empty() {
        let _ = write!(s, " ({})", shown.join(", "));
    }
    s
}

fn default_body(n: &Notification, rule: &Rule) -> String {
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut b = String::with_capacity(256);
    let _ = writeln!(b, "{}", rule.title);
    let _ = writeln!(b);
    let _ = writeln!(
        b,
        "State:     {} ({})",
        n.state.as_str(),
        n.severity.as_str()
    );
    let _ = writeln!(b, "Rule:      {}", n.rule);
    let _ = writeln!(b, "Condition: {}", rule.condition);
    let _ = writeln!(b, "Source:    {}", n.source);
    let _ = writeln!(b, "Key:       {}", n.key);
    let _ = writeln!(b, "Started:   {}", ts(n.started_at));
    let _ = writeln!(b, "At:        {}", ts(n.at));
    if let Some(l) = &n.link {
        let _ = writeln!(b, "Link:      {l}");
    }
    if !n.fields.is_empty() {
        let _ = writeln!(b);
        let _ = writeln!(b, "Fields:");
        for (k, v) in &n.fields {
            let _ = write!(b, "  {k}: {}", value_text(v));
            if let Some(p) = n.prev.as_ref().and_then(|p| p.get(k)) {
                let _ = write!(b, " (was {})", value_text(p));
            }
            b.push('\n');
        }
    }
    b
}

/// Stable for one notification (an idempotency key): derived from what
/// makes it unique, so retries and replays carry the same id.
fn notification_id(rule: &str, key: &str, state: AlertState, at: DateTime<Utc>) -> String {
    let mut h = Sha256::new();
    h.update(rule.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    h.update([0]);
    h.update(state.as_str().as_bytes());
    h.update([0]);
    h.update(at.timestamp_nanos_opt().unwrap_or_default().to_le_bytes());
    let d = h.finalize();
    let mut s = String::with_capacity(32);
    for b in &d[..16] {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Timestamps in payloads: RFC 3339, UTC, whole seconds.
mod secs {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}
