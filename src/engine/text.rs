//! Phrase matching over text fields. Every phrase of every rule goes into one
//! Aho-Corasick automaton, run once per text field of a record, whatever the
//! number of rules: adding phrases costs automaton states, not passes.
//!
//! Phrases are case-insensitive and match whole words; a trailing `*` makes
//! the last word a prefix (`control*` matches "controls"). HTML is stripped
//! and runs of white space count as one space before matching.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use std::borrow::Cow;
use std::collections::HashMap;

/// A phrase as compiled: its pattern id and whether it is a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhraseRef {
    pub pid: u32,
    pub prefix: bool,
}

#[derive(Default)]
pub struct PhraseSetBuilder {
    ids: HashMap<String, u32>,
    patterns: Vec<String>,
    /// Per pattern: some rule uses it as a prefix (`control*`).
    prefix: Vec<bool>,
}

impl PhraseSetBuilder {
    pub fn add(&mut self, phrase: &str) -> PhraseRef {
        let (body, prefix) = match phrase.trim().strip_suffix('*') {
            Some(b) => (b, true),
            None => (phrase.trim(), false),
        };
        let norm = collapse_ws(&body.to_lowercase()).into_owned();
        let next = self.patterns.len() as u32;
        let pid = *self.ids.entry(norm.clone()).or_insert_with(|| {
            self.patterns.push(norm);
            self.prefix.push(false);
            next
        });
        self.prefix[pid as usize] |= prefix;
        PhraseRef { pid, prefix }
    }

    pub fn build(self) -> PhraseSet {
        const OK: &str = "phrases are plain strings and always build";
        let matcher = if self.patterns.is_empty() {
            None
        } else if let Some(trie) = WordTrie::of(&self.patterns, &self.prefix) {
            Some(Matcher::Gated {
                gate: Gate::of(&self.patterns),
                trie: Box::new(trie),
            })
        } else {
            Some(Matcher::Full(
                AhoCorasickBuilder::new()
                    .kind(Some(AhoCorasickKind::DFA))
                    .match_kind(MatchKind::Standard)
                    .build(&self.patterns)
                    .expect(OK),
            ))
        };
        PhraseSet {
            matcher,
            count: self.patterns.len(),
        }
    }
}

/// One automaton over all phrases, used one of two ways.
enum Matcher {
    /// One unanchored pass over every byte of the text.
    Full(AhoCorasick),
    /// From word starts (those that open like some phrase, when few
    /// phrases make that test worth it), a walk word by word.
    Gated {
        gate: Option<Gate>,
        trie: Box<WordTrie>,
    },
}

/// How phrases open, as bit sets: the first three bytes of every phrase
/// (hashed into 64 Ki bits), or the first two of two-byte phrases. Phrases
/// only match at word starts, so when few word starts open like a phrase,
/// the automaton runs anchored from those alone instead of over every byte.
struct Gate {
    /// First two bytes of every phrase: a direct 64 Ki-bit look-up that
    /// turns most word starts away before any hashing.
    first: Box<[u64; 1024]>,
    /// Hashed three-byte openings; a power-of-two number of bits, sized
    /// to the phrases so that it stays small and in cache.
    three: Vec<u64>,
    shift: u32,
    /// Two-byte phrases, when there are any.
    two: Option<Box<[u64; 1024]>>,
}

impl Gate {
    /// Past this many distinct openings the gate lets most words through
    /// and costs more than it saves: every word start is walked instead.
    const MAX_OPENINGS: usize = 1024;

    fn of(patterns: &[String]) -> Option<Gate> {
        let mut threes = Vec::new();
        let mut twos = Vec::new();
        for p in patterns {
            match p.as_bytes() {
                [x, ..] if !is_word_byte(*x) => return None,
                [x, y] => twos.push(Self::pair(*x, *y)),
                [x, y, z, ..] => threes.push((*x, *y, *z)),
                _ => return None,
            }
        }
        threes.sort_unstable();
        threes.dedup();
        twos.sort_unstable();
        twos.dedup();
        if threes.len() + twos.len() > Self::MAX_OPENINGS {
            return None;
        }
        // About 64 bits per opening: few false passes, small tables.
        let bits = (threes.len() * 64).next_power_of_two().max(4096);
        let mut g = Gate {
            first: Box::new([0u64; 1024]),
            three: vec![0; bits / 64],
            shift: 32 - bits.trailing_zeros(),
            two: None,
        };
        for (a, b, c) in threes {
            let p = Self::pair(a, b);
            g.first[p / 64] |= 1 << (p % 64);
            let t = g.triple(a, b, c);
            g.three[t / 64] |= 1 << (t % 64);
        }
        if !twos.is_empty() {
            let mut two = Box::new([0u64; 1024]);
            for p in twos {
                two[p / 64] |= 1 << (p % 64);
            }
            g.two = Some(two);
        }
        Some(g)
    }

    fn pair(a: u8, b: u8) -> usize {
        (a as usize) << 8 | b as usize
    }

    fn triple(&self, a: u8, b: u8, c: u8) -> usize {
        let x = (a as u32) | (b as u32) << 8 | (c as u32) << 16;
        (x.wrapping_mul(0x9E37_79B1) >> self.shift) as usize
    }

    /// Whether a phrase may start at `i`; bytes are lowercased here.
    fn opens(&self, bytes: &[u8], i: usize) -> bool {
        let a = LOWER[bytes[i] as usize];
        let b = LOWER[bytes.get(i + 1).copied().unwrap_or(0) as usize];
        let p = Self::pair(a, b);
        if let Some(two) = &self.two
            && two[p / 64] & (1 << (p % 64)) != 0
        {
            return true;
        }
        // Both tests without a branch between them: whether a word passes
        // the first is a coin toss the processor cannot predict, while
        // passing both is rare, so one well-predicted branch remains.
        let c = LOWER[bytes.get(i + 2).copied().unwrap_or(0) as usize];
        let t = self.triple(a, b, c);
        let first = self.first[p / 64] >> (p % 64);
        let three = self.three[t / 64] >> (t % 64);
        first & three & 1 != 0
    }
}

pub struct PhraseSet {
    matcher: Option<Matcher>,
    count: usize,
}

impl PhraseSet {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Scans one text and calls `hit(pid, whole_word)` for every phrase
    /// found starting on a word boundary; `whole_word` when it also ends on one.
    ///
    /// `buf` is scratch space, reused across calls to spare an allocation.
    pub fn scan(&self, text: &str, scratch: &mut ScanBuf, mut hit: impl FnMut(u32, bool)) {
        let Some(matcher) = &self.matcher else { return };
        if let Matcher::Gated { gate, trie } = matcher {
            // Fast path: plain ASCII text needing no normalisation is walked
            // as it is, lowercased on the fly; one classifying pass finds
            // both its word starts and whether it needs normalising.
            if word_masks(text.as_bytes(), &mut scratch.masks, true) {
                gated_scan(trie, gate, text.as_bytes(), &scratch.masks, &mut hit);
                return;
            }
        }
        let text = normalize(text);
        // Lowercase once, then match case-sensitively: that keeps the
        // automaton's SIMD prefilter, which case-insensitive search loses.
        let buf = &mut scratch.text;
        buf.clear();
        if text.is_ascii() {
            buf.push_str(&text);
            buf.make_ascii_lowercase();
        } else {
            buf.push_str(&text.to_lowercase());
        }
        let hay: &str = buf;
        let bytes = hay.as_bytes();
        let ac = match matcher {
            Matcher::Full(ac) => ac,
            Matcher::Gated { gate, trie } => {
                word_masks(bytes, &mut scratch.masks, false);
                gated_scan(trie, gate, bytes, &scratch.masks, &mut hit);
                return;
            }
        };
        for m in ac.find_overlapping_iter(hay) {
            let (s, e) = (m.start(), m.end());
            if s > 0 && is_word_byte(bytes[s - 1]) {
                continue;
            }
            let whole = e == bytes.len() || !is_word_byte(bytes[e]);
            hit(m.pattern().as_u32(), whole);
        }
    }
}

/// Scratch space for [`PhraseSet::scan`], reused across calls.
#[derive(Default)]
pub struct ScanBuf {
    text: String,
    masks: Vec<u64>,
}

/// Fills `masks` with one bit per byte of `bytes` (64 to a word), set for
/// word bytes. With `check`, returns false as soon as the text turns out
/// not to be plain ASCII that needs no [`normalize`] (tags or entities,
/// control characters, double spaces, bytes past ASCII).
fn word_masks(bytes: &[u8], masks: &mut Vec<u64>, check: bool) -> bool {
    masks.clear();
    masks.reserve(bytes.len() / 64 + 1);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present, checked just above.
        return unsafe { avx2::word_masks(bytes, masks, check) };
    }
    word_masks_scalar(bytes, masks, check)
}

fn word_masks_scalar(bytes: &[u8], masks: &mut Vec<u64>, check: bool) -> bool {
    masks.clear();
    let mut prev_space = 0u64;
    for chunk in bytes.chunks(64) {
        let (mut word, mut special, mut space) = (0u64, 0u64, 0u64);
        for (k, &b) in chunk.iter().enumerate() {
            word |= (WORD[b as usize] as u64) << k;
            special |= ((!(0x20..0x80).contains(&b) || b == b'<' || b == b'&') as u64) << k;
            space |= ((b == b' ') as u64) << k;
        }
        if check && (special != 0 || space & ((space << 1) | prev_space) != 0) {
            return false;
        }
        prev_space = space >> (chunk.len() - 1);
        masks.push(word);
    }
    true
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::word_masks`], 32 bytes per step.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn word_masks(bytes: &[u8], masks: &mut Vec<u64>, check: bool) -> bool {
        let mut prev_space = 0u64;
        let blocks = bytes.len() / 32;
        let (mut word, mut special, mut space) = (0u64, 0u64, 0u64);
        for k in 0..blocks {
            let (w, s, p) = classify(bytes[k * 32..].as_ptr());
            let shift = (k % 2) * 32;
            word |= (w as u64) << shift;
            special |= (s as u64) << shift;
            space |= (p as u64) << shift;
            if k % 2 == 1 {
                if check && (special != 0 || space & ((space << 1) | prev_space) != 0) {
                    return false;
                }
                prev_space = space >> 63;
                masks.push(word);
                (word, special, space) = (0, 0, 0);
            }
        }
        // The tail, under 32 bytes: the last 32 bytes classified again (they
        // overlap the previous block) and only the new bits kept; one byte
        // at a time when the whole text is shorter than a block.
        let tail = bytes.len() % 32;
        let base = (blocks % 2) * 32;
        if tail > 0 && bytes.len() >= 32 {
            let (w, s, p) = classify(bytes[bytes.len() - 32..].as_ptr());
            let keep = |m: u32| ((m >> (32 - tail)) as u64) << base;
            word |= keep(w);
            special |= keep(s);
            space |= keep(p);
        } else {
            for (k, &b) in bytes[blocks * 32..].iter().enumerate() {
                word |= (super::WORD[b as usize] as u64) << (base + k);
                special |=
                    ((!(0x20..0x80).contains(&b) || b == b'<' || b == b'&') as u64) << (base + k);
                space |= ((b == b' ') as u64) << (base + k);
            }
        }
        if base + bytes.len() % 32 > 0 {
            if check && (special != 0 || space & ((space << 1) | prev_space) != 0) {
                return false;
            }
            masks.push(word);
        }
        true
    }

    /// Word bytes, bytes that call for normalising, and spaces, of 32 bytes.
    #[target_feature(enable = "avx2")]
    fn classify(p: *const u8) -> (u32, u32, u32) {
        // SAFETY: callers pass a pointer to at least 32 readable bytes.
        let v = unsafe { _mm256_loadu_si256(p as *const __m256i) };
        let set = |b: u8| _mm256_set1_epi8(b as i8);
        let lower = _mm256_or_si256(v, set(0x20));
        let alpha = _mm256_and_si256(
            _mm256_cmpgt_epi8(lower, set(b'a' - 1)),
            _mm256_cmpgt_epi8(set(b'z' + 1), lower),
        );
        let digit = _mm256_and_si256(
            _mm256_cmpgt_epi8(v, set(b'0' - 1)),
            _mm256_cmpgt_epi8(set(b'9' + 1), v),
        );
        let under = _mm256_cmpeq_epi8(v, set(b'_'));
        let word = _mm256_or_si256(_mm256_or_si256(alpha, digit), under);
        // Bytes >= 0x80 are negative as i8: their sign bit marks them.
        let word = _mm256_movemask_epi8(word) as u32 | _mm256_movemask_epi8(v) as u32;
        // Signed: controls (0..0x1f) and bytes past ASCII (negative) alike.
        let control = _mm256_cmpgt_epi8(set(0x20), v);
        let markup = _mm256_or_si256(
            _mm256_cmpeq_epi8(v, set(b'<')),
            _mm256_cmpeq_epi8(v, set(b'&')),
        );
        let special = _mm256_movemask_epi8(_mm256_or_si256(control, markup)) as u32;
        let space = _mm256_movemask_epi8(_mm256_cmpeq_epi8(v, set(b' '))) as u32;
        (word, special, space)
    }
}

/// From each word start that the gate lets through, walks the phrases
/// word by word, reporting phrases that start exactly there.
fn gated_scan(
    trie: &WordTrie,
    gate: &Option<Gate>,
    bytes: &[u8],
    masks: &[u64],
    hit: &mut impl FnMut(u32, bool),
) {
    // Word starts: word bytes whose left neighbour is not one.
    let mut carry = 0u64;
    for (c, &mask) in masks.iter().enumerate() {
        let mut starts = mask & !((mask << 1) | carry);
        carry = mask >> 63;
        while starts != 0 {
            let i = c * 64 + starts.trailing_zeros() as usize;
            starts &= starts - 1;
            if gate.as_ref().is_none_or(|g| g.opens(bytes, i)) {
                trie.walk(bytes, masks, i, hit);
            }
        }
    }
}

/// The first position at or after `i` whose mask bit is `set`, else `n`.
fn next_bit(masks: &[u64], i: usize, n: usize, set: bool) -> usize {
    let mut w = i / 64;
    if w >= masks.len() {
        return n;
    }
    let flip = if set { 0 } else { !0u64 };
    let mut m = (masks[w] ^ flip) & (!0u64 << (i % 64));
    loop {
        if m != 0 {
            return (w * 64 + m.trailing_zeros() as usize).min(n);
        }
        w += 1;
        if w >= masks.len() {
            return n;
        }
        m = masks[w] ^ flip;
    }
}

/// A hash of a chunk that ignores ASCII case, eight bytes at a step.
/// Bytes are folded with `| 0x20`, which maps more than case together;
/// the few extra collisions this allows are settled by [`WordTrie::confirm`].
fn chunk_hash(bytes: &[u8]) -> u64 {
    const FOLD: u64 = 0x2020_2020_2020_2020;
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut blocks = bytes.chunks_exact(8);
    for c in &mut blocks {
        let v = u64::from_le_bytes(c.try_into().expect("8 bytes")) | FOLD;
        h = (h ^ v).wrapping_mul(K).rotate_left(29);
    }
    let rest = blocks.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        h = (h ^ (u64::from_le_bytes(buf) | FOLD))
            .wrapping_mul(K)
            .rotate_left(29);
    }
    h ^ (h >> 31)
}

/// [`chunk_hash`] of `bytes[start..end]`, reading the last partial block
/// as one load when the text goes on far enough (the usual case), masked
/// to the chunk: same value, no copy.
#[inline]
fn chunk_hash_at(bytes: &[u8], start: usize, end: usize) -> u64 {
    const FOLD: u64 = 0x2020_2020_2020_2020;
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let len = end - start;
    let full = len / 8 * 8;
    let rest = len - full;
    if rest == 0 || start + full + 8 > bytes.len() {
        return chunk_hash(&bytes[start..end]);
    }
    let mut h = (len as u64).wrapping_mul(K);
    for k in (start..start + full).step_by(8) {
        let v = u64::from_le_bytes(bytes[k..k + 8].try_into().expect("8 bytes")) | FOLD;
        h = (h ^ v).wrapping_mul(K).rotate_left(29);
    }
    let k = start + full;
    let raw = u64::from_le_bytes(bytes[k..k + 8].try_into().expect("8 bytes"));
    let keep = (1u64 << (8 * rest)) - 1;
    // The copied block of `chunk_hash` is zero past the chunk, then folded.
    let v = (raw & keep) | FOLD;
    h = (h ^ v).wrapping_mul(K).rotate_left(29);
    h ^ (h >> 31)
}

/// Phrases as chains of chunks: the first word, then each separator with
/// the word after it (`anti-dumping duty` is `anti`, `-dumping`, ` duty`).
/// A chain is known by its path hash, each chunk's hash folded into the
/// one before, so a walk from a word start hashes the words it passes and
/// asks a Bloom filter, small enough to stay in cache, whether any phrase
/// goes on that way; tables are read only for phrases found. Most words
/// that begin some phrase are followed by none of its next words, and cost
/// two hashes and two bit tests: ten thousand phrases cost little more
/// than a hundred.
struct WordTrie {
    /// Keys: `more` (some phrase goes on past this path), `end` (a phrase
    /// ends here), `has_prefix` (a prefix phrase's last chunk leaves here),
    /// and each prefix chunk; two bits each.
    bloom: Vec<u64>,
    shift: u32,
    /// Path hash → phrases that end there.
    ends: rustc_hash::FxHashMap<u64, Vec<u32>>,
    /// Prefix key → prefix phrases whose last chunk it is.
    prefixes: rustc_hash::FxHashMap<u64, Vec<u32>>,
    /// Lengths of prefix chunks that are a phrase's first (and only) word,
    /// and of those further in, ascending.
    root_lens: Vec<u32>,
    deep_lens: Vec<u32>,
    /// The phrases, to confirm a find byte for byte (hashes may collide).
    patterns: Vec<Box<[u8]>>,
}

fn mix(a: u64, b: u64) -> u64 {
    (a.rotate_left(23) ^ b).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The path after one more chunk.
fn path_step(path: u64, chunk: u64) -> u64 {
    mix(path ^ 0x5851_F42D_4C95_7F2D, chunk)
}

const MORE: u64 = 0x1;
const END: u64 = 0x2;
const HAS_PREFIX: u64 = 0x3;
/// Any of the three: some phrase passes this path.
const ANY: u64 = 0x5;

fn key(path: u64, kind: u64) -> u64 {
    mix(path, kind)
}

fn prefix_key(path: u64, len: u32, h: u64) -> u64 {
    mix(mix(path, 0x4 + ((len as u64) << 8)), h)
}

impl WordTrie {
    /// `None` when some phrase does not start and end with a word byte: the
    /// word-by-word walk cannot place it.
    fn of(patterns: &[String], prefix: &[bool]) -> Option<WordTrie> {
        let mut t = WordTrie {
            bloom: Vec::new(),
            shift: 0,
            ends: Default::default(),
            prefixes: Default::default(),
            root_lens: Vec::new(),
            deep_lens: Vec::new(),
            patterns: patterns.iter().map(|p| p.as_bytes().into()).collect(),
        };
        let mut keys = Vec::new();
        for (pid, p) in patterns.iter().enumerate() {
            let b = p.as_bytes();
            if !b.first().is_some_and(|&x| is_word_byte(x)) || !is_word_byte(b[b.len() - 1]) {
                return None;
            }
            // Chunk ends: the end of each run of word bytes.
            let ends: Vec<usize> = (1..=b.len())
                .filter(|&k| is_word_byte(b[k - 1]) && (k == b.len() || !is_word_byte(b[k])))
                .collect();
            let mut path = 0u64;
            let mut start = 0;
            for (ci, &end) in ends.iter().enumerate() {
                let chunk = &b[start..end];
                if ci > 0 {
                    keys.push(key(path, MORE));
                    keys.push(key(path, ANY));
                }
                if ci + 1 == ends.len() && prefix[pid] {
                    let len = chunk.len() as u32;
                    let k = prefix_key(path, len, chunk_hash(chunk));
                    t.prefixes.entry(k).or_default().push(pid as u32);
                    keys.push(k);
                    let lens = if ci == 0 {
                        &mut t.root_lens
                    } else {
                        keys.push(key(path, HAS_PREFIX));
                        keys.push(key(path, ANY));
                        &mut t.deep_lens
                    };
                    if let Err(at) = lens.binary_search(&len) {
                        lens.insert(at, len);
                    }
                    break;
                }
                path = path_step(path, chunk_hash(chunk));
                if ci + 1 == ends.len() {
                    t.ends.entry(path).or_default().push(pid as u32);
                    keys.push(key(path, END));
                    keys.push(key(path, ANY));
                }
                start = end;
            }
        }
        // About 12 bits per key: under 2% of tests pass by chance.
        keys.sort_unstable();
        keys.dedup();
        let bits = (keys.len() * 12).next_power_of_two().max(4096);
        t.bloom = vec![0; bits / 64];
        t.shift = 64 - bits.trailing_zeros();
        for k in keys {
            let (a, b) = t.bits(k);
            t.bloom[a / 64] |= 1 << (a % 64);
            t.bloom[b / 64] |= 1 << (b % 64);
        }
        Some(t)
    }

    fn bits(&self, key: u64) -> (usize, usize) {
        let a = (key >> self.shift) as usize;
        let b = (key.rotate_left(32) >> self.shift) as usize;
        (a, b)
    }

    fn may(&self, key: u64) -> bool {
        let (a, b) = self.bits(key);
        (self.bloom[a / 64] >> (a % 64)) & (self.bloom[b / 64] >> (b % 64)) & 1 != 0
    }

    /// Whether phrase `pid` is spelt at `i` (bytes lowercased as compared).
    fn confirm(&self, pid: u32, bytes: &[u8], i: usize) -> bool {
        let p = &self.patterns[pid as usize];
        bytes.get(i..i + p.len()).is_some_and(|t| {
            t.iter()
                .zip(p.iter())
                .all(|(&a, &b)| LOWER[a as usize] == b)
        })
    }

    /// Reports the phrases that start at word start `i`.
    fn walk(&self, bytes: &[u8], masks: &[u64], i: usize, hit: &mut impl FnMut(u32, bool)) {
        let n = bytes.len();
        let mut path = 0u64;
        let mut start = i;
        let mut end = next_bit(masks, i, n, false);
        let mut lens: &[u32] = &self.root_lens;
        loop {
            // Prefix phrases: the chunk's first `len` bytes, for each length
            // some prefix phrase has here.
            for &len in lens {
                let stop = start + len as usize;
                if stop > end {
                    break;
                }
                let pk = prefix_key(path, len, chunk_hash_at(bytes, start, stop));
                if self.may(pk)
                    && let Some(pids) = self.prefixes.get(&pk)
                {
                    for &pid in pids {
                        if self.confirm(pid, bytes, i) {
                            hit(pid, stop == end);
                        }
                    }
                }
            }
            path = path_step(path, chunk_hash_at(bytes, start, end));
            // One test turns away the paths no phrase takes: most words.
            if !self.may(key(path, ANY)) {
                return;
            }
            if self.may(key(path, END))
                && let Some(pids) = self.ends.get(&path)
            {
                for &pid in pids {
                    if self.confirm(pid, bytes, i) {
                        hit(pid, true);
                    }
                }
            }
            if !self.may(key(path, MORE)) {
                return;
            }
            let next = next_bit(masks, end, n, true);
            if next >= n {
                return;
            }
            start = end;
            end = next_bit(masks, next, n, false);
            lens = if self.may(key(path, HAS_PREFIX)) {
                &self.deep_lens
            } else {
                &[]
            };
        }
    }
}

/// ASCII lowercase as a table; other bytes unchanged.
static LOWER: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).to_ascii_lowercase();
        i += 1;
    }
    t
};

/// [`is_word_byte`] as a table, for the per-byte loop.
static WORD: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = is_word_byte(i as u8);
        i += 1;
    }
    t
};

/// Letters, digits, `_`, and any non-ASCII byte (part of a letter in
/// practice); used for word boundaries.
const fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// HTML stripped, entities decoded, white space runs folded. Borrowed when
/// there is nothing to do, which is the common case.
pub fn normalize(text: &str) -> Cow<'_, str> {
    // Memchr scans (SIMD) to see whether there is anything to do at all.
    let b = text.as_bytes();
    let html = memchr::memchr2(b'<', b'&', b).is_some();
    static DOUBLE_SPACE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"  "));
    let ws = memchr::memchr3(b'\t', b'\n', b'\r', b).is_some() || DOUBLE_SPACE.find(b).is_some();
    match (html, ws) {
        (false, false) => Cow::Borrowed(text),
        (false, true) => Cow::Owned(fold_ws(text)),
        (true, _) => Cow::Owned(fold_ws(&strip_html(text))),
    }
}

fn collapse_ws(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    let needs = b
        .windows(2)
        .any(|w| w[0].is_ascii_whitespace() && w[1].is_ascii_whitespace())
        || b.iter().any(|&c| c.is_ascii_whitespace() && c != b' ');
    if needs {
        Cow::Owned(fold_ws(text))
    } else {
        Cow::Borrowed(text)
    }
}

fn fold_ws(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut ws = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if !ws {
                out.push(' ');
            }
            ws = true;
        } else {
            out.push(c);
            ws = false;
        }
    }
    out
}

/// Removes tags (each becomes a space) and decodes common entities.
pub fn strip_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['<', '&']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with('<') {
            // Only treat it as a tag when it looks like one: `<a`, `</a`, `<!`.
            let looks = rest[1..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!');
            match rest.find('>') {
                Some(end) if looks => {
                    out.push(' ');
                    rest = &rest[end + 1..];
                }
                _ => {
                    out.push('<');
                    rest = &rest[1..];
                }
            }
        } else {
            let end = rest[..rest.len().min(12)].find(';');
            let decoded = end.and_then(|e| decode_entity(&rest[1..e]).map(|c| (c, e)));
            match decoded {
                Some((c, e)) => {
                    out.push(c);
                    rest = &rest[e + 1..];
                }
                None => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "ndash" => '–',
        "mdash" => '—',
        "rsquo" | "lsquo" => '\'',
        "rdquo" | "ldquo" => '"',
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(h) => u32::from_str_radix(h, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(phrases: &[&str], text: &str) -> Vec<(String, bool)> {
        let mut b = PhraseSetBuilder::default();
        let refs: Vec<_> = phrases.iter().map(|p| b.add(p)).collect();
        let set = b.build();
        let mut found = Vec::new();
        set.scan(text, &mut ScanBuf::default(), |pid, whole| {
            found.push((pid, whole))
        });
        let mut out = Vec::new();
        for (p, r) in phrases.iter().zip(refs) {
            let ok = found
                .iter()
                .any(|&(pid, whole)| pid == r.pid && (whole || r.prefix));
            out.push((p.to_string(), ok));
        }
        out
    }

    #[test]
    fn whole_words_and_prefixes() {
        let r = hits(
            &["export control*", "rare earth", "earth", "mineral"],
            "New EXPORT  controls on rare earths and minerals",
        );
        assert_eq!(
            r,
            vec![
                ("export control*".into(), true),
                ("rare earth".into(), false),
                ("earth".into(), false),
                ("mineral".into(), false),
            ]
        );
    }

    #[test]
    fn html_is_stripped_and_entities_decoded() {
        let r = hits(
            &["export controls", "r&d"],
            "<p>New <b>export</b>\n controls</p> for R&amp;D",
        );
        assert!(r.iter().all(|(_, ok)| *ok), "{r:?}");
    }

    #[test]
    fn unicode_case_folds() {
        let r = hits(&["größe", "ÉTAT"], "Die GRÖSSE und GRÖßE; l'état");
        assert!(r[0].1);
        assert!(r[1].1);
    }

    /// Hits as the engine reads them: whole words, or prefixes of a
    /// phrase some rule uses as a prefix.
    fn meaningful(set: &PhraseSet, prefix: &[bool], text: &str) -> Vec<(u32, bool)> {
        let mut found = Vec::new();
        set.scan(text, &mut ScanBuf::default(), |pid, whole| {
            if whole || prefix[pid as usize] {
                found.push((pid, whole))
            }
        });
        found.sort();
        found.dedup();
        found
    }

    #[test]
    fn gated_and_full_scans_agree() {
        let mut phrases: Vec<String> = [
            "export control*",
            "rare earth",
            "earth",
            "ex",
            "x-ray",
            "control",
            "control*",
            "anti-dumping duty",
            "u.s. tariff*",
            "section 301",
            "rare earth magnet*",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Thousands more, sharing words with the text.
        let words = [
            "export", "control", "rare", "earth", "duty", "ex", "ray", "tariff",
        ];
        for i in 0..3000 {
            phrases.push(format!(
                "{} {}{}",
                words[i % words.len()],
                words[i / words.len() % words.len()],
                if i % 3 == 0 { "*" } else { "" }
            ));
            phrases.push(format!("w{i}x"));
        }
        let texts = [
            "Ex-port: export controls, x-ray; rare earths-earth control_x EXPORT CONTROL ex",
            "New anti-dumping duty on U.S. tariffs; section 301 and section 3011",
            "rare earth magnets, rare earth magnet; rare  earth; Rare Earth",
            "export export control control controlled exports earth earth duty",
            "<p>rare <b>earth</b></p> &amp; export&nbsp;control",
            "ex ray ex-ray x-ray xray w12x w12 w12xx tariff tariffs",
        ];
        let mut b = PhraseSetBuilder::default();
        let mut full = PhraseSetBuilder::default();
        for p in &phrases {
            b.add(p);
            full.add(p);
        }
        let prefix = b.prefix.clone();
        let gated = b.build();
        assert!(matches!(gated.matcher, Some(Matcher::Gated { .. })));
        let full = PhraseSet {
            matcher: Some(Matcher::Full(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::Standard)
                    .build(&full.patterns)
                    .unwrap(),
            )),
            count: full.patterns.len(),
        };
        let mut seen = 0;
        for t in texts {
            let (a, f) = (
                meaningful(&gated, &prefix, t),
                meaningful(&full, &prefix, t),
            );
            assert_eq!(a, f, "{t}");
            seen += a.len();
        }
        assert!(seen > 20, "{seen}");
        // Random texts over the same words and separators.
        let seps = [" ", "-", ", ", ". ", "_", "s ", "ed "];
        let mut x: u64 = 42;
        let mut next = |m: usize| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize % m
        };
        for _ in 0..500 {
            let mut t = String::new();
            for _ in 0..next(12) + 1 {
                let w = words[next(words.len())];
                t.push_str(&if next(4) == 0 {
                    w.to_uppercase()
                } else {
                    w.to_string()
                });
                t.push_str(seps[next(seps.len())]);
            }
            assert_eq!(
                meaningful(&gated, &prefix, &t),
                meaningful(&full, &prefix, &t),
                "{t}"
            );
        }
        // A phrase that opens with punctuation takes the full scan.
        let mut b = PhraseSetBuilder::default();
        b.add("-x");
        b.add("rare earth");
        assert!(matches!(b.build().matcher, Some(Matcher::Full(_))));
    }

    #[test]
    fn word_masks_agree_with_the_scalar_classification() {
        let mut texts: Vec<Vec<u8>> = vec![
            b"plain words, only-single spaces_and digits 123".to_vec(),
            b"two  spaces".to_vec(),
            b"a <b>tag</b>".to_vec(),
            b"tab\there".to_vec(),
            "caf\u{e9} na\u{ef}ve".as_bytes().to_vec(),
        ];
        // Every length around the 32- and 64-byte steps, every byte value.
        for len in [0, 1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200] {
            texts.push((0..len).map(|i| (i * 37 % 256) as u8).collect());
            texts.push(
                (0..len)
                    .map(|i| {
                        if i % 7 == 0 {
                            b' '
                        } else {
                            b'a' + (i % 26) as u8
                        }
                    })
                    .collect(),
            );
        }
        texts.push((0..=255u8).collect());
        for t in &texts {
            for check in [false, true] {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let ra = word_masks(t, &mut a, check);
                let rb = word_masks_scalar(t, &mut b, check);
                assert_eq!(ra, rb, "{t:?}");
                if ra {
                    assert_eq!(a, b, "{t:?}");
                }
            }
        }
        let mut m = Vec::new();
        assert!(word_masks(b"ab c", &mut m, true));
        assert_eq!(m, [0b1011]);
        assert!(!word_masks(b"ab  c", &mut m, true));
        assert!(!word_masks(b"a&amp;b", &mut m, true));
    }

    #[test]
    fn no_match_inside_words() {
        let r = hits(&["cat"], "concatenate category");
        assert!(!r[0].1);
    }
}
