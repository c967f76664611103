//! The rows of a table as a source holds them between versions and the
//! store hands them back at a start: by key, each row one block of bytes
//! (its key, then its values as a JSON array) in a hash table, and the
//! field names of the rows, which rows of a table share, kept once (a
//! "shape"). A row costs its text and key plus a few dozen bytes, where a
//! map of JSON values per row cost several hundred.
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
    /// Per row: the key's length and the row's line in its version (4
    /// bytes each, little-endian), the key, the shape's number (4 bytes)
    /// and the values as a JSON array.
    rows: HashTable<Box<[u8]>>,
    /// The field names of rows, by number, each list once.
    shapes: Vec<Arc<[String]>>,
    shape_ids: HashMap<Arc<[String]>, u32>,
}

fn key_of(block: &[u8]) -> &[u8] {
    let n = u32::from_le_bytes(block[..4].try_into().expect("a length")) as usize;
    &block[8..8 + n]
}

/// The line a block's row was read from.
pub(crate) fn line_of(block: &[u8]) -> usize {
    u32::from_le_bytes(block[4..8].try_into().expect("a line")) as usize
}

/// Whether two blocks of one key hold the same row, wherever it was read.
pub(crate) fn same_row(a: &[u8], b: &[u8]) -> bool {
    a[8..] == b[8..]
}

fn hash(key: &[u8]) -> u64 {
    FxBuildHasher.hash_one(key)
}

impl Table {
    /// A table for the next version of this one, with room for `n` rows:
    /// the same shapes, so that an unchanged row packs to the same bytes.
    pub(crate) fn empty_like(&self, n: usize) -> Table {
        Table {
            rows: HashTable::with_capacity(n),
            shapes: self.shapes.clone(),
            shape_ids: self.shape_ids.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(crate) fn block(&self, key: &str) -> Option<&[u8]> {
        let k = key.as_bytes();
        (self.rows.find(hash(k), |b| key_of(b) == k)).map(|b| &**b)
    }

    /// The row of `key`, read back into fields.
    pub fn get(&self, key: &str) -> Option<Row> {
        self.block(key).map(|b| Row::new(self.fields(b)))
    }

    /// The keys held, in no order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        (self.rows.iter()).map(|b| std::str::from_utf8(key_of(b)).unwrap_or_default())
    }

    /// Holds `fields` as the row of `key` (a new key, or in place of its row).
    pub fn insert(&mut self, key: &str, fields: &Fields) {
        let block = self.pack(key, 0, fields, &mut Vec::new());
        self.put(block);
    }

    /// Puts a block in, in place of its key's; the line of the block it
    /// replaced, if any.
    pub(crate) fn put(&mut self, block: Box<[u8]>) -> Option<usize> {
        let h = hash(key_of(&block));
        match (self.rows).entry(h, |b| key_of(b) == key_of(&block), |b| hash(key_of(b))) {
            hashbrown::hash_table::Entry::Occupied(mut e) => {
                let line = line_of(e.get());
                *e.get_mut() = block;
                Some(line)
            }
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(block);
                None
            }
        }
    }

    /// The block of a row: `buf` is scratch space.
    pub(crate) fn pack(
        &mut self,
        key: &str,
        line: usize,
        fields: &Fields,
        buf: &mut Vec<u8>,
    ) -> Box<[u8]> {
        let shape = self.shape_of(fields);
        buf.clear();
        buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        buf.extend_from_slice(&(line as u32).to_le_bytes());
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
        buf.as_slice().into()
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
        let n = 8 + key_of(block).len();
        let shape = u32::from_le_bytes(block[n..n + 4].try_into().expect("a shape"));
        let values: Vec<Value> = serde_json::from_slice(&block[n + 4..]).unwrap_or_default();
        let names = self.shapes.get(shape as usize).map_or(&[][..], |s| &s[..]);
        names.iter().cloned().zip(values).collect()
    }
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
