//! Text as words are read, for phrase matching and for showing: HTML
//! stripped and entities decoded, Unicode case-folded, runs of non-word
//! characters read as one space, apostrophes inside words kept.

use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;

/// How a character reads: part of a word, an apostrophe, or a separator.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Word,
    Apostrophe,
    Separator,
}

/// ASCII letters and digits.
pub(super) static WORD: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 128 {
        t[i] = (i as u8).is_ascii_alphanumeric();
        i += 1;
    }
    t
};

fn class(c: char) -> Class {
    if c.is_ascii() {
        match c {
            '\'' => Class::Apostrophe,
            _ if WORD[c as usize] => Class::Word,
            _ => Class::Separator,
        }
    } else if c.is_alphanumeric() || unicode_normalization::char::is_combining_mark(c) {
        Class::Word
    } else if matches!(c, '\u{2019}' | '\u{02BC}') {
        Class::Apostrophe
    } else {
        Class::Separator
    }
}

/// `text` as words are read, for showing: `japan tightens rare earth`.
pub fn words_of(text: &str) -> String {
    let mut out = Vec::new();
    read_words(text, &mut out);
    String::from_utf8_lossy(out.strip_prefix(b" ").unwrap_or(&out)).into_owned()
}

/// A text's words with their places, read as the engine reads them
/// (case-folded, any run of separators between them), for showing where a
/// phrase is in it once an alert is made. Read once per text, then asked
/// for each phrase.
pub struct Placed<'t> {
    text: &'t str,
    /// Per word: where it starts and ends in `text`, and where in `read`
    /// is how it reads.
    words: Vec<(usize, usize, std::ops::Range<usize>)>,
    /// The words as read, one after the other.
    read: String,
}

impl<'t> Placed<'t> {
    pub fn new(text: &'t str) -> Placed<'t> {
        let mut words: Vec<(usize, usize, std::ops::Range<usize>)> = Vec::new();
        let mut read = String::with_capacity(text.len());
        let mut start: Option<usize> = None;
        let (mut end, mut apostrophe) = (0, false);
        let mut close = |start: &mut Option<usize>, end: usize| {
            if let Some(s) = start.take() {
                let span = &text[s..end];
                // Most words: ASCII letters and digits (and an apostrophe
                // between them), read as they are, lowercased.
                let plain = (span.bytes()).all(|b| b.is_ascii_alphanumeric() || b == b'\'');
                let at = read.len();
                if plain {
                    read.push_str(span);
                    read[at..].make_ascii_lowercase();
                } else {
                    read.push_str(&words_of(span));
                }
                words.push((s, end, at..read.len()));
            }
        };
        for (i, c) in text.char_indices() {
            match class(c) {
                Class::Word => {
                    start.get_or_insert(i);
                    end = i + c.len_utf8();
                    apostrophe = false;
                }
                // One apostrophe between word characters stays in the word.
                Class::Apostrophe if start.is_some() && !apostrophe => apostrophe = true,
                _ => {
                    close(&mut start, end);
                    apostrophe = false;
                }
            }
        }
        close(&mut start, end);
        Placed { text, words, read }
    }

    /// Where the words of `phrase` (as read, space-separated; the last one
    /// a prefix when `prefix`) are, as written: `export-control` for
    /// `export control*`. As when matching, a phrase may end at an
    /// apostrophe (`China` in "China's") and start after one (`état` in
    /// "l'état").
    pub fn find(&self, phrase: &str, prefix: bool) -> Option<&'t str> {
        let (text, words, reads) = (self.text, &self.words, &self.read);
        let want: Vec<&str> = phrase.split(' ').filter(|w| !w.is_empty()).collect();
        let k = want.len();
        if k == 0 {
            return None;
        }
        let is_apostrophe = |c: char| class(c) == Class::Apostrophe;
        let fits = |read: &str, want: &str, last: bool| {
            read == want || (last && prefix && read.starts_with(want))
        };
        'at: for i in 0..words.len().saturating_sub(k - 1) {
            let (mut from, mut to) = (words[i].0, words[i + k - 1].1);
            for (j, want) in want.iter().enumerate() {
                let (s, e, read) = &words[i + j];
                let last = j + 1 == k;
                if fits(&reads[read.clone()], want, last) {
                    continue;
                }
                // The part after the word's last apostrophe may start the
                // phrase, the part before its first one end it.
                let written = &text[*s..*e];
                if j == 0
                    && let Some(a) = written.rfind(is_apostrophe)
                {
                    let after = a + written[a..].chars().next().map_or(1, char::len_utf8);
                    if fits(&words_of(&written[after..]), want, last) {
                        from = s + after;
                        continue;
                    }
                }
                if last
                    && let Some(a) = written.find(is_apostrophe)
                    && fits(&words_of(&written[..a]), want, last)
                {
                    to = s + a;
                    continue;
                }
                continue 'at;
            }
            return Some(&text[from..to]);
        }
        None
    }
}

/// Writes `text` into `out` as words are read: HTML stripped, each word
/// case-folded and after one space (` rare earth china's`). An apostrophe
/// between two word characters stays (as `'`); every other run of
/// non-word characters is the one space before the next word. The bytes
/// written are UTF-8.
pub fn read_words(text: &str, out: &mut Vec<u8>) {
    out.clear();
    let stripped;
    let text = if memchr::memchr2(b'<', b'&', text.as_bytes()).is_some() {
        stripped = crate::html::strip(text);
        stripped.as_str()
    } else {
        text
    };
    if text.is_ascii() {
        // The common case: runs of word bytes copied and lowercased, no
        // folding tables, no normalising.
        let b = text.as_bytes();
        let n = b.len();
        out.reserve(n + 1);
        let mut i = 0;
        loop {
            while i < n && !WORD[b[i] as usize] {
                i += 1;
            }
            if i == n {
                return;
            }
            out.push(b' ');
            loop {
                let s = i;
                while i < n && WORD[b[i] as usize] {
                    i += 1;
                }
                let at = out.len();
                out.extend_from_slice(&b[s..i]);
                out[at..].make_ascii_lowercase();
                if i + 1 < n && b[i] == b'\'' && WORD[b[i + 1] as usize] {
                    out.push(b'\'');
                    i += 1;
                } else {
                    break;
                }
            }
        }
    }
    let mut sep = Class::Separator;
    let mut utf8 = [0u8; 4];
    for c in text.nfc() {
        match class(c) {
            Class::Word => {
                match sep {
                    Class::Separator => out.push(b' '),
                    Class::Apostrophe => out.push(b'\''),
                    Class::Word => {}
                }
                for f in std::iter::once(c).default_case_fold() {
                    out.extend_from_slice(f.encode_utf8(&mut utf8).as_bytes());
                }
                sep = Class::Word;
            }
            Class::Apostrophe if sep == Class::Word => sep = Class::Apostrophe,
            _ => sep = Class::Separator,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Placed, words_of};

    /// Each word of a text reads as [`words_of`] reads it, whether it is
    /// plain ASCII or not.
    #[test]
    fn placed_words_read_as_words_of_reads_them() {
        let pieces = [
            "Export", "CONTROL", "x1", "China's", "l'État", "it’s", "Größe", "a''b", "'q'",
            "&amp;", "<b>", "9", "ÉTAT",
        ];
        let seps = [" ", "-", ", ", "'", "’", "—"];
        let mut random = crate::engine::xorshift(3);
        let mut next = |m: usize| random() as usize % m;
        for _ in 0..2000 {
            let mut t = String::new();
            for _ in 0..next(6) + 1 {
                t.push_str(pieces[next(pieces.len())]);
                t.push_str(seps[next(seps.len())]);
            }
            let placed = Placed::new(&t);
            for (s, e, read) in &placed.words {
                let read = &placed.read[read.clone()];
                assert_eq!(read, words_of(&t[*s..*e]), "{:?} in {t:?}", &t[*s..*e]);
            }
        }
    }

    #[test]
    fn a_phrase_is_found_as_written_in_the_text() {
        let cases: &[(&str, &str, bool, Option<&str>)] = &[
            (
                "New EXPORT-CONTROLS on gallium",
                "export control",
                true,
                Some("EXPORT-CONTROLS"),
            ),
            (
                "New EXPORT-CONTROLS on gallium",
                "export control",
                false,
                None,
            ),
            (
                "export  —  control regime",
                "export control",
                false,
                Some("export  —  control"),
            ),
            ("rare–earth magnets", "rare earth", true, Some("rare–earth")),
            ("the exporter controls", "export control", true, None),
            ("China's new rules", "china", false, Some("China")),
            ("L'État décide", "état", false, Some("État")),
            ("Größe zählt", "grösse", false, Some("Größe")),
            ("TÜRKIYE and Türkiye", "türkiye", false, Some("TÜRKIYE")),
            ("no phrase here", "export control", true, None),
            ("ends with export", "export control", true, None),
            ("", "export", false, None),
            (
                "section 301 review",
                "section 301",
                false,
                Some("section 301"),
            ),
            ("a dual-use item", "dual use", false, Some("dual-use")),
        ];
        for &(text, phrase, prefix, want) in cases {
            assert_eq!(
                Placed::new(text).find(phrase, prefix),
                want,
                "{phrase:?} in {text:?}"
            );
        }
    }
}
