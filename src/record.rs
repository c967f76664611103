//! The record: what a source hands to the engine. A map of fields, the
//! source's name, a key, an observed time and, for tables, the previous row.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

pub type Fields = Map<String, Value>;

/// A record's fields, shared: a table row is kept by its source, handed to
/// the engine as a record and as the next version's `prev`, and put in
/// notifications, all without copying.
pub type Row = Arc<Fields>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A table row that was added or changed; its state lasts until it changes.
    Row,
    /// A table row that disappeared: resolves that key's alerts.
    Removed,
    /// A log line or feed item: happens once.
    Event,
}

#[derive(Clone, Debug)]
pub struct Record {
    pub source: Arc<str>,
    pub key: String,
    pub fields: Row,
    pub prev: Option<Row>,
    pub observed: DateTime<Utc>,
    pub kind: RecordKind,
    /// The document the record was read from, shared by all its records,
    /// for the evidence of the alerts it causes; `None` where nothing was
    /// read (rule tests).
    pub doc: Option<Arc<Document>>,
    /// The record's line in the document (from 1), 0 when it has none.
    pub line: u32,
}

/// A document as read: where, its bytes and their SHA-256. What an alert's
/// evidence says of the data behind it.
#[derive(Default, PartialEq)]
pub struct Document {
    /// The file read (tables and logs), shared by the documents read
    /// from it (a log's lines).
    pub file: Option<Arc<std::path::Path>>,
    /// The URL fetched (feeds and http sources), credentials masked.
    pub url: Option<String>,
    /// The HTTP answer, for a document fetched over HTTP.
    pub http: Option<HttpAnswer>,
    /// The bytes read, shared with the parser that read them (not copied),
    /// for the store to keep when an alert names the document.
    pub bytes: Option<bytes::Bytes>,
    /// The SHA-256 of `bytes`, in hex: made when an alert first names the
    /// document, so that what no alert names is never hashed.
    sha256: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document")
            .field("file", &self.file)
            .field("url", &self.url)
            .field("sha256", &self.sha256.get())
            .field("http", &self.http)
            .field("bytes", &self.bytes.as_ref().map(|b| b.len()))
            .finish()
    }
}

/// What the server answered with a document.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HttpAnswer {
    pub status: u16,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Document {
    /// The document `file` whose bytes are `bytes`.
    pub fn file(file: &Arc<std::path::Path>, bytes: bytes::Bytes) -> Arc<Document> {
        Arc::new(Document {
            file: Some(file.clone()),
            bytes: Some(bytes),
            ..Default::default()
        })
    }

    /// The document fetched from `url` (credentials masked), with the
    /// server's answer when it came over HTTP.
    pub fn fetched(url: String, http: Option<HttpAnswer>, bytes: bytes::Bytes) -> Arc<Document> {
        Arc::new(Document {
            url: Some(url),
            http,
            bytes: Some(bytes),
            ..Default::default()
        })
    }

    /// The document `file` whose bytes are `bytes`, by its hash alone:
    /// where nothing is kept (`tocsin eval`).
    pub fn hashed(file: &Arc<std::path::Path>, bytes: &[u8]) -> Arc<Document> {
        Arc::new(Document {
            file: Some(file.clone()),
            sha256: sha256_hex(bytes).into(),
            ..Default::default()
        })
    }

    /// The SHA-256 of the bytes read, in hex (made at the first call).
    pub fn sha256(&self) -> &str {
        self.sha256
            .get_or_init(|| sha256_hex(self.bytes.as_deref().unwrap_or_default()))
    }

    /// The SHA-256, when something asked for it already.
    pub fn sha256_known(&self) -> Option<&str> {
        self.sha256.get().map(String::as_str)
    }
}

/// SHA-256 in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(bytes))
}

/// Bytes in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(2 * bytes.len());
    for b in bytes {
        hex.push(DIGITS[usize::from(b >> 4)] as char);
        hex.push(DIGITS[usize::from(b & 15)] as char);
    }
    hex
}

/// The fields of a previous row that differ from the current one, as a
/// notification carries them (`prev`): a JSON object. Kept as the two rows,
/// shared, and compared when read, so that making one copies nothing.
#[derive(Clone, Debug, Default)]
pub struct Changed {
    prev: Row,
    now: Row,
}

impl Changed {
    /// The fields of `prev` that `now` lacks or has with another value.
    pub fn new(prev: Row, now: Row) -> Changed {
        Changed { prev, now }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        let v = get(&self.prev, name)?;
        self.differs(name, v).then_some(v)
    }

    /// [`Changed::get`] given the current value of `name`, already looked up.
    pub fn was(&self, name: &str, now: &Value) -> Option<&Value> {
        get(&self.prev, name).filter(|v| *v != now)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.prev.iter().filter(|(k, v)| self.differs(k, v))
    }

    /// Whether the previous value `v` of `name` is not what `now` has.
    fn differs(&self, name: &str, v: &Value) -> bool {
        get(&self.now, name) != Some(v)
    }
}

impl PartialEq for Changed {
    fn eq(&self, other: &Changed) -> bool {
        self.iter().eq(other.iter())
    }
}

impl std::ops::Index<&str> for Changed {
    type Output = Value;
    fn index(&self, name: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.get(name).unwrap_or(&NULL)
    }
}

impl serde::Serialize for Changed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Changed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Changed, D::Error> {
        Fields::deserialize(d).map(|m| Changed::new(Arc::new(m), Row::default()))
    }
}

/// A source's constant `fields` added to a row that lacks them (the row's
/// own value wins); the row is copied only when something is added.
pub fn with_constants(row: Row, constants: &Fields) -> Row {
    if constants.keys().all(|k| row.contains_key(k)) {
        return row;
    }
    let mut row = row;
    let fields = Arc::make_mut(&mut row);
    for (k, v) in constants {
        if !fields.contains_key(k) {
            fields.insert(k.clone(), v.clone());
        }
    }
    row
}

/// Numbers as analysts write them: `157`, `"157%"`, `"1,250.5"`, `" 157 "`.
pub fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim();
    let t = t.strip_suffix('%').unwrap_or(t).trim_end();
    if t.is_empty() {
        return None;
    }
    if let Ok(v) = t.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    if t.contains(',') {
        // Thousands separators only: every group after the first has 3 digits.
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        let mut groups = int.split(',');
        let first = groups.next()?;
        let digits = first.trim_start_matches(['-', '+']);
        if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !groups.all(|g| g.len() == 3 && g.bytes().all(|b| b.is_ascii_digit())) {
            return None;
        }
        let joined: String = int.chars().filter(|&c| c != ',').collect();
        let full = if frac.is_empty() {
            joined
        } else {
            format!("{joined}.{frac}")
        };
        return full.parse::<f64>().ok().filter(|v| v.is_finite());
    }
    None
}

/// A field's value as a number, when it is one or is text that reads as one.
pub fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => parse_number(s),
        _ => None,
    }
}

/// A field's value as text, for equality and membership.
#[inline]
pub fn as_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    match v {
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// Looks a field up by name; `a.b` reaches into nested objects when no
/// field is literally named `a.b`.
pub fn lookup<'a>(fields: &'a Fields, name: &str) -> Option<&'a Value> {
    get(fields, name).or_else(|| nested(fields, name))
}

/// `a.b` inside nested objects (and lists, by index).
fn nested<'a>(fields: &'a Fields, name: &str) -> Option<&'a Value> {
    if !name.contains('.') {
        return None;
    }
    let mut parts = name.split('.');
    let mut cur = fields.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m.get(p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// [`lookup`], trying position `*at` of the row first: rows of one source
/// keep each field at one position (a table's columns, a feed's keys), so
/// one name is compared instead of each before it. `*at` becomes where the
/// field was found.
#[inline]
pub fn lookup_at<'a>(fields: &'a Fields, name: &str, at: &mut u8) -> Option<&'a Value> {
    if let Some(v) = get_at(fields, name, *at) {
        return Some(v);
    }
    // A name reaching inside a field has no position in the row to learn.
    let Some(v) = get(fields, name) else {
        return nested(fields, name);
    };
    if let Some(i) = fields.iter().position(|(_, x)| std::ptr::eq(x, v))
        && let Ok(i) = u8::try_from(i)
    {
        *at = i;
    }
    Some(v)
}

/// [`lookup`], trying position `at` first (see [`lookup_at`]), without
/// learning a new one: for rows other than the one positions are learnt
/// from, such as the previous row.
#[inline]
pub fn lookup_from<'a>(fields: &'a Fields, name: &str, at: u8) -> Option<&'a Value> {
    get_at(fields, name, at).or_else(|| lookup(fields, name))
}

/// `a == b` for names and keys, which are short: compared inline, where
/// `==` on strings calls `memcmp`, whose call costs more than comparing a
/// few bytes.
#[inline(always)]
pub fn same(a: &str, b: &str) -> bool {
    memchr::arch::all::is_equal(a.as_bytes(), b.as_bytes())
}

/// The field at position `at` when it is named `name`.
#[inline]
pub fn get_at<'a>(fields: &'a Fields, name: &str, at: u8) -> Option<&'a Value> {
    key_at(fields, at)
        .filter(|(k, _)| same(k, name))
        .map(|(_, v)| v)
}

/// The field at position `at` (the field itself is not read).
#[inline]
pub fn key_at(fields: &Fields, at: u8) -> Option<(&String, &Value)> {
    fields.iter().nth(usize::from(at))
}

/// A field by its exact name. Records have a handful of fields: comparing
/// names beats hashing them up to a dozen or so.
#[inline]
pub fn get<'a>(fields: &'a Fields, name: &str) -> Option<&'a Value> {
    if fields.len() <= 12 {
        fields.iter().find(|(k, _)| same(k, name)).map(|(_, v)| v)
    } else {
        fields.get(name)
    }
}

/// `t.trim()`, which needs no look inside when both ends are ASCII and
/// not whitespace, as keys and codes nearly always are.
#[inline]
pub fn trim(t: &str) -> &str {
    let plain = |c: u8| c.is_ascii() && !char::from(c).is_whitespace();
    match t.as_bytes() {
        [first, .., last] if plain(*first) && plain(*last) => t,
        [only] if plain(*only) => t,
        _ => t.trim(),
    }
}

/// Field present and not empty.
pub fn is_present(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_hashed_when_first_asked_and_once() {
        let line = bytes::Bytes::from_static(b"{\"title\": \"export controls\"}");
        let file: Arc<std::path::Path> = Arc::from(std::path::Path::new("/d/news.jsonl"));
        let d = Document::file(&file, line.clone());
        assert_eq!(d.sha256_known(), None, "not hashed while no alert names it");
        let sha = d.sha256().to_string();
        assert_eq!(sha, sha256_hex(&line));
        assert_eq!(d.sha256_known(), Some(sha.as_str()));
        let h = Document::hashed(&file, &line);
        assert_eq!(
            (h.sha256_known(), h.bytes.as_ref()),
            (Some(sha.as_str()), None)
        );
    }

    #[test]
    fn changed_lists_only_the_previous_fields_that_differ_in_their_order() {
        let row = |v: Value| Arc::new(v.as_object().unwrap().clone());
        let prev = row(serde_json::json!({"b": 1, "a": "x", "gone": true, "c": [1]}));
        let now = row(serde_json::json!({"a": "y", "b": 1, "c": [1], "new": 2}));
        let c = Changed::new(prev, Arc::clone(&now));
        let listed: Vec<(&str, &Value)> = c.iter().map(|(k, v)| (k.as_str(), v)).collect();
        assert_eq!(
            listed,
            [("a", &serde_json::json!("x")), ("gone", &Value::Bool(true))]
        );
        assert_eq!(c.get("a"), Some(&serde_json::json!("x")));
        assert_eq!(c.get("b"), None, "unchanged");
        assert_eq!(c.get("new"), None, "not in the previous row");
        assert_eq!(c["b"], Value::Null);
        // Given the current value, as the default body asks.
        assert_eq!(c.was("a", &now["a"]), Some(&serde_json::json!("x")));
        assert_eq!(c.was("b", &now["b"]), None, "unchanged");
        assert_eq!(c.was("new", &now["new"]), None, "not in the previous row");
        // As the payload and the store carry it: only what changed.
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(text, r#"{"a":"x","gone":true}"#);
        let back: Changed = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.get("a"), Some(&serde_json::json!("x")));
        assert_ne!(back, Changed::default());
    }

    #[test]
    fn trim_trims_as_str_trim_does() {
        for t in [
            "",
            " ",
            "a",
            " a",
            "a ",
            "\ta\n",
            "\u{0b}a\u{0b}",
            "ab",
            "a b",
            "\u{a0}x\u{a0}",
            "\u{3000}全\u{3000}",
            "é",
            " é ",
            "\u{85}k\u{85}",
            "k000123",
        ] {
            assert_eq!(trim(t), t.trim(), "{t:?}");
        }
    }

    #[test]
    fn numbers_in_text_parse() {
        assert_eq!(parse_number("157%"), Some(157.0));
        assert_eq!(parse_number("1,250.5"), Some(1250.5));
        assert_eq!(parse_number(" 157 "), Some(157.0));
        assert_eq!(parse_number("-3.5"), Some(-3.5));
        assert_eq!(parse_number("12,345,678"), Some(12345678.0));
        assert_eq!(parse_number("1,25"), None);
        assert_eq!(parse_number("abc"), None);
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_number("%"), None);
        assert_eq!(parse_number("NaN"), None);
        assert_eq!(parse_number("inf"), None);
    }

    #[test]
    fn nested_lookup() {
        let v: Value = serde_json::json!({"a": {"b": [1, {"c": 2}]}, "x.y": 3});
        let m = v.as_object().unwrap();
        assert_eq!(lookup(m, "a.b.1.c"), Some(&Value::from(2)));
        assert_eq!(lookup(m, "x.y"), Some(&Value::from(3)));
        assert_eq!(lookup(m, "a.z"), None);
    }

    #[test]
    fn lookup_at_finds_fields_wherever_they_moved() {
        let row = |v: Value| v.as_object().unwrap().clone();
        let a = row(serde_json::json!({"key": "k1", "value": 1, "kind": "x"}));
        let b = row(serde_json::json!({"kind": "y", "key": "k2", "value": 2}));
        let wide = row(Value::Object(
            (0..40).map(|i| (format!("f{i}"), Value::from(i))).collect(),
        ));
        let mut at = 0;
        assert_eq!(lookup_at(&a, "value", &mut at), Some(&Value::from(1)));
        assert_eq!(at, 1);
        assert_eq!(get_at(&a, "value", at), Some(&Value::from(1)));
        // Another layout: found by name, and its position learnt.
        assert_eq!(get_at(&b, "value", at), None);
        assert_eq!(lookup_at(&b, "value", &mut at), Some(&Value::from(2)));
        assert_eq!(at, 2);
        // Missing fields and positions past the end find nothing and
        // leave the position alone.
        assert_eq!(lookup_at(&a, "absent", &mut at), None);
        assert_eq!(at, 2);
        assert_eq!(get_at(&a, "kind", 7), None);
        // Rows wider than a scan (looked up by hash) learn positions too.
        assert_eq!(lookup_at(&wide, "f33", &mut at), Some(&Value::from(33)));
        assert_eq!(at, 33);
        // Nested names are found as `lookup` finds them.
        let n = row(serde_json::json!({"a": {"b": 5}}));
        assert_eq!(lookup_at(&n, "a.b", &mut at), Some(&Value::from(5)));
        assert_eq!(at, 33);
    }
}
