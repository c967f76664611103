//! The per-(rule, key) state machine: a record or time passing moves a key
//! between inactive, pending (`for:`) and firing, and the edges make the
//! notifications. `absent` and `count` rules keep their times; `tick`
//! visits only the keys whose deadline has come.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::Engine;
use super::keys::{self, NOT_QUEUED};
use super::rule::{Compiled, Rule};
use super::state::{KeyState, Snapshot};
use super::texts::{make, make_for, render_key, window_key};
use super::times::Times;
use crate::notification::{AlertState, Notification};
use crate::record::{Record, RecordKind, Row};

impl Engine {
    /// `key_hash` is the hash of `rec.key`, once some rule has needed it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn transition(
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
    pub(super) fn absent_seen(
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
        queue.schedule(st, rule.deadline(st));
        self.list(ri, &key, h, listed);
    }

    /// A record for a `count` rule: it joins its key's window; reaching N
    /// fires the key (or reminds, at `repeat`).
    pub(super) fn count_seen(
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
        queue.schedule(st, rule.deadline(st));
        self.list(ri, &key, h, listed);
    }

    /// A `count` key at `now`: records leave its window; a firing key under
    /// N resolves, or reminds at `repeat`. Returns whether the key changed,
    /// and whether it is to be forgotten (an empty window, not firing).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tick_count(
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
                super::texts::evidence(c, None),
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
    pub(super) fn tick_absent(
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
            super::texts::evidence(c, None),
        ));
        true
    }

    /// A pending or firing key of a `for:` or `repeat:` rule at `now`: a
    /// wait that has elapsed fires, a reminder that is due goes out.
    /// Returns whether it changed.
    pub(super) fn tick_wait(
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
            super::texts::evidence(c, None),
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
                    queue.schedule(st, rule.deadline(st));
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
            .filter_map(|(rule, states)| states.next_timer(|st| rule.deadline(st)))
            .min()
    }
}
