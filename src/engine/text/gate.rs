//! The gate in front of the phrases' first words.

use fixedbitset::FixedBitSet;
use rustc_hash::FxBuildHasher;
use std::hash::BuildHasher;

use super::trie::{ROOT, WordTrie};
use super::vocab::{first_bytes, head_of};

/// A word's key for the gate.
#[inline]
fn key_of(w: &[u8]) -> u64 {
    Gate::word_key(head_of(w).0.0, w.len().min(8))
}

/// Which words may start a phrase: a filter in front of the vocabulary.
/// Most words of a text start no phrase, and the filter says so from the
/// word's first eight bytes and one bit, where the vocabulary takes a hash
/// of the whole word, a probe and a comparison, and before the word's end
/// is even looked for. It may let through a word that starts nothing (the
/// vocabulary then says so), never the other way round.
#[derive(Default)]
pub(super) struct Gate {
    /// The first words of phrases, by their first eight bytes and their
    /// length up to eight.
    words: FixedBitSet,
    /// The prefix words (`sanction*`), by their first bytes, up to eight.
    prefixes: FixedBitSet,
    /// Bit `n` set when some such prefix is kept by its first `n` bytes.
    prefix_lens: u16,
}

impl Gate {
    /// The gate in front of phrase starts: the words that start a phrase,
    /// and the prefix words of one-word prefix phrases.
    pub(super) fn starts(t: &WordTrie) -> Gate {
        let prefixes = (t.prefix_ends.keys())
            .filter(|&&(node, _)| node == ROOT)
            .map(|&(_, pw)| &*t.prefix_words[pw as usize]);
        Gate::new(t.vocab.starts().collect(), prefixes.collect(), 3)
    }

    /// Prefix words are kept by their first bytes, up to `keep` (1 to 8):
    /// fewer make fewer probes per word, and more words let through.
    fn new(words: Vec<&[u8]>, prefixes: Vec<&[u8]>, keep: usize) -> Gate {
        // About 64 bits a word: few false passes, a table that stays in cache.
        let size = |n: usize| (n * 64).next_power_of_two().max(4096);
        let mut g = Gate {
            words: FixedBitSet::with_capacity(size(words.len())),
            prefixes: FixedBitSet::with_capacity(size(prefixes.len())),
            prefix_lens: 0,
        };
        for w in words {
            g.words.insert(Self::slot(key_of(w), &g.words));
        }
        for p in prefixes {
            let n = p.len().min(keep);
            g.prefix_lens |= 1 << n;
            let slot = Self::slot(Self::prefix_key(key_of(p), n), &g.prefixes);
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

    /// A word's first `n` bytes (1 to 8), with `n`: the key of a word of
    /// `n` bytes.
    #[inline]
    fn prefix_key(head: u64, n: usize) -> u64 {
        Self::word_key(head, n)
    }

    #[inline]
    fn slot(key: u64, bits: &FixedBitSet) -> usize {
        FxBuildHasher.hash_one(key) as usize & bits.len().wrapping_sub(1)
    }

    /// Whether some phrase may start with the word whose first eight bytes
    /// are `head` and whose length, up to eight, is `run`.
    #[inline(always)]
    pub(super) fn may_start(&self, head: u64, run: usize) -> bool {
        let word = (self.words).contains(Self::slot(Self::word_key(head, run), &self.words));
        if word {
            return true;
        }
        // One probe per length some prefix is kept by, up to the word's.
        let mut lens = self.prefix_lens & ((2u16 << run) - 1);
        while lens != 0 {
            let n = lens.trailing_zeros() as usize;
            lens &= lens - 1;
            if (self.prefixes).contains(Self::slot(Self::prefix_key(head, n), &self.prefixes)) {
                return true;
            }
        }
        false
    }
}
