//! Feed documents (RSS 0.9x/1.0/2.0, Atom 0.3/1.0, JSON Feed 1.x) turned
//! into items: the fields of DESIGN.md and a stable id.
//!
//! Pure: bytes in, items out, as forgiving as feedparser. The text is
//! decoded ([`decode`]), repaired ([`repair`]: odd versions, odd Atom
//! types, bare `&`, entities), read by feed-rs, and where feed-rs refuses
//! the document or finds fewer items than it has, the tolerant reader
//! ([`loose`]) recovers the rest: an odd feed loses no item. No input makes
//! it panic; a dependency that panics all the same fails the poll, not the
//! daemon.

mod decode;
mod loose;
mod repair;

pub use decode::decode;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::record::Fields;

/// The fields of every feed item, beside a source's constant `fields`.
pub const FIELDS: [&str; 10] = [
    "id",
    "title",
    "summary",
    "content",
    "link",
    "published",
    "updated",
    "authors",
    "categories",
    "feed_title",
];

/// One feed item.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// guid/id, else the link (when no other item has it), else a hash of
    /// what the item says (title, link, dates, summary, content, enclosure).
    pub id: String,
    /// Other ids this item has had or would have (an item without a guid):
    /// its link while another item shares it, its content hash while the
    /// link is its own, the id earlier versions gave it. A feed tracker
    /// that knows the item under one of them does not take it for new.
    pub aliases: Vec<String>,
    /// Published, else updated: what `backfill` looks at.
    pub date: Option<DateTime<Utc>>,
    pub fields: Fields,
}

/// What a document says of one item, before its id is settled.
#[derive(Default)]
struct Raw {
    guid: Option<String>,
    title: Option<String>,
    link: Option<String>,
    summary: Option<String>,
    content: Option<String>,
    published: Option<DateTime<Utc>>,
    updated: Option<DateTime<Utc>>,
    authors: Vec<String>,
    categories: Vec<String>,
    enclosure: Option<String>,
}

/// Parses a feed document. `content_type` is the server's Content-Type
/// (its `charset` is used when the document does not say); `base` is the
/// URL relative links resolve against.
pub fn parse(bytes: &[u8], content_type: Option<&str>, base: &str) -> Result<Vec<Item>, String> {
    guarded(|| {
        injected_panic(bytes);
        read(bytes, content_type, base)
    })
}

/// `f`, with a panic (a dependency's bug) made an error: the poll fails,
/// its source's health counts it, and polling goes on.
fn guarded<T>(f: impl FnOnce() -> Result<T, String> + std::panic::UnwindSafe) -> Result<T, String> {
    std::panic::catch_unwind(f).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(format!(
            "the feed reader failed on this document ({why}); the poll counts as failed, the next one reads the next document"
        ))
    })
}

/// Debug builds only: with `TOCSIN_FEED_PANIC_ON=<text>` the reader panics
/// on a document that contains the text, as a dependency's bug would; the
/// tests show what the daemon does then.
#[cfg(debug_assertions)]
fn injected_panic(bytes: &[u8]) {
    if let Some(m) = std::env::var_os("TOCSIN_FEED_PANIC_ON") {
        let m = m.as_encoded_bytes();
        if !m.is_empty() && bytes.windows(m.len()).any(|w| w == m) {
            panic!("injected by TOCSIN_FEED_PANIC_ON");
        }
    }
}

#[cfg(not(debug_assertions))]
fn injected_panic(_: &[u8]) {}

fn read(bytes: &[u8], content_type: Option<&str>, base: &str) -> Result<Vec<Item>, String> {
    let text = decode(bytes, content_type)?;
    let json = text.trim_start().starts_with('{');
    let base_url = url::Url::parse(base).ok();
    let parser = feed_rs::parser::Builder::new()
        .base_uri(Some(base))
        // Our own ids are settled below.
        .id_generator(|_, _, _| String::new())
        .build();
    let entries = |feed: feed_rs::model::Feed| {
        let title = feed.title.as_ref().map(|t| t.content.trim().to_string());
        let raws: Vec<Raw> = feed
            .entries
            .into_iter()
            .map(|e| from_entry(e, base_url.as_ref()))
            .collect();
        (raws, title)
    };
    if json {
        let feed = parser
            .parse(text.as_bytes())
            .map_err(|e| describe_error(&e))?;
        let (raws, title) = entries(feed);
        return Ok(finish(raws, title));
    }
    let doc = repair::repair(&atom03_as_atom10(text));
    let strict = parser
        .parse(doc.text.as_bytes())
        .map_err(|e| describe_error(&e));
    let (mut raws, title, failed) = match strict {
        Ok(feed) => {
            let (raws, title) = entries(feed);
            (raws, title, None)
        }
        Err(e) => (Vec::new(), None, Some(e)),
    };
    // Items feed-rs passed over (or all, when it refused the document).
    if raws.len() < doc.items {
        let loose = loose::items(&doc.text);
        if let Some(e) = failed.filter(|_| loose.is_empty()) {
            return Err(e);
        }
        let seen: std::collections::HashSet<String> = raws.iter().map(raw_key).collect();
        raws.extend(
            loose
                .into_iter()
                .map(|l| from_loose(l, base_url.as_ref()))
                .filter(|r| !seen.contains(&raw_key(r))),
        );
        let title = title.or_else(|| loose_title(&doc.text));
        return Ok(finish(raws, title));
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(finish(raws, title)),
    }
}

/// What tells two reads of one item apart: its guid, link or title.
fn raw_key(r: &Raw) -> String {
    r.guid
        .clone()
        .or_else(|| r.link.clone())
        .or_else(|| r.title.clone())
        .or_else(|| r.summary.clone())
        .unwrap_or_default()
}

/// The feed's title as the tolerant reader finds it (the first `<title>`).
fn loose_title(text: &str) -> Option<String> {
    let start = text.find("<title")?;
    let open = start + text[start..].find('>')? + 1;
    let end = open + text[open..].find("</title")?;
    let t = quick_xml::escape::unescape(&text[open..end]).ok()?;
    Some(t.trim().to_string())
}

fn from_entry(e: feed_rs::model::Entry, base: Option<&url::Url>) -> Raw {
    // The item's own page: an alternate (or unqualified) link. Comments,
    // enclosures and the like are not the item's link.
    let link = e
        .links
        .iter()
        .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate") && l.target.is_none())
        .map(|l| resolve(base, &l.href));
    let enclosure = e
        .media
        .iter()
        .flat_map(|m| m.content.iter())
        .find_map(|c| c.url.as_ref().map(|u| u.to_string()))
        .or_else(|| {
            e.links
                .iter()
                .find(|l| l.rel.as_deref() == Some("enclosure"))
                .map(|l| resolve(base, &l.href))
        });
    Raw {
        guid: Some(e.id.trim().to_string()).filter(|g| !g.is_empty()),
        title: e.title.map(|t| t.content.trim().to_string()),
        link,
        summary: e.summary.map(|t| t.content.trim().to_string()),
        content: e.content.and_then(|c| c.body).map(|b| b.trim().to_string()),
        published: e.published,
        updated: e.updated,
        authors: e
            .authors
            .iter()
            .filter_map(|p| p.name.clone().or(p.email.clone()))
            // RSS writes `email (Name)`.
            .map(|n| {
                n.trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .trim()
                    .to_string()
            })
            .collect(),
        categories: e
            .categories
            .iter()
            .map(|c| c.label.clone().unwrap_or_else(|| c.term.clone()))
            .collect(),
        enclosure,
    }
}

fn from_loose(l: loose::Loose, base: Option<&url::Url>) -> Raw {
    let date = |s: Option<String>| {
        let s = s?;
        let s = s.trim();
        DateTime::parse_from_rfc3339(s)
            .or_else(|_| DateTime::parse_from_rfc2822(s))
            .ok()
            .map(|d| d.with_timezone(&Utc))
    };
    Raw {
        guid: l.id,
        title: l.title,
        link: l.link.or(l.permalink).map(|h| resolve(base, &h)),
        summary: l.summary,
        content: l.content,
        published: date(l.published),
        updated: date(l.updated),
        authors: l.authors,
        categories: l.categories,
        enclosure: l.enclosure.map(|h| resolve(base, &h)),
    }
}

/// Items with their ids settled and fields filled.
fn finish(raws: Vec<Raw>, feed_title: Option<String>) -> Vec<Item> {
    let count = |f: &dyn Fn(&Raw) -> Option<String>| {
        let mut n: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for r in raws.iter().filter(|r| r.guid.is_none()) {
            if let Some(k) = f(r) {
                *n.entry(k).or_default() += 1;
            }
        }
        n
    };
    // Without a guid, a link is the id only when no other item has it.
    let links = count(&|r: &Raw| r.link.clone());
    raws.into_iter()
        .map(|r| {
            let (id, aliases) = match &r.guid {
                Some(g) => (g.clone(), Vec::new()),
                None => {
                    let hash = content_hash(&r);
                    let id = match &r.link {
                        Some(l) if links.get(l) == Some(&1) => l.clone(),
                        _ => hash.clone(),
                    };
                    let mut aliases: Vec<String> = [r.link.clone(), Some(hash), Some(legacy(&r))]
                        .into_iter()
                        .flatten()
                        .filter(|a| *a != id)
                        .collect();
                    aliases.dedup();
                    (id, aliases)
                }
            };
            let ts = |t: Option<DateTime<Utc>>| {
                t.map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
                    .unwrap_or(Value::Null)
            };
            let text = |s: Option<String>| s.map(Value::String).unwrap_or(Value::Null);
            let mut fields = Fields::new();
            fields.insert("id".into(), Value::String(id.clone()));
            fields.insert("title".into(), text(r.title));
            fields.insert("summary".into(), text(r.summary));
            fields.insert("content".into(), text(r.content));
            fields.insert("link".into(), text(r.link));
            fields.insert("published".into(), ts(r.published));
            fields.insert("updated".into(), ts(r.updated));
            fields.insert("authors".into(), json!(r.authors));
            fields.insert("categories".into(), json!(r.categories));
            fields.insert("feed_title".into(), text(feed_title.clone()));
            Item {
                id,
                aliases,
                date: r.published.or(r.updated),
                fields,
            }
        })
        .collect()
}

/// The id of an item without a guid: a hash of what it says.
fn content_hash(r: &Raw) -> String {
    let mut h = Sha256::new();
    for part in [
        r.title.as_deref(),
        r.link.as_deref(),
        r.published.map(|d| d.to_rfc3339()).as_deref(),
        r.updated.map(|d| d.to_rfc3339()).as_deref(),
        r.summary.as_deref(),
        r.content.as_deref(),
        r.enclosure.as_deref(),
    ] {
        h.update(part.unwrap_or_default().as_bytes());
        h.update([0]);
    }
    super::table::hash_id(&h.finalize())
}

/// The id earlier versions gave an item without a guid: its link, else
/// a hash of its title and date (the same for all items that have neither).
fn legacy(r: &Raw) -> String {
    if let Some(l) = &r.link {
        return l.clone();
    }
    let mut h = Sha256::new();
    h.update(r.title.as_deref().unwrap_or("").as_bytes());
    h.update([0]);
    h.update(
        r.published
            .or(r.updated)
            .map(|d| d.to_rfc3339())
            .unwrap_or_default()
            .as_bytes(),
    );
    super::table::hash_id(&h.finalize())
}

/// Atom 0.3 is read as Atom 1.0 under its old names: the namespace, and
/// `issued`/`modified`/`tagline` for `published`/`updated`/`subtitle`.
fn atom03_as_atom10(text: String) -> String {
    const OLD_NS: &str = "http://purl.org/atom/ns#";
    let head = &text[..text.floor_char_boundary(2048)];
    if !head.contains(OLD_NS) {
        return text;
    }
    let mut t = text.replacen(OLD_NS, "http://www.w3.org/2005/Atom", 1);
    for (old, new) in [
        ("issued", "published"),
        ("modified", "updated"),
        ("tagline", "subtitle"),
    ] {
        t = t
            .replace(&format!("<{old}>"), &format!("<{new}>"))
            .replace(&format!("<{old} "), &format!("<{new} "))
            .replace(&format!("</{old}>"), &format!("</{new}>"));
    }
    t
}

fn resolve(base: Option<&url::Url>, href: &str) -> String {
    let href = href.trim();
    match base {
        Some(b) => b
            .join(href)
            .map(String::from)
            .unwrap_or_else(|_| href.to_string()),
        None => href.to_string(),
    }
}

fn describe_error(e: &feed_rs::parser::ParseFeedError) -> String {
    use feed_rs::parser::{ParseErrorKind, ParseFeedError};
    match e {
        ParseFeedError::ParseError(ParseErrorKind::NoFeedRoot) => {
            "not a feed: no RSS, Atom or JSON Feed document found".into()
        }
        ParseFeedError::JsonUnsupportedVersion(v) => {
            format!("not a feed: JSON Feed version `{v}` is not supported (1.0 and 1.1 are)")
        }
        ParseFeedError::JsonSerde(e) => format!("not a valid JSON Feed: {e}"),
        other => format!("not a valid feed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_the_reader_is_an_error() {
        let e = guarded::<()>(|| panic!("boom")).unwrap_err();
        assert!(
            e.contains("boom") && e.contains("poll counts as failed"),
            "{e}"
        );
        let e = guarded::<()>(|| panic!("{}", String::from("owned"))).unwrap_err();
        assert!(e.contains("owned"), "{e}");
    }

    /// `check` refuses rules over feeds that name other fields: the list
    /// must be what items have.
    #[test]
    fn items_have_the_declared_fields() {
        let doc = b"<rss version=\"2.0\"><channel><title>T</title><item><title>x</title><guid>1</guid></item></channel></rss>";
        let items = parse(doc, None, "http://example.org/").unwrap();
        let names: Vec<&str> = items[0].fields.keys().map(String::as_str).collect();
        assert_eq!(names, FIELDS);
    }
}
