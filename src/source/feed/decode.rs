//! A feed document's bytes to text. In order: a byte order mark (UTF-8,
//! UTF-16 or UTF-32) wins; then valid UTF-8 with letters past ASCII wins
//! over what the document declares (a declaration that contradicts the
//! bytes is the usual mistake); then the XML declaration's encoding, the
//! server's `charset`, and last a guess from the bytes (chardetng, the
//! detector Firefox uses), so an undeclared Shift_JIS or EUC feed is not
//! read as Windows-1252.

use encoding_rs::Encoding;

/// The document as UTF-8 text.
pub fn decode(bytes: &[u8], content_type: Option<&str>) -> Result<String, String> {
    if let Some(text) = utf32(bytes) {
        return text;
    }
    if let Some((enc, n)) = Encoding::for_bom(bytes) {
        let (text, _) = enc.decode_without_bom_handling(&bytes[n..]);
        return Ok(text.into_owned());
    }
    match bytes {
        [0x3C, 0, 0x3F, 0, ..] | [b'{', 0, ..] => {
            return Ok(encoding_rs::UTF_16LE
                .decode_without_bom_handling(bytes)
                .0
                .into_owned());
        }
        [0, 0x3C, 0, 0x3F, ..] | [0, b'{', ..] => {
            return Ok(encoding_rs::UTF_16BE
                .decode_without_bom_handling(bytes)
                .0
                .into_owned());
        }
        _ => {}
    }
    if let Ok(s) = simdutf8::basic::from_utf8(bytes)
        && (!s.is_ascii() || declared(bytes).is_none())
    {
        return Ok(s.to_string());
    }
    let enc = declared(bytes)
        .and_then(|label| Encoding::for_label(label.as_bytes()))
        // A declaration readable as ASCII that says UTF-16 is wrong about
        // it (UTF-16 needs a byte order mark): `output_encoding` makes it UTF-8.
        .map(|e| e.output_encoding())
        .or_else(|| charset(content_type))
        .unwrap_or_else(|| guess(bytes));
    let (text, _) = enc.decode_without_bom_handling(bytes);
    Ok(text.into_owned())
}

/// UTF-32, which encoding_rs does not read: by its byte order mark, or by
/// the `<` of a document without one.
fn utf32(bytes: &[u8]) -> Option<Result<String, String>> {
    let (body, le) = match bytes {
        [0xFF, 0xFE, 0, 0, ..] => (&bytes[4..], true),
        [0, 0, 0xFE, 0xFF, ..] => (&bytes[4..], false),
        [b'<', 0, 0, 0, ..] => (bytes, true),
        [0, 0, 0, b'<', ..] => (bytes, false),
        _ => return None,
    };
    let chars = body.chunks_exact(4).map(|c| {
        let b = [c[0], c[1], c[2], c[3]];
        let n = if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        };
        char::from_u32(n).unwrap_or(char::REPLACEMENT_CHARACTER)
    });
    Some(Ok(chars.collect()))
}

/// The `encoding="..."` of the XML declaration, wherever it is in the
/// first bytes (a comment may come before it).
pub fn declared(bytes: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]);
    let start = head.find("<?xml")?;
    let decl = &head[start..start + head[start..].find("?>")?];
    let at = decl.find("encoding")?;
    let rest = decl[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?
        .trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = &rest[1..];
    Some(rest[..rest.find(quote)?].to_string())
}

/// The encoding the server's `Content-Type: …; charset=…` names.
fn charset(content_type: Option<&str>) -> Option<&'static Encoding> {
    content_type?
        .split(';')
        .skip(1)
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("charset"))
        .and_then(|(_, v)| Encoding::for_label(v.trim().trim_matches('"').as_bytes()))
}

/// A guess from the bytes, for a document that says nothing.
fn guess(bytes: &[u8]) -> &'static Encoding {
    use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};
    let mut d = EncodingDetector::new(Iso2022JpDetection::Deny);
    d.feed(bytes, true);
    d.guess(None, Utf8Detection::Allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_are_found_after_a_comment() {
        let doc = b"<!-- x --><?xml version=\"1.0\" encoding='ISO-8859-1'?><rss/>";
        assert_eq!(declared(doc).as_deref(), Some("ISO-8859-1"));
        assert_eq!(declared(b"<rss/>"), None);
    }

    #[test]
    fn charset_from_the_server_when_the_document_is_silent() {
        let bytes = b"<rss version=\"2.0\"><channel><title>Caf\xe9</title></channel></rss>";
        let s = decode(bytes, Some("application/rss+xml; charset=ISO-8859-1")).unwrap();
        assert!(s.contains("Café"), "{s}");
        // No charset anywhere and not UTF-8: a guess, here Windows-1252.
        let s = decode(bytes, None).unwrap();
        assert!(s.contains("Café"), "{s}");
    }

    #[test]
    fn valid_utf8_beats_a_declaration_that_contradicts_it() {
        let s = decode(
            "<?xml version=\"1.0\" encoding=\"windows-1252\"?><t>Décret</t>".as_bytes(),
            None,
        )
        .unwrap();
        assert!(s.contains("Décret"), "{s}");
    }

    #[test]
    fn utf32_with_and_without_a_byte_order_mark() {
        let text = "<t>État</t>";
        let le: Vec<u8> = text
            .chars()
            .flat_map(|c| (c as u32).to_le_bytes())
            .collect();
        assert_eq!(decode(&le, None).unwrap(), text);
        let mut be = vec![0, 0, 0xFE, 0xFF];
        be.extend(text.chars().flat_map(|c| (c as u32).to_be_bytes()));
        assert_eq!(decode(&be, None).unwrap(), text);
    }
}
