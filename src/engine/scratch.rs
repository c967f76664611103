//! What evaluating one record keeps between its rules: the record (made
//! only when a rule needs all of it), the plan of its source, and phrase
//! matches stamped by record number so nothing needs clearing.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use super::condition::{self, TextHits};
use super::rule::{Compiled, SourcePlan};
use super::text::{PhraseRef, PhraseSet, ScanBuf};
use crate::record::{Record, as_text};

/// The record being evaluated: at hand, or made on first need.
// Lives on the stack for the length of one record; boxing would cost more.
#[allow(clippy::large_enum_variant)]
pub(super) enum Lazy<'a> {
    Ready(&'a Record),
    Pending(&'a mut dyn FnMut() -> Record, Option<Record>),
}

impl Lazy<'_> {
    pub(super) fn get(&mut self) -> &Record {
        match self {
            Lazy::Ready(r) => r,
            Lazy::Pending(make, slot) => slot.get_or_insert_with(make),
        }
    }
}

/// The plan of a record's source, looked up again only when the source
/// changes: the records of a batch mostly share theirs.
pub(super) struct PlanOf<'c> {
    pub(super) c: &'c Compiled,
    pub(super) source: *const u8,
    pub(super) plan: Option<&'c SourcePlan>,
}

impl<'c> PlanOf<'c> {
    pub(super) fn new(c: &'c Compiled) -> PlanOf<'c> {
        PlanOf {
            c,
            source: std::ptr::null(),
            plan: None,
        }
    }

    /// The plan for `source`, which must outlive the batch (the address
    /// of a name stands for it).
    pub(super) fn get(&mut self, source: &Arc<str>) -> Option<&'c SourcePlan> {
        let p = Arc::as_ptr(source) as *const u8;
        if p != self.source {
            self.source = p;
            self.plan = self.c.plans.get(&**source).map(|p| &**p);
        }
        self.plan
    }
}

/// Per-record scratch for phrase matches, stamped by record number so it
/// never needs clearing.
pub(super) struct Scratch {
    pub(super) stamp: u32,
    /// Per (text slot, phrase): record number of a whole-word match.
    pub(super) exact: Vec<u32>,
    /// Per (text slot, phrase): record number of a prefix match.
    pub(super) prefix: Vec<u32>,
    /// Per text slot: record number it was scanned at.
    pub(super) scanned: Vec<u32>,
    pub(super) phrases: usize,
    /// Per rule position of the current plan: the record its value guard
    /// let it through at.
    pub(super) candidate: Vec<u32>,
    /// Per rule position: the record one of its guarding phrases was found in.
    pub(super) text_pass: Vec<u32>,
    /// Per rule position: the record whose value matched its guard exactly.
    pub(super) by_value: Vec<u32>,
    /// Rule positions to look at for the current record.
    pub(super) visit: Vec<usize>,
    /// Rule positions some guard let through (with repeats), for one-off
    /// events, which visit only those.
    pub(super) let_through: Vec<usize>,
    /// Phrase ids found in the current record (with repeats).
    pub(super) matched: Vec<u32>,
    /// Per field slot: the position in its row the field was last found
    /// at (see [`crate::record::lookup_at`]).
    pub(super) at: Vec<u8>,
    pub(super) buf: ScanBuf,
}

impl Scratch {
    pub(super) fn new(c: &Compiled) -> Scratch {
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
            buf: ScanBuf::default(),
        }
    }

    /// Scans text slot `tslot` of the current record once; phrases found
    /// are stamped and their ids appended to `matched`.
    pub(super) fn ensure_scanned(
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

    pub(super) fn next_record(&mut self) {
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

pub(super) struct Hits<'a> {
    pub(super) scratch: &'a mut Scratch,
    pub(super) phrases: &'a PhraseSet,
    pub(super) vals: &'a [Option<&'a Value>],
    pub(super) text_slots: &'a [usize],
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
        Some(Cow::Owned(crate::html::normalize(&t).into_owned()))
    }
}

/// `t` trimmed and lowercased as a guard's values are: ASCII in `small`,
/// other text allocated.
pub(super) fn lower_key<'a>(t: &'a str, small: &'a mut [u8; 64]) -> Cow<'a, str> {
    let t = crate::record::trim(t);
    if condition::is_lower(t) {
        return Cow::Borrowed(t); // already as guards keep values: most codes
    }
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
pub(super) fn field_text(v: Option<&Value>) -> Option<Cow<'_, str>> {
    match v? {
        Value::Array(items) => {
            let parts: Vec<Cow<str>> = items.iter().filter_map(|i| field_text(Some(i))).collect();
            Some(Cow::Owned(parts.join("\n")))
        }
        Value::Object(_) | Value::Null => None,
        other => as_text(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::xorshift;

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
}
