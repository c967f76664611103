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
    phrases.sort();
    phrases.dedup();
    let mut b = PhraseSetBuilder::default();
    let refs: Vec<PhraseRef> = phrases.iter().map(|p| b.add(p)).collect();
    let set = b.build();
    let seps = [" ", "-", ", ", ". ", "_", "s ", "ed ", "’s ", " – "];
    let mut x: u64 = 42;
    let mut next = |m: usize| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as usize % m
    };
    let mut seen = 0;
    for _ in 0..400 {
        let mut t = String::new();
        for _ in 0..next(12) + 1 {
            let w = words_[next(words_.len())];
            t.push_str(&if next(4) == 0 {
                w.to_uppercase()
            } else {
                w.to_string()
            });
            t.push_str(seps[next(seps.len())]);
        }
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
    assert!(seen > 300, "{seen}");
}
