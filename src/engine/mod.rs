//! The engine: compiled rules and the per-(rule, key) state machine.
//! Pure and synchronous: `now` is passed in, nothing here reads a clock or
//! does I/O, so it is fast and tests drive it with a simulated clock.
//!
//! Each (rule, key) is inactive (absent from the map), pending (holds,
//! waiting out `for:`) or firing. Notifications go out on edges only.

pub mod compile;
pub mod condition;
pub mod keys;
mod machine;
mod rule;
mod scratch;
mod state;
pub mod text;
mod texts;
mod times;
pub mod words;

use std::collections::HashMap;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::notification::Notification;
use crate::record::{Fields, Record, RecordKind, as_text, lookup_at};
use condition::EvalCtx;
use keys::KeyStates;
use scratch::{Hits, Lazy, PlanOf, Scratch, lower_key};

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
            states.reschedule_all(|st| rule.deadline(st));
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
            queue.schedule(st, rule.deadline(st));
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
        // A batch of a large table visits keys in no order that caches
        // can guess, and each step needs the memory the one before
        // fetched: the row, then its entries, then the names they point
        // to, and the state slots of the key. So those of the records a
        // few places ahead are asked for early, in that order (about 40%
        // of the engine's time on 100,000 keys, bench/stateful.sh).
        const AHEAD: usize = 4;
        let compiled = Arc::clone(&self.compiled);
        let c = &*compiled;
        let (mut plans, mut ahead) = (PlanOf::new(c), PlanOf::new(c));
        let rows = |r: &Record, step: &dyn Fn(&Fields)| {
            step(&r.fields);
            if let Some(p) = &r.prev {
                step(p);
            }
        };
        for (i, rec) in recs.iter().enumerate() {
            if let Some(r) = recs.get(i + 3 * AHEAD) {
                fetch_bytes(r.key.as_bytes());
                rows(r, &|f| fetch(f));
            }
            if let Some(r) = recs.get(i + 2 * AHEAD) {
                rows(r, &|f| f.keys().for_each(fetch));
            }
            if let Some(r) = recs.get(i + AHEAD) {
                rows(r, &|f| f.keys().for_each(|k| fetch_bytes(k.as_bytes())));
                if let Some(plan) = ahead.get(&r.source) {
                    let h = keys::hash(&r.key);
                    for &ri in &plan.rules {
                        if c.rules[ri].key.is_none() {
                            self.states[ri].fetch(h);
                        }
                    }
                }
            }
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

    /// The rules over `source`, taken once for a stream of its events
    /// ([`Engine::observe_event`]).
    pub fn events(&self, source: &str) -> Events {
        Events {
            source: source.to_string(),
            compiled: Arc::clone(&self.compiled),
            plan: self.compiled.plans.get(source).cloned(),
        }
    }

    /// Evaluates a one-off event of `events`' source given only the values
    /// of the wanted fields (by slot); `record` makes the whole record,
    /// called only when a rule needs it (a notification or a keyed state).
    /// The batch path of `tocsin eval` uses this to skip building records
    /// nobody alerts on.
    pub fn observe_event(
        &mut self,
        events: &Events,
        vals: &[Option<&Value>],
        record: &mut dyn FnMut() -> Record,
        now: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) {
        if !Arc::ptr_eq(&events.compiled, &self.compiled) {
            // The rules were replaced since: their plan is looked up anew.
            let fresh = self.events(&events.source);
            return self.observe_event(&fresh, vals, record, now, out);
        }
        let Some(plan) = &events.plan else { return };
        let mut lazy = Lazy::Pending(record, None);
        let c = &*events.compiled;
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
}

/// The rules over one source and its plan, resolved once for a stream of
/// one-off events ([`Engine::events`]), so that each event is spared the
/// look-up.
pub struct Events {
    source: String,
    compiled: Arc<Compiled>,
    plan: Option<Arc<SourcePlan>>,
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

/// Asks the processor to start loading the memory of `v` into its cache,
/// without waiting for it: a hint, with no effect on what the program
/// does (and none at all on processors without the instruction).
#[inline(always)]
fn fetch<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    safe_arch::prefetch_t0(v);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// [`fetch`] for the bytes of a text.
#[inline(always)]
fn fetch_bytes(b: &[u8]) {
    if let Some(first) = b.first() {
        fetch(first);
    }
}
