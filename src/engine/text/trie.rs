//! The phrases as a trie of words, and the walk of a text through it.
//!
//! A word of the text that the gate lets through (a word that starts
//! only phrases of two or more words, when the next word may be its
//! second: `WordTrie::started`) is looked up among the words that start a
//! phrase (`starts`, a table a fraction of the vocabulary's size), which
//! gives the node it leads to with that node's record, kept in the walk's
//! list of phrases under way. The next word is then compared with the few
//! words (and prefix words) that node has after it, kept together with
//! the node's other edges, and looked up nowhere: most nodes of a large
//! set have one or two. A node with many words after it (a common first
//! word) looks the word up in the vocabulary and a map of (node, word)
//! instead, and its prefix words are found by an anchored Aho-Corasick
//! automaton over all prefix words.

use aho_corasick::automaton::Automaton;
use aho_corasick::{Anchored, MatchKind, StartKind, dfa};
use rustc_hash::{FxBuildHasher, FxHashMap};
use std::hash::BuildHasher;

use super::gate::{Gate, PAIR_BYTES};
use super::vocab::{Head, LONG, NONE, Vocab, first_bytes, head_of};

pub(super) const ROOT: u32 = 0;

// Per node of the trie, its flags, in one byte of its record; the rarer
// lists of phrases that end there are kept apart.
/// Some phrase goes on from the node with another whole word.
const MORE: u8 = 1;
/// Some prefix phrase ends with a word prefix after the node.
const PREFIXES: u8 = 2;
/// Some phrase's last (whole) word leads to the node (see `WordTrie::ends`).
const ENDS: u8 = 4;
/// The node has many words after it, found in `WordTrie::next`.
const MAPPED: u8 = 8;
/// The node has many prefix words after it (or is the root), found by the
/// prefix automaton.
const PREFIX_MAPPED: u8 = 16;

/// The phrases as a trie of words.
pub(super) struct WordTrie {
    pub(super) vocab: Vocab,
    nodes: Vec<Node>,
    /// The words after nodes with few of them, kept by node (see
    /// [`Node::edges`]): a walk compares a word with these and looks up
    /// nothing.
    edges: Vec<Edge>,
    /// The prefix words after nodes with few of them, kept by node.
    prefix_edges: Vec<PrefixEdge>,
    /// (node, word) → the node after that word, from nodes with many
    /// words after them (marked [`MAPPED`]; the root's are in `vocab`).
    next: FxHashMap<(u32, u32), u32>,
    /// Per node marked [`ENDS`]: the phrases whose last word leads there.
    ends: FxHashMap<u32, Vec<u32>>,
    /// The last words of prefix phrases, numbered by pattern, anchored:
    /// asked for the prefixes after the root and after nodes marked
    /// [`PREFIX_MAPPED`].
    prefixes: Option<dfa::DFA>,
    /// The last words of prefix phrases, by number.
    pub(super) prefix_words: Vec<Box<[u8]>>,
    /// (node, prefix word) → the prefix phrases that end so.
    pub(super) prefix_ends: FxHashMap<(u32, u32), Vec<u32>>,
    /// Which words may start a phrase, asked before `starts`.
    pub(super) gate: Gate,
    /// The words that start a phrase, with the node each leads to and
    /// that node's record: the look-up made for most words the gate lets
    /// through, in a table a fraction of the vocabulary's size.
    starts: hashbrown::HashTable<Start>,
}

/// A word of up to sixteen bytes that starts a phrase (longer ones are
/// found in the vocabulary, which compares the rest).
struct Start {
    /// Its bytes, as [`Entry::head`](super::vocab::Entry::head).
    head: Head,
    /// The node it leads to from the root, and that node's record.
    root: u32,
    node: Node,
}

/// A node, by number, with its record: what the walk keeps of the nodes
/// it has reached, so that going on from them reads only their words.
type At = (u32, Node);

/// Nodes with up to this many words (or prefix words) after them keep
/// those words with them; nodes with more look the word up.
const FEW: usize = 4;

#[derive(Default, Clone, Copy)]
struct Node {
    /// [`MORE`], [`PREFIXES`], [`ENDS`], [`MAPPED`], [`PREFIX_MAPPED`].
    flags: u8,
    n_edges: u8,
    n_prefix_edges: u8,
    /// Where the node's words after it start in `edges`, unless [`MAPPED`].
    edges: u32,
    /// Where its prefix words start in `prefix_edges`, unless
    /// [`PREFIX_MAPPED`].
    prefix_edges: u32,
}

/// A whole word after a node, and the node it leads to.
struct Edge {
    head: Head,
    /// The word's id, with [`LONG`] as in [`Entry`](super::vocab::Entry).
    id: u32,
    to: u32,
}

/// A prefix word after a node.
struct PrefixEdge {
    /// Its first sixteen bytes, as [`Entry::head`](super::vocab::Entry::head).
    head: Head,
    len: u32,
    /// Its number among the prefix words.
    pw: u32,
}

/// A word of the text as the walk compares it; what the vocabulary and
/// the prefix automaton say of it is asked once, when first needed.
struct Probe<'w> {
    w: &'w [u8],
    head: Head,
    long: bool,
    vocab: Option<Option<(u32, u32)>>,
    /// Whether the prefix words it starts with are in `Walk::found`.
    prefixes_found: bool,
}

impl<'w> Probe<'w> {
    fn new(w: &'w [u8]) -> Probe<'w> {
        let (head, long) = head_of(w);
        Probe {
            w,
            head,
            long,
            vocab: None,
            prefixes_found: false,
        }
    }
}

impl WordTrie {
    /// The trie of `phrases`, each its words, whether some rule uses it as
    /// a prefix phrase and whether some uses it whole, numbered in order.
    pub(super) fn build(phrases: impl Iterator<Item = (Vec<Box<[u8]>>, bool, bool)>) -> WordTrie {
        let mut t = WordTrie {
            vocab: Vocab::default(),
            next: FxHashMap::default(),
            nodes: vec![Node::default()],
            edges: Vec::new(),
            prefix_edges: Vec::new(),
            ends: FxHashMap::default(),
            prefixes: None,
            prefix_words: Vec::new(),
            prefix_ends: FxHashMap::default(),
            gate: Gate::default(),
            starts: hashbrown::HashTable::new(),
        };
        let mut prefix_ids: FxHashMap<Box<[u8]>, u32> = FxHashMap::default();
        let mut prefix_words: Vec<Box<[u8]>> = Vec::new();
        for (pid, (words, prefix, whole)) in phrases.enumerate() {
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
                t.nodes[end as usize].flags |= ENDS;
                t.ends.entry(end).or_default().push(pid);
            }
            if prefix {
                let n = prefix_words.len() as u32;
                let pw = *prefix_ids.entry(last.clone()).or_insert_with(|| {
                    prefix_words.push(last.clone());
                    n
                });
                t.prefix_ends.entry((node, pw)).or_default().push(pid);
                t.nodes[node as usize].flags |= PREFIXES;
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
        t.prefix_words = prefix_words;
        t.gate = t.gate();
        t.settle();
        t
    }

    /// The node after `word` from `node`, made when new.
    fn step_to(&mut self, node: u32, word: &[u8]) -> u32 {
        let (wid, root) = self.vocab.id(word);
        self.nodes[node as usize].flags |= MORE;
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

    /// The gate in front of `starts`, made before the trie settles (while
    /// `next` holds every node's words after it).
    fn gate(&self) -> Gate {
        let firsts: FxHashMap<u32, &[u8]> = self.vocab.starts().map(|(w, n)| (n, w)).collect();
        let mut now: Vec<&[u8]> = (firsts.iter())
            .filter(|&(&n, _)| self.nodes[n as usize].flags & ENDS != 0)
            .map(|(_, &w)| w)
            .collect();
        let mut pairs: Vec<(&[u8], &[u8])> = (self.next.keys())
            .filter_map(|&(n, wid)| Some((*firsts.get(&n)?, self.vocab.word(wid))))
            .collect();
        let mut prefixes = Vec::new();
        for &(n, pw) in self.prefix_ends.keys() {
            let p = &*self.prefix_words[pw as usize];
            match firsts.get(&n) {
                _ if n == ROOT => prefixes.push(p),
                Some(&w) if p.len() < PAIR_BYTES => now.push(w),
                Some(&w) => pairs.push((w, p)),
                None => {}
            }
        }
        Gate::new(&now, &pairs, &prefixes)
    }

    /// Once every phrase is in: nodes with few words (or prefix words)
    /// after them keep those with them.
    fn settle(&mut self) {
        let mut after: Vec<Vec<(u32, u32)>> = vec![Vec::new(); self.nodes.len()];
        for (&(node, wid), &to) in &self.next {
            after[node as usize].push((wid, to));
        }
        for (node, mut list) in after.into_iter().enumerate() {
            let n = &mut self.nodes[node];
            if list.len() > FEW {
                n.flags |= MAPPED;
                continue;
            }
            list.sort_unstable();
            (n.edges, n.n_edges) = (self.edges.len() as u32, list.len() as u8);
            for (wid, to) in list {
                let w = self.vocab.word(wid);
                let (head, long) = head_of(w);
                let id = if long { wid | LONG } else { wid };
                self.edges.push(Edge { head, id, to });
            }
        }
        self.next
            .retain(|&(node, _), _| self.nodes[node as usize].flags & MAPPED != 0);
        let mut after: Vec<Vec<u32>> = vec![Vec::new(); self.nodes.len()];
        for &(node, pw) in self.prefix_ends.keys() {
            after[node as usize].push(pw);
        }
        for (node, mut list) in after.into_iter().enumerate() {
            let n = &mut self.nodes[node];
            if node == ROOT as usize || list.len() > FEW {
                n.flags |= PREFIX_MAPPED;
                continue;
            }
            list.sort_unstable();
            (n.prefix_edges, n.n_prefix_edges) = (self.prefix_edges.len() as u32, list.len() as u8);
            for pw in list {
                let p = &self.prefix_words[pw as usize];
                let head = head_of(p).0;
                let len = p.len() as u32;
                self.prefix_edges.push(PrefixEdge { head, len, pw });
            }
        }
        let hash = |s: &Start| FxBuildHasher.hash_one(s.head);
        let table = self.vocab.table.iter();
        for e in table.filter(|e| e.root != NONE && e.id & LONG == 0) {
            let s = Start {
                head: e.head,
                root: e.root,
                node: self.nodes[e.root as usize],
            };
            self.starts.insert_unique(hash(&s), s, hash);
        }
    }

    /// The node the probed word leads to from the root, and its record.
    #[inline]
    fn start(&self, p: &mut Probe) -> Option<At> {
        if p.long {
            // Long words that share their first sixteen bytes share an
            // entry's key: the vocabulary compares the rest.
            let (_, root) = self.looked_up(p)?;
            return (root != NONE).then(|| self.at(root));
        }
        let s = (self.starts).find(FxBuildHasher.hash_one(p.head), |s| s.head == p.head)?;
        Some((s.root, s.node))
    }

    /// Whether the word whose first eight bytes are `head` (its length up
    /// to eight `run`) may go on with or end a phrase under way, asked of
    /// the words the phrases' nodes have after them before the word's end
    /// is found. When it cannot, those phrases end with it. It may let
    /// through a word that goes on with none, never the other way round.
    #[inline(never)] // kept out of the loop over every word
    pub(super) fn may_follow(&self, walk: &mut Walk, head: u64, run: usize) -> bool {
        let kept = first_bytes((head, 0), run).0;
        let follows = |&(_, n): &At| {
            if n.flags & (MAPPED | PREFIX_MAPPED) != 0 {
                return true;
            }
            let edges = &self.edges[n.edges as usize..][..n.n_edges as usize];
            let prefixes =
                &self.prefix_edges[n.prefix_edges as usize..][..n.n_prefix_edges as usize];
            edges.iter().any(|e| e.head.0 == kept)
                || prefixes.iter().any(|e| {
                    let k = (e.len as usize).min(8);
                    k <= run && first_bytes((head, 0), k).0 == e.head.0
                })
        };
        if walk.active.iter().any(follows) {
            return true;
        }
        walk.active.clear();
        false
    }

    fn at(&self, node: u32) -> At {
        (node, self.nodes[node as usize])
    }

    /// What the vocabulary says of the probed word: its id and root node.
    #[inline]
    fn looked_up(&self, p: &mut Probe) -> Option<(u32, u32)> {
        *p.vocab
            .get_or_insert_with(|| self.vocab.get_head(p.w, p.head, p.long))
    }

    /// The node after the probed word from `node`.
    #[inline]
    fn after(&self, (node, n): At, p: &mut Probe) -> Option<u32> {
        if node == ROOT {
            let (_, root) = self.looked_up(p)?;
            return (root != NONE).then_some(root);
        }
        if n.flags & MAPPED != 0 {
            let (wid, _) = self.looked_up(p)?;
            return self.next.get(&(node, wid)).copied();
        }
        let edges = &self.edges[n.edges as usize..][..n.n_edges as usize];
        (edges.iter())
            .find(|e| self.vocab.is(e.head, e.id, p.w, p.head, p.long))
            .map(|e| e.to)
    }

    /// The prefix phrases that the probed word ends after `node`, each
    /// with whether the prefix is all of the word.
    fn prefixes_after(
        &self,
        (node, n): At,
        p: &mut Probe,
        found: &mut Vec<(u32, bool)>,
        hit: &mut impl FnMut(u32, bool),
    ) {
        if n.flags & PREFIXES == 0 {
            return;
        }
        let mut ended = |pw: u32, whole: bool| {
            if let Some(pids) = self.prefix_ends.get(&(node, pw)) {
                pids.iter().for_each(|&pid| hit(pid, whole));
            }
        };
        if n.flags & PREFIX_MAPPED != 0 {
            if !p.prefixes_found {
                p.prefixes_found = true;
                found.clear();
                if let Some(dfa) = &self.prefixes {
                    prefixes_of(dfa, p.w, found);
                }
            }
            found.iter().for_each(|&(pw, whole)| ended(pw, whole));
            return;
        }
        let edges = &self.prefix_edges[n.prefix_edges as usize..][..n.n_prefix_edges as usize];
        for e in edges {
            let len = e.len as usize;
            if len <= p.w.len()
                && first_bytes(p.head, len) == e.head
                && (len <= 16 || p.w[..len] == *self.prefix_words[e.pw as usize])
            {
                ended(e.pw, len == p.w.len());
            }
        }
    }

    /// A word led to node `to`: the phrases that end there are found, and
    /// the walk goes on from it if some phrase does.
    #[inline]
    fn reached(&self, to: u32, next_active: &mut Vec<At>, hit: &mut impl FnMut(u32, bool)) {
        self.reached_at(self.at(to), next_active, hit);
    }

    /// [`WordTrie::reached`], with the node's record at hand.
    #[inline]
    fn reached_at(&self, at: At, next_active: &mut Vec<At>, hit: &mut impl FnMut(u32, bool)) {
        if at.1.flags & ENDS != 0 {
            self.ended(at.0, hit);
        }
        if at.1.flags & (MORE | PREFIXES) != 0 {
            next_active.push(at);
        }
    }

    /// The phrases whose last word leads to node `to`.
    fn ended(&self, to: u32, hit: &mut impl FnMut(u32, bool)) {
        if self.nodes[to as usize].flags & ENDS != 0
            && let Some(pids) = self.ends.get(&to)
        {
            pids.iter().for_each(|&p| hit(p, true));
        }
    }

    /// A word that may start only phrases of two or more words, put off
    /// by the gate until the word after it: when that word may be such a
    /// phrase's second, the phrases go on from this word's node as from
    /// the nodes the words before reached (`active`).
    pub(super) fn started(&self, w: &[u8], s: &mut Walk, hit: &mut impl FnMut(u32, bool)) {
        if let Some(at) = self.start(&mut Probe::new(w)) {
            self.reached_at(at, &mut s.active, hit);
        }
    }

    /// One word of the text: the phrases it ends, from the root (a phrase
    /// of one word; asked only when the gate says the word may start one,
    /// `starts`) or from the nodes reached by the words before it
    /// (`active`); the nodes it leads to become the new `active`.
    pub(super) fn word(
        &self,
        w: &[u8],
        starts: bool,
        apostrophe: bool,
        s: &mut Walk,
        hit: &mut impl FnMut(u32, bool),
    ) {
        let mut p = Probe::new(w);
        s.next_active.clear();
        if starts {
            self.prefixes_after(self.at(ROOT), &mut p, &mut s.found, hit);
            if let Some(at) = self.start(&mut p) {
                self.reached_at(at, &mut s.next_active, hit);
            }
        }
        for &at in &s.active {
            self.prefixes_after(at, &mut p, &mut s.found, hit);
            if let Some(to) = self.after(at, &mut p) {
                self.reached(to, &mut s.next_active, hit);
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
        let mut p = Probe::new(head);
        for at in std::iter::once(self.at(ROOT)).chain(s.active.iter().copied()) {
            if let Some(to) = self.after(at, &mut p) {
                self.ended(to, hit);
            }
        }
        let mut p = Probe::new(tail);
        if let Some(to) = self.after(self.at(ROOT), &mut p) {
            self.reached(to, &mut s.next_active, hit);
        }
        self.prefixes_after(self.at(ROOT), &mut p, &mut s.found, hit);
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

/// The walk's state between words.
#[derive(Default)]
pub(super) struct Walk {
    /// Nodes reached by the words so far, from which phrases go on.
    active: Vec<At>,
    next_active: Vec<At>,
    /// Prefix words found in the current word.
    found: Vec<(u32, bool)>,
}

impl Walk {
    /// A new text: no phrase under way.
    pub(super) fn begin(&mut self) {
        self.active.clear();
    }

    /// Whether some phrase is under way.
    pub(super) fn under_way(&self) -> bool {
        !self.active.is_empty()
    }
}
