//! The engine: compiled rules and the per-(rule, key) state machine.
//! Pure and synchronous: `now` is passed in, nothing here reads a clock or
//! does I/O, so it is fast and tests drive it with a simulated clock.
//!
//! Each (rule, key) is inactive (absent from the map), pending (holds,
//! waiting out `for:`) or firing. Notifications go out on edges only.

pub mod compile;
pub mod condition;
pub mod keys;
pub mod text;
mod times;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::notification::{
    AlertState, DIGEST_RULE, Notification, format_ts, notification_id, prefix, push_ts,
};
use crate::record::{Changed, Fields, Record, RecordKind, Row, as_text, lookup, lookup_at};
use crate::rules::Severity;
use condition::{EvalCtx, Expr, TextHits};
use keys::{KeyStates, NOT_QUEUED};
use text::{PhraseRef, PhraseSet};

pub use compile::compile;
pub use times::Times;

/// The rules of one source, with the field slots they read and the guards
/// that let most rules be skipped without evaluating them.
#[derive(Debug)]
pub struct SourcePlan {
    pub rules: Vec<usize>,
    pub slots: Vec<usize>,
    /// Per position in `rules`: whether the rule sits behind a guard.
    pub guarded: Vec<bool>,
    /// Per position: which child of the rule's `all` the guard is (the
    /// whole condition: `usize::MAX`); a record let through by value needs
    /// no second look at it.
    pub guard_at: Vec<Option<usize>>,
    pub guards: Vec<Guard>,
    /// Per position: the rule needs one of its phrases found.
    pub text_guarded: Vec<bool>,
    /// Phrase id → positions of the rules it lets through.
    pub phrase_rules: Vec<Vec<usize>>,
    /// Text slots the phrase guards read.
    pub text_guard_slots: Vec<usize>,
    /// Positions of rules behind no guard.
    pub unguarded: Vec<usize>,
    /// Some rule has a `key:` template (events then share state).
    pub keyed: bool,
}

/// Rules (by position in the plan) that can only hold when a field has one
/// of a few values.
#[derive(Debug)]
pub struct Guard {
    pub slot: usize,
    /// Lowercased value → positions of the rules it lets through.
    pub values: FxHashMap<String, Vec<usize>>,
    /// Every position behind this guard.
    pub all: Vec<usize>,
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub id: Arc<str>,
    pub title: Arc<str>,
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
    /// The first two lines of the default body, firing and resolved.
    pub heads: [String; 2],
    /// `absent: D`: fires when no record passing `expr` came for D.
    pub absent: Option<Duration>,
    /// `count: N, within: D`: fires while N records passing `expr` came
    /// within D.
    pub count: Option<(u32, Duration)>,
    /// The one key of an `absent` rule without `key:` (its sources).
    pub absent_key: Arc<str>,
    /// A `key:` template that only names a field (`{{ partner }}`): read
    /// directly, without rendering.
    pub key_field: Option<String>,
    /// Evaluations of its expression and renderings of its templates that
    /// ran past their budget, since the last [`Engine::take_over_budget`].
    /// Counted where the rule is at hand (rendering included), so shared.
    pub over_budget: std::sync::atomic::AtomicU64,
}

impl Rule {
    fn keeps_snapshot(&self) -> bool {
        self.for_ > Duration::zero() || self.repeat.is_some() || self.absent.is_some()
    }

    /// Whether time passing can do anything to its keys (they have
    /// deadlines in the queue of [`keys`]).
    fn timed(&self) -> bool {
        self.keeps_snapshot() || self.count.is_some()
    }
}

/// Rules in engine form. Built once per load; shared read-only.
pub struct Compiled {
    pub rules: Vec<Rule>,
    /// Per source: its rules and how to evaluate them.
    pub plans: FxHashMap<String, SourcePlan>,
    pub slot_names: Vec<String>,
    /// Field slot of each text slot.
    pub text_slots: Vec<usize>,
    pub phrases: PhraseSet,
    pub env: minijinja::Environment<'static>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("rules", &self.rules.len())
            .field("phrases", &self.phrases.len())
            .finish()
    }
}

/// The record a pending or firing key last matched, kept for rules that
/// notify later from `tick` (`for:` and `repeat:`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub source: Arc<str>,
    pub fields: Row,
    pub prev: Option<Row>,
}

#[derive(Clone, Debug)]
pub struct KeyState {
    pub firing: bool,
    /// When the condition began to hold.
    pub since: Stamp,
    pub last_sent: Option<Stamp>,
    pub snapshot: Option<Arc<Snapshot>>,
    /// `count` rules: the times of the key's latest records, oldest first;
    /// at most N are kept, since N within the window is all that matters.
    /// `absent` rules: when the key last had a record (one time).
    pub window: Times,
    /// The deadline last queued for the key (see [`keys`]); not stored.
    pub(crate) due: keys::Due,
    /// Changed since the last `take_changes` (listed there once); not stored.
    pub(crate) dirty: bool,
}

/// A time to the millisecond in 8 bytes, `Option` included, where a
/// `DateTime<Utc>` takes 12 and an `Option` of one 16: key states are many.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Stamp(std::num::NonZeroI64);

impl Stamp {
    /// Milliseconds with the sign bit flipped: never zero, since
    /// `i64::MIN` milliseconds is far outside chrono's range.
    fn encode(ms: i64) -> Stamp {
        Stamp(std::num::NonZeroI64::new(ms ^ i64::MIN).unwrap_or(std::num::NonZeroI64::MIN))
    }

    pub fn millis(self) -> i64 {
        self.0.get() ^ i64::MIN
    }

    pub fn get(self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.millis()).unwrap_or_default()
    }
}

impl From<DateTime<Utc>> for Stamp {
    // Not inlined: the engine's loop over rules would compute the stamp of
    // `now` ahead of each record, needed or not.
    #[inline(never)]
    fn from(t: DateTime<Utc>) -> Stamp {
        Stamp::encode(t.timestamp_millis())
    }
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.get(), f)
    }
}

impl KeyState {
    /// A key that holds nothing yet, as of `now`.
    pub fn inactive(now: DateTime<Utc>) -> KeyState {
        KeyState {
            firing: false,
            since: now.into(),
            last_sent: None,
            snapshot: None,
            window: Times::default(),
            due: NOT_QUEUED,
            dirty: false,
        }
    }

    /// When an `absent` rule's key last had a record.
    pub fn seen(&self) -> DateTime<Utc> {
        self.window.last().unwrap_or(self.since.get())
    }
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub records: u64,
    pub evaluations: u64,
    /// Numeric comparisons that met text that is not a number.
    pub non_numeric: u64,
    /// Expressions that failed to evaluate or gave no boolean.
    pub expr_errors: u64,
}

pub struct Engine {
    compiled: Arc<Compiled>,
    /// Per rule (same index as `compiled.rules`): key → state.
    states: Vec<KeyStates>,
    scratch: Scratch,
    pub stats: Stats,
    /// (rule, key, the key's hash) whose state changed since the last
    /// `take_changes`.
    changed: Vec<(usize, keys::Key, u64)>,
    /// Per rule: conditions evaluated since the last `take_evaluations`.
    evaluated: Vec<u64>,
}

impl Engine {
    pub fn new(compiled: Compiled) -> Engine {
        let n = compiled.rules.len();
        Engine {
            scratch: Scratch::new(&compiled),
            compiled: Arc::new(compiled),
            states: vec![KeyStates::default(); n],
            stats: Stats::default(),
            changed: Vec::new(),
            evaluated: vec![0; n],
        }
    }

    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// Swaps in new rules, carrying state across by rule id; state of rules
    /// that are gone is dropped and their ids returned.
    pub fn replace_rules(&mut self, compiled: Compiled) -> Vec<String> {
        let mut old: HashMap<Arc<str>, KeyStates> = self
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
        self.evaluated = vec![0; compiled.rules.len()];
        self.compiled = Arc::new(compiled);
        self.reschedule_all();
        old.into_keys().map(|k| k.to_string()).collect()
    }

    /// State changes since the last call, for the store: each changed
    /// (rule id, key) with its state now, `None` when it went inactive.
    pub fn take_changes(&mut self) -> Vec<crate::store::StateChange> {
        let mut out = Vec::new();
        self.take_changes_into(&mut out);
        out
    }

    /// [`Engine::take_changes`] into `out` (cleared first), whose room a
    /// caller keeps from batch to batch.
    pub fn take_changes_into(&mut self, out: &mut Vec<crate::store::StateChange>) {
        out.clear();
        // A key is listed once while dirty; a key that went inactive may be
        // listed twice.
        let (rules, states, changed) = (&self.compiled.rules, &mut self.states, &self.changed);
        for (ri, key, h) in changed {
            let st = match states[*ri].get_mut_hashed(key, *h) {
                Some(st) if !st.dirty => continue,
                Some(st) => {
                    st.dirty = false;
                    Some(st.clone())
                }
                None => None,
            };
            out.push((rules[*ri].id.clone(), key.clone(), st));
        }
        self.changed.clear();
    }

    /// Per rule, how many evaluations and renderings ran past their budget
    /// since the last call (rules with none left out).
    pub fn take_over_budget(&self) -> Vec<(Arc<str>, u64)> {
        self.compiled
            .rules
            .iter()
            .filter_map(|r| {
                let n = r.over_budget.swap(0, std::sync::atomic::Ordering::Relaxed);
                (n > 0).then(|| (r.id.clone(), n))
            })
            .collect()
    }

    /// Per rule, how many records its condition was evaluated on since the
    /// last call (rules with none left out).
    pub fn take_evaluations(&mut self) -> Vec<(Arc<str>, u64)> {
        let rules = &self.compiled.rules;
        self.evaluated
            .iter_mut()
            .zip(rules)
            .filter(|(n, _)| **n > 0)
            .map(|(n, r)| (r.id.clone(), std::mem::take(n)))
            .collect()
    }

    /// Puts back stored state; returns the (rule, key) pairs of rules it
    /// knows nothing of (removed while the daemon was down): their state is
    /// dropped.
    pub fn restore(&mut self, stored: Vec<(String, String, KeyState)>) -> Vec<(String, String)> {
        let compiled = Arc::clone(&self.compiled);
        let index: HashMap<&str, usize> = compiled
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| (&*r.id, i))
            .collect();
        let mut gone = Vec::new();
        for (rule, key, st) in stored {
            match index.get(rule.as_str()) {
                Some(&ri) => self.states[ri].insert(&key, st),
                None => gone.push((rule, key)),
            }
        }
        self.reschedule_all();
        gone
    }

    /// Queues every key's deadline anew (rules or states replaced).
    fn reschedule_all(&mut self) {
        for (rule, states) in self.compiled.rules.iter().zip(&mut self.states) {
            states.reschedule_all(|st| deadline(rule, st));
        }
    }

    /// Queues the next deadline of `key` (of hash `h`) of rule `ri`, if it
    /// has one.
    fn reschedule(&mut self, ri: usize, key: &str, h: u64) {
        let rule = &self.compiled.rules[ri];
        if !rule.timed() {
            return;
        }
        if let Some((st, queue)) = self.states[ri].get_queued_hashed(key, h) {
            queue.schedule(st, deadline(rule, st));
        }
    }

    /// After `key` (of hash `h`) of rule `ri` changed (and is marked
    /// dirty): queues its next deadline and lists it for `take_changes`,
    /// unless `listed` already since the last call.
    fn settle(&mut self, ri: usize, key: &str, h: u64, listed: bool) {
        self.reschedule(ri, key, h);
        self.list(ri, key, h, listed);
    }

    /// Lists `key` (of hash `h`) of rule `ri` for `take_changes`, unless
    /// `listed` already.
    fn list(&mut self, ri: usize, key: &str, h: u64, listed: bool) {
        if !listed {
            self.changed.push((ri, keys::Key::new(key), h));
        }
    }

    /// Number of (rule, key) pairs pending or firing.
    pub fn active(&self) -> usize {
        self.states.iter().map(|m| m.len()).sum()
    }

    /// Evaluates one record against the rules of its source.
    pub fn observe(&mut self, rec: &Record, now: DateTime<Utc>, out: &mut Vec<Notification>) {
        let compiled = Arc::clone(&self.compiled);
        self.observe_with(&compiled, rec, now, out);
    }

    /// [`Engine::observe`] with the rules at hand (held by the caller, so
    /// that a batch takes them once).
    fn observe_with(
        &mut self,
        c: &Compiled,
        rec: &Record,
        now: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) {
        if let Some(plan) = c.plans.get(&*rec.source) {
            self.observe_plan(c, plan, rec, now, out);
        }
    }

    /// [`Engine::observe`] with the plan of the record's source at hand.
    fn observe_plan(
        &mut self,
        c: &Compiled,
        plan: &SourcePlan,
        rec: &Record,
        now: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) {
        // Field values by slot, looked up once per record; on the stack for
        // the usual handful of fields.
        let n = c.slot_names.len();
        let mut stack: [Option<&Value>; 32] = [None; 32];
        let mut heap: Vec<Option<&Value>>;
        let vals: &mut [Option<&Value>] = if n <= stack.len() {
            &mut stack[..n]
        } else {
            heap = vec![None; n];
            &mut heap
        };
        for &s in &plan.slots {
            vals[s] = lookup_at(&rec.fields, &c.slot_names[s], &mut self.scratch.at[s]);
        }
        let mut lazy = Lazy::Ready(rec);
        self.evaluate(
            c,
            plan,
            vals,
            rec.kind,
            rec.prev.as_deref(),
            &mut lazy,
            now,
            out,
        );
    }

    /// [`Engine::observe`] for each record of a batch, with the rules taken
    /// once.
    pub fn observe_batch(
        &mut self,
        recs: &[Record],
        now: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) {
        let compiled = Arc::clone(&self.compiled);
        let c = &*compiled;
        let mut plans = PlanOf::new(c);
        for rec in recs {
            if let Some(plan) = plans.get(&rec.source) {
                self.observe_plan(c, plan, rec, now, out);
            }
        }
    }

    /// The fields that rules over `source` read, with their slots: callers
    /// that parse records themselves need only these to evaluate
    /// ([`Engine::observe_event`]).
    pub fn wanted_fields(&self, source: &str) -> Vec<(String, usize)> {
        let c = &*self.compiled;
        c.plans
            .get(source)
            .map(|p| {
                p.slots
                    .iter()
                    .map(|&s| (c.slot_names[s].clone(), s))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn slot_count(&self) -> usize {
        self.compiled.slot_names.len()
    }

    /// Evaluates a one-off event given only the values of the wanted fields
    /// (by slot); `record` makes the whole record, called only when a rule
    /// needs it (a notification or a keyed state). The batch path of
    /// `tocsin eval` uses this to skip building records nobody alerts on.
    pub fn observe_event(
        &mut self,
        source: &str,
        vals: &[Option<&Value>],
        record: &mut dyn FnMut() -> Record,
        now: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) {
        let compiled = Arc::clone(&self.compiled);
        let c = &*compiled;
        let Some(plan) = c.plans.get(source) else {
            return;
        };
        let mut lazy = Lazy::Pending(record, None);
        self.evaluate(c, plan, vals, RecordKind::Event, None, &mut lazy, now, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &mut self,
        c: &Compiled,
        plan: &SourcePlan,
        vals: &[Option<&Value>],
        kind: RecordKind,
        prev: Option<&Fields>,
        rec: &mut Lazy,
        now: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) {
        self.stats.records += 1;
        self.scratch.next_record();
        // Per rule position, the record number at which a guard let it
        // through: stamps, so nothing needs clearing between records.
        let stamp = self.scratch.stamp;
        let mut candidate = std::mem::take(&mut self.scratch.candidate);
        let mut text_pass = std::mem::take(&mut self.scratch.text_pass);
        let mut by_value = std::mem::take(&mut self.scratch.by_value);
        let at = std::mem::take(&mut self.scratch.at);
        if candidate.len() < plan.rules.len() {
            candidate.resize(plan.rules.len(), 0);
            text_pass.resize(plan.rules.len(), 0);
            by_value.resize(plan.rules.len(), 0);
        }
        // Phrase dispatch: the automaton runs once per text field, and only
        // rules with a phrase that was found are evaluated.
        for &ts in &plan.text_guard_slots {
            self.scratch
                .ensure_scanned(ts, &c.phrases, vals, &c.text_slots);
        }
        // For one-off events no rule has state to end, so only the rules
        // the guards let through (listed here) need a look; otherwise every
        // rule does.
        let event = kind == RecordKind::Event;
        let by_guard = event && !plan.keyed;
        let let_through = &mut self.scratch.let_through;
        let mut pass = |p: usize| {
            if by_guard {
                let_through.push(p);
            }
        };
        for &pid in &self.scratch.matched {
            if let Some(ps) = plan.phrase_rules.get(pid as usize) {
                ps.iter().for_each(|&p| {
                    text_pass[p] = stamp;
                    pass(p);
                });
            }
        }
        for g in &plan.guards {
            match vals[g.slot] {
                Some(Value::Array(_)) => g.all.iter().for_each(|&p| {
                    candidate[p] = stamp;
                    pass(p);
                }),
                Some(v) => {
                    if let Some(t) = as_text(v) {
                        let mut small = [0u8; 64];
                        if let Some(ps) = g.values.get(lower_key(&t, &mut small).as_ref()) {
                            ps.iter().for_each(|&p| {
                                candidate[p] = stamp;
                                by_value[p] = stamp;
                                pass(p);
                            });
                        }
                    }
                }
                None => {}
            }
        }
        // The hash of the record's key, found once for the rules keyed by
        // it.
        let mut key_hash = None;
        let mut visit = std::mem::take(&mut self.scratch.visit);
        visit.clear();
        if by_guard {
            visit.extend_from_slice(&plan.unguarded);
            visit.extend_from_slice(&self.scratch.let_through);
            visit.sort_unstable();
            visit.dedup();
        }
        let visits = if by_guard {
            visit.len()
        } else {
            plan.rules.len()
        };
        for pos in (0..visits).map(|j| if by_guard { visit[j] } else { j }) {
            let ri = plan.rules[pos];
            let rule = &c.rules[ri];
            let holds = kind != RecordKind::Removed
                && (!plan.guarded[pos] || candidate[pos] == stamp)
                && (!plan.text_guarded[pos] || text_pass[pos] == stamp)
                && match &rule.expr {
                    None => true,
                    Some(e) => {
                        self.stats.evaluations += 1;
                        self.evaluated[ri] += 1;
                        let mut hits = Hits {
                            scratch: &mut self.scratch,
                            phrases: &c.phrases,
                            vals,
                            text_slots: &c.text_slots,
                        };
                        let mut cx = EvalCtx {
                            vals,
                            prev,
                            at: &at,
                            text: &mut hits,
                            non_numeric: &mut self.stats.non_numeric,
                            expr_errors: &mut self.stats.expr_errors,
                            over_budget: &rule.over_budget,
                        };
                        match plan.guard_at[pos] {
                            Some(at) if by_value[pos] == stamp => e.eval_but(at, &mut cx),
                            _ => e.eval(&mut cx),
                        }
                    }
                };
            if rule.absent.is_some() {
                // A record that counts resets the silence; others do nothing.
                if holds {
                    let r = rec.get();
                    self.absent_seen(c, ri, r, now, out);
                }
                continue;
            }
            if rule.count.is_some() {
                if holds {
                    let r = rec.get();
                    self.count_seen(c, ri, r, now, out);
                }
                continue;
            }
            // Not holding, with no state to end: nothing can happen.
            if !holds && (self.states[ri].is_empty() || (event && rule.key.is_none())) {
                continue;
            }
            let r = rec.get();
            self.transition(c, ri, r, &mut key_hash, holds, now, out);
        }
        self.scratch.visit = visit;
        self.scratch.candidate = candidate;
        self.scratch.text_pass = text_pass;
        self.scratch.by_value = by_value;
        self.scratch.at = at;
    }

    /// `key_hash` is the hash of `rec.key`, once some rule has needed it.
    #[allow(clippy::too_many_arguments)]
    fn transition(
        &mut self,
        c: &Compiled,
        ri: usize,
        rec: &Record,
        key_hash: &mut Option<u64>,
        holds: bool,
        now: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) {
        let rule = &c.rules[ri];
        let event = rec.kind == RecordKind::Event;
        let key: Cow<str> = match &rule.key {
            Some(t) => render_key(c, t, rule, rec),
            None => Cow::Borrowed(&rec.key),
        };
        let note = |state: AlertState, started: DateTime<Utc>| {
            make_for(c, rule, &key, state, rec, started, now)
        };
        if event && rule.key.is_none() {
            // One-off event with its own key: it fires once and holds no
            // state, since the same line or item is never read twice.
            if holds {
                out.push(note(AlertState::Firing, now));
            }
            return;
        }
        let h = match &rule.key {
            Some(_) => keys::hash(&key),
            None => *key_hash.get_or_insert_with(|| keys::hash(&rec.key)),
        };
        let resolve = rule.resolve.unwrap_or(!event);
        let snapshot = || {
            Arc::new(Snapshot {
                source: rec.source.clone(),
                fields: rec.fields.clone(),
                prev: rec.prev.clone(),
            })
        };
        let states = &mut self.states[ri];
        match (states.get_mut_hashed(&key, h), holds) {
            (None, true) => {
                let firing = rule.for_ <= Duration::zero();
                if firing {
                    out.push(note(AlertState::Firing, now));
                }
                states.insert_hashed(
                    &key,
                    h,
                    KeyState {
                        firing,
                        since: now.into(),
                        last_sent: firing.then(|| now.into()),
                        snapshot: rule.keeps_snapshot().then(snapshot),
                        window: Times::default(),
                        due: NOT_QUEUED,
                        dirty: true,
                    },
                );
                self.settle(ri, &key, h, false);
            }
            (Some(st), true) => {
                let mut changed = false;
                if rule.keeps_snapshot() {
                    st.snapshot = Some(snapshot());
                    changed = true;
                }
                if !st.firing {
                    if now - st.since.get() >= rule.for_ {
                        st.firing = true;
                        st.last_sent = Some(now.into());
                        changed = true;
                        out.push(note(AlertState::Firing, st.since.get()));
                    }
                } else if let Some(rep) = rule.repeat
                    && st.last_sent.is_none_or(|t| now - t.get() >= rep)
                {
                    st.last_sent = Some(now.into());
                    changed = true;
                    out.push(note(AlertState::Firing, st.since.get()));
                }
                if changed {
                    let listed = std::mem::replace(&mut st.dirty, true);
                    self.settle(ri, &key, h, listed);
                }
            }
            (Some(_), false) => {
                if event && !resolve {
                    return; // events that do not match leave a keyed alert alone
                }
                self.changed.push((ri, keys::Key::new(&key), h));
                if let Some(st) = states.remove_hashed(&key, h)
                    && st.firing
                    && resolve
                {
                    out.push(note(AlertState::Resolved, st.since.get()));
                }
            }
            (None, false) => {}
        }
    }

    /// A record for an `absent` rule: the silence of its key ends; a key
    /// that was firing resolves.
    fn absent_seen(
        &mut self,
        c: &Compiled,
        ri: usize,
        rec: &Record,
        now: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) {
        let rule = &c.rules[ri];
        let key = window_key(c, rule, rec);
        let (st, queue) = self.states[ri].get_or_insert_queued(&key, || KeyState::inactive(now));
        if st.firing {
            st.firing = false;
            if rule.resolve != Some(false) {
                out.push(make_for(
                    c,
                    rule,
                    &key,
                    AlertState::Resolved,
                    rec,
                    st.since.get(),
                    now,
                ));
            }
        }
        st.window.clear();
        st.window.push(now);
        st.since = now.into();
        st.snapshot = Some(Arc::new(Snapshot {
            source: rec.source.clone(),
            fields: rec.fields.clone(),
            prev: rec.prev.clone(),
        }));
        let listed = std::mem::replace(&mut st.dirty, true);
        let h = queue.hash();
        queue.schedule(st, deadline(rule, st));
        self.list(ri, &key, h, listed);
    }

    /// A record for a `count` rule: it joins its key's window; reaching N
    /// fires the key (or reminds, at `repeat`).
    fn count_seen(
        &mut self,
        c: &Compiled,
        ri: usize,
        rec: &Record,
        now: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) {
        let rule = &c.rules[ri];
        let Some((n, within)) = rule.count else {
            return;
        };
        let key = window_key(c, rule, rec);
        let (st, queue) = self.states[ri].get_or_insert_queued(&key, || KeyState::inactive(now));
        let cutoff = now - within;
        st.window.keep_after(cutoff);
        if st.window.len() >= n as usize {
            st.window.remove(0);
        }
        st.window.push(now);
        // No copy of the record is kept (state stays small): a reminder or
        // resolve from `tick` carries the key, not the fields.
        let note = |state, started| make_for(c, rule, &key, state, rec, started, now);
        if st.window.len() >= n as usize {
            if !st.firing {
                st.firing = true;
                st.since = now.into();
                st.last_sent = Some(now.into());
                out.push(note(AlertState::Firing, now));
            } else if let Some(rep) = rule.repeat
                && st.last_sent.is_none_or(|t| now - t.get() >= rep)
            {
                st.last_sent = Some(now.into());
                out.push(note(AlertState::Firing, st.since.get()));
            }
        }
        let listed = std::mem::replace(&mut st.dirty, true);
        let h = queue.hash();
        queue.schedule(st, deadline(rule, st));
        self.list(ri, &key, h, listed);
    }

    /// A `count` key at `now`: records leave its window; a firing key under
    /// N resolves, or reminds at `repeat`. Returns whether the key changed,
    /// and whether it is to be forgotten (an empty window, not firing).
    #[allow(clippy::too_many_arguments)]
    fn tick_count(
        c: &Compiled,
        rule: &Rule,
        key: &str,
        st: &mut KeyState,
        n: u32,
        within: Duration,
        now: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) -> (bool, bool) {
        // Records at or before the cutoff have left the window.
        let cutoff = now - within;
        let before = st.window.len();
        st.window.keep_after(cutoff);
        let mut changed = st.window.len() != before;
        // Count rules keep no record: notifications from time passing
        // carry the key and the rule's sources.
        let empty = Row::default();
        let note = |state, started| {
            make(
                c,
                rule,
                key,
                state,
                &rule.absent_key,
                &empty,
                None,
                started,
                now,
            )
        };
        if st.firing && st.window.len() < n as usize {
            st.firing = false;
            changed = true;
            if rule.resolve != Some(false) {
                out.push(note(AlertState::Resolved, st.since.get()));
            }
        } else if st.firing
            && let Some(rep) = rule.repeat
            && st.last_sent.is_none_or(|t| now - t.get() >= rep)
        {
            st.last_sent = Some(now.into());
            changed = true;
            out.push(note(AlertState::Firing, st.since.get()));
        }
        (changed, st.window.is_empty() && !st.firing)
    }

    /// Starts the clock of `absent` rules without `key:` that have no
    /// state yet (new rules, a first start): silence counts from `now`.
    pub fn arm(&mut self, now: DateTime<Utc>) {
        let compiled = Arc::clone(&self.compiled);
        for (ri, rule) in compiled.rules.iter().enumerate() {
            if rule.absent.is_none() || rule.key.is_some() {
                continue;
            }
            let key = &*rule.absent_key;
            if !self.states[ri].contains_key(key) {
                self.states[ri].insert(
                    key,
                    KeyState {
                        window: Times::from(vec![now]),
                        dirty: true,
                        ..KeyState::inactive(now)
                    },
                );
                self.settle(ri, key, keys::hash(key), false);
            }
        }
    }

    /// An `absent` key at `now`: silent for the rule's duration, it fires
    /// (once, then at each `repeat`). Returns whether it changed.
    fn tick_absent(
        c: &Compiled,
        rule: &Rule,
        key: &str,
        st: &mut KeyState,
        absent: Duration,
        now: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) -> bool {
        let seen = st.seen();
        let due = if !st.firing {
            now - seen >= absent
        } else {
            rule.repeat
                .is_some_and(|rep| st.last_sent.is_none_or(|t| now - t.get() >= rep))
        };
        if !due {
            return false;
        }
        if !st.firing {
            st.firing = true;
            st.since = (seen + absent).into();
        }
        st.last_sent = Some(now.into());
        let empty = Row::default();
        let (source, fields, prev) = match &st.snapshot {
            Some(s) => (&s.source, &s.fields, s.prev.as_ref()),
            None => (&rule.absent_key, &empty, None),
        };
        out.push(make(
            c,
            rule,
            key,
            AlertState::Firing,
            source,
            fields,
            prev,
            st.since.get(),
            now,
        ));
        true
    }

    /// A pending or firing key of a `for:` or `repeat:` rule at `now`: a
    /// wait that has elapsed fires, a reminder that is due goes out.
    /// Returns whether it changed.
    fn tick_wait(
        c: &Compiled,
        rule: &Rule,
        key: &str,
        st: &mut KeyState,
        now: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) -> bool {
        let due = if !st.firing {
            now - st.since.get() >= rule.for_
        } else {
            rule.repeat
                .is_some_and(|rep| st.last_sent.is_none_or(|t| now - t.get() >= rep))
        };
        let Some(snap) = st.snapshot.clone().filter(|_| due) else {
            return false;
        };
        st.firing = true;
        st.last_sent = Some(now.into());
        out.push(make(
            c,
            rule,
            key,
            AlertState::Firing,
            &snap.source,
            &snap.fields,
            snap.prev.as_ref(),
            st.since.get(),
            now,
        ));
        true
    }

    /// Time passing: pending keys whose `for:` has elapsed fire, firing keys
    /// due a `repeat:` remind, silent keys of `absent` rules fire, records
    /// leave `count` windows. Only keys with a deadline at or before `now`
    /// are visited.
    pub fn tick(&mut self, now: DateTime<Utc>, out: &mut Vec<Notification>) {
        let compiled = Arc::clone(&self.compiled);
        let c = &*compiled;
        for (ri, rule) in c.rules.iter().enumerate() {
            if !rule.timed() {
                continue;
            }
            for key in self.states[ri].take_due(now) {
                let Some((st, queue)) = self.states[ri].get_queued(&key) else {
                    continue;
                };
                let (changed, forget) = if let Some(a) = rule.absent {
                    (Self::tick_absent(c, rule, &key, st, a, now, out), false)
                } else if let Some((n, within)) = rule.count {
                    Self::tick_count(c, rule, &key, st, n, within, now, out)
                } else {
                    (Self::tick_wait(c, rule, &key, st, now, out), false)
                };
                let h = queue.hash();
                if forget {
                    self.states[ri].remove_hashed(&key, h);
                    self.changed.push((ri, key, h));
                } else {
                    // Visited but unchanged: queued again, not listed.
                    let listed = st.dirty || !changed;
                    st.dirty |= changed;
                    queue.schedule(st, deadline(rule, st));
                    self.list(ri, &key, h, listed);
                }
            }
        }
    }

    /// The next time `tick` has something to do.
    pub fn next_deadline(&mut self) -> Option<DateTime<Utc>> {
        let rules = &self.compiled.rules;
        rules
            .iter()
            .zip(&mut self.states)
            .filter_map(|(rule, states)| states.next_timer(|st| deadline(rule, st)))
            .min()
    }
}

/// When a key of `rule` next needs a visit from `tick`, if ever.
fn deadline(rule: &Rule, st: &KeyState) -> Option<DateTime<Utc>> {
    let remind = || {
        rule.repeat
            .map(|rep| st.last_sent.unwrap_or(st.since).get() + rep)
    };
    if let Some((n, within)) = rule.count {
        // Firing: when the window next loses a record and falls under N.
        // Not firing: when it has lost them all and the key is forgotten;
        // records leaving before then change nothing a record would not
        // (each record prunes the window first), so they are not visited.
        let leaving = if st.firing {
            st.window
                .len()
                .checked_sub(n as usize)
                .and_then(|i| st.window.get(i))
        } else {
            st.window.last()
        };
        let drop = leaving.map(|t| t + within);
        let remind = if st.firing { remind() } else { None };
        match (drop, remind) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    } else if let Some(a) = rule.absent {
        if st.firing {
            remind()
        } else {
            Some(st.seen() + a)
        }
    } else if !rule.keeps_snapshot() {
        None
    } else if !st.firing {
        Some(st.since.get() + rule.for_)
    } else {
        remind()
    }
}

/// The record being evaluated: at hand, or made on first need.
// Lives on the stack for the length of one record; boxing would cost more.
#[allow(clippy::large_enum_variant)]
enum Lazy<'a> {
    Ready(&'a Record),
    Pending(&'a mut dyn FnMut() -> Record, Option<Record>),
}

impl Lazy<'_> {
    fn get(&mut self) -> &Record {
        match self {
            Lazy::Ready(r) => r,
            Lazy::Pending(make, slot) => slot.get_or_insert_with(make),
        }
    }
}

/// The plan of a record's source, looked up again only when the source
/// changes: the records of a batch mostly share theirs.
struct PlanOf<'c> {
    c: &'c Compiled,
    source: *const u8,
    plan: Option<&'c SourcePlan>,
}

impl<'c> PlanOf<'c> {
    fn new(c: &'c Compiled) -> PlanOf<'c> {
        PlanOf {
            c,
            source: std::ptr::null(),
            plan: None,
        }
    }

    /// The plan for `source`, which must outlive the batch (the address
    /// of a name stands for it).
    fn get(&mut self, source: &Arc<str>) -> Option<&'c SourcePlan> {
        let p = Arc::as_ptr(source) as *const u8;
        if p != self.source {
            self.source = p;
            self.plan = self.c.plans.get(&**source);
        }
        self.plan
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
    /// Per rule position of the current plan: the record its value guard
    /// let it through at.
    candidate: Vec<u32>,
    /// Per rule position: the record one of its guarding phrases was found in.
    text_pass: Vec<u32>,
    /// Per rule position: the record whose value matched its guard exactly.
    by_value: Vec<u32>,
    /// Rule positions to look at for the current record.
    visit: Vec<usize>,
    /// Rule positions some guard let through (with repeats), for one-off
    /// events, which visit only those.
    let_through: Vec<usize>,
    /// Phrase ids found in the current record (with repeats).
    matched: Vec<u32>,
    /// Per field slot: the position in its row the field was last found
    /// at (see [`crate::record::lookup_at`]).
    at: Vec<u8>,
    buf: text::ScanBuf,
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
            candidate: Vec::new(),
            text_pass: Vec::new(),
            by_value: Vec::new(),
            visit: Vec::new(),
            let_through: Vec::new(),
            matched: Vec::new(),
            at: vec![0; c.slot_names.len()],
            buf: text::ScanBuf::default(),
        }
    }

    /// Scans text slot `tslot` of the current record once; phrases found
    /// are stamped and their ids appended to `matched`.
    fn ensure_scanned(
        &mut self,
        tslot: usize,
        phrases: &PhraseSet,
        vals: &[Option<&Value>],
        text_slots: &[usize],
    ) {
        let stamp = self.stamp;
        if self.scanned[tslot] == stamp {
            return;
        }
        self.scanned[tslot] = stamp;
        if let Some(text) = field_text(vals[text_slots[tslot]]) {
            let base = tslot * self.phrases;
            let (exact, prefix, buf, matched) = (
                &mut self.exact,
                &mut self.prefix,
                &mut self.buf,
                &mut self.matched,
            );
            phrases.scan(&text, buf, |pid, whole| {
                prefix[base + pid as usize] = stamp;
                if whole {
                    exact[base + pid as usize] = stamp;
                }
                matched.push(pid);
            });
        }
    }

    fn next_record(&mut self) {
        self.matched.clear();
        self.let_through.clear();
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.exact.fill(0);
            self.prefix.fill(0);
            self.scanned.fill(0);
            self.candidate.fill(0);
            self.text_pass.fill(0);
            self.by_value.fill(0);
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
        s.ensure_scanned(tslot, self.phrases, self.vals, self.text_slots);
        let i = tslot * s.phrases + p.pid as usize;
        if p.prefix {
            s.prefix[i] == s.stamp
        } else {
            s.exact[i] == s.stamp
        }
    }

    fn text(&self, tslot: usize) -> Option<Cow<'_, str>> {
        let t = field_text(self.vals[self.text_slots[tslot]])?;
        Some(Cow::Owned(text::normalize(&t).into_owned()))
    }
}

/// `t` trimmed and lowercased as a guard's values are: ASCII in `small`,
/// other text allocated.
fn lower_key<'a>(t: &'a str, small: &'a mut [u8; 64]) -> Cow<'a, str> {
    let t = crate::record::trim(t);
    if t.len() <= small.len() && t.is_ascii() {
        let b = &mut small[..t.len()];
        b.copy_from_slice(t.as_bytes());
        b.make_ascii_lowercase();
        if let Ok(lower) = std::str::from_utf8(b) {
            return Cow::Borrowed(lower);
        }
    }
    condition::lower_trim(t)
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

/// The key a rule's `key:` template gives `rec`; a template that names
/// one text field borrows it.
fn render_key<'a>(c: &Compiled, name: &str, rule: &Rule, rec: &'a Record) -> Cow<'a, str> {
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
fn window_key<'a>(c: &Compiled, rule: &'a Rule, rec: &'a Record) -> Cow<'a, str> {
    match &rule.key {
        Some(t) => render_key(c, t, rule, rec),
        None => Cow::Borrowed(&rule.absent_key),
    }
}

/// [`make`] for the record at hand.
fn make_for(
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
    )
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
        started_at => format_ts(n.started_at),
        now => format_ts(n.at),
        link => &n.link,
        fields => V::from(Serde(&n.fields)),
        ..V::from(Serde(&n.fields))
    }
}

/// A field value as shown to people: text bare, anything else as JSON.
fn push_value(b: &mut String, v: &Value) {
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
fn default_texts(n: &Notification, rule: &Rule) -> (String, String) {
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
        for (k, v) in n.fields.iter() {
            field(&mut b, k, v, None);
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

/// One message listing several notifications, for a digest channel. Its id
/// follows from theirs, so the same digest sent twice carries the same id.
pub fn digest<'a>(
    channel: &str,
    items: impl Iterator<Item = &'a Notification>,
    now: DateTime<Utc>,
) -> Notification {
    let items: Vec<&Notification> = items.collect();
    let firing = items
        .iter()
        .filter(|n| n.state == AlertState::Firing)
        .count();
    let mut body = String::new();
    let mut h = Sha256::new();
    for n in &items {
        h.update(n.id.as_bytes());
        body.push_str(&format!(
            "[{}] {} ({}, {})\n",
            prefix(n),
            n.summary,
            n.source,
            format_ts(n.at)
        ));
        if let Some(l) = &n.link {
            body.push_str(&format!("    {l}\n"));
        }
    }
    let severity = items
        .iter()
        .map(|n| n.severity)
        .max()
        .unwrap_or(Severity::Info);
    let id: String = h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut fields = Fields::new();
    fields.insert("count".into(), Value::from(items.len()));
    fields.insert(
        "notifications".into(),
        Value::Array(items.iter().map(|n| Value::from(n.id.clone())).collect()),
    );
    Notification {
        id,
        rule: DIGEST_RULE.into(),
        title: format!("tocsin digest for {channel}").into(),
        severity,
        state: AlertState::Firing,
        key: channel.to_string(),
        summary: format!(
            "{} notifications: {firing} firing, {} resolved",
            items.len(),
            items.len() - firing
        ),
        body,
        source: "tocsin".into(),
        labels: Default::default(),
        fields: Arc::new(fields),
        prev: None,
        link: None,
        started_at: items.first().map_or(now, |n| n.at),
        at: now,
        notify: Arc::from(vec![channel.to_string()]),
    }
}

/// A seeded pseudo-random sequence (xorshift64) for tests that check many
/// cases against a model.
#[cfg(test)]
pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn guard_keys_are_lowercased_as_str_lowercase_does() {
        // Every byte from around the letters and beyond ASCII.
        let pool: Vec<u8> = (0u8..=0x7f).chain([0x80, 0xc3, 0xa9, 0xff]).collect();
        let mut next = xorshift(11);
        for _ in 0..50_000 {
            let len = (next() % 20) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| pool[(next() % pool.len() as u64) as usize])
                .collect();
            if let Ok(t) = std::str::from_utf8(&bytes) {
                let mut small = [0u8; 64];
                assert_eq!(lower_key(t, &mut small), t.trim().to_lowercase(), "{t:?}");
            }
        }
        let mut small = [0u8; 64];
        assert_eq!(lower_key(" Spike ", &mut small), "spike");
        assert_eq!(lower_key("ÉTAT", &mut small), "état");
    }

    #[test]
    fn notification_ids_stay_what_they_were() {
        // Receivers drop repeats by id: the same inputs give the same id
        // from one version to the next.
        let at = Utc.with_ymd_and_hms(2026, 4, 1, 12, 30, 0).unwrap();
        let long = "k".repeat(300);
        let got = [
            notification_id("r", "k", AlertState::Firing, at),
            notification_id("r", "k", AlertState::Resolved, at),
            notification_id("us-cn-tariff", "", AlertState::Firing, at),
            notification_id(
                "r",
                &long,
                AlertState::Firing,
                at + chrono::Duration::nanoseconds(7),
            ),
        ];
        // The first and last as Python's hashlib gives them for the same
        // bytes: sha256(b"r\0k\0firing\0" + nanoseconds, little-endian).
        assert_eq!(
            got,
            [
                "8f5ca0d7ab8575786f60e1fc2940cb60",
                "d15fb0e32667a9606287e6e9b7402649",
                "ffe4c4d7b23a088ce0cdedb8cd7e5831",
                "f9f8771ef853dedf7b8ddfb676fe959e",
            ]
        );
        // Around the ends of one and two padded blocks (55/56 and 119/120
        // bytes hashed) and of the stack buffer (128/129), as hashlib gives
        // them.
        for (n, want) in [
            (37, "2677085f0bce459332bf42c8c80af607"),
            (38, "8b67cb1fb67bb9de47050a0972731a10"),
            (101, "34cf474dfd6335ef213c08fd01deec41"),
            (102, "4e575e97be7f0a6ba5777d8d3e668b83"),
            (110, "9e9b7d7be2dd0ade477ba271830f169f"),
            (111, "496f6756340d76faed85c5041737b707"),
        ] {
            let key = "k".repeat(n);
            assert_eq!(
                notification_id("r", &key, AlertState::Firing, at),
                want,
                "{n}"
            );
        }
    }

    #[test]
    fn stamps_keep_times_to_the_millisecond_in_eight_bytes() {
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 8);
        assert_eq!(std::mem::size_of::<Stamp>(), 8);
        let times = [
            Utc.timestamp_millis_opt(0).unwrap(),
            Utc.timestamp_millis_opt(-1).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap() + Duration::milliseconds(999),
            DateTime::<Utc>::MIN_UTC + Duration::milliseconds(1),
            DateTime::<Utc>::MAX_UTC - Duration::milliseconds(1),
        ];
        for t in times {
            let t = DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap();
            assert_eq!(Stamp::from(t).get(), t);
        }
        // Below the millisecond is dropped.
        let t = Utc.timestamp_opt(5, 1_999_999).unwrap();
        assert_eq!(Stamp::from(t).millis(), 5_001);
    }

    #[test]
    fn a_key_state_and_its_key_stay_small() {
        // Tables hold millions of keys: a slot is the key (24 bytes inline),
        // its state and, for windows of more than two records, a block.
        assert!(std::mem::size_of::<KeyState>() + std::mem::size_of::<keys::Key>() <= 80);
    }
}
