//! A tolerant item reader: the fallback when feed-rs refuses a document,
//! or finds fewer items in it than it has `<item>`/`<entry>` elements. It
//! reads quick-xml's events without checking that end tags match and stops
//! at the first error, keeping the items read before it (a document cut
//! short keeps the items it finished).

use quick_xml::events::Event;

/// What the reader found of one item, as text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loose {
    pub id: Option<String>,
    pub title: Option<String>,
    pub link: Option<String>,
    /// The permalink `<guid>`, for a link when there is none.
    pub permalink: Option<String>,
    pub published: Option<String>,
    pub updated: Option<String>,
    pub summary: Option<String>,
    pub content: Option<String>,
    pub enclosure: Option<String>,
    pub authors: Vec<String>,
    pub categories: Vec<String>,
}

/// The items of a (repaired) document.
pub fn items(text: &str) -> Vec<Loose> {
    let mut reader = super::repair::lenient(text);
    let mut out = Vec::new();
    let mut item: Option<Loose> = None;
    // The element whose text is being read, inside an item.
    let mut field: Option<String> = None;
    let mut depth_in_field = 0usize;
    let mut text = String::new();
    loop {
        let ev = match reader.read_event() {
            Ok(Event::Eof) | Err(_) => break,
            Ok(e) => e,
        };
        match ev {
            Event::Start(s) | Event::Empty(s) if is_item(&s) => {
                if let Some(done) = item.take() {
                    out.push(done);
                }
                let mut it = Loose::default();
                for a in s.attributes().with_checks(false).flatten() {
                    if a.key.into_inner() == "rdf:about" {
                        it.id = Some(a.value.trim().to_string());
                    }
                }
                item = Some(it);
                field = None;
            }
            Event::End(e)
                if item.is_some()
                    && matches!(local_name(e.name().into_inner()), "item" | "entry") =>
            {
                if let Some(done) = item.take() {
                    out.push(done);
                }
                field = None;
            }
            // A document that closes its channel or root with an item still
            // open ended that item all the same.
            Event::End(e)
                if item.is_some()
                    && field.is_none()
                    && matches!(
                        local_name(e.name().into_inner()),
                        "channel" | "rss" | "feed" | "RDF"
                    ) =>
            {
                out.extend(item.take());
            }
            Event::Start(s) if item.is_some() => {
                if field.is_some() {
                    depth_in_field += 1;
                    // Markup inside a field (HTML content) is its text.
                    text.push('<');
                    text.push_str(s.name().into_inner());
                    text.push('>');
                    continue;
                }
                if let Some(it) = item.as_mut() {
                    attributes(it, &s);
                }
                field = Some(s.name().into_inner().to_string());
                depth_in_field = 0;
                text.clear();
            }
            Event::Empty(s) if item.is_some() && field.is_none() => {
                if let Some(it) = item.as_mut() {
                    attributes(it, &s);
                }
            }
            Event::End(e) if field.is_some() => {
                if depth_in_field > 0 {
                    depth_in_field -= 1;
                    text.push_str("</");
                    text.push_str(e.name().into_inner());
                    text.push('>');
                    continue;
                }
                if let (Some(it), Some(name)) = (item.as_mut(), field.take()) {
                    set(it, &name, text.trim());
                }
                text.clear();
            }
            Event::Text(t) if field.is_some() => {
                let raw = t.xml10_content();
                match quick_xml::escape::unescape(&raw) {
                    Ok(u) => text.push_str(&u),
                    Err(_) => text.push_str(&raw),
                }
            }
            Event::CData(c) if field.is_some() => text.push_str(&c.xml10_content()),
            Event::GeneralRef(r) if field.is_some() => {
                let name = r.into_inner().to_string();
                match quick_xml::escape::unescape(&format!("&{name};")) {
                    Ok(u) => text.push_str(&u),
                    Err(_) => {
                        text.push('&');
                        text.push_str(&name);
                        text.push(';');
                    }
                }
            }
            _ => {}
        }
    }
    // An item the document stopped in the middle of is left out: what it
    // says is not known yet, and its id could differ once it is whole.
    out
}

fn local_name(n: &str) -> &str {
    match n.rfind(':') {
        Some(i) => &n[i + 1..],
        None => n,
    }
}

fn is_item(s: &quick_xml::events::BytesStart) -> bool {
    matches!(local_name(s.name().into_inner()), "item" | "entry")
}

/// What attributes of an element inside an item say: Atom's
/// `<link href rel>`, an `<enclosure url>`, a `<category term>`.
fn attributes(it: &mut Loose, s: &quick_xml::events::BytesStart) {
    let name = s.name().into_inner();
    let attr = |k: &str| {
        s.attributes()
            .with_checks(false)
            .flatten()
            .find(|a| a.key.into_inner() == k)
            .map(|a| {
                quick_xml::escape::unescape(&a.value)
                    .map(|v| v.trim().to_string())
                    .unwrap_or_else(|_| a.value.trim().to_string())
            })
    };
    match local_name(name) {
        "link" => {
            if let Some(href) = attr("href") {
                let rel = attr("rel");
                match rel.as_deref() {
                    None | Some("alternate") if it.link.is_none() => it.link = Some(href),
                    Some("enclosure") if it.enclosure.is_none() => it.enclosure = Some(href),
                    _ => {}
                }
            }
        }
        "enclosure" if it.enclosure.is_none() => it.enclosure = attr("url"),
        "category" => {
            if let Some(t) = attr("label").or_else(|| attr("term")) {
                it.categories.push(t);
            }
        }
        _ => {}
    }
}

fn set(it: &mut Loose, name: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    let v = Some(value.to_string());
    match local_name(name) {
        "title" if it.title.is_none() => it.title = v,
        "link" if it.link.is_none() => it.link = v,
        "guid" => {
            if it.id.is_none() {
                it.id = v.clone();
            }
            if value.starts_with("http://") || value.starts_with("https://") {
                it.permalink = v;
            }
        }
        "id" if it.id.is_none() => it.id = v,
        "pubDate" | "published" | "issued" | "date" if it.published.is_none() => it.published = v,
        "updated" | "modified" if it.updated.is_none() => it.updated = v,
        "description" | "summary" if it.summary.is_none() => it.summary = v,
        "encoded" | "content" if it.content.is_none() => it.content = v,
        "author" | "creator" => it.authors.push(value.to_string()),
        "category" | "subject" => it.categories.push(value.to_string()),
        _ => {}
    }
}
