//! What the engine keeps per (rule, key): whether it fires, since when,
//! its window of times, the record it last matched; and the change of it a
//! batch hands to the store.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::times::Times;
use crate::record::Row;

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
    pub(crate) due: Due,
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

/// One (rule, key)'s state after a batch: `None` when it went inactive.
/// A (rule, key) state to store, `None` to delete it.
pub type StateChange = (std::sync::Arc<str>, Key, Option<KeyState>);

/// A key as the table holds it: short keys (the usual codes and ids, up to
/// 24 bytes) inline, so that finding one reads no memory beyond its slot;
/// longer ones on the heap.
pub type Key = compact_str::CompactString;

/// The deadline queued for a key, in milliseconds since 1970 in 48 bits
/// (clamped to 1970 to about the year 10,000), or none: 6 bytes, so that a
/// key state stays small.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Due([u16; 3]);

impl Due {
    pub(super) fn at(ms: i64) -> Due {
        let v = ms.clamp(0, (1 << 48) - 2) as u64;
        Due([v as u16, (v >> 16) as u16, (v >> 32) as u16])
    }
}

/// No deadline queued.
pub(crate) const NOT_QUEUED: Due = Due([u16::MAX; 3]);

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

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
        assert!(std::mem::size_of::<KeyState>() + std::mem::size_of::<Key>() <= 80);
    }
}
