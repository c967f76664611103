//! Feed documents (RSS 0.9x/1.0/2.0, Atom 0.3/1.0, JSON Feed 1.x, parsed
//! by feed-rs) turned into items: the fields of DESIGN.md and a stable id.
//!
//! Pure: bytes in, items out. The text is decoded first by its byte order
//! mark, its XML declaration or the server's `charset`, so feeds in UTF-16,
//! ISO-8859-x, Windows-125x, Shift_JIS or Big5 read as well as UTF-8 ones.

use chrono::{DateTime, Utc};
use encoding_rs::Encoding;
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
    /// guid/id, else the link, else a hash of title and date.
    pub id: String,
    /// Published, else updated: what `backfill` looks at.
    pub date: Option<DateTime<Utc>>,
    pub fields: Fields,
}

/// Parses a feed document. `content_type` is the server's Content-Type
/// (its `charset` is used when the document does not say); `base` is the
/// URL relative links resolve against.
pub fn parse(bytes: &[u8], content_type: Option<&str>, base: &str) -> Result<Vec<Item>, String> {
    let text = decode(bytes, content_type)?;
    let text = atom03_as_atom10(text);
    let parser = feed_rs::parser::Builder::new()
        .base_uri(Some(base))
        // Our own fallback (link, else title and date) is applied below.
        .id_generator(|_, _, _| String::new())
        .build();
    let feed = parser
        .parse(text.as_bytes())
        .map_err(|e| describe_error(&e))?;
    let base_url = url::Url::parse(base).ok();
    let feed_title = feed.title.as_ref().map(|t| t.content.trim().to_string());
    let mut items = Vec::with_capacity(feed.entries.len());
    for e in feed.entries {
        let link = e
            .links
            .iter()
            .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
            .or(e.links.first())
            .map(|l| resolve(base_url.as_ref(), &l.href));
        let title = e.title.map(|t| t.content.trim().to_string());
        let date = e.published.or(e.updated);
        let id = match e.id.trim() {
            "" => match &link {
                Some(l) => l.clone(),
                None => {
                    let mut h = Sha256::new();
                    h.update(title.as_deref().unwrap_or("").as_bytes());
                    h.update([0]);
                    h.update(date.map(|d| d.to_rfc3339()).unwrap_or_default().as_bytes());
                    let d = h.finalize();
                    format!(
                        "sha256:{}",
                        d[..12]
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<String>()
                    )
                }
            },
            id => id.to_string(),
        };
        let ts = |t: Option<DateTime<Utc>>| {
            t.map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
                .unwrap_or(Value::Null)
        };
        let text = |s: Option<String>| s.map(Value::String).unwrap_or(Value::Null);
        let mut fields = Fields::new();
        fields.insert("id".into(), Value::String(id.clone()));
        fields.insert("title".into(), text(title));
        fields.insert(
            "summary".into(),
            text(e.summary.map(|t| t.content.trim().to_string())),
        );
        fields.insert(
            "content".into(),
            text(e.content.and_then(|c| c.body).map(|b| b.trim().to_string())),
        );
        fields.insert("link".into(), text(link));
        fields.insert("published".into(), ts(e.published));
        fields.insert("updated".into(), ts(e.updated));
        fields.insert(
            "authors".into(),
            json!(
                e.authors
                    .iter()
                    .filter_map(|p| p.name.clone().or(p.email.clone()))
                    // RSS writes `email (Name)`.
                    .map(|n| n
                        .trim()
                        .trim_start_matches('(')
                        .trim_end_matches(')')
                        .trim()
                        .to_string())
                    .collect::<Vec<_>>()
            ),
        );
        fields.insert(
            "categories".into(),
            json!(
                e.categories
                    .iter()
                    .map(|c| c.label.clone().unwrap_or_else(|| c.term.clone()))
                    .collect::<Vec<_>>()
            ),
        );
        fields.insert("feed_title".into(), text(feed_title.clone()));
        items.push(Item { id, date, fields });
    }
    Ok(items)
}

/// Atom 0.3 is read as Atom 1.0 under its old names: the namespace, and
/// `issued`/`modified`/`tagline` for `published`/`updated`/`subtitle`.
fn atom03_as_atom10(text: String) -> String {
    const OLD_NS: &str = "http://purl.org/atom/ns#";
    let head = &text[..text.len().min(2048)];
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

/// The document as UTF-8, by (in order) its byte order mark, the encoding
/// its XML declaration names, the server's charset, else UTF-8, else
/// Windows-1252 when it is not valid UTF-8 (the usual mislabelled feed).
pub fn decode(bytes: &[u8], content_type: Option<&str>) -> Result<String, String> {
    let (enc, skip) = match Encoding::for_bom(bytes) {
        Some((enc, n)) => (enc, n),
        None => (sniff(bytes, content_type), 0),
    };
    let body = &bytes[skip..];
    if enc == encoding_rs::UTF_8
        && let Ok(s) = simdutf8::basic::from_utf8(body)
    {
        return Ok(s.to_string());
    }
    let enc = if enc == encoding_rs::UTF_8 {
        encoding_rs::WINDOWS_1252
    } else {
        enc
    };
    let (text, _) = enc.decode_without_bom_handling(body);
    // The declaration still names the old encoding; feed-rs would decode a
    // second time by it, so it now says UTF-8.
    Ok(redeclare_utf8(&text))
}

/// Which encoding a document without a byte order mark is in.
fn sniff(bytes: &[u8], content_type: Option<&str>) -> &'static Encoding {
    match bytes {
        [0x3C, 0, 0x3F, 0, ..] | [b'{', 0, ..] => return encoding_rs::UTF_16LE,
        [0, 0x3C, 0, 0x3F, ..] | [0, b'{', ..] => return encoding_rs::UTF_16BE,
        _ => {}
    }
    if let Some(label) = declared_encoding(bytes)
        && let Some(enc) = Encoding::for_label(label.as_bytes())
    {
        // A declaration readable as ASCII that says UTF-16 is wrong about
        // it (UTF-16 needs a byte order mark): `output_encoding` makes it UTF-8.
        return enc.output_encoding();
    }
    if let Some(ct) = content_type
        && let Some(cs) = ct
            .split(';')
            .skip(1)
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("charset"))
            .map(|(_, v)| v.trim().trim_matches('"'))
        && let Some(enc) = Encoding::for_label(cs.as_bytes())
    {
        return enc;
    }
    encoding_rs::UTF_8
}

/// The `encoding="..."` of an XML declaration at the start of the document.
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(512)];
    let head = String::from_utf8_lossy(head);
    let head = head.trim_start();
    if !head.starts_with("<?xml") {
        return None;
    }
    let decl = &head[..head.find("?>")?];
    let at = decl.find("encoding")?;
    let rest = decl[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?;
    let rest = rest.trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = &rest[1..];
    Some(rest[..rest.find(quote)?].to_string())
}

fn redeclare_utf8(text: &str) -> String {
    let trimmed = text.trim_start();
    if trimmed.starts_with("<?xml")
        && let Some(end) = trimmed.find("?>")
    {
        let decl = &trimmed[..end];
        let fixed = match decl.find("encoding") {
            Some(at) => {
                let after = &decl[at..];
                let close = after
                    .char_indices()
                    .skip_while(|(_, c)| *c != '"' && *c != '\'')
                    .skip(1)
                    .find(|(_, c)| *c == '"' || *c == '\'')
                    .map(|(i, _)| at + i + 1)
                    .unwrap_or(decl.len());
                format!("{}encoding=\"UTF-8\"{}", &decl[..at], &decl[close..])
            }
            None => decl.to_string(),
        };
        return format!("{fixed}{}", &trimmed[end..]);
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check` refuses rules over feeds that name other fields: the list
    /// must be what items have.
    #[test]
    fn items_have_the_declared_fields() {
        let doc = b"<rss version=\"2.0\"><channel><title>T</title><item><title>x</title><guid>1</guid></item></channel></rss>";
        let items = parse(doc, None, "http://example.org/").unwrap();
        let names: Vec<&str> = items[0].fields.keys().map(String::as_str).collect();
        assert_eq!(names, FIELDS);
    }

    #[test]
    fn declarations_are_read_and_rewritten() {
        let doc = b"<?xml version=\"1.0\" encoding='ISO-8859-1'?><rss/>";
        assert_eq!(declared_encoding(doc).as_deref(), Some("ISO-8859-1"));
        assert_eq!(
            redeclare_utf8("<?xml version=\"1.0\" encoding='ISO-8859-1'?><rss/>"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss/>"
        );
        assert_eq!(declared_encoding(b"<rss/>"), None);
    }

    #[test]
    fn charset_from_the_server_when_the_document_is_silent() {
        let bytes = b"<rss version=\"2.0\"><channel><title>Caf\xe9</title></channel></rss>";
        let s = decode(bytes, Some("application/rss+xml; charset=ISO-8859-1")).unwrap();
        assert!(s.contains("Café"), "{s}");
        // No charset anywhere and not UTF-8: Windows-1252.
        let s = decode(bytes, None).unwrap();
        assert!(s.contains("Café"), "{s}");
    }
}
