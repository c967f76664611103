//! The gate in front of the phrases' first words.

use fixedbitset::FixedBitSet;
use rustc_hash::{FxBuildHasher, FxHashSet};
use std::hash::BuildHasher;

use super::vocab::{first_bytes, head_of};

/// How many of its first bytes key a phrase's second word in the gate's
/// pairs. A phrase whose second word is a prefix shorter than this
/// (`anti d*`) starts at its first word, whatever the next one.
pub(super) const PAIR_BYTES: usize = 4;

/// Prefix words are kept by their first bytes, up to these: fewer make
/// fewer probes per word, and more words let through.
const PREFIX_BYTES: usize = 3;

/// A word's key for the gate.
#[inline]
fn key_of(w: &[u8]) -> u64 {
    Gate::word_key(head_of(w).0.0, w.len().min(8))
}

/// What the gate says of a word of the text.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum May {
    /// It starts no phrase.
    No,
    /// It may start a phrase: look it up.
    Start,
    /// It may start only phrases of two or more words: the next word says
    /// whether to look it up (`Gate::may_pair`), with this key.
    Pair(u64),
}

/// Which words may start a phrase: a filter in front of the vocabulary.
/// Most words of a text start no phrase, and the filter says so from the
/// word's first eight bytes and one bit, where the vocabulary takes a hash
/// of the whole word, a probe and a comparison, and before the word's end
/// is even looked for. It may let through a word that starts nothing (the
/// vocabulary then says so), never the other way round.
///
/// A word that starts only phrases of two or more words is let through
/// with the next word: the pair (its key, the next word's first
/// [`PAIR_BYTES`]) is asked of a second set. With thousands of phrases
/// many words of a text start one, and almost never with the next word
/// that phrase has; those are spared the look-up and the comparison.
#[derive(Default)]
pub(super) struct Gate {
    /// Two bits per slot, by the first eight bytes and length up to eight
    /// of a word: bit `2s` set for words that start a phrase of one word,
    /// or one whose second word is a short prefix ([`May::Start`]); bit
    /// `2s + 1` for words that start a phrase of two or more ([`May::Pair`]).
    words: FixedBitSet,
    /// The prefix words (`sanction*`), by their first bytes, up to eight.
    prefixes: FixedBitSet,
    /// Bit `n` set when some such prefix is kept by its first `n` bytes.
    prefix_lens: u16,
    /// The prefix words' first two bytes (a prefix of one byte: with any
    /// second), asked before `prefixes`: most words start no prefix word,
    /// and say so without a hash.
    prefix_starts: FixedBitSet,
    /// The first two words of the phrases of two or more words: the first
    /// by its key, the second by its first [`PAIR_BYTES`] (all of it if
    /// shorter).
    pairs: FixedBitSet,
}

/// About 64 bits a key: few false passes, a table that stays in cache.
fn size(n: usize) -> usize {
    (n * 64).next_power_of_two().max(4096)
}

impl Gate {
    /// The gate for phrases that start with the words of `now` (phrases of
    /// one word, or whose second word is a prefix shorter than
    /// [`PAIR_BYTES`]), with the first words of `pairs` (and the second
    /// word or prefix), and with the prefix words of `prefixes` (one-word
    /// prefix phrases).
    pub(super) fn new(now: &[&[u8]], pairs: &[(&[u8], &[u8])], prefixes: &[&[u8]]) -> Gate {
        let firsts: FxHashSet<&[u8]> = pairs.iter().map(|p| p.0).collect();
        let slots = size(now.len() + firsts.len());
        let mut g = Gate {
            words: FixedBitSet::with_capacity(2 * slots),
            prefixes: FixedBitSet::with_capacity(size(prefixes.len())),
            prefix_lens: 0,
            prefix_starts: FixedBitSet::with_capacity(if prefixes.is_empty() {
                0
            } else {
                1 << 16
            }),
            pairs: FixedBitSet::with_capacity(size(pairs.len())),
        };
        for w in now {
            g.words.insert(2 * Self::slot(key_of(w), slots));
        }
        for w in firsts {
            g.words.insert(2 * Self::slot(key_of(w), slots) + 1);
        }
        for &(first, second) in pairs {
            let (head, n) = (head_of(second).0.0, second.len());
            let slot = Self::pair_slot(key_of(first), head, n, g.pairs.len());
            g.pairs.insert(slot);
        }
        for p in prefixes {
            match **p {
                [a] => (0..256).for_each(|b| g.prefix_starts.insert(a as usize | b << 8)),
                [a, b, ..] => g.prefix_starts.insert(a as usize | (b as usize) << 8),
                [] => {}
            }
            let n = p.len().min(PREFIX_BYTES);
            g.prefix_lens |= 1 << n;
            // A prefix is kept as the word of its first `n` bytes.
            let slot = Self::slot(Self::word_key(key_of(p), n), g.prefixes.len());
            g.prefixes.insert(slot);
        }
        g
    }

    /// A word by its first eight bytes (`head`, little-endian) and its
    /// length up to eight (`run`): the bytes past it zeroed, the length
    /// in the top byte.
    #[inline]
    fn word_key(head: u64, run: usize) -> u64 {
        first_bytes((head, 0), run).0 ^ ((run as u64) << 56)
    }

    /// Of `n` (a power of two) slots, the one of `key`.
    #[inline]
    fn slot(key: u64, n: usize) -> usize {
        FxBuildHasher.hash_one(key) as usize & n.wrapping_sub(1)
    }

    /// The slot of a first word's key and the second word's first bytes
    /// (`head`, its length `run`): the word of its first [`PAIR_BYTES`].
    #[inline]
    fn pair_slot(first: u64, head: u64, run: usize, n: usize) -> usize {
        let second = Self::word_key(head, run.min(PAIR_BYTES));
        Self::slot(first.rotate_left(29) ^ second, n)
    }

    /// Whether some phrase may start with the word whose first eight bytes
    /// are `head` and whose length, up to eight, is `run`.
    #[inline(always)]
    pub(super) fn may_start(&self, head: u64, run: usize) -> May {
        let key = Self::word_key(head, run);
        let s = 2 * Self::slot(key, self.words.len() / 2);
        if self.words.contains(s) || self.may_prefix(head, run) {
            May::Start
        } else if self.words.contains(s + 1) {
            May::Pair(key)
        } else {
            May::No
        }
    }

    /// Whether a phrase may start with the word keyed `first` (by
    /// [`May::Pair`]) and go on with the word whose first eight bytes are
    /// `head` and whose length, up to eight, is `run`.
    #[inline]
    pub(super) fn may_pair(&self, first: u64, head: u64, run: usize) -> bool {
        (self.pairs).contains(Self::pair_slot(first, head, run, self.pairs.len()))
    }

    /// Whether some one-word prefix phrase may start the word.
    #[inline(always)]
    fn may_prefix(&self, head: u64, run: usize) -> bool {
        if !(self.prefix_starts).contains(first_bytes((head, 0), run.min(2)).0 as usize) {
            return false;
        }
        // One probe per length some prefix is kept by, up to the word's.
        let mut lens = self.prefix_lens & ((2u16 << run) - 1);
        while lens != 0 {
            let n = lens.trailing_zeros() as usize;
            lens &= lens - 1;
            let slot = Self::slot(Self::word_key(head, n), self.prefixes.len());
            if self.prefixes.contains(slot) {
                return true;
            }
        }
        false
    }
}
