//! The whole words of all phrases, found by their bytes.

use rustc_hash::FxBuildHasher;
use std::hash::BuildHasher;

/// The whole words of all phrases, numbered, kept end to end in one
/// buffer; the table finds a word's id and root node from its bytes.
#[derive(Default)]
pub(super) struct Vocab {
    bytes: Vec<u8>,
    /// Per word, by id: its span in `bytes`.
    words: Vec<(u32, u32)>,
    /// Per word: its first sixteen bytes, its id, and the node it leads to
    /// from the root (`NONE` when no phrase starts with it, which spares
    /// most words a second look-up). A look-up of a word of up to sixteen
    /// bytes reads one entry and nothing else.
    pub(super) table: hashbrown::HashTable<Entry>,
}

#[derive(Clone, Copy)]
pub(super) struct Entry {
    /// The word's first sixteen bytes, little-endian, zero after its end.
    /// Word bytes are never zero, so for words of up to sixteen bytes
    /// these are the whole word.
    pub(super) head: Head,
    /// The word's id, with [`LONG`] set for words longer than sixteen
    /// bytes, whose rest is compared in `bytes`.
    pub(super) id: u32,
    pub(super) root: u32,
}

pub(super) const NONE: u32 = u32::MAX;
pub(super) const LONG: u32 = 1 << 31;

/// A word's first sixteen bytes, zero-padded, as two little-endian words.
pub(super) type Head = (u64, u64);

/// The bytes of `p` (under eight), little-endian, zero above.
#[inline]
fn partial(p: &[u8]) -> u64 {
    p.iter().rev().fold(0, |v, &b| (v << 8) | b as u64)
}

/// The [`Head`] of word `w`, and whether it is longer than sixteen bytes.
#[inline]
pub(super) fn head_of(w: &[u8]) -> (Head, bool) {
    let eight = |p: &[u8]| u64::from_le_bytes(p[..8].try_into().expect("eight bytes"));
    match w.len() {
        0..8 => ((partial(w), 0), false),
        8..16 => ((eight(w), partial(&w[8..])), false),
        n => ((eight(w), eight(&w[8..])), n > 16),
    }
}

impl Vocab {
    pub(super) fn word(&self, id: u32) -> &[u8] {
        let (s, e) = self.words[(id & !LONG) as usize];
        &self.bytes[s as usize..e as usize]
    }

    /// The words that start some phrase, each with the node it leads to.
    pub(super) fn starts(&self) -> impl Iterator<Item = (&[u8], u32)> {
        (self.table.iter())
            .filter(|e| e.root != NONE)
            .map(|e| (self.word(e.id), e.root))
    }

    /// The id of `w` and the node it leads to from the root.
    pub(super) fn get(&self, w: &[u8]) -> Option<(u32, u32)> {
        let (head, long) = head_of(w);
        self.get_head(w, head, long)
    }

    /// [`Vocab::get`], with `w`'s head and length known.
    #[inline]
    pub(super) fn get_head(&self, w: &[u8], head: Head, long: bool) -> Option<(u32, u32)> {
        let e = (self.table).find(FxBuildHasher.hash_one(head), |e| {
            self.is(e.head, e.id, w, head, long)
        })?;
        Some((e.id & !LONG, e.root))
    }

    /// Whether the word kept as `head` and `id` (with [`LONG`]) is `w`,
    /// whose head is `w_head` and which is longer than sixteen bytes when
    /// `long`: the heads compared, and the rest of a long word.
    #[inline]
    pub(super) fn is(&self, head: Head, id: u32, w: &[u8], w_head: Head, long: bool) -> bool {
        head == w_head && (id & LONG != 0) == long && (!long || self.word(id) == w)
    }

    /// [`Vocab::get`], the word added when new.
    pub(super) fn id(&mut self, w: &[u8]) -> (u32, u32) {
        if let Some(found) = self.get(w) {
            return found;
        }
        let id = self.words.len() as u32;
        assert!(id < LONG, "fewer than 2^31 phrase words");
        let s = self.bytes.len() as u32;
        self.bytes.extend_from_slice(w);
        self.words.push((s, self.bytes.len() as u32));
        let (head, long) = head_of(w);
        let entry = Entry {
            head,
            id: if long { id | LONG } else { id },
            root: NONE,
        };
        let hash = |e: &Entry| FxBuildHasher.hash_one(e.head);
        self.table.insert_unique(hash(&entry), entry, hash);
        (id, NONE)
    }

    /// Sets the node that word `id` leads to from the root.
    pub(super) fn set_root(&mut self, id: u32, node: u32) {
        let (s, e) = self.words[id as usize];
        let (head, _) = head_of(&self.bytes[s as usize..e as usize]);
        if let Some(e) = (self.table).find_mut(FxBuildHasher.hash_one(head), |e| e.id & !LONG == id)
        {
            e.root = node;
        }
    }
}

/// `head` with only its first `n` (up to sixteen) bytes kept.
#[inline]
pub(super) fn first_bytes((lo, hi): Head, n: usize) -> Head {
    let keep = |v: u64, k: usize| {
        if k >= 8 {
            v
        } else {
            v & ((1u64 << (8 * k)) - 1)
        }
    };
    (keep(lo, n), keep(hi, n.saturating_sub(8)))
}
