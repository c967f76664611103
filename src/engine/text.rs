//! Phrase matching over text fields. Every phrase of every rule is compiled
//! once into one automaton over words, run once per text field of a record
//! whatever the number of rules: adding phrases costs table entries, not
//! passes.
//!
//! Text is read as words, and so are phrases: letters, digits and combining
//! marks in any script form words; any other run of characters (spaces,
//! hyphens, dashes, slashes, dots, line breaks) separates them. Words are
//! case-folded (Unicode: `TÜRKIYE` = `Türkiye`, `GRÖSSE` = `Größe`), and an
//! apostrophe inside a word (`'` or `’`) is kept, as `'`. HTML is stripped
//! first. So `"rare earth*"` matches "rare-earth" and "RARE–EARTHS" alike.
//! A trailing `*` makes the last word a prefix (`control*` matches
//! "controls"). A phrase also ends at an apostrophe (`China` matches
//! "China's") and starts after one (`état` matches "l'état").
//!
//! The automaton is a trie of words (`text/trie.rs`): a word of the text
//! that may start a phrase is looked up once among the phrases' first
//! words, and a word after it is compared with the few words the trie has
//! after that one, so a word that no phrase uses costs no look-up however
//! many phrases there are. Before the look-up, a gate (`text/gate.rs`, a
//! bit set keyed by a word's first eight bytes and length) turns away most
//! words that start no phrase, before their end is even found. A word that
//! starts only phrases of two or more words is put off until the next
//! word, and looked up only when the gate's pairs (first word, next word's
//! first four bytes) say that one may be such a phrase's second. While a
//! phrase is under way, the words after its node are asked from the word's
//! first eight bytes, and a word that goes on with none ends it. The
//! vocabulary (`text/vocab.rs`) keeps each word by its first sixteen
//! bytes, so most words are compared without reading them twice.

use rustc_hash::FxHashMap;
use wide::u8x16;

use super::words::{read_words, words_of};
use gate::May;
use trie::{Walk, WordTrie};

mod gate;
mod trie;
mod vocab;

/// A phrase as compiled: its pattern id and whether it is a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhraseRef {
    pub pid: u32,
    pub prefix: bool,
}

#[derive(Default)]
pub struct PhraseSetBuilder {
    ids: FxHashMap<String, u32>,
    phrases: Vec<Phrase>,
    /// Per phrase: its words as read, for showing what matched.
    words: Vec<Box<str>>,
}

/// A phrase's words as read, and whether some rule uses it as a prefix
/// phrase (`control*`) and some as a whole one.
struct Phrase {
    words: Vec<Box<[u8]>>,
    prefix: bool,
    whole: bool,
}

impl PhraseSetBuilder {
    pub fn add(&mut self, phrase: &str) -> PhraseRef {
        let (body, prefix) = match phrase.trim().strip_suffix('*') {
            Some(b) => (b, true),
            None => (phrase.trim(), false),
        };
        let words = words_of(body);
        let next = self.phrases.len() as u32;
        let mut fresh = false;
        let pid = *self.ids.entry(words.clone()).or_insert_with(|| {
            fresh = true;
            let list = words
                .split(' ')
                .filter(|w| !w.is_empty())
                .map(|w| w.as_bytes().into())
                .collect();
            self.phrases.push(Phrase {
                words: list,
                prefix: false,
                whole: false,
            });
            next
        });
        if fresh {
            self.words.push(words.as_str().into());
        }
        let p = &mut self.phrases[pid as usize];
        p.prefix |= prefix;
        p.whole |= !prefix;
        PhraseRef { pid, prefix }
    }

    pub fn build(self) -> PhraseSet {
        let phrases = (self.phrases.into_iter()).map(|p| (p.words, p.prefix, p.whole));
        PhraseSet {
            count: self.ids.len(),
            words: self.words,
            trie: (!self.ids.is_empty()).then(|| WordTrie::build(phrases)),
        }
    }
}

pub struct PhraseSet {
    trie: Option<WordTrie>,
    count: usize,
    words: Vec<Box<str>>,
}

impl PhraseSet {
    /// Phrase `pid`'s words, as read (`export control`).
    pub fn words(&self, pid: u32) -> &str {
        self.words.get(pid as usize).map_or("", |w| w)
    }

    /// Where phrase `p` (a prefix phrase when `prefix`) is in `text`, as
    /// written there: `export-control` for `export control*`. For showing
    /// what matched, once an alert is made.
    pub fn find<'t>(&self, p: PhraseRef, text: &super::words::Placed<'t>) -> Option<&'t str> {
        text.find(self.words.get(p.pid as usize)?, p.prefix)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Scans one text and calls `hit(pid, whole_word)` for every phrase
    /// found; `whole_word` when its last word is all of a word of the text
    /// (else it was a prefix of one). A phrase may be reported more than once.
    ///
    /// `scratch` is reused across calls to spare allocations.
    pub fn scan(&self, text: &str, scratch: &mut ScanBuf, mut hit: impl FnMut(u32, bool)) {
        let Some(trie) = &self.trie else { return };
        let ScanBuf { words, masks, walk } = scratch;
        let b = text.as_bytes();
        // Plain ASCII, the common case: lowercased and its word bytes
        // marked in bit masks, 64 to a word, in one pass, and the words
        // taken from the masks: no branch per byte.
        let apostrophes = match plain_words(b, words, masks) {
            Some(apostrophes) => {
                if apostrophes {
                    join_apostrophes(words, masks);
                }
                apostrophes
            }
            None => {
                read_words(text, words);
                space_masks(words, masks);
                memchr::memchr(b'\'', words).is_some()
            }
        };
        let n = words.len();
        words.extend_from_slice(&[0; 8]);
        walk.begin();
        // A word the gate put off until the next one, and its key.
        let mut put_off: Option<(usize, u64)> = None;
        let mut carry = 0u64;
        for (c, &m) in masks.iter().enumerate() {
            let mut starts = m & !((m << 1) | carry);
            carry = m >> 63;
            while starts != 0 {
                let s = c * 64 + starts.trailing_zeros() as usize;
                starts &= starts - 1;
                let (h, r) = (head(words, s), run(masks, s));
                // The word before, put off, starts its phrases when this
                // one may be their second.
                if let Some((p, key)) = put_off.take()
                    && trie.gate.may_pair(key, h, r)
                {
                    trie.started(&words[p..next_zero(masks, p, n)], walk, &mut hit);
                }
                // Most words are turned away by the gate from their first
                // bytes, before their end is looked for, unless a phrase
                // is under way; words with an apostrophe may start a
                // phrase after it.
                let start = apostrophes
                    || match trie.gate.may_start(h, r) {
                        May::Start => true,
                        May::Pair(key) => {
                            put_off = Some((s, key));
                            false
                        }
                        May::No => false,
                    };
                if !start && (!walk.under_way() || !trie.may_follow(walk, h, r)) {
                    continue;
                }
                let e = next_zero(masks, s, n);
                let w = &words[s..e];
                trie.word(w, start, apostrophes && w.contains(&b'\''), walk, &mut hit);
            }
        }
    }
}

/// The eight bytes at `s`, little-endian; `text` has eight to spare after
/// its last word.
#[inline]
fn head(text: &[u8], s: usize) -> u64 {
    u64::from_le_bytes(text[s..s + 8].try_into().expect("eight bytes"))
}

/// How many word bytes, up to eight, the mask bits from `s` on mark.
#[inline]
fn run(masks: &[u64], s: usize) -> usize {
    let (c, k) = (s / 64, s % 64);
    let mut bits = masks[c] >> k;
    if k > 56 {
        bits |= masks.get(c + 1).map_or(0, |&m| m << (64 - k));
    }
    (bits.trailing_ones() as usize).min(8)
}

/// Plain ASCII text `b` (no `<` or `&`, which may be HTML) lowercased into
/// `words`, and its word bytes (letters and digits) marked in `masks`, 64
/// to a mask: one pass, 16 bytes at a time. `None` when `b` is not plain
/// ASCII; else whether it has an apostrophe.
fn plain_words(b: &[u8], words: &mut Vec<u8>, masks: &mut Vec<u64>) -> Option<bool> {
    let splat = u8x16::splat;
    let (mut odd, mut apostrophe) = (splat(0), splat(0));
    words.clear();
    masks_of(b, masks, 0, |v| {
        // Bytes past 127 have their top bit set, as do the matches.
        odd |= v | v.simd_eq(splat(b'<')) | v.simd_eq(splat(b'&'));
        apostrophe |= v.simd_eq(splat(b'\''));
        let v = v | ((v - splat(b'A')).simd_lt(splat(26)) & splat(0x20));
        words.extend_from_slice(&v.to_array());
        let letter = (v - splat(b'a')).simd_lt(splat(26));
        let digit = (v - splat(b'0')).simd_lt(splat(10));
        (letter | digit).to_bitmask()
    });
    words.truncate(b.len());
    (odd.to_bitmask() == 0).then(|| apostrophe.to_bitmask() != 0)
}

/// One bit per byte of `bytes` (words as [`read_words`] gives them), 64
/// to a mask, set for all but the spaces between words.
fn space_masks(bytes: &[u8], masks: &mut Vec<u64>) {
    masks_of(bytes, masks, b' ', |v| {
        !v.simd_eq(u8x16::splat(b' ')).to_bitmask() & 0xffff
    });
}

/// `bytes` marked by `mask` (16 bytes to 16 bits, in order), 64 to a mask;
/// the last block is filled out with `pad`, which `mask` must leave
/// unmarked.
#[inline(always)]
fn masks_of(bytes: &[u8], masks: &mut Vec<u64>, pad: u8, mut mask: impl FnMut(u8x16) -> u32) {
    let mut block = |c: &[u8]| {
        (c.chunks_exact(16).enumerate()).fold(0u64, |m, (i, p)| {
            let v = u8x16::new(p.try_into().expect("16 bytes"));
            m | (mask(v) as u64) << (16 * i)
        })
    };
    masks.clear();
    let chunks = bytes.chunks_exact(64);
    let rest = chunks.remainder();
    masks.extend(chunks.map(&mut block));
    if !rest.is_empty() {
        let mut last = [pad; 64];
        last[..rest.len()].copy_from_slice(rest);
        masks.push(block(&last));
    }
}

/// Marks as word bytes the apostrophes that sit between two word bytes.
fn join_apostrophes(bytes: &[u8], masks: &mut [u64]) {
    let orig: Vec<u64> = masks.to_vec();
    for (c, chunk) in bytes.chunks(64).enumerate() {
        let a = chunk
            .iter()
            .enumerate()
            .fold(0u64, |m, (k, &b)| m | ((b == b'\'') as u64) << k);
        if a == 0 {
            continue;
        }
        let m = orig[c];
        let before = (m << 1) | c.checked_sub(1).map_or(0, |p| orig[p] >> 63);
        let after = (m >> 1) | orig.get(c + 1).map_or(0, |x| (x & 1) << 63);
        masks[c] |= a & before & after;
    }
}

/// The first position at or after `i` whose mask bit is clear, else `n`.
fn next_zero(masks: &[u64], i: usize, n: usize) -> usize {
    let mut w = i / 64;
    let mut m = !masks[w] & (!0u64 << (i % 64));
    loop {
        if m != 0 {
            return (w * 64 + m.trailing_zeros() as usize).min(n);
        }
        w += 1;
        if w >= masks.len() {
            return n;
        }
        m = !masks[w];
    }
}

/// Scratch space for [`PhraseSet::scan`], reused across calls.
#[derive(Default)]
pub struct ScanBuf {
    words: Vec<u8>,
    masks: Vec<u64>,
    walk: Walk,
}

#[cfg(test)]
mod tests;
