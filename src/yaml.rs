//! YAML read into a tree of nodes that remember their `line:col`, so that the
//! config and rules loaders can report every problem of a file in one pass
//! (serde derive stops at the first). Parsing and duplicate-key refusal are
//! serde-saphyr's; the tree walk and its messages are ours.
//!
//! The YAML 1.2 core schema: only `true` and `false` are booleans, so `NO`
//! (Norway), `y`, `on` are text. A plain scalar keeps the text it was
//! written as, and the slot it fills decides its type: a field name, list
//! item or `where` value is that text (`007`, `8505.10`, `null`), a number
//! slot parses it.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use serde_saphyr::budget::BudgetBreach;

use crate::diag::{Diags, Pos, did_you_mean};

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub line: usize,
    pub col: usize,
    pub kind: Kind,
    /// For a plain scalar read as a number, boolean or null: the text as
    /// written (`007`, `8505.10`, `~`), so that a text slot loses nothing.
    pub raw: Option<Box<str>>,
    /// Byte range in the source, until [`parse`] has taken `raw` from it.
    span: Option<(usize, usize)>,
}

impl Node {
    pub fn pos(&self) -> Pos {
        let len = match (&self.kind, &self.raw) {
            (Kind::Str(s), _) if !s.contains('\n') => s.chars().count(),
            (Kind::Int(_) | Kind::Float(_) | Kind::Bool(_) | Kind::Null, Some(r)) => {
                r.chars().count().max(1)
            }
            _ => 1,
        };
        Pos::new(self.line, self.col, len)
    }

    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "nothing",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) | Kind::Float(_) => "a number",
            Kind::Str(_) => "text",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Scalars as the text they were written as: `8505` and `"8505"` both
    /// give "8505", `007` gives "007", `~` gives "~". A value left empty
    /// (`key:`), a list or a mapping give `None`.
    pub fn scalar_text(&self) -> Option<String> {
        match (&self.kind, &self.raw) {
            (Kind::Str(s), _) => Some(s.clone()),
            (Kind::Seq(_) | Kind::Map(_), _) => None,
            (_, Some(r)) if !r.is_empty() => Some(r.to_string()),
            (Kind::Int(i), _) => Some(i.to_string()),
            (Kind::Float(f), _) => Some(f.to_string()),
            (Kind::Bool(b), _) => Some(b.to_string()),
            (Kind::Null, _) => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }

    /// The value as an analyst wrote it (a rule-test record, a source's
    /// constant `fields`): `true`/`false` are booleans, a value left empty is
    /// null, and a number stays a number when written as its own plain form
    /// (`145`, `160.5`); anything else is the text as written (`NO`, `007`,
    /// `8505.10`, `1e3`, `null`, `~`), as a CSV cell would be.
    pub fn to_json(&self) -> serde_json::Value {
        self.value(true)
    }

    /// The value as a program wrote it (a YAML data file): as
    /// [`Node::to_json`], except that `null` and `~` are null.
    pub fn to_data(&self) -> serde_json::Value {
        self.value(false)
    }

    fn value(&self, null_as_text: bool) -> serde_json::Value {
        use serde_json::Value;
        let as_written = |canonical: String| match &self.raw {
            Some(r) if **r != canonical && r.strip_prefix('+') != Some(&canonical) => {
                Some(Value::String(r.to_string()))
            }
            _ => None,
        };
        match &self.kind {
            Kind::Null => match &self.raw {
                Some(r) if null_as_text && !r.is_empty() => Value::String(r.to_string()),
                _ => Value::Null,
            },
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => as_written(i.to_string()).unwrap_or_else(|| Value::from(*i)),
            Kind::Float(f) => as_written(f.to_string()).unwrap_or_else(|| {
                serde_json::Number::from_f64(*f).map_or(
                    Value::String(self.scalar_text().unwrap_or_default()),
                    Value::Number,
                )
            }),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(v) => Value::Array(v.iter().map(|i| i.value(null_as_text)).collect()),
            Kind::Map(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.scalar_text().unwrap_or_default(), v.value(null_as_text)))
                    .collect(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Spanned<RawKind> = Spanned::deserialize(d)?;
        let span = s.referenced.span();
        let span = match (&s.value.0, span.byte_offset(), span.byte_len()) {
            (Kind::Null | Kind::Bool(_) | Kind::Int(_) | Kind::Float(_), Some(o), Some(l)) => {
                Some((o as usize, l as usize))
            }
            _ => None,
        };
        Ok(Node {
            line: s.referenced.line() as usize,
            col: s.referenced.column() as usize,
            kind: s.value.0,
            raw: None,
            span,
        })
    }
}

struct RawKind(Kind);

impl<'de> Deserialize<'de> for RawKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = RawKind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawKind, E> {
        Ok(RawKind(Kind::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<RawKind, E> {
        Ok(RawKind(Kind::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawKind, D::Error> {
        RawKind::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawKind, E> {
        Ok(RawKind(Kind::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawKind, E> {
        Ok(RawKind(Kind::Int(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawKind, E> {
        Ok(RawKind(match i64::try_from(v) {
            Ok(i) => Kind::Int(i),
            Err(_) => Kind::Float(v as f64),
        }))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawKind, E> {
        Ok(RawKind(Kind::Float(v as f64)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawKind, E> {
        Ok(RawKind(Kind::Float(v as f64)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawKind, E> {
        Ok(RawKind(Kind::Float(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawKind, E> {
        Ok(RawKind(Kind::Str(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawKind, E> {
        Ok(RawKind(Kind::Str(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawKind, A::Error> {
        let mut v = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            v.push(n);
        }
        Ok(RawKind(Kind::Seq(v)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawKind, A::Error> {
        let mut v = Vec::new();
        while let Some((k, val)) = map.next_entry::<Node, Node>()? {
            v.push((k, val));
        }
        Ok(RawKind(Kind::Map(v)))
    }
}

/// A YAML syntax error (or duplicate key) with its position.
#[derive(Debug)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// The YAML 1.2 core schema, as every file of ours (and a YAML data file)
/// is read: only `true`/`false` are booleans; numbers with leading zeros or
/// underscores (`007`, `1_000`) stay text, being codes more often than not,
/// and so do `.inf` and `.nan`.
///
/// The budget is set for the largest files this project reads: 100,000
/// rules of about 30 values each, or a list of 1,000,000 entries, with room
/// to spare. Past it a file is refused with a message that says which limit
/// and how to split the file ([`budget_message`]).
pub fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::AsString,
        budget: serde_saphyr::budget! {
            max_nodes: MAX_VALUES,
            max_events: 2 * MAX_VALUES + 16,
            max_total_scalar_bytes: MAX_TEXT_BYTES,
        },
    }
}

/// The most values (mappings, lists and scalars) one YAML file may hold.
pub const MAX_VALUES: usize = 4_000_000;
/// The most text, in bytes, of all the scalars of one YAML file.
pub const MAX_TEXT_BYTES: usize = 256 << 20;

/// What to tell the writer of a file that exceeds the budget: which limit,
/// and what to do instead.
fn budget_message(breach: &BudgetBreach) -> String {
    const SPLIT: &str = "split it into several files (`rules:` may name a folder of \
                         *.yaml files, each read on its own), or move long lists into \
                         a `lists:` file of their own";
    match breach {
        BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => format!(
            "this file holds more than {} YAML values (mappings, lists and \
             scalars; about 100,000 rules or a list of 1,000,000 entries): {SPLIT}",
            group(MAX_VALUES)
        ),
        BudgetBreach::ScalarBytes { .. } => format!(
            "this file holds more than {} MiB of text: {SPLIT}",
            MAX_TEXT_BYTES >> 20
        ),
        BudgetBreach::Depth { .. } => {
            "this file nests mappings and lists more than 64 deep: no file of \
                    ours needs that many levels; write nested conditions as `all:`/`any:` \
                    lists of at most a few levels"
                .to_string()
        }
        BudgetBreach::Aliases { .. }
        | BudgetBreach::Anchors { .. }
        | BudgetBreach::AliasAnchorRatio { .. }
        | BudgetBreach::MergeKeys { .. } => format!(
            "this file uses too many YAML anchors, aliases or merge keys ({breach:?}): \
             write the values out, or keep shared lists in a `lists:` file"
        ),
        _ => format!("this file is over a YAML reading limit ({breach:?}): {SPLIT}"),
    }
}

/// `4000000` as `4,000,000`.
fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Parse YAML text into a node tree. An empty document is `Null`.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    if text.trim().is_empty() {
        return Ok(Node {
            line: 1,
            col: 1,
            kind: Kind::Null,
            raw: None,
            span: None,
        });
    }
    let mut node = read(text)?;
    node.take_raw(text);
    Ok(node)
}

impl Node {
    /// Fills `raw` of every non-text scalar from its byte range in `text`.
    fn take_raw(&mut self, text: &str) {
        if let Some((o, l)) = self.span.take() {
            self.raw = text.get(o..o + l).map(|r| r.trim_end().into());
        }
        match &mut self.kind {
            Kind::Seq(items) => items.iter_mut().for_each(|i| i.take_raw(text)),
            Kind::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                k.take_raw(text);
                v.take_raw(text);
            }),
            _ => {}
        }
    }
}

fn read(text: &str) -> Result<Node, SyntaxError> {
    serde_saphyr::from_str_with_options::<Node>(text, options()).map_err(|e| {
        let (line, col) = e
            .location()
            .map_or((1, 1), |l| (l.line() as usize, l.column() as usize));
        if let serde_saphyr::Error::Budget { breach, .. } = e.without_snippet() {
            return SyntaxError {
                pos: Pos::new(line.max(1), col.max(1), 1),
                message: budget_message(breach),
            };
        }
        let opts = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
        let mut message = e.render_with_options(opts);
        // The rendered text ends with its own "at line X column Y"; we print
        // positions ourselves.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        // serde-saphyr addresses programmers here; analysts need the rule.
        if let Some(i) = message.find(", set DuplicateKeyPolicy") {
            message.truncate(i);
            message
                .push_str(" (each key may appear once in a mapping; merge the two or remove one)");
        }
        SyntaxError {
            pos: Pos::new(line.max(1), col.max(1), 1),
            message,
        }
    })
}

/// Reads the keys of one mapping, remembering which were used so that the
/// rest can be reported as unknown, with a did-you-mean.
pub struct MapReader<'n> {
    pub node: &'n Node,
    entries: &'n [(Node, Node)],
    used: Vec<bool>,
    known: Vec<&'static str>,
    what: &'static str,
}

impl<'n> MapReader<'n> {
    /// `what` names the thing for messages ("rule", "source", "smtp").
    pub fn new(node: &'n Node, what: &'static str, d: &mut Diags) -> Option<Self> {
        match &node.kind {
            Kind::Map(entries) => Some(MapReader {
                node,
                entries,
                used: vec![false; entries.len()],
                known: Vec::new(),
                what,
            }),
            _ => {
                d.error(
                    node.pos(),
                    format!(
                        "{what} must be a mapping of `key: value`, found {}",
                        node.type_name()
                    ),
                    None,
                );
                None
            }
        }
    }

    pub fn get(&mut self, key: &'static str) -> Option<&'n Node> {
        self.known.push(key);
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if k.as_str() == Some(key) {
                self.used[i] = true;
                return Some(v);
            }
        }
        None
    }

    /// The key node of `key`, for pointing at it.
    pub fn key_node(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, _)| k)
    }

    pub fn what(&self) -> &'static str {
        self.what
    }

    pub fn has(&self, key: &str) -> bool {
        self.key_node(key).is_some()
    }

    /// Mark keys as known without reading them (they belong to a variant
    /// checked elsewhere).
    pub fn allow(&mut self, keys: &[&'static str]) {
        for key in keys {
            self.get(key);
        }
    }

    /// Reports every key not read, with the closest known key as a hint.
    pub fn finish(self, d: &mut Diags) {
        for (i, (k, _)) in self.entries.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            let name = k.scalar_text().unwrap_or_default();
            let hint = did_you_mean(&name, self.known.iter().copied()).or_else(|| {
                Some(format!(
                    "the keys of a {} are: {}",
                    self.what,
                    self.known.join(", ")
                ))
            });
            d.error(
                k.pos(),
                format!("unknown key `{name}` in {}", self.what),
                hint,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_carry_positions() {
        let n = parse("a: 1\nb:\n  - x\n  - \"8505\"\n").unwrap();
        let Kind::Map(m) = &n.kind else { panic!() };
        assert_eq!((m[0].0.line, m[0].0.col), (1, 1));
        assert_eq!(m[0].1.kind, Kind::Int(1));
        assert_eq!((m[0].1.line, m[0].1.col), (1, 4));
        let Kind::Seq(s) = &m[1].1.kind else { panic!() };
        assert_eq!((s[1].line, s[1].col), (4, 5));
        assert_eq!(s[1].kind, Kind::Str("8505".into()));
    }

    /// YAML 1.2 core schema: only `true`/`false` are booleans, and every
    /// plain scalar keeps the text it was written as, for text slots.
    #[test]
    fn plain_scalars_keep_their_text() {
        let words = [
            "NO",
            "no",
            "n",
            "N",
            "y",
            "Y",
            "yes",
            "Yes",
            "on",
            "On",
            "off",
            "OFF",
            "null",
            "Null",
            "~",
            "007",
            "8505",
            "8505.10",
            "1e3",
            "0x1F",
            "1_000",
            "-007",
            "2026-04-09",
            ".inf",
        ];
        let text: String = words.iter().map(|w| format!("- {w}\n")).collect();
        let n = parse(&text).unwrap();
        let Kind::Seq(items) = &n.kind else { panic!() };
        for (w, i) in words.iter().zip(items) {
            assert_eq!(i.scalar_text().as_deref(), Some(*w), "{w}: {i:?}");
            assert!(!matches!(i.kind, Kind::Bool(_)), "{w} read as a boolean");
            assert_eq!(i.pos().len, w.chars().count(), "{w}");
        }
        let n = parse("a: true\nb: False\nc:\n").unwrap();
        let Kind::Map(m) = &n.kind else { panic!() };
        assert_eq!(m[0].1.kind, Kind::Bool(true));
        assert_eq!(m[1].1.kind, Kind::Bool(false));
        assert_eq!(m[2].1.scalar_text(), None, "an empty value is nothing");
        // Keys too: `on:` and `NO:` are names.
        let n = parse("on: 1\nNO: 2\n").unwrap();
        let Kind::Map(m) = &n.kind else { panic!() };
        assert_eq!(m[0].0.as_str(), Some("on"));
        assert_eq!(m[1].0.as_str(), Some("NO"));
    }

    /// As data (test records, constant fields): numbers written plainly are
    /// numbers; codes written otherwise keep their text.
    #[test]
    fn data_values_keep_codes_as_written() {
        let n = parse(
            "{a: NO, b: 007, c: 8505, d: 8505.10, e: 160.5, f: true, g: ~, h: 1e3, i: y, j: -3, k: }",
        )
        .unwrap();
        assert_eq!(
            n.to_json(),
            serde_json::json!({"a": "NO", "b": "007", "c": 8505, "d": "8505.10", "e": 160.5,
                               "f": true, "g": "~", "h": "1e3", "i": "y", "j": -3, "k": null})
        );
        assert_eq!(n.to_data()["g"], serde_json::Value::Null);
        assert_eq!(n.to_data()["a"], "NO");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.pos.line, 3, "{}", e.message);
        assert!(
            e.message.to_lowercase().contains("duplicate"),
            "{}",
            e.message
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1, "{}", e.message);
    }
}

/// Typed readers: each reports a wrong type at the node and returns `None`.
pub mod read {
    use std::time::Duration;

    use super::{Kind, MapReader, Node};
    use crate::diag::{Diags, Pos};

    /// A required key; reports its absence at the mapping.
    pub fn required<'n>(
        m: &mut MapReader<'n>,
        key: &'static str,
        hint: &str,
        d: &mut Diags,
    ) -> Option<&'n Node> {
        let v = m.get(key);
        if v.is_none() {
            let node = m.node;
            d.error(
                Pos::new(node.line, node.col, 1),
                format!("missing key `{key}` in {}", m.what()),
                Some(hint.to_string()),
            );
        }
        v
    }

    /// The entries of a mapping; anything else is reported and yields none.
    pub fn entries<'n>(n: &'n Node, what: &str, d: &mut Diags) -> &'n [(Node, Node)] {
        match &n.kind {
            Kind::Map(e) => e,
            Kind::Null => &[],
            _ => {
                d.error(
                    n.pos(),
                    format!(
                        "`{what}` must be a mapping of `name: value`, found {}",
                        n.type_name()
                    ),
                    None,
                );
                &[]
            }
        }
    }

    /// A mapping of text to text (labels, headers).
    pub fn string_map(n: &Node, what: &str, d: &mut Diags) -> Vec<(String, String)> {
        entries(n, what, d)
            .iter()
            .filter_map(|(k, v)| Some((string(k, "a name", d)?, string(v, "a value", d)?)))
            .collect()
    }

    /// Text: any scalar, as written (`NO`, `007`, `8505.10`, `null`).
    pub fn string(n: &Node, what: &str, d: &mut Diags) -> Option<String> {
        match n.scalar_text() {
            Some(t) => Some(t),
            None => {
                d.error(
                    n.pos(),
                    format!("{what} must be text, found {}", n.type_name()),
                    None,
                );
                None
            }
        }
    }

    /// One text or a list of texts, each with its position.
    pub fn strings(n: &Node, what: &str, d: &mut Diags) -> Vec<(String, Pos)> {
        match &n.kind {
            Kind::Seq(items) => items
                .iter()
                .filter_map(|i| string(i, what, d).map(|s| (s, i.pos())))
                .collect(),
            _ => string(n, what, d)
                .map(|s| vec![(s, n.pos())])
                .unwrap_or_default(),
        }
    }

    pub fn boolean(n: &Node, what: &str, d: &mut Diags) -> Option<bool> {
        match n.kind {
            Kind::Bool(b) => Some(b),
            _ => {
                d.error(
                    n.pos(),
                    format!("{what} must be true or false, found {}", describe(n)),
                    Some("write `true` or `false` (`yes`, `no`, `on` and `off` are text)".into()),
                );
                None
            }
        }
    }

    pub fn number(n: &Node, what: &str, d: &mut Diags) -> Option<f64> {
        let parsed = match &n.kind {
            Kind::Int(i) => Some(*i as f64),
            Kind::Float(f) => Some(*f),
            Kind::Str(s) => crate::record::parse_number(s),
            _ => None,
        };
        if parsed.is_none() {
            d.error(
                n.pos(),
                format!("{what} must be a number, found {}", describe(n)),
                Some("write a number such as `157` or `12.5`".into()),
            );
        }
        parsed
    }

    /// `10m`, `48h`, `1h 30m`, `0s`; a bare `0` is accepted too.
    pub fn duration(n: &Node, what: &str, d: &mut Diags) -> Option<Duration> {
        let text = match &n.kind {
            Kind::Int(0) => return Some(Duration::ZERO),
            Kind::Str(s) => s.trim().to_string(),
            _ => String::new(),
        };
        match humantime::parse_duration(&text) {
            Ok(v) => Some(v),
            Err(_) => {
                d.error(
                    n.pos(),
                    format!("{what} is not a duration: {}", describe(n)),
                    Some("write a number and a unit, such as `30s`, `10m`, `48h` or `7d`".into()),
                );
                None
            }
        }
    }

    pub fn describe(n: &Node) -> String {
        match n.scalar_text() {
            Some(t) => format!("`{t}`"),
            None => n.type_name().to_string(),
        }
    }
}
