//! Data file formats → rows of fields. Pure functions over bytes, shared by
//! the watching file source and `tocsin eval`. Errors carry the line.

use serde_json::Value;

use crate::config::Format;
use crate::record::Fields;
use crate::rows::RowIn;

#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// 1-based line, 0 when unknown.
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

fn err(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

/// Checks UTF-8 and drops a byte-order mark.
pub fn text(bytes: &[u8]) -> Result<&str, ParseError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        err(
            line,
            format!("not valid UTF-8 (byte {at}); save the file as UTF-8"),
        )
    })
}

/// [`rows`], each row handed to `row` as it is read: CSV, TSV and JSON
/// lines a row at a time, never all at once (CSV and TSV rows as their
/// cells); a JSON or YAML document is parsed whole first.
pub fn each_row(
    format: Format,
    bytes: &[u8],
    row: &mut dyn FnMut(usize, RowIn<'_>) -> Result<(), ParseError>,
) -> Result<(), ParseError> {
    match format {
        Format::Csv | Format::Tsv => delimited_each(format, text(bytes)?, None, 1, row),
        Format::Jsonl => {
            for (i, l) in text(bytes)?.lines().enumerate() {
                if !l.trim().is_empty() {
                    row(i + 1, RowIn::Fields(json_line(l, i + 1)?))?;
                }
            }
            Ok(())
        }
        Format::Json | Format::Yaml => {
            (rows(format, bytes)?.into_iter()).try_for_each(|(line, f)| row(line, RowIn::Fields(f)))
        }
    }
}

/// A whole document as rows.
pub fn rows(format: Format, bytes: &[u8]) -> Result<Vec<(usize, Fields)>, ParseError> {
    let t = text(bytes)?;
    match format {
        Format::Csv | Format::Tsv => delimited(format, t, None, 1),
        Format::Jsonl => t
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| json_line(l, i + 1).map(|f| (i + 1, f)))
            .collect(),
        Format::Json => {
            let v: Value =
                serde_json::from_str(t).map_err(|e| err(e.line(), format!("invalid JSON: {e}")))?;
            array_rows(v)
        }
        Format::Yaml => {
            // Read as rules are: YAML 1.2, values kept as written.
            let v = crate::yaml::parse(t)
                .map_err(|e| err(e.pos.line, format!("invalid YAML: {}", e.message)))?
                .to_data();
            array_rows(v)
        }
    }
}

pub fn json_line(line: &str, n: usize) -> Result<Fields, ParseError> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(err(
            n,
            format!("expected a JSON object per line, found {}", kind(&other)),
        )),
        Err(e) => Err(err(n, format!("invalid JSON: {e}"))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An array of objects, or an object holding one (the first array found).
pub fn array_rows(v: Value) -> Result<Vec<(usize, Fields)>, ParseError> {
    let arr = match v {
        Value::Array(a) => a,
        Value::Object(m) => match m.into_iter().find_map(|(_, v)| match v {
            Value::Array(a) => Some(a),
            _ => None,
        }) {
            Some(a) => a,
            None => {
                return Err(err(
                    0,
                    "expected an array of objects, or an object holding one; found an object with no array",
                ));
            }
        },
        Value::Null => Vec::new(),
        other => {
            return Err(err(
                0,
                format!("expected an array of objects, found {}", kind(&other)),
            ));
        }
    };
    arr.into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Object(m) => Ok((0, m)),
            other => Err(err(
                0,
                format!(
                    "item {} of the array is {}, not an object",
                    i + 1,
                    kind(&other)
                ),
            )),
        })
        .collect()
}

/// CSV/TSV text. With `header` given, `t` holds data lines only and
/// `first_line` is the file line number of its first line.
pub fn delimited(
    format: Format,
    t: &str,
    header: Option<&[String]>,
    first_line: usize,
) -> Result<Vec<(usize, Fields)>, ParseError> {
    let mut out = Vec::new();
    delimited_each(format, t, header, first_line, &mut |line, r| {
        out.push((line, r.into_fields()));
        Ok(())
    })?;
    Ok(out)
}

/// [`delimited`], each row handed to `row` as it is read.
pub fn delimited_each(
    format: Format,
    t: &str,
    header: Option<&[String]>,
    first_line: usize,
    row: &mut dyn FnMut(usize, RowIn<'_>) -> Result<(), ParseError>,
) -> Result<(), ParseError> {
    let delim = if format == Format::Tsv { b'\t' } else { b',' };
    // The csv reader takes an unterminated quote to run to the end of the
    // text, swallowing the rows after it into one field.
    if let Some(line) = open_quote(t, delim) {
        return Err(err(
            line + first_line - 1,
            "a quoted field opened here is never closed: the rest of the file would be read as part of it",
        ));
    }
    let mut rb = csv::ReaderBuilder::new();
    rb.delimiter(delim)
        .has_headers(header.is_none())
        .flexible(false);
    let mut r = rb.from_reader(t.as_bytes());
    let names: Vec<String> = match header {
        Some(h) => h.to_vec(),
        None => {
            let h = r.headers().map_err(|e| csv_err(&e, 1))?;
            h.iter().map(|s| s.trim().to_string()).collect()
        }
    };
    if names.is_empty() || names.iter().any(String::is_empty) {
        if t.trim().is_empty() && header.is_none() {
            return Ok(());
        }
        return Err(err(first_line, "the header line has an empty column name"));
    }
    // Cells stand for fields only when no two columns share a name (as
    // fields, the last of them would hold).
    let unique = names
        .iter()
        .enumerate()
        .all(|(i, n)| !names[..i].contains(n));
    let mut rec = csv::StringRecord::new();
    while r
        .read_record(&mut rec)
        .map_err(|e| csv_err(&e, first_line))?
    {
        let line = rec
            .position()
            .map_or(0, |p| p.line() as usize + first_line - 1);
        if rec.len() == 1 && rec.get(0).is_some_and(|f| f.trim().is_empty()) {
            continue;
        }
        if rec.len() != names.len() {
            return Err(err(
                line,
                format!("{} fields, but the header has {}", rec.len(), names.len()),
            ));
        }
        if unique {
            row(line, RowIn::Cells(&names, &rec))?;
        } else {
            row(
                line,
                RowIn::Fields(RowIn::Cells(&names, &rec).into_fields()),
            )?;
        }
    }
    Ok(())
}

/// The line (from 1) of a quoted field that `t` never closes, read as the
/// csv reader does: a `"` opens a field only at its start, `""` inside it
/// is a quote.
fn open_quote(t: &str, delim: u8) -> Option<usize> {
    let b = t.as_bytes();
    let (mut line, mut opened) = (1, 0);
    let (mut quoted, mut start) = (false, true);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if quoted {
            if c == b'"' {
                if b.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    quoted = false;
                }
            } else if c == b'\n' {
                line += 1;
            }
        } else if c == b'"' && start {
            quoted = true;
            opened = line;
            start = false;
        } else if c == delim {
            start = true;
        } else if c == b'\n' {
            line += 1;
            start = true;
        } else if c != b'\r' {
            start = false;
        }
        i += 1;
    }
    quoted.then_some(opened)
}

fn csv_err(e: &csv::Error, first_line: usize) -> ParseError {
    let line = e
        .position()
        .map_or(0, |p| p.line() as usize + first_line - 1);
    let msg = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields, but the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8; save the file as UTF-8".to_string(),
        _ => e.to_string(),
    };
    err(line, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unterminated_quotes_are_found_where_they_open() {
        assert_eq!(open_quote("a,b\n1,\"x\"\"y\"\n", b','), None);
        assert_eq!(open_quote("a,b\n1,\"multi\nline\"\n2,3\n", b','), None);
        assert_eq!(
            open_quote("a,b\n1,ab\"c\n", b','),
            None,
            "a quote inside a field is text"
        );
        assert_eq!(open_quote("a,b\n1,2\n3,\"4\n5,6\n", b','), Some(3));
        assert_eq!(open_quote("a\tb\n\"1\t2\n", b'\t'), Some(2));
        let e = delimited(Format::Csv, "a,b\n1,\"2\n3,4\n", None, 1).unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn csv_rows_and_errors() {
        let r = rows(
            Format::Csv,
            b"partner,product,rate_pct\nCN,8505,160\nJP,8505,\"1,250.5\"\n",
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].0, 3);
        assert_eq!(r[1].1["rate_pct"], "1,250.5");
        let e = rows(Format::Csv, b"a,b\n1,2\n3\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("1 fields"), "{e}");
    }

    #[test]
    fn json_shapes() {
        assert_eq!(
            rows(Format::Json, br#"[{"a":1},{"a":2}]"#).unwrap().len(),
            2
        );
        assert_eq!(
            rows(Format::Json, br#"{"meta":1,"data":[{"a":1}]}"#)
                .unwrap()
                .len(),
            1
        );
        let e = rows(Format::Json, b"[{\"a\":1},\n{\"a\":").unwrap_err();
        assert_eq!(e.line, 2);
        let e = rows(Format::Jsonl, b"{\"a\":1}\n\n[1]\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("object"));
    }

    #[test]
    fn yaml_rows() {
        let r = rows(
            Format::Yaml,
            b"- {partner: CN, rate_pct: 160}\n- {partner: JP, rate_pct: 10}\n",
        )
        .unwrap();
        assert_eq!(r[0].1["rate_pct"], 160);
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let e = rows(Format::Csv, b"a,b\n1,2\n\xff,3\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("UTF-8"));
    }
}
