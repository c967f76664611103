//! A table source's rows compared from one version to the next, and the
//! ids of rows and items without one of their own.
//!
//! The previous version is a [`Table`] (see `crate::rows` for how it is
//! kept): a version is compared block by block, and only a row that
//! differs is read back into fields, for its record's `prev`, and compared
//! field by field (columns that moved are no change).

use super::parse;
use super::parse::ParseError;
use crate::record::{Fields, Record, RecordKind, Row};
use crate::rows::{Table, same_row};

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

/// Compares `parsed` (rows with their line numbers) with `table`, which
/// becomes the new version. A row without its key refuses the whole
/// table: the error is (line, message) and `table` stays as it was.
pub(crate) fn diff_table(
    table: &mut Table,
    parsed: Vec<(usize, Fields)>,
    key: &[String],
    mk: impl Fn(Row, String, Option<Row>, RecordKind) -> Record,
) -> Result<TableDiff, (usize, String)> {
    diff_each(table, key, mk, |row| {
        parsed.into_iter().try_for_each(|(line, f)| row(line, f))
    })
    .map_err(|e| (e.line, e.message))
}

/// [`diff_table`] over rows as `each` reads them, one at a time: a row that
/// is the same as before is packed, compared and dropped, so a version of
/// a million rows is never held as fields all at once.
pub(crate) fn diff_each(
    table: &mut Table,
    key: &[String],
    mk: impl Fn(Row, String, Option<Row>, RecordKind) -> Record,
    each: impl FnOnce(&mut dyn FnMut(usize, Fields) -> Result<(), ParseError>) -> Result<(), ParseError>,
) -> Result<TableDiff, ParseError> {
    let mut next = table.empty_like(table.len());
    // The rows that differ from the version before, in the file's order,
    // each with its previous row when it had one.
    let mut changed: Vec<(String, Fields, Option<Fields>)> = Vec::new();
    // Rows of the version before that this one has too: when all of them,
    // none was removed.
    let mut kept = 0;
    let mut buf = Vec::new();
    each(&mut |line, fields| {
        let k = parse::row_key(&fields, key).map_err(|message| ParseError { line, message })?;
        let block = next.pack(&k, line, &fields, &mut buf);
        let old = table.block(&k);
        kept += usize::from(old.is_some());
        // None: the same row; Some(prev): a row that may have changed.
        let prev = match old {
            Some(old) if same_row(old, &block) => None,
            Some(old) => Some(Some(table.fields(old))),
            None => Some(None),
        };
        // Two rows of one key: which one holds would depend on their order.
        if let Some(first) = next.put(block) {
            return Err(ParseError {
                line,
                message: format!(
                    "lines {first} and {line} have the same key `{k}` ({}): each key may have one row",
                    key.join(", ")
                ),
            });
        }
        match prev {
            Some(Some(p)) if p == fields => {} // the same fields in another order
            Some(p) => changed.push((k, fields, p)),
            None => {}
        }
        Ok(())
    })?;
    let mut records = Vec::with_capacity(changed.len());
    let mut upsert = Vec::with_capacity(changed.len());
    for (k, fields, prev) in changed {
        let new = Row::new(fields);
        records.push(mk(
            new.clone(),
            k.clone(),
            prev.map(Row::new),
            RecordKind::Row,
        ));
        upsert.push((k, new));
    }
    let mut removed: Vec<&str> = if kept < table.len() {
        table.keys().filter(|k| next.block(k).is_none()).collect()
    } else {
        Vec::new()
    };
    removed.sort_unstable();
    let mut delete = Vec::with_capacity(removed.len());
    for k in removed {
        if let Some(old) = table.get(k) {
            records.push(mk(old, k.to_string(), None, RecordKind::Removed));
            delete.push(k.to_string());
        }
    }
    *table = next;
    Ok(TableDiff {
        records,
        upsert,
        delete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Format;

    type Seen = Vec<(String, RecordKind, Option<String>)>;

    fn diff(t: &mut Table, csv: &str) -> Result<Seen, String> {
        diff_in(Format::Csv, t, csv)
    }

    fn diff_in(format: Format, t: &mut Table, text: &str) -> Result<Seen, String> {
        let key = ["partner".to_string(), "product".to_string()];
        let mk = |fields: Row, key: String, prev: Option<Row>, kind: RecordKind| Record {
            source: "rates".into(),
            key,
            fields,
            prev,
            observed: chrono::DateTime::default(),
            kind,
        };
        let d = diff_each(t, &key, mk, |row| {
            parse::each_row(format, text.as_bytes(), row)
        })
        .map_err(|e| format!("{}: {}", e.line, e.message))?;
        Ok((d.records.into_iter())
            .map(|r| {
                let prev = r.prev.map(|p| p["rate"].as_str().unwrap_or("").to_string());
                (r.key, r.kind, prev)
            })
            .collect())
    }

    #[test]
    fn versions_compared_row_by_row() {
        let mut t = Table::default();
        let first = diff(&mut t, "partner,product,rate\nCN,1,10\nCN,2,20\nJP,1,30\n").unwrap();
        assert_eq!(first.len(), 3, "every row of a first version is new");
        assert_eq!(t.len(), 3);
        // CN|2 changes, JP|1 goes, US|1 comes; the columns move too.
        let next = diff(&mut t, "rate,product,partner\n10,1,CN\n25,2,CN\n5,1,US\n").unwrap();
        assert_eq!(
            next,
            [
                ("CN|2".to_string(), RecordKind::Row, Some("20".to_string())),
                ("US|1".to_string(), RecordKind::Row, None),
                ("JP|1".to_string(), RecordKind::Removed, None),
            ]
        );
        assert!(
            diff(&mut t, "partner,product,rate\nCN,1,10\nCN,2,25\nUS,1,5\n")
                .unwrap()
                .is_empty(),
            "the same rows in another column order are no change"
        );
    }

    #[test]
    fn a_bad_version_is_refused_whole_and_the_table_stands() {
        let mut t = Table::default();
        diff(&mut t, "partner,product,rate\nCN,1,10\nCN,2,20\n").unwrap();
        let e = diff(&mut t, "partner,product,rate\nCN,1,11\nJP,1,1\nCN,1,12\n").unwrap_err();
        assert!(
            e.starts_with("4: lines 2 and 4 have the same key `CN|1`"),
            "{e}"
        );
        let e = diff(&mut t, "partner,product,rate\nCN,1,11\nCN,2\n").unwrap_err();
        assert!(e.starts_with("3: 2 fields, but the header has 3"), "{e}");
        // JSON lines are read a row at a time too: a bad line after a
        // changed row still refuses the version whole.
        let jsonl =
            "{\"partner\":\"CN\",\"product\":\"1\",\"rate\":\"11\"}\n{\"partner\":\"CN\",\n";
        let e = diff_in(Format::Jsonl, &mut t, jsonl).unwrap_err();
        assert!(e.starts_with("2: invalid JSON"), "{e}");
        assert_eq!(t.len(), 2);
        assert_eq!(t.get("CN|1").unwrap()["rate"], "10", "the table as it was");
        assert_eq!(
            diff(&mut t, "partner,product,rate\nCN,1,11\nCN,2,20\n").unwrap(),
            [("CN|1".to_string(), RecordKind::Row, Some("10".to_string()))]
        );
    }
}
