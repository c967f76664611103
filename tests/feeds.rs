//! The feed corpus under `tests/feeds/`: each document parses to the
//! records in its `.expected.json` (fields, ids, decoded text, resolved
//! links), or to a clear error; never a panic.
//!
//! `TOCSIN_BLESS=1 cargo test --test feeds` rewrites the expected files
//! from the parser's output, for review in the diff.

use std::path::Path;

use serde_json::{Value, json};
use tocsin::source::feed;

const BASE: &str = "https://feeds.example.org/news/feed.xml";

fn outcome(name: &str) -> Value {
    let path = Path::new("tests/feeds").join(name);
    let bytes = std::fs::read(&path).unwrap();
    match feed::parse(&bytes, None, BASE) {
        Ok(items) => Value::Array(
            items
                .into_iter()
                .map(|i| {
                    assert_eq!(i.fields["id"], json!(i.id));
                    Value::Object(i.fields)
                })
                .collect(),
        ),
        Err(e) => json!({ "error": e }),
    }
}

fn check(name: &str) -> Value {
    let got = outcome(name);
    let expected_path = Path::new("tests/feeds").join(format!("{name}.expected.json"));
    if std::env::var_os("TOCSIN_BLESS").is_some() {
        std::fs::write(
            &expected_path,
            serde_json::to_string_pretty(&got).unwrap() + "\n",
        )
        .unwrap();
    }
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(&expected_path).unwrap()).unwrap();
    assert_eq!(
        got,
        expected,
        "{name}: got\n{}",
        serde_json::to_string_pretty(&got).unwrap()
    );
    got
}

fn items(v: &Value) -> &Vec<Value> {
    v.as_array().expect("a list of records")
}

#[test]
fn rss_0_91_and_0_92() {
    let v = check("rss091.xml");
    assert_eq!(items(&v).len(), 2);
    // No guid: the link is the id.
    assert_eq!(v[0]["id"], "https://trade.example.org/press/2026/041");
    let v = check("rss092.xml");
    assert_eq!(v[0]["categories"], json!(["tariffs"]));
    assert_eq!(v[1]["title"], Value::Null);
}

#[test]
fn rss_1_0_rdf() {
    let v = check("rss10.rdf");
    assert_eq!(v[0]["published"], "2026-04-09T01:00:00Z");
    assert_eq!(v[0]["feed_title"], "METI news");
}

#[test]
fn rss_2_0_keeps_html_for_templates() {
    let v = check("rss20.xml");
    assert_eq!(v[0]["id"], "eu-trade-2026-0412");
    assert!(
        v[0]["summary"]
            .as_str()
            .unwrap()
            .contains("<b>welcomes</b>")
    );
    assert_eq!(v[0]["categories"], json!(["Trade", "Raw materials"]));
    assert_eq!(v[0]["published"], "2026-04-12T07:30:00Z");
}

#[test]
fn atom_0_3_and_1_0() {
    let v = check("atom03.xml");
    assert_eq!(v[0]["id"], "tag:old.example.org,2026:sanctions-0401");
    let v = check("atom10.xml");
    // xml:base resolves the relative link; HTML in the title is kept.
    assert_eq!(
        v[0]["link"],
        "https://canada.example.ca/news/2026/04/export-controls.html"
    );
    assert!(
        v[0]["title"]
            .as_str()
            .unwrap()
            .contains("<em>Export controls</em>")
    );
    assert_eq!(v[0]["authors"], json!(["Global Affairs Canada"]));
}

#[test]
fn json_feed_1_0_and_1_1() {
    let v = check("jsonfeed10.json");
    assert_eq!(v[0]["id"], "dfat-2026-118");
    assert_eq!(v[0]["authors"], json!(["Minister for Trade"]));
    let v = check("jsonfeed11.json");
    assert_eq!(items(&v).len(), 2);
    // A relative url resolves against the feed's address.
    assert_eq!(
        v[0]["link"],
        "https://feeds.example.org/updates/rare-earths"
    );
}

#[test]
fn other_encodings_are_decoded() {
    let v = check("latin1.xml");
    assert_eq!(v[0]["title"], "Contrôle des exportations de terres rares");
    assert_eq!(v[0]["feed_title"], "Ministère du commerce");
    let v = check("shift_jis.xml");
    assert_eq!(v[0]["title"], "レアアースの輸出管理について");
    let v = check("utf16.xml");
    assert_eq!(v[0]["title"], "Contrôle à l’export");
}

#[test]
fn relative_links_resolve_against_the_feed_url() {
    let v = check("relative.xml");
    assert_eq!(
        v[0]["link"],
        "https://feeds.example.org/news/notices/1.html"
    );
    assert_eq!(v[1]["link"], "https://feeds.example.org/abs/2.html");
}

#[test]
fn items_without_guid_get_a_stable_id() {
    let v = check("no-guid.xml");
    assert_eq!(v[0]["id"], "https://noguid.example.org/a");
    let id = v[1]["id"].as_str().unwrap();
    assert!(id.starts_with("sha256:"), "{id}");
    // Same content, same id, run after run.
    assert_eq!(outcome("no-guid.xml")[1]["id"], id);
}

#[test]
fn broken_documents_give_a_clear_error() {
    for name in ["broken.xml", "html.xml", "broken.json"] {
        let v = check(name);
        let e = v["error"].as_str().unwrap_or_else(|| panic!("{name}: {v}"));
        assert!(e.starts_with("not a"), "{name}: {e}");
    }
}

/// `(id, title, link)` of each record.
fn itl(v: &Value) -> Vec<(String, String, String)> {
    let s = |x: &Value| x.as_str().unwrap_or("").to_string();
    items(v)
        .iter()
        .map(|i| (s(&i["id"]), s(&i["title"]), s(&i["link"])))
        .collect()
}

fn odd_notices() -> Vec<(String, String, String)> {
    (1..=2)
        .map(|n| {
            (
                format!("odd-{n}"),
                format!("Notice {n}"),
                format!("https://odd.example.org/n/{n}"),
            )
        })
        .collect()
}

#[test]
fn rss_of_any_version_or_without_a_channel_is_rss_2_0() {
    for name in [
        "rss093.xml",
        "rss201.xml",
        "rss-noversion.xml",
        "rss-nochannel.xml",
        "userland.xml",
    ] {
        let v = check(name);
        assert_eq!(itl(&v), odd_notices(), "{name}");
    }
}

#[test]
fn odd_atom_text_types_keep_the_feed() {
    let v = check("atom-types.xml");
    let s = |x: &str| x.to_string();
    assert_eq!(
        itl(&v),
        [
            (
                s("urn:odd:1"),
                s("Plain text title"),
                s("https://odd.example.org/1")
            ),
            (
                s("urn:odd:2"),
                s("Empty type"),
                s("https://odd.example.org/2")
            ),
            (s("urn:odd:3"), s("Base64"), s("https://odd.example.org/3")),
        ]
    );
    // XML content kept as its markup; base64 content decoded.
    assert_eq!(v[0]["summary"], "<note>An XML summary</note>");
    assert!(
        v[1]["content"]
            .as_str()
            .unwrap()
            .contains("<p>XHTML content</p>")
    );
    assert_eq!(v[2]["content"], "Export controls in base64");
    // An SEC EDGAR filings feed (`type="text/xml"` summaries, Latin-1):
    // every filing.
    let v = check("edgar.xml");
    assert_eq!(items(&v).len(), 3);
    for (n, i) in items(&v).iter().enumerate() {
        let n = n + 1;
        assert_eq!(
            i["id"],
            format!("urn:tag:sec.gov,2008:accession-number=0000000000-26-00000{n}")
        );
        assert_eq!(i["title"], format!("8-K - Current report (filing {n})"));
        assert_eq!(
            i["link"],
            format!("https://www.sec.example.gov/Archives/edgar/data/{n}/index.htm")
        );
    }
}

#[test]
fn rss_1_0_and_0_90_items_without_link_use_rdf_about() {
    let v = check("rss10-nolink.rdf");
    let s = |x: &str| x.to_string();
    assert_eq!(
        itl(&v),
        [
            (
                s("https://rdf.example.org/a"),
                s("Item A"),
                s("https://rdf.example.org/a")
            ),
            (
                s("https://rdf.example.org/b"),
                s("Item B"),
                s("https://rdf.example.org/b")
            ),
        ]
    );
    let v = check("rss090.rdf");
    assert_eq!(items(&v).len(), 2);
    assert_eq!(v[1]["title"], "Oldest format item two");
    assert_eq!(v[1]["link"], "https://old.example.org/2");
}

#[test]
fn internal_entities_are_expanded() {
    let v = check("dtd-entity.xml");
    assert_eq!(
        v[0]["title"],
        "Ministry of Economy, Trade and Industry tightens export controls"
    );
}

#[test]
fn a_permalink_guid_is_the_link_and_comments_never_are() {
    let v = check("guid-link.xml");
    let s = |x: &str| x.to_string();
    assert_eq!(
        itl(&v),
        [
            (
                s("https://guid.example.org/permalink"),
                s("Permalink guid, no link"),
                s("https://guid.example.org/permalink")
            ),
            (
                s("https://guid.example.org/explicit"),
                s("Explicit permalink guid"),
                s("https://guid.example.org/explicit")
            ),
            (
                s("tag:guid.example.org,2026:3"),
                s("Not a permalink"),
                s("")
            ),
        ]
    );
}

#[test]
fn items_without_guid_link_or_title_stay_distinct() {
    // RSS 0.92, 22 items with only a description.
    let v = check("description-only.xml");
    let ids: std::collections::HashSet<&str> = items(&v)
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 22);
    assert!(items(&v).iter().all(|i| i["summary"].is_string()));
    // Three items sharing a link: three records.
    let v = check("shared-link.xml");
    let ids: std::collections::HashSet<&str> = items(&v)
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(
        items(&v)
            .iter()
            .all(|i| i["link"] == "https://shared.example.org/news")
    );
}

#[test]
fn lying_missing_and_wide_encodings_are_read() {
    // UTF-8 with a comment before a declaration saying windows-1252.
    assert_eq!(
        check("comment-before-decl.xml")[0]["title"],
        "Décret sur les exportations"
    );
    // The same, long enough that earlier versions panicked on it.
    let v = check("comment-before-decl-cjk.xml");
    assert_eq!(items(&v).len(), 30);
    assert_eq!(v[29]["title"], "輸出管理の見直し 第30号");
    assert_eq!(v[29]["id"], "jp-30");
    // UTF-8 declared as UTF-16.
    assert_eq!(
        check("utf8-declared-utf16.xml")[0]["title"],
        "Straße und Zoll"
    );
    // Shift_JIS, declared nowhere.
    assert_eq!(
        check("shift_jis-undeclared.xml")[0]["title"],
        "輸出管理の見直しについて、レアアースの輸出規制を強化します"
    );
    assert_eq!(check("utf32.xml")[0]["title"], "État des exportations");
}

#[test]
fn a_bare_ampersand_is_text() {
    let v = check("bare-ampersand.xml");
    assert_eq!(v[0]["title"], "Tariffs on AT&T equipment & parts");
    assert_eq!(v[0]["link"], "https://amp.example.org/?a=1&b=2");
}

#[test]
fn a_document_cut_short_keeps_the_items_it_finished() {
    let v = check("truncated.xml");
    assert_eq!(itl(&v), odd_notices());
}

/// A deterministic stream of numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `doc` changed in one to four places: a byte flipped, dropped,
/// repeated, a markup byte put in, or a slice moved elsewhere.
fn mutate(doc: &[u8], rng: &mut Rng) -> Vec<u8> {
    const MARKUP: &[u8] = b"<>&;/=\"'![]?:#x\0\xff\xfe\xef\xbb\xbf";
    let mut d = doc.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(d.len() + 1);
        match rng.below(5) {
            0 if at < d.len() => d[at] ^= 1 << rng.below(8),
            1 if at < d.len() => {
                d.remove(at);
            }
            2 => d.insert(at, MARKUP[rng.below(MARKUP.len())]),
            3 => {
                let len = rng.below(64);
                let from = rng.below(d.len());
                let piece: Vec<u8> = d[from..(from + len).min(d.len())].to_vec();
                d.splice(at..at, piece);
            }
            _ if at < d.len() => {
                let len = rng.below(d.len() - at);
                d.drain(at..at + len);
            }
            _ => {}
        }
    }
    d
}

thread_local! {
    /// Panics on this thread, caught or not.
    static PANICS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[test]
fn no_prefix_or_mutation_of_the_corpus_panics() {
    // `parse` turns a panic into an error; the hook still sees it.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.with(|p| p.set(p.get() + 1));
        hook(info);
    }));
    let mut rng = Rng(0x7c0c_5e1d_2026_1205);
    let mut tried = 0;
    for entry in std::fs::read_dir("tests/feeds").unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".expected.json") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        // The document, every 7-byte prefix (a download cut short), with
        // and without a charset from the server; then mutants. The corpus
        // holds what fuzzing found (`fuzz-*`).
        let prefixes = (0..bytes.len())
            .step_by(7)
            .chain([bytes.len()])
            .flat_map(|c| {
                [None, Some("text/xml; charset=utf-8")].map(|ct| (bytes[..c].to_vec(), ct))
            });
        let mutants = (0..2500).map(|_| (mutate(&bytes, &mut rng), None));
        for (doc, ct) in prefixes.collect::<Vec<_>>().into_iter().chain(mutants) {
            tried += 1;
            let _ = feed::parse(&doc, ct, BASE);
            assert!(
                PANICS.with(|p| p.get()) == 0,
                "{}: panicked on\n{}",
                path.display(),
                String::from_utf8_lossy(&doc)
            );
        }
    }
    assert!(tried > 90_000, "{tried}");
}
