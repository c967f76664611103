//! A table source's rows compared from one version to the next, and the
//! ids of rows and items without one of their own.

use std::collections::HashMap;

use super::parse;
use crate::record::{Fields, Record, RecordKind, Row};

/// An id from a SHA-256 digest: `sha256:` and its first 12 bytes in hex.
pub(crate) fn hash_id(digest: &[u8]) -> String {
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// What a new version of a table means: a record per row added or
/// changed, one per row removed, and the store's update.
pub(crate) struct TableDiff {
    pub records: Vec<Record>,
    pub upsert: Vec<(String, Row)>,
    pub delete: Vec<String>,
}

/// Compares `parsed` (rows with their line numbers) with `rows`, which
/// becomes the new table. A row without its key refuses the whole table:
/// the error is (line, message) and `rows` stays as it was.
pub(crate) fn diff_table(
    rows: &mut HashMap<String, Row>,
    parsed: Vec<(usize, Fields)>,
    key: &[String],
    mk: impl Fn(Row, String, Option<Row>, RecordKind) -> Record,
) -> Result<TableDiff, (usize, String)> {
    let mut next: HashMap<String, Row> = HashMap::with_capacity(parsed.len());
    let mut lines: HashMap<String, usize> = HashMap::with_capacity(parsed.len());
    let mut order = Vec::with_capacity(parsed.len());
    for (line, fields) in parsed {
        let k = parse::row_key(&fields, key).map_err(|m| (line, m))?;
        // Two rows of one key: which one holds would depend on their order.
        if let Some(first) = lines.insert(k.clone(), line) {
            return Err((
                line,
                format!(
                    "lines {first} and {line} have the same key `{k}` ({}): each key may have one row",
                    key.join(", ")
                ),
            ));
        }
        next.insert(k.clone(), Row::new(fields));
        order.push(k);
    }
    let mut records = Vec::new();
    let mut upsert = Vec::new();
    for k in &order {
        let new = &next[k];
        match rows.get(k) {
            Some(old) if old == new => {}
            old => {
                records.push(mk(new.clone(), k.clone(), old.cloned(), RecordKind::Row));
                upsert.push((k.clone(), new.clone()));
            }
        }
    }
    let mut removed: Vec<(&String, &Row)> = rows
        .iter()
        .filter(|(k, _)| !next.contains_key(*k))
        .collect();
    removed.sort_by(|a, b| a.0.cmp(b.0));
    let mut delete = Vec::with_capacity(removed.len());
    for (k, old) in removed {
        records.push(mk(old.clone(), k.clone(), None, RecordKind::Removed));
        delete.push(k.clone());
    }
    *rows = next;
    Ok(TableDiff {
        records,
        upsert,
        delete,
    })
}
