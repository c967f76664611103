//! A lenient pass over an XML feed before feed-rs reads it, on quick-xml's
//! token stream: what real feeds get wrong, made into what feed-rs reads.
//!
//! - anything before the XML declaration dropped, the declaration made to
//!   say UTF-8 (the text was decoded already);
//! - `<rss>` of any version (0.93, 0.94, 2.01, none) read as RSS 2.0, a
//!   missing `<channel>` supplied, the Userland namespace dropped; RSS 0.90
//!   read as RSS 1.0;
//! - Atom text constructs with a `type` feed-rs refuses: `text/plain` and
//!   empty are text, XML types with element content are kept as HTML text,
//!   `mode="base64"` is decoded;
//! - an item without `<link>` takes its `rdf:about` (RSS 1.0) or its
//!   permalink `<guid>` (RSS 2.0);
//! - internal DTD entities expanded (at most [`ENTITY_BUDGET`] bytes in
//!   all), unknown entities and bare `&` kept as text.
//!
//! What the pass cannot read (a document cut short) it writes as far as it
//! got: the item reader after feed-rs recovers the items there.

use std::collections::HashMap;

use quick_xml::Reader;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesDecl, BytesEnd, BytesRef, BytesStart, BytesText, Event};
use quick_xml::name::QName;

/// Bytes that internal entities may expand to, in all: a billion laughs
/// stops here.
pub const ENTITY_BUDGET: usize = 1 << 20;

const RSS1: &str = "http://purl.org/rss/1.0/";
const RSS090: &str = "http://my.netscape.com/rdf/simple/0.9/";

/// A repaired document.
pub struct Repaired {
    pub text: String,
    /// Its `<item>`/`<entry>` elements.
    pub items: usize,
}

/// The repaired document.
pub fn repair(text: &str) -> Repaired {
    // What comes before the declaration (a comment, a blank line, a byte
    // order mark decoded as text) is not allowed there.
    let text = match text[..text.floor_char_boundary(1024)].find("<?xml") {
        Some(i) => &text[i..],
        None => text,
    };
    let events = read(text);
    let ends = closings(&events);
    let atom = events.iter().any(|e| start_named(e, "feed"));
    let rss = events.iter().any(|e| start_named(e, "rss"));
    let has_channel = events.iter().any(|e| start_named(e, "channel"));
    let mut out = Vec::with_capacity(events.len() + 8);
    let mut entities: HashMap<String, String> = HashMap::new();
    let mut budget = ENTITY_BUDGET;
    // The link an item lacks, written before the item's end (at that index).
    let mut pending_link: Option<(usize, String)> = None;
    // Inside an RSS element feed-rs reads as `email (Name)`.
    let mut open_person = false;
    let mut items = 0;
    let mut i = 0;
    while i < events.len() {
        if let Some((at, link)) = pending_link.take_if(|(at, _)| *at == i) {
            debug_assert_eq!(at, i);
            out.push(Event::Start(BytesStart::new("link")));
            out.push(Event::Text(BytesText::new(&link).into_owned()));
            out.push(Event::End(BytesEnd::new("link")));
        }
        let e = &events[i];
        i += 1;
        match e {
            Event::Start(s) => open_person = PERSON.contains(&s.name().into_inner()),
            Event::End(_) => open_person = false,
            _ => {}
        }
        match e {
            Event::Text(t) if open_person => out.push(text_event(&person_text(&t.xml10_content()))),
            Event::DocType(d) => entities.extend(internal_entities(&d.xml10_content())),
            Event::Text(t) => out.push(text_event(&t.xml10_content())),
            Event::GeneralRef(r) => out.push(reference(r, &entities, &mut budget)),
            Event::Start(s) if rss && local(s) == "rss" => {
                out.push(Event::Start(rss_root(s)));
                if !has_channel {
                    out.push(Event::Start(BytesStart::new("channel")));
                }
            }
            Event::Empty(s) if rss && local(s) == "rss" => out.push(Event::Empty(rss_root(s))),
            Event::End(end) if rss && end.local_name().as_ref() == "rss" => {
                if !has_channel {
                    out.push(Event::End(BytesEnd::new("channel")));
                }
                out.push(e.clone());
            }
            Event::Start(s) | Event::Empty(s) if local(s) == "RDF" => {
                let s = fix_attrs(s, |k, v| {
                    (k == "xmlns" && v == RSS090).then(|| RSS1.to_string())
                });
                out.push(match e {
                    Event::Start(_) => Event::Start(s),
                    _ => Event::Empty(s),
                });
            }
            Event::Start(s) if atom && text_construct(local(s)) => {
                let end = ends[i - 1];
                out.extend(atom_text(s, &events[i..end]));
                i = (end + 1).min(events.len());
            }
            Event::Start(s) if matches!(local(s), "item" | "entry") => {
                let end = ends[i - 1];
                items += 1;
                out.push(Event::Start(fix_attrs(s, |_, _| None)));
                pending_link = item_link(s, &events[i..end]).map(|l| (end, l));
            }
            Event::Start(s) => out.push(Event::Start(fix_attrs(s, |_, _| None))),
            Event::Empty(s) => {
                items += usize::from(matches!(local(s), "item" | "entry"));
                out.push(Event::Empty(fix_attrs(s, |_, _| None)))
            }
            other => out.push(other.clone()),
        }
    }
    Repaired {
        text: write(&out),
        items,
    }
}

/// A reference: an internal entity expanded while the budget lasts, a
/// predefined one kept, any other kept as the text it is.
fn reference(
    r: &BytesRef,
    entities: &HashMap<String, String>,
    budget: &mut usize,
) -> Event<'static> {
    let name: &str = r;
    match entities.get(name) {
        Some(v) if v.len() <= *budget => {
            *budget -= v.len();
            Event::Text(BytesText::new(v).into_owned())
        }
        _ if predefined(name) => Event::GeneralRef(r.clone().into_owned()),
        _ => Event::Text(BytesText::from_escaped(format!("&amp;{name};"))),
    }
}

/// RSS elements feed-rs reads as a person, `email (Name)`.
const PERSON: [&str; 3] = ["author", "managingEditor", "webMaster"];

/// A person's text with a space between an email address and a non-ASCII
/// character next to it: feed-rs cuts the name one byte from the address
/// and panics inside such a character.
fn person_text(raw: &str) -> String {
    let local = |c: char| c.is_ascii_alphanumeric() || "._%+-<[(:".contains(c);
    let domain = |c: char| c.is_ascii_alphanumeric() || ".->])".contains(c);
    let chars: Vec<char> = raw.chars().collect();
    let mut space_before = vec![false; chars.len() + 1];
    for (at, _) in chars.iter().enumerate().filter(|(_, c)| **c == '@') {
        let start = chars[..at]
            .iter()
            .rposition(|c| !local(*c))
            .map_or(0, |p| p + 1);
        let end = chars[at + 1..]
            .iter()
            .position(|c| !domain(*c))
            .map_or(chars.len(), |p| at + 1 + p);
        if start > 0 && !chars[start - 1].is_ascii() {
            space_before[start] = true;
        }
        if end < chars.len() && !chars[end].is_ascii() {
            space_before[end] = true;
        }
    }
    let mut out = String::with_capacity(raw.len() + 2);
    for (c, space) in chars.iter().zip(&space_before) {
        if *space {
            out.push(' ');
        }
        out.push(*c);
    }
    out
}

/// A reader that lets pass what feeds get wrong: a bare `&`, end tags
/// that do not match, an end tag too many.
pub fn lenient(text: &str) -> Reader<&[u8]> {
    let mut reader = Reader::from_str(text);
    let c = reader.config_mut();
    c.allow_dangling_amp = true;
    c.check_end_names = false;
    c.allow_unmatched_ends = true;
    reader
}

/// Every event the reader gives, up to the end or the first error.
fn read(text: &str) -> Vec<Event<'static>> {
    let mut reader = lenient(text);
    let mut events = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Eof) | Err(_) => return events,
            // The text is decoded: the declaration says UTF-8. One later
            // in the document (which XML does not allow) is dropped, or
            // the parser would switch encodings in the middle.
            Ok(Event::Decl(_)) if events.is_empty() => {
                events.push(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
            }
            Ok(Event::Decl(_)) => {}
            Ok(e) => events.push(e.into_owned()),
        }
    }
}

fn write(events: &[Event<'static>]) -> String {
    let mut w = quick_xml::Writer::new(Vec::new());
    for e in events {
        let _ = w.write_event(e.borrow());
    }
    String::from_utf8(w.into_inner()).unwrap_or_default()
}

fn local<'a>(s: &'a BytesStart) -> &'a str {
    s.local_name().into_inner()
}

fn start_named(e: &Event, name: &str) -> bool {
    matches!(e, Event::Start(s) | Event::Empty(s) if local(s) == name)
}

/// For each event, where the element it opens closes: the index of its
/// End (matched by depth, whatever its name), or the number of events for
/// one left open (and for events that open nothing). One pass: a document
/// of a million unclosed items costs no more than one of a million items.
fn closings(events: &[Event]) -> Vec<usize> {
    let mut ends = vec![events.len(); events.len()];
    let mut open = Vec::new();
    for (j, e) in events.iter().enumerate() {
        match e {
            Event::Start(_) => open.push(j),
            Event::End(_) => {
                if let Some(start) = open.pop() {
                    ends[start] = j;
                }
            }
            _ => {}
        }
    }
    ends
}

/// Text as written, with any `&` that starts no reference escaped.
fn text_event(raw: &str) -> Event<'static> {
    Event::Text(BytesText::from_escaped(fix_amps(raw).into_owned()).into_owned())
}

/// `raw` (escaped XML text) with each `&` that does not start a reference
/// (`&amp;`, `&#38;`, `&#x26;`, `&name;`) written `&amp;`.
pub fn fix_amps(raw: &str) -> std::borrow::Cow<'_, str> {
    if !raw.contains('&') {
        return raw.into();
    }
    let mut out = String::with_capacity(raw.len() + 8);
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if reference_len(rest).is_some() {
            out.push('&');
        } else {
            out.push_str("&amp;");
        }
        rest = &rest[1..];
    }
    out.push_str(rest);
    out.into()
}

/// The length of the reference `s` starts with, if it is one.
fn reference_len(s: &str) -> Option<usize> {
    let body = s.strip_prefix('&')?;
    let end = body.find(';').filter(|&e| e > 0 && e <= 32)?;
    let name = &body[..end];
    let ok = if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
        !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit())
    } else if let Some(dec) = name.strip_prefix('#') {
        !dec.is_empty() && dec.chars().all(|c| c.is_ascii_digit())
    } else {
        name.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
    };
    ok.then_some(end + 2)
}

fn predefined(name: &str) -> bool {
    matches!(name, "amp" | "lt" | "gt" | "quot" | "apos") || name.starts_with('#')
}

/// `<!ENTITY name "value">` declarations of an internal DTD subset.
fn internal_entities(doctype: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = doctype;
    while let Some(i) = rest.find("<!ENTITY") {
        rest = &rest[i + "<!ENTITY".len()..];
        let t = rest.trim_start();
        if t.starts_with('%') {
            continue; // parameter entities are not expanded
        }
        let name: String = t.chars().take_while(|c| !c.is_whitespace()).collect();
        let after = t[name.len()..].trim_start();
        let Some(q) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let Some(end) = after[1..].find(q) else {
            continue;
        };
        if !name.is_empty() && end <= 4096 {
            out.insert(name, after[1..1 + end].to_string());
        }
    }
    out
}

/// `start` with each attribute's value passed through `change` (which
/// gives a new value or none), and bare `&` escaped in all of them.
fn fix_attrs(
    start: &BytesStart,
    mut change: impl FnMut(&str, &str) -> Option<String>,
) -> BytesStart<'static> {
    let mut s = BytesStart::new(start.name().into_inner().to_string());
    for a in start.attributes().with_checks(false).flatten() {
        let key = a.key.into_inner();
        let value = change(key, &a.value).unwrap_or_else(|| fix_amps(&a.value).into_owned());
        s.push_attribute(Attribute {
            key: QName(key),
            value: value.into(),
        });
    }
    s.into_owned()
}

/// `<rss>` as RSS 2.0 whatever its version, without the Userland namespace.
fn rss_root(s: &BytesStart) -> BytesStart<'static> {
    let mut out = BytesStart::new("rss");
    out.push_attribute(("version", "2.0"));
    for a in s.attributes().with_checks(false).flatten() {
        let key = a.key.into_inner();
        let userland = key == "xmlns" && a.value.contains("backend.userland.com");
        if key != "version" && !userland {
            out.push_attribute(Attribute {
                key: QName(key),
                value: fix_amps(&a.value).into_owned().into(),
            });
        }
    }
    out.into_owned()
}

/// Atom's text constructs, whose `type` says how to read them.
fn text_construct(name: &str) -> bool {
    matches!(
        name,
        "title" | "subtitle" | "summary" | "content" | "rights" | "tagline" | "info"
    )
}

/// An Atom text construct feed-rs reads: `type` text, html or xhtml (with
/// its `div`), any other as text or HTML; base64 decoded. `inner` are the
/// events between its start and end.
fn atom_text(start: &BytesStart, inner: &[Event<'static>]) -> Vec<Event<'static>> {
    let attr = |k: &str| {
        start
            .attributes()
            .with_checks(false)
            .flatten()
            .find(|a| a.key.into_inner() == k)
            .map(|a| a.value.to_string())
    };
    let ty = attr("type").unwrap_or_default().trim().to_ascii_lowercase();
    let base64 = attr("mode").is_some_and(|m| m.eq_ignore_ascii_case("base64"));
    let has_elements = inner
        .iter()
        .any(|e| matches!(e, Event::Start(_) | Event::Empty(_)));
    let xhtml_div = inner
        .iter()
        .find(|e| matches!(e, Event::Start(_) | Event::Empty(_)))
        .is_some_and(|e| start_named(e, "div"));
    let name = start.name().into_inner().to_string();
    let standard = matches!(ty.as_str(), "text" | "html" | "xhtml");
    if standard && !base64 && (ty != "xhtml" || xhtml_div) {
        let mut out = vec![Event::Start(fix_attrs(start, |_, _| None))];
        out.extend(inner.iter().cloned().map(|e| match e {
            Event::Text(t) => text_event(&t.xml10_content()),
            other => other,
        }));
        out.push(Event::End(BytesEnd::new(name)));
        return out;
    }
    let (new_type, body) = if base64 {
        let raw: String = inner
            .iter()
            .filter_map(|e| match e {
                Event::Text(t) => Some(t.xml10_content().to_string()),
                Event::CData(c) => Some(c.xml10_content().to_string()),
                _ => None,
            })
            .collect();
        let clean: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(clean.as_bytes())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or(raw);
        let html = ty.contains("html");
        (if html { "html" } else { "text" }, decoded)
    } else if has_elements {
        // XML content (`text/xml`, `application/xhtml+xml` without its
        // `div`): its markup kept as HTML text.
        ("html", write(inner))
    } else {
        let text: String = inner
            .iter()
            .map(|e| match e {
                Event::Text(t) => fix_amps(&t.xml10_content()).into_owned(),
                Event::CData(c) => escape(&c.xml10_content()),
                Event::GeneralRef(r) => format!("&{};", &**r),
                _ => String::new(),
            })
            .collect();
        let html = ty.contains("html");
        let mut s = BytesStart::new(name.clone());
        s.push_attribute(("type", if html { "html" } else { "text" }));
        return vec![
            Event::Start(s),
            Event::Text(BytesText::from_escaped(text).into_owned()),
            Event::End(BytesEnd::new(name)),
        ];
    };
    let mut s = BytesStart::new(name.clone());
    s.push_attribute(("type", new_type));
    vec![
        Event::Start(s.into_owned()),
        Event::Text(BytesText::new(&body).into_owned()),
        Event::End(BytesEnd::new(name)),
    ]
}

fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// The link an item without `<link>` has all the same: its `rdf:about`
/// (RSS 1.0), or its `<guid>` when that is a permalink URL (RSS 2.0).
fn item_link(start: &BytesStart, inner: &[Event<'static>]) -> Option<String> {
    if inner.iter().any(|e| start_named(e, "link")) {
        return None;
    }
    if let Some(about) = start
        .attributes()
        .with_checks(false)
        .flatten()
        .find(|a| a.key.into_inner() == "rdf:about")
    {
        return Some(about.value.to_string());
    }
    let at = inner.iter().position(|e| start_named(e, "guid"))?;
    let Event::Start(g) = &inner[at] else {
        return None;
    };
    let permalink = !g.attributes().with_checks(false).flatten().any(|a| {
        a.key.into_inner() == "isPermaLink" && a.value.trim().eq_ignore_ascii_case("false")
    });
    let text: String = inner[at + 1..]
        .iter()
        .take_while(|e| !matches!(e, Event::End(_)))
        .filter_map(|e| match e {
            Event::Text(t) => Some(t.xml10_content().to_string()),
            Event::CData(c) => Some(c.xml10_content().to_string()),
            _ => None,
        })
        .collect();
    let text = text.trim();
    (permalink && (text.starts_with("http://") || text.starts_with("https://")))
        .then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_next_to_a_wide_character_gets_a_space() {
        assert_eq!(
            person_text("press@policy.exam\u{bb}le.eu (Press)"),
            "press@policy.exam \u{bb}le.eu (Press)"
        );
        assert_eq!(person_text("\u{e9}.x@y.com"), "\u{e9} .x@y.com");
        assert_eq!(person_text("a@b.org (Ren\u{e9})"), "a@b.org (Ren\u{e9})");
        // feed-rs reads either without panicking.
        for raw in ["press@policy.exam\u{bb}le.eu (Press)", "\u{e9}.x@y.com"] {
            let doc = format!(
                "<rss version=\"2.0\"><channel><title>t</title><item><guid>1</guid><author>{raw}</author></item></channel></rss>"
            );
            let r = std::panic::catch_unwind(|| {
                feed_rs::parser::parse(repair(&doc).text.as_bytes()).is_ok()
            });
            assert!(matches!(r, Ok(true)), "{raw}");
        }
    }
}
