//! The times a key's state keeps: a `count` rule's window (its key's latest
//! records) or when an `absent` rule's key last had a record. Most keys
//! hold one time: it is kept in the state's own word, so that reading it
//! reads no memory beyond the key's slot and keeping it allocates nothing.
//! Two or more go to a block on the heap.
//!
//! Times are kept to the millisecond, as the store keeps them, so a key
//! reads the same before and after a restart.

use std::alloc::{Layout, alloc, dealloc};
use std::ptr;

use chrono::{DateTime, Utc};

/// A few times, oldest first, in one word.
pub struct Times {
    /// Null: none. An odd address: one time, its milliseconds shifted left
    /// by one, plus one (the range of `DateTime` fits in 63 bits). Else a
    /// block from [`alloc_block`]: its length and capacity packed in the
    /// first `i64` (see [`Header`]), then the times' milliseconds.
    p: *mut i64,
}

// SAFETY: a `Times` owns its block alone, as a `Box` would; nothing is
// shared between values, and `&Times` only reads.
unsafe impl Send for Times {}
unsafe impl Sync for Times {}

/// A block's length (low 32 bits) and capacity (high 32 bits).
struct Header {
    len: usize,
    cap: usize,
}

impl Header {
    fn of(w: i64) -> Header {
        let w = w as u64;
        Header {
            len: (w & 0xffff_ffff) as usize,
            cap: (w >> 32) as usize,
        }
    }

    fn word(&self) -> i64 {
        ((self.cap as u64) << 32 | self.len as u64) as i64
    }
}

fn layout(cap: usize) -> Layout {
    // A window holds at most a `count` rule's N times (a u32).
    Layout::array::<i64>(cap + 1).expect("a window of at most u32::MAX times")
}

/// A block with room for `cap` times (at least 2), holding `ms`.
fn alloc_block(ms: &[i64], cap: usize) -> *mut i64 {
    let cap = cap.max(ms.len()).max(2);
    // SAFETY: the layout is not zero-sized (at least 3 words).
    let p = unsafe { alloc(layout(cap)) } as *mut i64;
    if p.is_null() {
        std::alloc::handle_alloc_error(layout(cap));
    }
    // SAFETY: the block is new, with room for its header and for
    // `cap >= ms.len()` times after it, so it does not overlap `ms`.
    unsafe {
        *p = Header { len: ms.len(), cap }.word();
        ptr::copy_nonoverlapping(ms.as_ptr(), p.add(1), ms.len());
    }
    p
}

fn encode(ms: i64) -> *mut i64 {
    ptr::without_provenance_mut(((ms << 1) | 1) as usize)
}

fn ms_of(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time_of(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Times {
    /// Times from milliseconds, oldest first.
    fn from_millis(ms: &[i64]) -> Times {
        match ms {
            [] => Times::default(),
            [one] => Times { p: encode(*one) },
            _ => Times {
                p: alloc_block(ms, ms.len()),
            },
        }
    }

    /// The inline time, if that is what this holds.
    fn inline(&self) -> Option<i64> {
        let a = self.p.addr();
        (a & 1 == 1).then_some((a as i64) >> 1)
    }

    /// The block's header, if this holds a block.
    fn header(&self) -> Option<Header> {
        if self.p.is_null() || self.p.addr() & 1 == 1 {
            return None;
        }
        // SAFETY: a pointer that is neither null nor odd is a live block's,
        // which starts with its header.
        Some(Header::of(unsafe { *self.p }))
    }

    /// Sets the length of the block this holds (at most its capacity).
    fn set_len(&mut self, len: usize) {
        let Some(h) = self.header() else { return };
        debug_assert!(len <= h.cap);
        // SAFETY: a live block this owns (see `header`).
        unsafe { *self.p = Header { len, cap: h.cap }.word() };
    }

    /// The block's times, if this holds a block.
    fn block(&self) -> Option<&[i64]> {
        let h = self.header()?;
        // SAFETY: a live block holds `len` times after its header.
        Some(unsafe { std::slice::from_raw_parts(self.p.add(1), h.len) })
    }

    /// The times' milliseconds, oldest first.
    fn millis(&self) -> impl Iterator<Item = i64> + '_ {
        self.inline()
            .into_iter()
            .chain(self.block().unwrap_or_default().iter().copied())
    }

    pub fn len(&self) -> usize {
        match (self.inline(), self.block()) {
            (Some(_), _) => 1,
            (None, Some(b)) => b.len(),
            (None, None) => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> Option<DateTime<Utc>> {
        self.millis().nth(i).map(time_of)
    }

    pub fn first(&self) -> Option<DateTime<Utc>> {
        self.get(0)
    }

    pub fn last(&self) -> Option<DateTime<Utc>> {
        match (self.inline(), self.block()) {
            (Some(ms), _) => Some(time_of(ms)),
            (None, b) => b.and_then(|b| b.last()).copied().map(time_of),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        self.millis().map(time_of)
    }

    /// Adds `t` (no earlier than the others) at the end.
    pub fn push(&mut self, t: DateTime<Utc>) {
        let ms = ms_of(t);
        if self.p.is_null() {
            self.p = encode(ms);
            return;
        }
        if let Some(one) = self.inline() {
            self.p = alloc_block(&[one, ms], 4);
            return;
        }
        let Some(mut h) = self.header() else { return };
        if h.len == h.cap {
            let grown = alloc_block(self.block().unwrap_or_default(), h.cap * 2);
            self.free();
            self.p = grown;
            h.cap *= 2;
        }
        // SAFETY: the block has room for `cap > len` times.
        unsafe { *self.p.add(1 + h.len) = ms };
        self.set_len(h.len + 1);
    }

    /// Removes and returns the `i`th time.
    ///
    /// # Panics
    /// When there is no `i`th time.
    pub fn remove(&mut self, i: usize) -> DateTime<Utc> {
        let len = self.len();
        assert!(i < len, "removal index (is {i}) should be < len (is {len})");
        let Some(b) = self.block() else {
            let gone = self.inline();
            *self = Times::default();
            return gone.map(time_of).unwrap_or_default();
        };
        let gone = b[i];
        // SAFETY: `i < len`: the times after the `i`th move down by one,
        // within the block.
        unsafe { ptr::copy(self.p.add(2 + i), self.p.add(1 + i), len - 1 - i) };
        self.truncate(len - 1);
        time_of(gone)
    }

    /// Keeps the block's first `n` times (no more than it has); one or
    /// none are kept inline and the block freed.
    fn truncate(&mut self, n: usize) {
        if n >= 2 {
            self.set_len(n);
            return;
        }
        // SAFETY: the block holds at least `n` times.
        let one = (n == 1).then(|| unsafe { *self.p.add(1) });
        self.free();
        if let Some(ms) = one {
            self.p = encode(ms);
        }
    }

    /// Keeps the times after `cutoff`.
    pub fn keep_after(&mut self, cutoff: DateTime<Utc>) {
        // A time to the millisecond is after `cutoff` when it is after the
        // millisecond `cutoff` falls in (`timestamp_millis` rounds down).
        let c = ms_of(cutoff);
        match (self.inline(), self.block()) {
            (Some(ms), _) if ms <= c => *self = Times::default(),
            (None, Some(b)) if b.iter().any(|&t| t <= c) => {
                let n = b.len();
                let mut kept = 0;
                for i in 0..n {
                    // SAFETY: both within the block's `n` times; `kept <= i`.
                    unsafe {
                        let t = *self.p.add(1 + i);
                        if t > c {
                            *self.p.add(1 + kept) = t;
                            kept += 1;
                        }
                    }
                }
                self.truncate(kept);
            }
            _ => {}
        }
    }

    pub fn clear(&mut self) {
        *self = Times::default();
    }

    /// Frees the block, if any, leaving no times.
    fn free(&mut self) {
        if let Some(h) = self.header() {
            // SAFETY: the block was allocated with this layout, and is
            // forgotten here.
            unsafe { dealloc(self.p as *mut u8, layout(h.cap)) };
        }
        self.p = ptr::null_mut();
    }
}

impl Default for Times {
    fn default() -> Times {
        Times { p: ptr::null_mut() }
    }
}

impl Drop for Times {
    fn drop(&mut self) {
        self.free();
    }
}

impl Clone for Times {
    fn clone(&self) -> Times {
        match self.block() {
            Some(b) => Times::from_millis(b),
            None => Times { p: self.p },
        }
    }
}

impl PartialEq for Times {
    fn eq(&self, other: &Times) -> bool {
        self.millis().eq(other.millis())
    }
}

impl std::fmt::Debug for Times {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl From<Vec<DateTime<Utc>>> for Times {
    fn from(v: Vec<DateTime<Utc>>) -> Times {
        let ms: Vec<i64> = v.into_iter().map(ms_of).collect();
        Times::from_millis(&ms)
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
    fn one_time_is_kept_inline_to_the_millisecond_at_either_end_of_time() {
        let ends = [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            t(0),
            t(-1),
        ];
        for e in ends {
            let mut w = Times::default();
            w.push(e);
            assert!(w.inline().is_some());
            assert_eq!(w.last(), Some(time_of(e.timestamp_millis())), "{e}");
            w.push(e);
            assert!(w.block().is_some());
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
    fn a_key_state_with_times_stays_one_word() {
        assert_eq!(size_of::<Times>(), 8);
    }
}
