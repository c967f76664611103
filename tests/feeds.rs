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
    // Same title and date, same id, run after run.
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

#[test]
fn garbage_never_panics() {
    // Every prefix of every corpus document: truncated downloads.
    for entry in std::fs::read_dir("tests/feeds").unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".expected.json") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for cut in (0..bytes.len()).step_by(7) {
            let _ = feed::parse(&bytes[..cut], Some("text/xml; charset=utf-8"), BASE);
        }
    }
}
