//! Phrase matching over text fields. Every phrase of every rule goes into one
//! Aho-Corasick automaton, run once per text field of a record, whatever the
//! number of rules: adding phrases costs automaton states, not passes.
//!
//! Phrases are case-insensitive and match whole words; a trailing `*` makes
//! the last word a prefix (`control*` matches "controls"). HTML is stripped
//! and runs of white space count as one space before matching.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
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
            next
        });
        PhraseRef { pid, prefix }
    }

    pub fn build(self) -> PhraseSet {
        let ac = if self.patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .build(&self.patterns)
                    .expect("phrases are plain strings and always build"),
            )
        };
        PhraseSet {
            ac,
            count: self.patterns.len(),
        }
    }
}

pub struct PhraseSet {
    ac: Option<AhoCorasick>,
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
    pub fn scan(&self, text: &str, mut hit: impl FnMut(u32, bool)) {
        let Some(ac) = &self.ac else { return };
        let text = normalize(text);
        let lowered;
        let hay: &str = if text.is_ascii() {
            &text
        } else {
            lowered = text.to_lowercase();
            &lowered
        };
        let bytes = hay.as_bytes();
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

/// Letters, digits, `_`, and any non-ASCII byte (part of a letter in
/// practice); used for word boundaries.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// HTML stripped, entities decoded, white space runs folded. Borrowed when
/// there is nothing to do, which is the common case.
pub fn normalize(text: &str) -> Cow<'_, str> {
    let needs_html = text.contains('<') || text.contains('&');
    if !needs_html {
        return collapse_ws(text);
    }
    let stripped = strip_html(text);
    Cow::Owned(collapse_ws(&stripped).into_owned())
}

fn collapse_ws(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    let needs = b
        .windows(2)
        .any(|w| w[0].is_ascii_whitespace() && w[1].is_ascii_whitespace())
        || b.iter().any(|&c| c.is_ascii_whitespace() && c != b' ');
    if !needs {
        return Cow::Borrowed(text);
    }
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
    Cow::Owned(out)
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
        set.scan(text, |pid, whole| found.push((pid, whole)));
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

    #[test]
    fn no_match_inside_words() {
        let r = hits(&["cat"], "concatenate category");
        assert!(!r[0].1);
    }
}
