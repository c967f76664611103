//! The engine: compiled rules and the per-(rule, key) state machine.
//! Pure and synchronous: `now` is passed in, nothing here reads a clock or
//! does I/O, so it is fast and tests drive it with a simulated clock.
//!
//! Each (rule, key) is inactive (absent from the map), pending (holds,
//! waiting out `for:`) or firing. Notifications go out on edges only.

pub mod compile;
pub mod condition;
pub mod keys;
mod rule;
mod scratch;
mod state;
pub mod text;
mod texts;
mod times;

use std::borrow::Cow;
use std::collections::HashMap;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::notification::{AlertState, Notification};
use crate::record::{Fields, Record, RecordKind, Row, as_text, lookup_at};
use condition::EvalCtx;
use keys::{KeyStates, NOT_QUEUED};
use scratch::{Hits, Lazy, PlanOf, Scratch, lower_key};
use texts::{make_for, render_key, window_key};

pub use compile::compile;
pub use rule::{Compiled, Guard, Rule, SourcePlan};
pub use state::{KeyState, Snapshot, Stamp, StateChange};
pub use texts::make;
pub use times::Times;

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
    pub fn take_changes(&mut self) -> Vec<StateChange> {
        let mut out = Vec::new();
        self.take_changes_into(&mut out);
        out
    }

    /// [`Engine::take_changes`] into `out` (cleared first), whose room a
    /// caller keeps from batch to batch.
    pub fn take_changes_into(&mut self, out: &mut Vec<StateChange>) {
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
