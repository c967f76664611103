//! The phrase automaton against what each phrase means.

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

fn found(phrase: &str, text: &str) -> bool {
    hits(&[phrase], text)[0].1
}

fn words(text: &str) -> String {
    let mut out = Vec::new();
    read_words(text, &mut out);
    String::from_utf8(out).unwrap()
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
fn separators_are_any_run_of_non_word_characters() {
    for text in [
        "Japan tightens rare-earth export-control rules",
        "Rare Earths: export controls widened",
        "RARE–EARTH and RARE—EARTH",
        "rare\nearth",
        "rare/earth",
        "rare_earth",
        "rare -- earth",
        "rare. Earth",
        "<p>rare</p><p>earth</p>",
        "rare&nbsp;earth",
    ] {
        assert!(found("rare earth*", text), "{text}");
    }
    assert!(found(
        "export control*",
        "Japan tightens rare-earth export-control rules"
    ));
    assert!(found("export control*", "export-controls"));
    assert!(
        found("rare-earth", "rare earth"),
        "the phrase is read as words too"
    );
    assert!(!found("rare earth", "rare earthenware"));
    assert!(found("rare earth*", "rare earthenware"));
    assert!(!found("rare earth", "rarely earth"));
}

#[test]
fn apostrophes_join_and_are_one_character() {
    assert!(found("China's", "China’s export-control regime"));
    assert!(found("China’s", "CHINA'S exports"));
    assert!(found("China", "China’s export-control regime"));
    assert!(!found("China's", "China s"), "an apostrophe does not split");
    assert!(found("exporters", "the exporters’ view"));
    assert_eq!(words("l'état, ‘quoted’ it's"), " l'état quoted it's");
}

#[test]
fn unicode_words_fold_case() {
    assert!(found("Türkiye", "TÜRKIYE tightens"));
    assert!(found("größe", "Die GRÖSSE"));
    assert!(found("ÉTAT", "l'état"));
    assert!(found("l’état", "L'ÉTAT"));
    assert!(found("οδος", "ΟΔΟΣ"));
    // Scripts with combining marks: a mark is part of its word.
    assert!(found("भारत", "भारत सरकार"));
    assert!(!found("भ", "भारत"));
    // Composed or decomposed, the same letter.
    assert!(found("café", "CAFE\u{301} noir"));
}

#[test]
fn words_as_read() {
    assert_eq!(
        words("Japan tightens rare-earth  export–control rules."),
        " japan tightens rare earth export control rules"
    );
    assert_eq!(words(" -- "), "");
    assert_eq!(words("R&amp;D <b>x</b>"), " r d x");
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
fn no_match_inside_words() {
    assert!(!found("cat", "concatenate category"));
    assert!(!found("cat*", "concatenate"));
    assert!(found("cat*", "category"));
}

/// What a phrase means, word by word, written as plainly as possible:
/// the oracle for the automaton.
fn naive(phrase: &str, text: &str) -> bool {
    let (body, prefix) = match phrase.strip_suffix('*') {
        Some(b) => (b, true),
        None => (phrase, false),
    };
    let pw = words_of(body);
    let pw: Vec<&str> = pw.split(' ').filter(|w| !w.is_empty()).collect();
    let tw = words_of(text);
    let tw: Vec<&str> = tw.split(' ').filter(|w| !w.is_empty()).collect();
    let k = pw.len();
    let fits = |p: &str, t: &str, last: bool| {
        if last && prefix {
            t.starts_with(p)
        } else {
            t == p
        }
    };
    (0..tw.len()).any(|i| {
        i + k <= tw.len()
            && (0..k).all(|j| {
                let t = tw[i + j];
                let (first, last) = (j == 0, j + 1 == k);
                let head = t.split('\'').next().unwrap_or(t);
                let tail = t.rsplit('\'').next().unwrap_or(t);
                fits(pw[j], t, last)
                    || (first && fits(pw[j], tail, last))
                    || (last && fits(pw[j], head, last))
            })
    })
}

/// The gate never turns away a word that starts a phrase: words of one
/// to twelve bytes, words sharing their first eight bytes, prefixes of
/// one to four bytes, in ASCII and in other text.
#[test]
fn the_gate_lets_every_phrase_start_through() {
    let phrases = [
        "a",
        "de minimis",
        "x*",
        "ab*",
        "abc*",
        "abcd*",
        "internat*",
        "internationalise",
        "internationally rated",
        "ü",
        "éta*",
        "12345678 9",
    ];
    for text in [
        "A",
        "de minimis",
        "xylophone",
        "abs",
        "abcs",
        "abcde",
        "internationals",
        "internationalise",
        "internationally rated",
        "Ü",
        "état",
        "12345678 9",
    ] {
        let found: Vec<_> = hits(&phrases, text).into_iter().filter(|h| h.1).collect();
        assert!(!found.is_empty(), "nothing found in {text:?}");
        let found: Vec<_> = hits(&phrases, &format!("Über {text}!"))
            .into_iter()
            .filter(|h| h.1)
            .collect();
        assert!(!found.is_empty(), "nothing found in Über {text:?}");
    }
    let r = hits(&phrases, "internationalism rates abz abd xa");
    let found: Vec<&str> = r.iter().filter(|h| h.1).map(|h| h.0.as_str()).collect();
    assert_eq!(found, ["x*", "ab*", "internat*"]);
}

/// Nor, while a phrase is under way, a word that goes on with it or
/// ends it: whole words of one to twelve bytes and prefixes of one to
/// nine; a word of no phrase between ends it.
#[test]
fn the_gate_lets_every_next_word_through() {
    let phrases = [
        "anti d*",
        "anti dumping*",
        "anti dumpingduty*",
        "export controllers",
        "export c",
        "de minimis treatment",
        "rare earth elements",
    ];
    for (text, want) in [
        ("anti dumpings", vec!["anti d*", "anti dumping*"]),
        (
            "the anti dumpingdutyx",
            vec!["anti d*", "anti dumping*", "anti dumpingduty*"],
        ),
        ("export controllers", vec!["export controllers"]),
        ("export c", vec!["export c"]),
        ("de minimis treatment", vec!["de minimis treatment"]),
        ("Über rare earth elements!", vec!["rare earth elements"]),
        ("anti the dumping", vec![]),
        ("rare the earth elements", vec![]),
        ("de minimis of treatment", vec![]),
    ] {
        let found: Vec<String> = (hits(&phrases, text).into_iter())
            .filter(|h| h.1)
            .map(|h| h.0)
            .collect();
        assert_eq!(found, want, "in {text:?}");
    }
}

/// Many phrases in one automaton find what each phrase means.
#[test]
fn one_automaton_finds_what_each_phrase_means() {
    let words_ = [
        "export", "control", "rare", "earth", "duty", "ex", "ray", "tariff", "china's", "l'état",
        "état", "china",
    ];
    let mut phrases: Vec<String> = Vec::new();
    for i in 0..600 {
        let mut p = words_[i % words_.len()].to_string();
        if i % 5 != 4 {
            p.push(' ');
            p.push_str(words_[i / words_.len() % words_.len()]);
        }
        if i % 7 == 3 {
            p.push(' ');
            p.push_str(words_[i / 3 % words_.len()]);
        }
        if i % 3 == 0 {
            p.pop();
            p.push('*');
        }
        phrases.push(p);
    }
    let seps = [" ", "-", ", ", ". ", "_", "s ", "ed ", "’s ", " – "];
    let mut x: u64 = 42;
    let texts = (0..400).map(|_| {
        let mut t = String::new();
        for _ in 0..lcg(&mut x, 12) + 1 {
            let w = words_[lcg(&mut x, words_.len())];
            t.push_str(&if lcg(&mut x, 4) == 0 {
                w.to_uppercase()
            } else {
                w.to_string()
            });
            t.push_str(seps[lcg(&mut x, seps.len())]);
        }
        t
    });
    let seen = as_naive(phrases, texts);
    assert!(seen > 300, "{seen}");
}

/// A pseudo-random number below `m`, the next from `x`.
fn lcg(x: &mut u64, m: usize) -> usize {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*x >> 33) as usize % m
}

/// Scans each of `texts` with one automaton of all `phrases`, and asserts
/// that it finds in each what [`naive`] says each phrase means; returns
/// how many times a phrase was found.
fn as_naive(mut phrases: Vec<String>, texts: impl Iterator<Item = String>) -> usize {
    phrases.sort();
    phrases.dedup();
    let mut b = PhraseSetBuilder::default();
    let refs: Vec<PhraseRef> = phrases.iter().map(|p| b.add(p)).collect();
    let set = b.build();
    let mut seen = 0;
    for t in texts {
        let mut all = Vec::new();
        set.scan(&t, &mut ScanBuf::default(), |pid, whole| {
            all.push((pid, whole))
        });
        for (p, r) in phrases.iter().zip(&refs) {
            let found = all
                .iter()
                .any(|&(pid, whole)| pid == r.pid && (whole || r.prefix));
            assert_eq!(found, naive(p, &t), "{p:?} in {t:?}");
            seen += found as usize;
        }
    }
    seen
}

/// Words longer than sixteen bytes, words that share their first eight or
/// sixteen bytes, prefixes of any length, and nodes with few words after
/// them (compared where they are kept) and with many (looked up): what
/// each phrase means is found.
#[test]
fn long_and_alike_words_find_what_each_phrase_means() {
    let words_ = [
        "internationalisation",
        "internationalisations",
        "internationally",
        "international",
        "intern",
        "in",
        "a",
        "ab",
        "abcdefghijklmnop",
        "abcdefghijklmnopq",
        "abcdefghijklmnopqr",
        "zz",
    ];
    let mut x: u64 = 7;
    let mut next = |m: usize| lcg(&mut x, m);
    let mut phrases: Vec<String> = Vec::new();
    for _ in 0..300 {
        // The first four words go on with any word (many after them); the
        // others with one of the three after them (few).
        let first = next(words_.len());
        let mut ws = vec![first];
        for _ in 0..next(3) {
            let prev = *ws.last().unwrap();
            ws.push(if prev < 4 {
                next(words_.len())
            } else {
                (prev + 1 + next(3)) % words_.len()
            });
        }
        let mut p: Vec<String> = ws.iter().map(|&w| words_[w].to_string()).collect();
        if next(3) == 0 {
            let last = p.last_mut().unwrap();
            last.truncate(1 + next(last.len()));
            last.push('*');
        }
        phrases.push(p.join(" "));
    }
    let texts: Vec<String> = (0..300)
        .map(|_| {
            let mut t = String::new();
            for _ in 0..next(10) + 1 {
                t.push_str(words_[next(words_.len())]);
                if next(5) == 0 {
                    t.push_str(["x", "s", "q"][next(3)]);
                }
                t.push_str([" ", "-", ", ", " the "][next(4)]);
            }
            t
        })
        .collect();
    let seen = as_naive(phrases, texts.into_iter());
    assert!(seen > 300, "{seen}");
}

/// Phrases of two and three words over many words, as topical phrases
/// are, in texts with no apostrophe: a word that starts only such phrases
/// is put off until the next word, which the gate asks by its first four
/// bytes. Words of one to twelve bytes, next words that share their first
/// four bytes (`stat`, `state`, `statement`), prefixes shorter and longer
/// than four, first words that are also phrases of their own: what each
/// phrase means is found.
#[test]
fn put_off_first_words_find_what_each_phrase_means() {
    let syllables = [
        "ba", "ce", "di", "fo", "gu", "ha", "ke", "li", "mo", "x", "y",
    ];
    let mut x: u64 = 11;
    let mut next = |m: usize| lcg(&mut x, m);
    let mut words_: Vec<String> = ["stat", "state", "states", "statement", "stately", "a", "ab"]
        .map(String::from)
        .to_vec();
    while words_.len() < 120 {
        let w: String = (0..1 + next(5))
            .map(|_| syllables[next(syllables.len())])
            .collect();
        if !words_.contains(&w) {
            words_.push(w);
        }
    }
    let mut phrases: Vec<String> = Vec::new();
    for i in 0..400 {
        // First words from a third of the words; a few phrases of one word.
        let n = if i % 40 == 0 { 1 } else { 2 + next(2) };
        let mut p: Vec<String> = (0..n)
            .map(|k| words_[if k == 0 { next(40) } else { next(words_.len()) }].clone())
            .collect();
        if next(4) == 0 {
            let last = p.last_mut().unwrap();
            last.truncate(1 + next(last.len()));
            last.push('*');
        }
        phrases.push(p.join(" "));
    }
    // Texts of phrases' words in and out of order, some words longer.
    let texts: Vec<String> = (0..400)
        .map(|_| {
            let mut t = String::new();
            for _ in 0..1 + next(8) {
                let piece = if next(2) == 0 {
                    phrases[next(phrases.len())].replace('*', ["", "s", "ment"][next(3)])
                } else {
                    words_[next(words_.len())].clone()
                };
                t.push_str(&piece);
                t.push_str([" ", "-", ", ", " the "][next(4)]);
            }
            t
        })
        .collect();
    let seen = as_naive(phrases, texts.into_iter());
    assert!(seen > 500, "{seen}");
}

/// A word's first sixteen bytes and whether it is longer tell words of up
/// to sixteen bytes apart, and the rest is compared for longer ones.
#[test]
fn words_are_told_apart_by_their_first_sixteen_bytes() {
    let mut v = vocab::Vocab::default();
    let words_: Vec<Vec<u8>> = (0..=40)
        .flat_map(|n| [vec![b'a'; n], (0..n as u8).map(|i| b'a' + i % 26).collect()])
        .filter(|w| !w.is_empty())
        .collect();
    let ids: Vec<u32> = words_.iter().map(|w| v.id(w).0).collect();
    for (w, &id) in words_.iter().zip(&ids) {
        assert_eq!(
            v.get(w).map(|f| f.0),
            Some(id),
            "{:?}",
            String::from_utf8_lossy(w)
        );
        assert_eq!(v.word(id), &w[..]);
        let mut other = w.clone();
        other.push(b'b');
        if !words_.contains(&other) {
            assert_eq!(v.get(&other), None);
        }
        assert_eq!(
            v.get(&w[..w.len() - 1]).is_some(),
            words_.contains(&w[..w.len() - 1].to_vec())
        );
    }
}

/// Hostile sizes: a phrase word of a hundred thousand bytes, a text of a
/// megabyte, a run of a hundred thousand apostrophes. Each is read whole,
/// and found or not as plainly read.
#[test]
fn huge_words_and_texts_are_read_whole() {
    let long = "a".repeat(100_000);
    let phrase = format!("{long} earth");
    let prefix = format!("x{}*", "b".repeat(20));
    let phrases = [phrase.as_str(), "rare earth*", prefix.as_str()];
    let text = format!("the {} EARTH and X{}s", long.to_uppercase(), "b".repeat(20));
    assert_eq!(
        hits(&phrases, &text)
            .iter()
            .map(|h| h.1)
            .collect::<Vec<_>>(),
        [true, false, true]
    );
    // One byte more or less is another word.
    for other in [format!("{long}a earth"), format!("{} earth", &long[1..])] {
        assert!(!hits(&phrases, &other)[0].1, "{}", other.len());
    }
    let big = format!("{}rare-earths", "word ".repeat(200_000));
    assert_eq!(
        hits(&phrases, &big).iter().map(|h| h.1).collect::<Vec<_>>(),
        [false, true, false]
    );
    let quotes = format!("{} rare earth", "'".repeat(100_000));
    assert!(hits(&phrases, &quotes)[1].1);
    let quoted = format!("{}rare'earth", "a'".repeat(50_000));
    assert!(!hits(&phrases, &quoted)[1].1);
}

/// The one pass over plain ASCII lowercases it and marks its letters and
/// digits as the plain byte-by-byte reading does, at every length around
/// the 16- and 64-byte blocks, and turns away text that is not plain
/// ASCII or may be HTML.
#[test]
fn plain_words_read_as_bytes_do() {
    let pool: Vec<u8> = (b' '..=b'~').chain([b'\n', b'\t', 0xc3, 0xa9]).collect();
    let mut next = crate::engine::xorshift(5);
    let (mut words, mut masks) = (Vec::new(), Vec::new());
    let (mut plain, mut apostrophes) = (0, 0);
    for round in 0..20_000 {
        let len = (next() % 200) as usize;
        // Most texts without the bytes that turn a text away.
        let odd = round % 4 == 0;
        let b: Vec<u8> = (0..len)
            .map(|_| pool[(next() % pool.len() as u64) as usize])
            .filter(|c| odd || (c.is_ascii() && !b"<&".contains(c)))
            .collect();
        let want_plain = b.is_ascii() && !b.contains(&b'<') && !b.contains(&b'&');
        let got = plain_words(&b, &mut words, &mut masks);
        assert_eq!(
            got.is_some(),
            want_plain,
            "{:?}",
            String::from_utf8_lossy(&b)
        );
        let Some(apostrophe) = got else { continue };
        plain += 1;
        apostrophes += apostrophe as usize;
        assert_eq!(apostrophe, b.contains(&b'\''));
        assert_eq!(words, b.to_ascii_lowercase());
        assert_eq!(masks.len(), b.len().div_ceil(64));
        for (i, c) in b.iter().enumerate() {
            let bit = masks[i / 64] >> (i % 64) & 1 == 1;
            assert_eq!(bit, c.is_ascii_alphanumeric(), "byte {i} of {b:?}");
        }
        if let Some(last) = masks.last() {
            let used = b.len() - (masks.len() - 1) * 64;
            assert_eq!(last.checked_shr(used as u32).unwrap_or(0), 0);
        }
    }
    assert!(
        plain > 10_000 && apostrophes > 1_000,
        "{plain} {apostrophes}"
    );
}
