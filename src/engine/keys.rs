//! The states of one rule's keys, with a timer queue so that time passing
//! visits only the keys that are due, not every key the rule holds.
//!
//! The queue holds (deadline, key hash) pairs and no copy of the key: keys
//! are found again by their hash. Entries are never updated in place: a key
//! whose deadline moves is queued again at the new one, and each state
//! remembers (to the millisecond) the deadline last queued for it, so an
//! entry for another deadline is stale and dropped when it comes up, and a
//! deadline already queued is not queued again. A key's deadline mostly
//! moves later with each record (a window's or a silence's end), so queued
//! again at once it stays in the order the queue is filled in; left for its
//! old entry to come up, it would be queued again out of order. Stale
//! entries that outnumber the keys twice over are dropped all at once, so
//! a busy key with a long silence does not fill the queue.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::BuildHasher;

use chrono::{DateTime, Utc};
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

pub use super::state::Key;
pub(crate) use super::state::NOT_QUEUED;
use super::state::{Due, KeyState};
use crate::record::same;

/// A min-queue of (deadline in Unix milliseconds, key hash), earliest
/// deadline first; of entries due at once, any first. A rule's deadlines
/// mostly come in order (now plus the rule's one duration), so those that
/// do are kept in a plain queue, taken from its front, and only the others
/// go to a heap: a pop from a heap of many keys reads a line at each of its
/// levels.
#[derive(Clone, Default)]
pub(crate) struct Timers {
    /// Deadlines that came no earlier than the one queued before them.
    sorted: VecDeque<(i64, u64)>,
    /// The others.
    heap: BinaryHeap<Reverse<(i64, u64)>>,
}

impl Timers {
    fn push(&mut self, t: (i64, u64)) {
        // By time alone: the keys of a batch share their deadline, and
        // their hashes come in no order.
        if self.sorted.back().is_none_or(|b| b.0 <= t.0) {
            self.sorted.push_back(t);
        } else {
            self.heap.push(Reverse(t));
        }
    }

    /// The earliest entry.
    fn peek(&self) -> Option<(i64, u64)> {
        match (self.sorted.front(), self.heap.peek()) {
            (Some(a), Some(Reverse(b))) => Some(*a.min(b)),
            (a, b) => a.copied().or(b.map(|r| r.0)),
        }
    }

    /// Removes the earliest entry.
    fn pop(&mut self) {
        match (self.sorted.front(), self.heap.peek()) {
            (Some(a), Some(Reverse(b))) if b < a => {
                self.heap.pop();
            }
            (Some(_), _) => {
                self.sorted.pop_front();
            }
            (None, _) => {
                self.heap.pop();
            }
        }
    }

    fn clear(&mut self) {
        self.sorted.clear();
        self.heap.clear();
    }

    /// Keeps the entries `keep` says to, in their order.
    fn retain(&mut self, mut keep: impl FnMut(&(i64, u64)) -> bool) {
        self.sorted.retain(&mut keep);
        self.heap.retain(|Reverse(t)| keep(t));
    }

    fn len(&self) -> usize {
        self.sorted.len() + self.heap.len()
    }
}

/// Queues the deadline of the key [`KeyStates::get_or_insert_queued`]
/// found.
pub struct Queue<'a> {
    timers: &'a mut Timers,
    h: u64,
}

impl Queue<'_> {
    /// The key's [`hash`].
    pub fn hash(&self) -> u64 {
        self.h
    }

    pub fn schedule(self, st: &mut KeyState, at: Option<DateTime<Utc>>) {
        if let Some(at) = at {
            queue(self.timers, st, self.h, at);
        }
    }
}

#[derive(Clone, Default)]
pub struct KeyStates {
    table: HashTable<(Key, KeyState)>,
    timers: Timers,
}

impl std::fmt::Debug for KeyStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStates")
            .field("keys", &self.table.len())
            .field("timers", &self.timers.len())
            .finish()
    }
}

pub(crate) fn hash(key: &str) -> u64 {
    FxBuildHasher.hash_one(key)
}

fn rehash(e: &(Key, KeyState)) -> u64 {
    hash(&e.0)
}

/// Whether the queue's entry at `ms` for hash `h` is the one `e`'s key was
/// last queued with (else it is stale, or another key's that shares the
/// slot's tag).
fn queued_with(e: &(Key, KeyState), ms: i64, h: u64) -> bool {
    e.1.due == Due::at(ms) && hash(&e.0) == h
}

impl KeyStates {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&KeyState> {
        self.table
            .find(hash(key), |e| same(&e.0, key))
            .map(|(_, st)| st)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut KeyState> {
        self.get_mut_hashed(key, hash(key))
    }

    /// [`KeyStates::get_mut`] given the key's [`hash`], which a caller
    /// that looks a key up in several rules' tables computes once.
    pub fn get_mut_hashed(&mut self, key: &str, h: u64) -> Option<&mut KeyState> {
        self.table
            .find_mut(h, |e| same(&e.0, key))
            .map(|(_, st)| st)
    }

    /// Starts loading the state slot of the key hashed `h` (see
    /// [`super::fetch`]).
    #[inline]
    pub fn fetch(&self, h: u64) {
        if let Some(e) = self.table.find(h, |_| true) {
            super::fetch(e);
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets the state of `key`, copying the key only when it is new.
    pub fn insert(&mut self, key: &str, st: KeyState) {
        self.insert_hashed(key, hash(key), st)
    }

    /// [`KeyStates::insert`] given the key's [`hash`].
    pub fn insert_hashed(&mut self, key: &str, h: u64, st: KeyState) {
        match self.table.entry(h, |e| same(&e.0, key), rehash) {
            hashbrown::hash_table::Entry::Occupied(mut e) => e.get_mut().1 = st,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert((Key::new(key), st));
            }
        }
    }

    /// The state of `key`, made by `make` when it has none, with the means
    /// to queue the key's next deadline once the state is changed, without
    /// finding the key again.
    pub fn get_or_insert_queued(
        &mut self,
        key: &str,
        make: impl FnOnce() -> KeyState,
    ) -> (&mut KeyState, Queue<'_>) {
        let h = hash(key);
        let entry = self
            .table
            .entry(h, |e| same(&e.0, key), rehash)
            .or_insert_with(|| (Key::new(key), make()));
        let queue = Queue {
            timers: &mut self.timers,
            h,
        };
        (&mut entry.into_mut().1, queue)
    }

    /// The state of `key`, if any, with the means to queue its next
    /// deadline (as [`KeyStates::get_or_insert_queued`]).
    pub fn get_queued(&mut self, key: &str) -> Option<(&mut KeyState, Queue<'_>)> {
        self.get_queued_hashed(key, hash(key))
    }

    /// [`KeyStates::get_queued`] given the key's [`hash`].
    pub fn get_queued_hashed(&mut self, key: &str, h: u64) -> Option<(&mut KeyState, Queue<'_>)> {
        let (_, st) = self.table.find_mut(h, |e| same(&e.0, key))?;
        let queue = Queue {
            timers: &mut self.timers,
            h,
        };
        Some((st, queue))
    }

    pub fn remove(&mut self, key: &str) -> Option<KeyState> {
        self.remove_hashed(key, hash(key))
    }

    /// [`KeyStates::remove`] given the key's [`hash`].
    pub fn remove_hashed(&mut self, key: &str, h: u64) -> Option<KeyState> {
        self.table
            .find_entry(h, |e| same(&e.0, key))
            .ok()
            .map(|e| e.remove().0.1)
    }

    /// Queues `key` to be visited at `at`, unless it is queued then
    /// already (see [`queue`]).
    pub fn schedule(&mut self, key: &str, at: Option<DateTime<Utc>>) {
        let Some(at) = at else { return };
        let h = hash(key);
        let Some((_, st)) = self.table.find_mut(h, |e| same(&e.0, key)) else {
            return;
        };
        queue(&mut self.timers, st, h, at);
    }

    /// The earliest deadline of any key. Entries on top that are stale
    /// (the key is gone or was queued again, or its deadline moved later,
    /// as `deadline` says) are dropped, and moved keys queued at their new
    /// deadline.
    pub fn next_timer(
        &mut self,
        deadline: impl Fn(&KeyState) -> Option<DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        while let Some((ms, h)) = self.timers.peek() {
            let mut live = false;
            let mut moved = Vec::new();
            for e in self.table.iter_hash_mut(h) {
                if !queued_with(e, ms, h) {
                    continue;
                }
                let (k, st) = e;
                match deadline(st) {
                    Some(d) if d.timestamp_millis() <= ms => live = true,
                    d => {
                        st.due = NOT_QUEUED;
                        moved.push((k.clone(), d));
                    }
                }
            }
            if !live {
                self.timers.pop();
            }
            for (k, d) in &moved {
                self.schedule(k, *d);
            }
            if live {
                return DateTime::from_timestamp_millis(ms);
            }
        }
        None
    }

    /// The keys whose queued deadline is at or before `now`, each once;
    /// their entries leave the queue, so the caller visits them and queues
    /// their next deadline.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<Key> {
        if self.timers.len() > 2 * self.table.len() + 64 {
            self.drop_stale();
        }
        let now_ms = now.timestamp_millis();
        let mut keys = Vec::new();
        while let Some((ms, h)) = self.timers.peek() {
            if ms > now_ms {
                break;
            }
            self.timers.pop();
            // Every key with this hash (almost always one) and this
            // deadline is looked at; one that is not due after all is
            // queued again by the caller. The slots found by hash may hold
            // other keys that share its tag.
            for e in self.table.iter_hash_mut(h) {
                if queued_with(e, ms, h) {
                    e.1.due = NOT_QUEUED;
                    keys.push(e.0.clone());
                }
            }
        }
        keys
    }

    /// Drops the queue's stale entries: those of keys that are gone or
    /// were queued again at another time since.
    fn drop_stale(&mut self) {
        let table = &self.table;
        self.timers
            .retain(|&(ms, h)| table.find(h, |e| queued_with(e, ms, h)).is_some());
    }

    /// Queues every key again from scratch (after a restore or a reload,
    /// when deadlines may have changed).
    pub fn reschedule_all(&mut self, deadline: impl Fn(&KeyState) -> Option<DateTime<Utc>>) {
        self.timers.clear();
        for (k, st) in self.table.iter_mut() {
            st.due = NOT_QUEUED;
            if let Some(at) = deadline(st) {
                queue(&mut self.timers, st, hash(k), at);
            }
        }
    }
}

/// Queues the key of hash `h` at `at`, unless `st` says it is queued then
/// already; an entry for another time becomes stale.
fn queue(timers: &mut Timers, st: &mut KeyState, h: u64, at: DateTime<Utc>) {
    let ms = at.timestamp_millis();
    let due = Due::at(ms);
    if st.due == due {
        return;
    }
    st.due = due;
    timers.push((ms, h));
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn timers_come_out_earliest_first_in_order_or_not() {
        // In order, out of order, equal and interleaved pushes and pops.
        let mut rnd = crate::engine::xorshift(0x9e37_79b9_7f4a_7c15);
        let mut t = Timers::default();
        let mut model: Vec<(i64, u64)> = Vec::new();
        let mut clock = 0i64;
        for i in 0..20_000u64 {
            match rnd() % 10 {
                // Mostly later than the last, as a rule's deadlines come.
                0..=5 => clock += (rnd() % 3) as i64,
                6 => clock -= (rnd() % 50) as i64,
                _ => {}
            }
            if rnd().is_multiple_of(3) {
                // The earliest time; of entries due at once, any.
                let got = t.peek();
                let want = model.iter().map(|m| m.0).min();
                assert_eq!(got.map(|g| g.0), want, "step {i}");
                if let Some(g) = got {
                    let at = model.iter().position(|m| *m == g);
                    model.remove(at.expect("an entry that was pushed"));
                    t.pop();
                }
            } else {
                let e = (clock, rnd() % 4);
                t.push(e);
                model.push(e);
            }
            assert_eq!(t.len(), model.len());
        }
        assert!(
            !t.heap.is_empty() && !t.sorted.is_empty(),
            "both parts used"
        );
        let mut drained = Vec::new();
        while let Some(e) = t.peek() {
            drained.push(e);
            t.pop();
        }
        assert!(drained.windows(2).all(|w| w[0].0 <= w[1].0), "by time");
        drained.sort();
        model.sort();
        assert_eq!(drained, model);
        assert_eq!(t.peek(), None);
    }

    #[test]
    fn a_batch_of_keys_due_at_once_stays_in_the_plain_queue() {
        // The keys of a batch share their deadline and come in no order of
        // hash: none of them needs the heap.
        let mut rnd = crate::engine::xorshift(11);
        let mut t = Timers::default();
        for ms in [1_000, 1_000, 2_000, 3_000] {
            for _ in 0..500 {
                t.push((ms, rnd()));
            }
        }
        assert!(t.heap.is_empty(), "{} in the heap", t.heap.len());
        assert_eq!(t.len(), 2_000);
    }

    #[test]
    fn keys_short_and_long_are_found() {
        let mut m = KeyStates::default();
        let short = "x".repeat(24);
        let long = "x".repeat(25);
        for k in ["", "é", short.as_str(), long.as_str()] {
            m.insert(k, KeyState::inactive(at(0)));
        }
        for k in ["", "é", short.as_str(), long.as_str()] {
            assert!(m.contains_key(k), "{k:?}");
            assert_eq!(Key::new(k).as_str(), k);
        }
        assert!(!m.contains_key(&"x".repeat(23)));
        assert!(!m.contains_key(&"x".repeat(26)));
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn a_deadline_moved_later_is_found_at_its_new_time() {
        let mut m = KeyStates::default();
        m.insert("a", KeyState::inactive(at(0)));
        m.schedule("a", Some(at(10)));
        // Later: queued again (in order); the entry at 10 is stale.
        m.schedule("a", Some(at(30)));
        assert_eq!(m.timers.len(), 2);
        // The same again: nothing added.
        m.schedule("a", Some(at(30)));
        assert_eq!(m.timers.len(), 2);
        assert_eq!(m.next_timer(|_| Some(at(30))), Some(at(30)));
        assert_eq!(m.timers.len(), 1, "the stale entry is dropped");
        assert!(m.take_due(at(29)).is_empty());
        assert_eq!(m.take_due(at(30)), vec![Key::new("a")]);
        // Left for its old entry to come up, without a look ahead.
        m.schedule("a", Some(at(40)));
        m.schedule("a", Some(at(50)));
        assert!(m.take_due(at(49)).is_empty(), "40 is stale");
        assert_eq!(m.take_due(at(50)), vec![Key::new("a")]);
        assert_eq!(m.timers.len(), 0);
    }

    #[test]
    fn a_key_queued_again_and_again_does_not_fill_the_queue() {
        let mut m = KeyStates::default();
        m.insert("busy", KeyState::inactive(at(0)));
        m.insert("quiet", KeyState::inactive(at(0)));
        m.schedule("quiet", Some(at(1_000_000)));
        // A record a second for a key with a day's silence: each moves its
        // deadline a second later.
        for s in 0..10_000 {
            m.schedule("busy", Some(at(s + 86_400)));
            if s % 100 == 0 {
                assert!(m.take_due(at(s)).is_empty());
                assert!(
                    m.timers.len() <= 2 * m.len() + 64 + 100,
                    "{}",
                    m.timers.len()
                );
            }
        }
        assert!(m.take_due(at(10_000 + 86_398)).is_empty());
        assert_eq!(m.take_due(at(10_000 + 86_399)), vec![Key::new("busy")]);
        assert_eq!(m.take_due(at(1_000_000)), vec![Key::new("quiet")]);
        assert_eq!(m.timers.len(), 0);
    }

    #[test]
    fn only_due_keys_come_up_each_once() {
        let mut m = KeyStates::default();
        for k in ["a", "b", "c"] {
            m.insert(k, KeyState::inactive(at(0)));
        }
        m.schedule("a", Some(at(10)));
        m.schedule("b", Some(at(20)));
        // Queued again, later and earlier: the first entries go stale.
        m.schedule("a", Some(at(15)));
        m.schedule("b", Some(at(5)));
        assert_eq!(m.timers.len(), 4);
        let fixed = |d| move |_: &KeyState| Some(at(d));
        assert_eq!(m.next_timer(fixed(5)), Some(at(5)));
        assert_eq!(m.timers.len(), 4, "nothing stale on top yet");
        assert!(m.take_due(at(4)).is_empty());
        assert_eq!(m.take_due(at(5)), vec![Key::new("b")]);
        // a's stale entry at 10 does not bring it up early.
        assert!(m.take_due(at(14)).is_empty());
        // b's stale entry at 20 finds it not queued: not returned.
        let mut due = m.take_due(at(30));
        due.sort();
        assert_eq!(due, vec![Key::new("a")]);
        assert_eq!(m.timers.len(), 0);
        assert!(m.take_due(at(100)).is_empty(), "c was never queued");
    }

    #[test]
    fn removed_keys_leave_stale_entries_that_come_up_empty() {
        let mut m = KeyStates::default();
        m.insert("a", KeyState::inactive(at(0)));
        m.schedule("a", Some(at(10)));
        assert!(m.remove("a").is_some());
        assert_eq!(m.next_timer(|_| None), None, "the stale entry is dropped");
        m.insert("a", KeyState::inactive(at(0)));
        m.schedule("a", Some(at(10)));
        assert!(m.remove("a").is_some());
        assert!(m.take_due(at(10)).is_empty());
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn a_key_comes_up_at_its_own_deadline_not_with_keys_sharing_its_tag() {
        let mut m = KeyStates::default();
        let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
        // Queued in order, then earlier, then later again; 50 keys in a
        // small table share slot tags, which must not bring them up early.
        let secs = |i: usize| match i {
            0..20 => 100 + i as i64,
            20..35 => 60 + (i as i64 * 7) % 40,
            _ => 200 - (i as i64 % 4),
        };
        for (i, k) in keys.iter().enumerate() {
            m.insert(k, KeyState::inactive(at(0)));
            m.schedule(k, Some(at(secs(i))));
        }
        let mut seen = Vec::new();
        for t in 0..=200 {
            for k in m.take_due(at(t)) {
                let i: usize = k[1..].parse().unwrap();
                assert_eq!(secs(i), t, "{k:?} came up at {t}");
                seen.push(i);
            }
        }
        seen.sort();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        assert_eq!(m.timers.len(), 0);
    }

    #[test]
    fn sub_second_deadlines_are_not_lost() {
        let mut m = KeyStates::default();
        m.insert("a", KeyState::inactive(at(0)));
        let t = at(10) + chrono::Duration::milliseconds(300);
        m.schedule("a", Some(t));
        // Earlier within the same second: queued, not folded into the later.
        let early = at(10) + chrono::Duration::milliseconds(100);
        m.schedule("a", Some(early));
        assert_eq!(m.next_timer(|_| Some(early)), Some(early));
        assert_eq!(m.take_due(early), vec![Key::new("a")]);
    }
}
