//! The rows of a table as a source holds them between versions and the
//! store hands them back at a start: by key, each row one block of bytes
//! (its key, then its values) in a hash table, and the
//! field names of the rows, which rows of a table share, kept once (a
//! "shape"). A row costs its text and key plus a few dozen bytes, where a
//! map of JSON values per row cost several hundred.
//!
//! A version is compared in place: a row the same as before is only
//! marked with the version's stamp (and its line), a changed row replaces
//! the one before, which the comparison hands back for the record's
//! `prev`, and the rows left unmarked at the end are the removed ones. A
//! version refused part-way is undone from the rows it replaced. So a
//! change to a table of a million rows needs no second copy of it.
//!
//! Rows are not left in the store alone, to be read back when they change:
//! the store is written a batch after the source reads, so it may not yet
//! hold the version a change is compared with.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use serde_json::Value;

use crate::record::{Fields, Row};

/// A row as it is read: the cells of a CSV or TSV record under the
/// header's names (when no two columns share a name), or fields. A table
/// compares most rows in this form and makes fields only of those that
/// changed.
pub enum RowIn<'a> {
    Cells(&'a [String], &'a csv::StringRecord),
    Fields(Fields),
}

impl RowIn<'_> {
    pub fn into_fields(self) -> Fields {
        match self {
            RowIn::Fields(f) => f,
            RowIn::Cells(names, cells) => (names.iter().zip(cells.iter()))
                .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
                .collect(),
        }
    }

    /// The row's key, as [`row_key`] makes it.
    pub fn key(&self, key: &[String]) -> Result<String, String> {
        match self {
            RowIn::Fields(f) => row_key(f, key),
            RowIn::Cells(names, cells) => join_key(key, |name| {
                let at = names.iter().position(|n| n == name)?;
                cells.get(at).map(Cow::Borrowed)
            }),
        }
    }
}

/// The key of a row: its key fields' values joined by `|`.
pub fn row_key(fields: &Fields, key: &[String]) -> Result<String, String> {
    join_key(key, |name| {
        crate::record::lookup(fields, name).map(|v| match v {
            Value::String(s) => Cow::Borrowed(s.as_str()),
            other => Cow::Owned(other.to_string()),
        })
    })
}

/// The values `value` gives for the key's names, trimmed and joined by
/// `|`; a name without a value is an error.
fn join_key<'a>(
    key: &[String],
    mut value: impl FnMut(&str) -> Option<Cow<'a, str>>,
) -> Result<String, String> {
    let mut k = String::new();
    for (i, name) in key.iter().enumerate() {
        let v = value(name)
            .ok_or_else(|| format!("the row has no `{name}`, which is part of the source's key"))?;
        if i > 0 {
            k.push('|');
        }
        k.push_str(v.trim());
    }
    Ok(k)
}

/// The rows of a table by key, packed (see the module's comment).
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Per row: the key's length, the row's line in its version and the
    /// stamp of the version that last read it (4 bytes each,
    /// little-endian), the key, the shape's number (4 bytes) and the
    /// values (see `put_value`).
    rows: HashTable<Box<[u8]>>,
    /// The field names of rows, by number, each list once.
    shapes: Vec<Arc<[String]>>,
    shape_ids: HashMap<Arc<[String]>, u32>,
    /// The stamp of the last version read (or tried).
    stamp: u32,
}

/// Where a block's key starts.
const HEAD: usize = 12;
/// Marks the stamp of a row that the version with that stamp added.
const ADDED: u32 = 1 << 31;

fn key_of(block: &[u8]) -> &[u8] {
    let n = u32::from_le_bytes(block[..4].try_into().expect("a length")) as usize;
    &block[HEAD..HEAD + n]
}

/// The line a block's row was read from.
fn line_of(block: &[u8]) -> usize {
    u32::from_le_bytes(block[4..8].try_into().expect("a line")) as usize
}

fn stamp_of(block: &[u8]) -> u32 {
    u32::from_le_bytes(block[8..12].try_into().expect("a stamp"))
}

fn set_line_and_stamp(block: &mut [u8], line: usize, stamp: u32) {
    block[4..8].copy_from_slice(&(line as u32).to_le_bytes());
    block[8..12].copy_from_slice(&stamp.to_le_bytes());
}

/// Whether two blocks of one key hold the same row, wherever it was read.
fn same_row(a: &[u8], b: &[u8]) -> bool {
    a[HEAD..] == b[HEAD..]
}

fn hash(key: &[u8]) -> u64 {
    FxBuildHasher.hash_one(key)
}

/// What a version's row is to the version before ([`Table::see`]).
pub(crate) enum Seen {
    /// The same row (in the same column order).
    Same,
    /// Another row than before, which it replaced: the block it had.
    Changed(Box<[u8]>),
    /// A key the version before did not have.
    Added,
    /// A key this version had already, at this line.
    Again(usize),
}

impl Table {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn block(&self, key: &str) -> Option<&[u8]> {
        let k = key.as_bytes();
        (self.rows.find(hash(k), |b| key_of(b) == k)).map(|b| &**b)
    }

    /// The row of `key`, read back into fields.
    pub fn get(&self, key: &str) -> Option<Row> {
        self.block(key).map(|b| Row::new(self.fields(b)))
    }

    /// The keys held, in no order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        (self.rows.iter()).map(|b| key_text(b))
    }

    /// Holds `fields` as the row of `key` (a new key, or in place of its row).
    pub fn insert(&mut self, key: &str, fields: Fields) {
        let mut buf = Vec::new();
        self.pack(key, 0, &RowIn::Fields(fields), &mut buf);
        let block: Box<[u8]> = buf.into();
        let h = hash(key_of(&block));
        match (self.rows).entry(h, |b| key_of(b) == key_of(&block), |b| hash(key_of(b))) {
            hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = block,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(block);
            }
        }
    }

    /// Starts reading a version of about `rows` rows: its stamp, which
    /// [`Table::see`], [`Table::undo`] and [`Table::take_unseen`] take.
    pub(crate) fn begin(&mut self, rows: usize) -> u32 {
        self.stamp = (self.stamp + 1) % ADDED;
        let more = rows.saturating_sub(self.rows.len());
        self.rows.reserve(more, |b| hash(key_of(b)));
        self.stamp
    }

    /// Puts the row that `pack` left in `buf` in the table for the version
    /// `stamp`, in place of the key's row: what it is to the row before.
    /// A row the same as before is not copied, only marked as seen.
    pub(crate) fn see(&mut self, stamp: u32, buf: &[u8]) -> Seen {
        let key = key_of(buf);
        let h = hash(key);
        match (self.rows).entry(h, |b| key_of(b) == key, |b| hash(key_of(b))) {
            hashbrown::hash_table::Entry::Occupied(mut e) => {
                let b = e.get_mut();
                if stamp_of(b) & !ADDED == stamp {
                    Seen::Again(line_of(b))
                } else if same_row(b, buf) {
                    set_line_and_stamp(b, line_of(buf), stamp);
                    Seen::Same
                } else {
                    let mut new: Box<[u8]> = buf.into();
                    set_line_and_stamp(&mut new, line_of(buf), stamp);
                    Seen::Changed(std::mem::replace(b, new))
                }
            }
            hashbrown::hash_table::Entry::Vacant(e) => {
                let mut new: Box<[u8]> = buf.into();
                set_line_and_stamp(&mut new, line_of(buf), stamp | ADDED);
                e.insert(new);
                Seen::Added
            }
        }
    }

    /// Undoes the version `stamp`, refused part-way: the rows it replaced
    /// (`replaced`) back in their place, the rows it added gone.
    pub(crate) fn undo(&mut self, stamp: u32, replaced: Vec<Box<[u8]>>) {
        for old in replaced {
            let h = hash(key_of(&old));
            if let Some(b) = self.rows.find_mut(h, |b| key_of(b) == key_of(&old)) {
                *b = old;
            }
        }
        self.rows.retain(|b| stamp_of(b) != stamp | ADDED);
    }

    /// Takes out the rows that the version `stamp` did not have.
    pub(crate) fn take_unseen(&mut self, stamp: u32) -> Vec<Box<[u8]>> {
        (self.rows)
            .extract_if(|b| stamp_of(b) & !ADDED != stamp)
            .collect()
    }

    /// Packs a row into `buf`, as [`Table::see`] takes it.
    pub(crate) fn pack(&mut self, key: &str, line: usize, row: &RowIn<'_>, buf: &mut Vec<u8>) {
        let shape = match row {
            RowIn::Fields(f) => self.shape_of(f.keys()),
            RowIn::Cells(names, _) => self.shape_of(names.iter()),
        };
        buf.clear();
        buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        buf.extend_from_slice(&(line as u32).to_le_bytes());
        buf.extend_from_slice(&self.stamp.to_le_bytes());
        buf.extend_from_slice(key.as_bytes());
        buf.extend_from_slice(&shape.to_le_bytes());
        match row {
            RowIn::Fields(f) => f.values().for_each(|v| put_value(buf, v)),
            RowIn::Cells(_, cells) => cells.iter().for_each(|v| put_text(buf, v)),
        }
    }

    /// The number of the field names `names`, new ones added; the last
    /// shape added is tried first, as the rows of a CSV all have it.
    fn shape_of<'a>(&mut self, names: impl ExactSizeIterator<Item = &'a String> + Clone) -> u32 {
        if let Some(last) = self.shapes.last()
            && last.len() == names.len()
            && last.iter().zip(names.clone()).all(|(a, b)| a == b)
        {
            return self.shapes.len() as u32 - 1;
        }
        let names: Arc<[String]> = names.cloned().collect();
        if let Some(&id) = self.shape_ids.get(&names) {
            return id;
        }
        let id = self.shapes.len() as u32;
        self.shapes.push(names.clone());
        self.shape_ids.insert(names, id);
        id
    }

    /// A block read back into fields.
    pub(crate) fn fields(&self, block: &[u8]) -> Fields {
        let n = HEAD + key_of(block).len();
        let shape = u32::from_le_bytes(block[n..n + 4].try_into().expect("a shape"));
        let values = read_values(&block[n + 4..]);
        let names = self.shapes.get(shape as usize).map_or(&[][..], |s| &s[..]);
        names.iter().cloned().zip(values).collect()
    }
}

// A row's values, one after another: text as its length and its bytes,
// any other value as its length and its JSON. The length, doubled and
// with its lowest bit set when JSON follows, takes one byte when that is
// below 128, else four (big-endian, with the top bit set, so that the
// first byte tells which). Text, which is all a CSV has, so costs its
// bytes and one more, where JSON spent three on quotes and commas.

fn put_len(buf: &mut Vec<u8>, len: usize, json: bool) {
    let tagged = len << 1 | usize::from(json);
    match u8::try_from(tagged) {
        Ok(b) if b < 0x80 => buf.push(b),
        _ => buf.extend_from_slice(&(tagged as u32 | 1 << 31).to_be_bytes()),
    }
}

fn put_text(buf: &mut Vec<u8>, t: &str) {
    put_len(buf, t.len(), false);
    buf.extend_from_slice(t.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(t) => put_text(buf, t),
        other => {
            let json = serde_json::to_vec(other).expect("writing to memory");
            put_len(buf, json.len(), true);
            buf.extend_from_slice(&json);
        }
    }
}

/// The values [`put_text`] and [`put_value`] wrote.
fn read_values(mut b: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(&first) = b.first() {
        let (tagged, head) = if first < 0x80 {
            (usize::from(first), 1)
        } else if let Some(four) = b.get(..4) {
            let n = u32::from_be_bytes(four.try_into().expect("four bytes"));
            ((n & !(1 << 31)) as usize, 4)
        } else {
            break;
        };
        let (len, json) = (tagged >> 1, tagged & 1 == 1);
        let Some(bytes) = b.get(head..head + len) else {
            break;
        };
        out.push(if json {
            serde_json::from_slice(bytes).unwrap_or(Value::Null)
        } else {
            Value::String(String::from_utf8_lossy(bytes).into_owned())
        });
        b = &b[head + len..];
    }
    out
}

/// A block's key.
pub(crate) fn key_text(block: &[u8]) -> &str {
    std::str::from_utf8(key_of(block)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: serde_json::Value) -> Fields {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn rows_read_back_as_written_in_their_order() {
        let mut t = Table::default();
        let rows = [
            fields(serde_json::json!({"partner": "CN", "product": "8505", "rate": "25"})),
            fields(serde_json::json!({"partner": "JP", "product": "8505", "rate": "7.5"})),
            fields(
                serde_json::json!({"rate": 1.5e300, "n": -3, "x": null, "o": {"b": [1, "é\"\n"], "a": true},
                    "long": "ü".repeat(200), "list": vec![12345; 50], "": ""}),
            ),
            fields(serde_json::json!({})),
        ];
        for (i, r) in rows.iter().enumerate() {
            t.insert(&format!("k{i}|ü"), r.clone());
        }
        assert_eq!(t.len(), 4);
        for (i, r) in rows.iter().enumerate() {
            let back = t.get(&format!("k{i}|ü")).unwrap();
            assert_eq!(*back, *r);
            assert!(back.keys().eq(r.keys()), "field order kept");
        }
        assert_eq!(t.shapes.len(), 3, "the two CSV-like rows share one shape");
        assert!(t.get("k9").is_none());
        t.insert("k0|ü", rows[1].clone());
        assert_eq!(*t.get("k0|ü").unwrap(), rows[1], "a key's row replaced");
        assert_eq!(t.len(), 4);
        let mut keys: Vec<&str> = t.keys().collect();
        keys.sort();
        assert_eq!(keys, ["k0|ü", "k1|ü", "k2|ü", "k3|ü"]);
    }

    #[test]
    fn keys() {
        let f = fields(serde_json::json!({"partner": "CN", "product": 8505}));
        assert_eq!(
            row_key(&f, &["partner".into(), "product".into()]).unwrap(),
            "CN|8505"
        );
        assert!(row_key(&f, &["x".into()]).is_err());
    }

    #[test]
    fn cells_key_and_pack_as_their_fields_do() {
        // A table read from a CSV (cells) is compared with rows the store
        // gave back (fields): the two must pack to the same bytes.
        let names: Vec<String> = ["partner", "product", "note"].map(String::from).into();
        let cells = csv::StringRecord::from(vec![" CN ", "8505", "a \"b\"\n\u{e9}"]);
        let as_fields = RowIn::Cells(&names, &cells).into_fields();
        let key = ["product".to_string(), "partner".to_string()];
        let cells_key = RowIn::Cells(&names, &cells).key(&key).unwrap();
        assert_eq!(cells_key, "8505|CN");
        assert_eq!(cells_key, row_key(&as_fields, &key).unwrap());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut t = Table::default();
        t.pack(&cells_key, 3, &RowIn::Cells(&names, &cells), &mut a);
        t.pack(&cells_key, 3, &RowIn::Fields(as_fields.clone()), &mut b);
        assert_eq!(a, b);
        assert_eq!(t.fields(&a), as_fields);
        let missing = ["rate".to_string()];
        assert_eq!(
            RowIn::Cells(&names, &cells).key(&missing).unwrap_err(),
            row_key(&as_fields, &missing).unwrap_err()
        );
    }
}
