//! The times a key's state keeps: a `count` rule's window (its key's latest
//! records) or when an `absent` rule's key last had a record. Most keys of
//! most rules hold none, so the times are a `ThinVec`: one pointer, and no
//! allocation while empty. That keeps a key's state at 40 bytes, and the
//! key with its state at 64, one cache line: a key's look-up in a table of
//! many reads one line from memory, not two.
//!
//! Times are kept to the millisecond, as the store keeps them, so a key
//! reads the same before and after a restart.

use chrono::{DateTime, Utc};
use thin_vec::ThinVec;

/// A few times, oldest first, as Unix milliseconds.
#[derive(Clone, Default, PartialEq)]
pub struct Times(ThinVec<i64>);

fn ms_of(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time_of(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Times {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<DateTime<Utc>> {
        self.0.get(i).copied().map(time_of)
    }

    pub fn first(&self) -> Option<DateTime<Utc>> {
        self.0.first().copied().map(time_of)
    }

    pub fn last(&self) -> Option<DateTime<Utc>> {
        self.0.last().copied().map(time_of)
    }

    pub fn iter(&self) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        self.0.iter().copied().map(time_of)
    }

    /// Adds `t` (no earlier than the others) at the end.
    pub fn push(&mut self, t: DateTime<Utc>) {
        self.0.push(ms_of(t));
    }

    /// Removes and returns the `i`th time.
    ///
    /// # Panics
    /// When there is no `i`th time.
    pub fn remove(&mut self, i: usize) -> DateTime<Utc> {
        let gone = time_of(self.0.remove(i));
        self.shrink();
        gone
    }

    /// Keeps the times after `cutoff`.
    pub fn keep_after(&mut self, cutoff: DateTime<Utc>) {
        // A time to the millisecond is after `cutoff` when it is after the
        // millisecond `cutoff` falls in (`timestamp_millis` rounds down).
        let c = ms_of(cutoff);
        self.0.retain(|t| *t > c);
        self.shrink();
    }

    pub fn clear(&mut self) {
        self.0 = ThinVec::new();
    }

    /// The heap block given back when no time is left, halved when most of
    /// it is unused.
    fn shrink(&mut self) {
        if self.0.is_empty() {
            self.clear();
        } else if self.0.capacity() > 2 * self.0.len() {
            self.0.shrink_to_fit();
        }
    }
}

impl std::fmt::Debug for Times {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl From<Vec<DateTime<Utc>>> for Times {
    fn from(v: Vec<DateTime<Utc>>) -> Times {
        Times(v.into_iter().map(ms_of).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        time_of(ms)
    }

    #[test]
    fn times_hold_what_a_list_would_through_every_change() {
        // Against a plain list: pushes, removals, cutoffs and clones, from
        // none to one (inline) to many (a block that grows) and back.
        let mut rnd = crate::engine::xorshift(0x2545_f491_4f6c_dd1d);
        let mut times = Times::default();
        let mut model: Vec<i64> = Vec::new();
        let mut clock = -5_000i64;
        let mut kept = Vec::new();
        for step in 0..50_000 {
            match rnd() % 8 {
                0..=3 => {
                    // Now and then earlier than the last (a clock set back).
                    clock += (rnd() % 700) as i64 - 60;
                    times.push(t(clock));
                    model.push(clock);
                }
                4 if !model.is_empty() => {
                    let i = rnd() as usize % model.len();
                    assert_eq!(times.remove(i), t(model.remove(i)), "step {step}");
                }
                5 => {
                    let c = clock - (rnd() % 2_000) as i64;
                    times.keep_after(t(c));
                    model.retain(|&m| m > c);
                }
                6 if rnd().is_multiple_of(50) => {
                    times.clear();
                    model.clear();
                }
                _ => {
                    // A clone lives on and is checked later.
                    if kept.len() < 64 {
                        kept.push((times.clone(), model.clone()));
                    }
                }
            }
            assert_eq!(times.len(), model.len(), "step {step}");
            assert_eq!(times.is_empty(), model.is_empty());
            assert_eq!(times.first(), model.first().map(|&m| t(m)));
            assert_eq!(times.last(), model.last().map(|&m| t(m)));
            let got: Vec<DateTime<Utc>> = times.iter().collect();
            let want: Vec<DateTime<Utc>> = model.iter().map(|&m| t(m)).collect();
            assert_eq!(got, want, "step {step}");
            assert_eq!(times, Times::from(want));
        }
        for (c, m) in kept {
            assert_eq!(
                c.iter().collect::<Vec<_>>(),
                m.iter().map(|&x| t(x)).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn times_are_kept_to_the_millisecond_at_either_end_of_time() {
        let ends = [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            t(0),
            t(-1),
        ];
        for e in ends {
            let mut w = Times::default();
            w.push(e);
            assert_eq!(w.last(), Some(time_of(e.timestamp_millis())), "{e}");
            w.push(e);
            assert_eq!(w.get(1), w.first());
        }
        // Below the millisecond, a time counts as the millisecond it is in.
        let mut w = Times::default();
        w.push(t(1_000) + chrono::Duration::microseconds(900));
        assert_eq!(w.last(), Some(t(1_000)));
        w.keep_after(t(999) + chrono::Duration::microseconds(999));
        assert_eq!(w.len(), 1, "after 0.999 ms past 999: 1000 stays");
        w.keep_after(t(1_000) + chrono::Duration::microseconds(1));
        assert!(w.is_empty(), "1000 is not after 1000.001");
    }

    #[test]
    fn a_key_and_its_state_fill_one_cache_line() {
        assert_eq!(size_of::<Times>(), size_of::<usize>());
        let entry = size_of::<(super::super::state::Key, super::super::state::KeyState)>();
        assert_eq!(entry, 64);
        let mut w = Times::default();
        assert_eq!(w.0.capacity(), 0, "nothing allocated while empty");
        w.push(t(1));
        w.push(t(2));
        w.remove(0);
        w.remove(0);
        assert_eq!(w.0.capacity(), 0, "given back when emptied");
    }
}
