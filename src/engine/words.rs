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
