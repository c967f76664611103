//! The rows of a table as a source holds them between versions and the
//! store hands them back at a start: by key, each row one block of bytes
//! (its key, then its values as a JSON array) in a hash table, and the
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

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use serde::ser::{SerializeSeq, Serializer};
use serde_json::Value;

use crate::record::{Fields, Row};

/// The rows of a table by key, packed (see the module's comment).
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Per row: the key's length, the row's line in its version and the
    /// stamp of the version that last read it (4 bytes each,
    /// little-endian), the key, the shape's number (4 bytes) and the
    /// values as a JSON array.
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
    pub fn insert(&mut self, key: &str, fields: &Fields) {
        let mut buf = Vec::new();
        self.pack(key, 0, fields, &mut buf);
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
    pub(crate) fn pack(&mut self, key: &str, line: usize, fields: &Fields, buf: &mut Vec<u8>) {
        let shape = self.shape_of(fields);
        buf.clear();
        buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        buf.extend_from_slice(&(line as u32).to_le_bytes());
        buf.extend_from_slice(&self.stamp.to_le_bytes());
        buf.extend_from_slice(key.as_bytes());
        buf.extend_from_slice(&shape.to_le_bytes());
        let mut ser = serde_json::Serializer::new(&mut *buf);
        let mut seq = ser
            .serialize_seq(Some(fields.len()))
            .expect("writing to memory");
        for v in fields.values() {
            seq.serialize_element(v).expect("writing to memory");
        }
        seq.end().expect("writing to memory");
    }

    /// The number of the field names of `fields`, new ones added; the last
    /// shape added is tried first, as the rows of a CSV all have it.
    fn shape_of(&mut self, fields: &Fields) -> u32 {
        if let Some(last) = self.shapes.last()
            && last.len() == fields.len()
            && last.iter().zip(fields.keys()).all(|(a, b)| a == b)
        {
            return self.shapes.len() as u32 - 1;
        }
        let names: Arc<[String]> = fields.keys().cloned().collect();
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
        let values: Vec<Value> = serde_json::from_slice(&block[n + 4..]).unwrap_or_default();
        let names = self.shapes.get(shape as usize).map_or(&[][..], |s| &s[..]);
        names.iter().cloned().zip(values).collect()
    }
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
                serde_json::json!({"rate": 1.5e300, "n": -3, "x": null, "o": {"b": [1, "é\"\n"], "a": true}}),
            ),
            fields(serde_json::json!({})),
        ];
        for (i, r) in rows.iter().enumerate() {
            t.insert(&format!("k{i}|ü"), r);
        }
        assert_eq!(t.len(), 4);
        for (i, r) in rows.iter().enumerate() {
            let back = t.get(&format!("k{i}|ü")).unwrap();
            assert_eq!(*back, *r);
            assert!(back.keys().eq(r.keys()), "field order kept");
        }
        assert_eq!(t.shapes.len(), 3, "the two CSV-like rows share one shape");
        assert!(t.get("k9").is_none());
        t.insert("k0|ü", &rows[1]);
        assert_eq!(*t.get("k0|ü").unwrap(), rows[1], "a key's row replaced");
        assert_eq!(t.len(), 4);
        let mut keys: Vec<&str> = t.keys().collect();
        keys.sort();
        assert_eq!(keys, ["k0|ü", "k1|ü", "k2|ü", "k3|ü"]);
    }
}
