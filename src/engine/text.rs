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
//! The automaton is a trie of words: each word of the text is looked up
//! once in the phrases' vocabulary (a hash table), and the trie says which
//! phrases it starts, goes on or ends, so a word that no phrase uses costs
//! one look-up however many phrases there are. Before that look-up, a gate
//! (a bit set keyed by a word's first eight bytes and length) turns away
//! most words that start no phrase while no phrase is under way, before
//! their end is even found; while one is, a second gate over every word
//! and prefix word of every phrase turns away the words no phrase has
//! (most function words), which end it. Words that end a prefix
//! phrase are matched by an anchored Aho-Corasick automaton over those
//! prefixes, walked only where such a phrase can end.

use aho_corasick::automaton::Automaton;
use aho_corasick::{Anchored, MatchKind, StartKind, dfa};
use fixedbitset::FixedBitSet;
use rustc_hash::{FxBuildHasher, FxHashMap};
use std::hash::BuildHasher;
use wide::u8x64;

use super::words::{read_words, words_of};

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
        let mut t = WordTrie {
            vocab: Vocab::default(),
            next: FxHashMap::default(),
            nodes: vec![Node::default()],
            prefixes: None,
            prefix_ends: FxHashMap::default(),
            gate: Gate::default(),
            any: Gate::default(),
        };
        let mut prefix_ids: FxHashMap<Box<[u8]>, u32> = FxHashMap::default();
        let mut prefix_words: Vec<Box<[u8]>> = Vec::new();
        for (
            pid,
            Phrase {
                words,
                prefix,
                whole,
            },
        ) in self.phrases.into_iter().enumerate()
        {
            let pid = pid as u32;
            let Some((last, path)) = words.split_last() else {
                continue; // no words: matches nothing (and `check` says so)
            };
            let mut node = ROOT;
            for w in path {
                node = t.step_to(node, w);
            }
            if whole {
                let end = t.step_to(node, last);
                t.nodes[end as usize].ends.push(pid);
            }
            if prefix {
                let n = prefix_words.len() as u32;
                let pw = *prefix_ids.entry(last.clone()).or_insert_with(|| {
                    prefix_words.push(last.clone());
                    n
                });
                t.prefix_ends.entry((node, pw)).or_default().push(pid);
                t.nodes[node as usize].prefixes = true;
            }
        }
        if !prefix_words.is_empty() {
            t.prefixes = Some(
                dfa::Builder::new()
                    .match_kind(MatchKind::Standard)
                    .start_kind(StartKind::Anchored)
                    .prefilter(false)
                    .build(&prefix_words)
                    .expect("prefixes are plain words and always build"),
            );
        }
        t.gate = Gate::starts(&t, &prefix_words);
        t.any = Gate::any(&t, &prefix_words);
        PhraseSet {
            count: self.ids.len(),
            words: self.words,
            trie: (!self.ids.is_empty()).then_some(t),
        }
    }
}

const ROOT: u32 = 0;

#[derive(Default)]
struct Node {
    /// Phrases whose last (whole) word leads here.
    ends: Vec<u32>,
    /// Some phrase goes on from here with another whole word.
    more: bool,
    /// Some prefix phrase ends with a word prefix after this node.
    prefixes: bool,
}

/// The whole words of all phrases, numbered, kept end to end in one
/// buffer; the table finds a word's id and root node from its bytes.
#[derive(Default)]
struct Vocab {
    bytes: Vec<u8>,
    /// Per word, by id: its span in `bytes`.
    words: Vec<(u32, u32)>,
    /// Per word: its id, the node it leads to from the root (`NONE` when
    /// no phrase starts with it, which spares most words a second
    /// look-up), and its span in `bytes`, so that a look-up reads the
    /// table and the bytes.
    table: hashbrown::HashTable<(u32, u32, u32, u32)>,
}

const NONE: u32 = u32::MAX;

impl Vocab {
    fn word(&self, id: u32) -> &[u8] {
        let (s, e) = self.words[id as usize];
        &self.bytes[s as usize..e as usize]
    }

    /// The words that start some phrase.
    fn starts(&self) -> impl Iterator<Item = &[u8]> {
        (self.table.iter())
            .filter(|&&(_, root, ..)| root != NONE)
            .map(|&(_, _, s, e)| &self.bytes[s as usize..e as usize])
    }

    /// The id of `w` and the node it leads to from the root.
    fn get(&self, w: &[u8]) -> Option<(u32, u32)> {
        let h = FxBuildHasher.hash_one(w);
        let &(id, root, ..) =
            (self.table).find(h, |&(_, _, s, e)| &self.bytes[s as usize..e as usize] == w)?;
        Some((id, root))
    }

    /// [`Vocab::get`], the word added when new.
    fn id(&mut self, w: &[u8]) -> (u32, u32) {
        if let Some(found) = self.get(w) {
            return found;
        }
        let id = self.words.len() as u32;
        let s = self.bytes.len() as u32;
        self.bytes.extend_from_slice(w);
        self.words.push((s, self.bytes.len() as u32));
        let Vocab { bytes, table, .. } = self;
        let hash = |&(_, _, s, e): &(u32, u32, u32, u32)| {
            FxBuildHasher.hash_one(&bytes[s as usize..e as usize])
        };
        let (start, end) = (s, s + w.len() as u32);
        table.insert_unique(FxBuildHasher.hash_one(w), (id, NONE, start, end), hash);
        (id, NONE)
    }

    /// Sets the node that word `id` leads to from the root.
    fn set_root(&mut self, id: u32, node: u32) {
        let h = FxBuildHasher.hash_one(self.word(id));
        if let Some(e) = self.table.find_mut(h, |&(i, ..)| i == id) {
            e.1 = node;
        }
    }
}

/// A word's key for the gate.
#[inline]
fn key_of(w: &[u8]) -> u64 {
    let mut h = [0u8; 8];
    let n = w.len().min(8);
    h[..n].copy_from_slice(&w[..n]);
    Gate::word_key(u64::from_le_bytes(h), n)
}

/// The phrases as a trie of words.
struct WordTrie {
    vocab: Vocab,
    /// (node, word) → the node after that word, from nodes other than the
    /// root (the root's are in `vocab`).
    next: FxHashMap<(u32, u32), u32>,
    nodes: Vec<Node>,
    /// The last words of prefix phrases, numbered by pattern, anchored.
    prefixes: Option<dfa::DFA>,
    /// (node, prefix word) → the prefix phrases that end so.
    prefix_ends: FxHashMap<(u32, u32), Vec<u32>>,
    /// Which words may start a phrase, asked before the vocabulary.
    gate: Gate,
    /// Which words may be part of a phrase, asked before the vocabulary
    /// while a phrase is under way.
    any: Gate,
}

impl WordTrie {
    /// Whether the word whose first eight bytes are `head` (its length up
    /// to eight `run`) may start, go on with or end a phrase. When it
    /// cannot, the phrases under way end with it, and it is skipped
    /// without a look-up.
    #[inline(always)]
    fn may_matter(&self, walk: &mut Walk, head: u64, run: usize) -> bool {
        if walk.active.is_empty() {
            self.gate.may_start(head, run)
        } else if self.any.may_start(head, run) {
            true
        } else {
            walk.active.clear();
            false
        }
    }

    /// The node after `word` from `node`, made when new.
    fn step_to(&mut self, node: u32, word: &[u8]) -> u32 {
        let (wid, root) = self.vocab.id(word);
        self.nodes[node as usize].more = true;
        let fresh = self.nodes.len() as u32;
        let to = if node == ROOT {
            if root == NONE {
                self.vocab.set_root(wid, fresh);
                fresh
            } else {
                root
            }
        } else {
            *self.next.entry((node, wid)).or_insert(fresh)
        };
        if to == fresh {
            self.nodes.push(Node::default());
        }
        to
    }

    /// The node after word `wid` (whose root node is `root`) from `node`.
    fn after(&self, node: u32, wid: u32, root: u32) -> Option<u32> {
        if node == ROOT {
            (root != NONE).then_some(root)
        } else {
            self.next.get(&(node, wid)).copied()
        }
    }

    /// One word of the text: phrases that it ends, from the root (a phrase
    /// of one word) or from a node reached by the words before it
    /// (`active`); the nodes it leads to go into `next_active`.
    fn word(&self, w: &[u8], apostrophe: bool, s: &mut Walk, hit: &mut impl FnMut(u32, bool)) {
        let wid = self.vocab.get(w);
        if s.active.is_empty()
            && wid.is_none_or(|(_, root)| root == NONE)
            && !apostrophe
            && !self.nodes[ROOT as usize].prefixes
        {
            return; // most words: no phrase starts with them, none is under way
        }
        s.next_active.clear();
        // Prefix phrases: the word's prefixes found once, then asked of
        // each node it may follow.
        s.found.clear();
        if let Some(dfa) = &self.prefixes
            && (self.nodes[ROOT as usize].prefixes
                || s.active.iter().any(|&n| self.nodes[n as usize].prefixes))
        {
            prefixes_of(dfa, w, &mut s.found);
        }
        for i in 0..=s.active.len() {
            let node = if i == 0 { ROOT } else { s.active[i - 1] };
            for &(pw, whole) in &s.found {
                if let Some(pids) = self.prefix_ends.get(&(node, pw)) {
                    pids.iter().for_each(|&p| hit(p, whole));
                }
            }
            if let Some((wid, root)) = wid
                && let Some(to) = self.after(node, wid, root)
            {
                let n = &self.nodes[to as usize];
                n.ends.iter().for_each(|&p| hit(p, true));
                if n.more || n.prefixes {
                    s.next_active.push(to);
                }
            }
        }
        if apostrophe {
            self.apostrophes(w, s, hit);
        }
        std::mem::swap(&mut s.active, &mut s.next_active);
    }

    /// A word with an apostrophe: its part before the first one may end a
    /// phrase (`China` in "china's"), its part after the last one may start
    /// one (`état` in "l'état").
    fn apostrophes(&self, w: &[u8], s: &mut Walk, hit: &mut impl FnMut(u32, bool)) {
        let (Some(first), Some(last)) = (memchr::memchr(b'\'', w), memchr::memrchr(b'\'', w))
        else {
            return;
        };
        let (head, tail) = (&w[..first], &w[last + 1..]);
        if let Some((hid, root)) = self.vocab.get(head) {
            for i in 0..=s.active.len() {
                let node = if i == 0 { ROOT } else { s.active[i - 1] };
                if let Some(to) = self.after(node, hid, root) {
                    self.nodes[to as usize]
                        .ends
                        .iter()
                        .for_each(|&p| hit(p, true));
                }
            }
        }
        if let Some((_, to)) = self.vocab.get(tail)
            && to != NONE
        {
            let n = &self.nodes[to as usize];
            n.ends.iter().for_each(|&p| hit(p, true));
            if n.more || n.prefixes {
                s.next_active.push(to);
            }
        }
        if let Some(dfa) = &self.prefixes
            && self.nodes[ROOT as usize].prefixes
        {
            let mut found = Vec::new();
            prefixes_of(dfa, tail, &mut found);
            for (pw, whole) in found {
                if let Some(pids) = self.prefix_ends.get(&(ROOT, pw)) {
                    pids.iter().for_each(|&p| hit(p, whole));
                }
            }
        }
    }
}

/// Which words may start a phrase: a filter in front of the vocabulary.
/// Most words of a text start no phrase, and the filter says so from the
/// word's first eight bytes and one bit, where the vocabulary takes a hash
/// of the whole word, a probe and a comparison, and before the word's end
/// is even looked for. It may let through a word that starts nothing (the
/// vocabulary then says so), never the other way round.
#[derive(Default)]
struct Gate {
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
    fn starts(t: &WordTrie, prefix_words: &[Box<[u8]>]) -> Gate {
        let prefixes = (t.prefix_ends.keys())
            .filter(|&&(node, _)| node == ROOT)
            .map(|&(_, pw)| &*prefix_words[pw as usize]);
        Gate::new(t.vocab.starts().collect(), prefixes.collect(), 3)
    }

    /// The gate in front of a phrase under way: every word of every
    /// phrase, and every prefix word. A word it turns away neither ends
    /// nor goes on with a phrase, nor starts one.
    fn any(t: &WordTrie, prefix_words: &[Box<[u8]>]) -> Gate {
        let words = (0..t.vocab.words.len() as u32).map(|id| t.vocab.word(id));
        Gate::new(
            words.collect(),
            prefix_words.iter().map(|p| &**p).collect(),
            8,
        )
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
        let kept = if run >= 8 {
            head
        } else {
            head & ((1u64 << (8 * run)) - 1)
        };
        kept ^ ((run as u64) << 56)
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
    fn may_start(&self, head: u64, run: usize) -> bool {
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

/// The prefix words that `w` starts with, each with whether it is all of `w`.
fn prefixes_of(dfa: &dfa::DFA, w: &[u8], found: &mut Vec<(u32, bool)>) {
    let Ok(mut sid) = dfa.start_state(Anchored::Yes) else {
        return;
    };
    for (i, &b) in w.iter().enumerate() {
        sid = dfa.next_state(Anchored::Yes, sid, b);
        if dfa.is_special(sid) {
            if dfa.is_dead(sid) {
                return;
            }
            // A state's matches include suffixes of the path (`éta` at
            // the end of `l'éta`): only a match as long as the path starts
            // at the word's start.
            for k in 0..dfa.match_len(sid) {
                let p = dfa.match_pattern(sid, k);
                if dfa.pattern_len(p) == i + 1 {
                    found.push((p.as_u32(), i + 1 == w.len()));
                }
            }
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
        walk.active.clear();
        let b = text.as_bytes();
        if !text.is_ascii() || memchr::memchr2(b'<', b'&', b).is_some() {
            read_words(text, words);
            let n = words.len();
            words.extend_from_slice(&[0; 8]);
            let mut i = 0;
            while i < n {
                if words[i] == b' ' {
                    i += 1;
                    continue;
                }
                let e = memchr::memchr(b' ', &words[i..n]).map_or(n, |k| i + k);
                let w = &words[i..e];
                let apostrophe = w.contains(&b'\'');
                if !apostrophe && !trie.may_matter(walk, head(words, i), w.len().min(8)) {
                    i = e;
                    continue;
                }
                trie.word(w, apostrophe, walk, &mut hit);
                i = e;
            }
            return;
        }
        // Plain ASCII, the common case: lowercased at once, its word bytes
        // marked in bit masks, 64 to a word, and the words taken from the
        // masks: no branch per byte.
        words.clear();
        words.extend_from_slice(b);
        words.make_ascii_lowercase();
        let n = words.len();
        word_masks(words, masks);
        let apostrophes = memchr::memchr(b'\'', words).is_some();
        if apostrophes {
            join_apostrophes(words, masks);
        }
        words.extend_from_slice(&[0; 8]);
        let mut carry = 0u64;
        for (c, &m) in masks.iter().enumerate() {
            let mut starts = m & !((m << 1) | carry);
            carry = m >> 63;
            while starts != 0 {
                let s = c * 64 + starts.trailing_zeros() as usize;
                starts &= starts - 1;
                // Most words are turned away by the gate from their first
                // bytes, before their end is looked for; words with an
                // apostrophe may start a phrase after it, and go on.
                if !apostrophes && !trie.may_matter(walk, head(words, s), run(masks, s)) {
                    continue;
                }
                let e = next_zero(masks, s, n);
                let w = &words[s..e];
                trie.word(w, apostrophes && w.contains(&b'\''), walk, &mut hit);
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

/// One bit per byte of `bytes` (lowercased ASCII), 64 to a mask, set for
/// letters and digits: 64 bytes compared at a time.
fn word_masks(bytes: &[u8], masks: &mut Vec<u64>) {
    let mask = |chunk: [u8; 64]| {
        let v = u8x64::new(chunk);
        let letter = (v - u8x64::splat(b'a')).simd_lt(u8x64::splat(26));
        let digit = (v - u8x64::splat(b'0')).simd_lt(u8x64::splat(10));
        (letter | digit).to_bitmask()
    };
    masks.clear();
    let chunks = bytes.chunks_exact(64);
    let rest = chunks.remainder();
    masks.extend(chunks.map(|c| mask(c.try_into().expect("64 bytes"))));
    if !rest.is_empty() {
        let mut last = [0u8; 64]; // not a word byte
        last[..rest.len()].copy_from_slice(rest);
        masks.push(mask(last));
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

/// The walk's state between words.
#[derive(Default)]
struct Walk {
    /// Nodes reached by the words so far, from which phrases go on.
    active: Vec<u32>,
    next_active: Vec<u32>,
    /// Prefix words found in the current word.
    found: Vec<(u32, bool)>,
}

#[cfg(test)]
mod tests;
