//! HTML both ways, as alerts need it: text from feeds and pages read as
//! text (tags dropped, entities decoded), and text put into the HTML part
//! of an email (escaped, so that data never turns into markup). Below the
//! engine and the channels, which both use it.

use std::borrow::Cow;

/// Removes tags (each becomes a space) and decodes common entities.
pub fn strip(text: &str) -> String {
    strip_with(text, " ")
}

/// Text of HTML as shown to people: [`strip`], but inline tags (`<b>`,
/// `<a …>`, `<span>`) go without a trace, `<br>` and block tags end a line,
/// and spaces are folded within each line.
pub fn to_text(text: &str) -> String {
    let stripped = strip_with(text, "\u{1}");
    let mut out = String::with_capacity(stripped.len());
    for line in stripped.lines() {
        let words: Vec<&str> = line
            .split([' ', '\t', '\u{1}'])
            .filter(|w| !w.is_empty())
            .collect();
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    if !text.ends_with('\n') {
        out.pop();
    }
    out
}

/// [`strip`], each tag replaced by `tag` (inline ones by nothing when
/// `tag` is not a space).
fn strip_with(text: &str, tag: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['<', '&']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with('<') {
            // Only treat it as a tag when it looks like one: `<a`, `</a`, `<!`.
            let looks = rest[1..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!');
            match rest.find('>') {
                Some(end) if looks => {
                    let name = rest[1..end].trim_start_matches('/');
                    let name = name.split([' ', '/', '\t', '\n']).next().unwrap_or("");
                    let inline = [
                        "a", "b", "i", "em", "strong", "span", "code", "small", "u", "abbr",
                    ]
                    .iter()
                    .any(|t| name.eq_ignore_ascii_case(t));
                    let breaks = [
                        "br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
                    ]
                    .iter()
                    .any(|t| name.eq_ignore_ascii_case(t));
                    match (tag, inline, breaks) {
                        (" ", ..) => out.push(' '),
                        (_, true, _) => {}
                        (_, _, true) => out.push('\n'),
                        _ => out.push_str(tag),
                    }
                    rest = &rest[end + 1..];
                }
                _ => {
                    out.push('<');
                    rest = &rest[1..];
                }
            }
        } else {
            let end = rest[..rest.len().min(12)].find(';');
            let decoded = end.and_then(|e| decode_entity(&rest[1..e]).map(|c| (c, e)));
            match decoded {
                Some((c, e)) => {
                    out.push(c);
                    rest = &rest[e + 1..];
                }
                None => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "ndash" => '–',
        "mdash" => '—',
        "rsquo" | "lsquo" => '\'',
        "rdquo" | "ldquo" => '"',
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(h) => u32::from_str_radix(h, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)?
        }
    })
}

/// HTML stripped, entities decoded, white space runs folded. Borrowed when
/// there is nothing to do, which is the common case.
pub fn normalize(text: &str) -> Cow<'_, str> {
    // Memchr scans (SIMD) to see whether there is anything to do at all.
    let b = text.as_bytes();
    let html = memchr::memchr2(b'<', b'&', b).is_some();
    static DOUBLE_SPACE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"  "));
    let ws = memchr::memchr3(b'\t', b'\n', b'\r', b).is_some() || DOUBLE_SPACE.find(b).is_some();
    match (html, ws) {
        (false, false) => Cow::Borrowed(text),
        (false, true) => Cow::Owned(fold_ws(text)),
        (true, _) => Cow::Owned(fold_ws(&strip(text))),
    }
}

fn fold_ws(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut ws = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if !ws {
                out.push(' ');
            }
            ws = true;
        } else {
            out.push(c);
            ws = false;
        }
    }
    out
}

/// Text as a person reads it: [`normalize`]d, trimmed, cut after `max`
/// characters (with `…`).
pub fn readable(t: &str, max: usize) -> Cow<'_, str> {
    let text = normalize(t);
    let trimmed = text.trim();
    let cut = trimmed.char_indices().nth(max).map(|(at, _)| at);
    if cut.is_none() && trimmed.len() == text.len() {
        return text;
    }
    let mut out = trimmed[..cut.unwrap_or(trimmed.len())].to_string();
    if cut.is_some() {
        out.push('…');
    }
    Cow::Owned(out)
}

/// `text` with `&`, `<`, `>`, `"` and `'` escaped, for HTML text and
/// attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_go_entities_are_decoded_and_escaping_undoes_markup() {
        assert_eq!(
            strip("<p>Rare&nbsp;earth &amp; <b>more</b></p>"),
            " Rare earth &  more  "
        );
        assert_eq!(strip("a < b && c"), "a < b && c");
        assert_eq!(
            to_text("See <b>the</b> <a href=\"x\">statement</a>.<br>Next&nbsp; line\n"),
            "See the statement.\nNext line\n"
        );
        assert_eq!(
            escape("<script>alert(\"x\")</script> & 'y'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }
}
