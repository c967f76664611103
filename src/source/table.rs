//! A table source's rows compared from one version to the next, and the
//! ids of rows and items without one of their own.
//!
//! The previous version is a [`Table`] (see `crate::rows` for how it is
//! kept): a version is compared block by block, and only a row that
//! differs is read back into fields, for its record's `prev`, and compared
//! field by field (columns that moved are no change).

use std::collections::HashMap;

use super::parse::ParseError;
use crate::record::{Fields, Record, RecordKind, Row};
use crate::rows::{RowIn, Seen, Table, key_text};

/// An id from a SHA-256 digest: `sha256:` and its first 12 bytes in hex.
pub(crate) fn hash_id(digest: &[u8]) -> String {
    format!("sha256:{}", crate::record::hex(&digest[..12]))
}

/// What a new version of a table means, or a part of it: a record per row
/// added or changed, one per row removed, and the store's update.
#[derive(Default)]
pub(crate) struct TableDiff {
    pub records: Vec<Record>,
    pub upsert: Vec<(String, Row)>,
    pub delete: Vec<String>,
}

impl TableDiff {
    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Adds `other`'s records and updates after this one's.
    pub(crate) fn extend(&mut self, other: TableDiff) {
        self.records.extend(other.records);
        self.upsert.extend(other.upsert);
        self.delete.extend(other.delete);
    }
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
    let mut parsed = Some(parsed);
    let mut all = TableDiff::default();
    diff_each(
        table,
        key,
        mk,
        |row| {
            (parsed.take().into_iter().flatten())
                .try_for_each(|(line, f)| row(line, RowIn::Fields(f)))
        },
        0,
        usize::MAX,
        &mut |d| all.extend(d),
    )
    .map_err(|e| (e.line, e.message))?;
    Ok(all)
}

/// [`diff_table`] over rows as `each` reads them, one at a time, handing
/// what changed to `emit` in parts of at most `chunk` records, in the
/// file's order, the removed rows last. `rows` is about how many rows the
/// version has, if known (0 if not), to make room for them at once.
///
/// The version is read whole before anything is emitted, so a version
/// refused at its last row emits nothing. A row that is the same as before
/// is packed, compared and dropped; of the rows that differ, the fields of
/// the first `chunk` are kept, and when more differ (a first version of a
/// million rows: all of them), only their lines are, and `each` is called
/// a second time to read them again, a part at a time. A version is so
/// never held as fields all at once.
pub(crate) fn diff_each(
    table: &mut Table,
    key: &[String],
    mk: impl Fn(Row, String, Option<Row>, RecordKind) -> Record,
    mut each: impl FnMut(
        &mut dyn FnMut(usize, RowIn<'_>) -> Result<(), ParseError>,
    ) -> Result<(), ParseError>,
    rows: usize,
    chunk: usize,
    emit: &mut dyn FnMut(TableDiff),
) -> Result<(), ParseError> {
    let before = table.len();
    let stamp = table.begin(rows);
    // The rows this version replaced, for `prev` (and to undo it if it is
    // refused).
    let mut replaced: Vec<Box<[u8]>> = Vec::new();
    // The lines of the rows that differ from the version before, and the
    // fields of the first `chunk` of them with their previous fields;
    // `spilled` when there were more.
    let mut lines: Vec<u32> = Vec::new();
    let mut kept_fields: Vec<(String, Fields, Option<Fields>, usize)> = Vec::new();
    let mut spilled = false;
    // Rows of the version before that this one has too: when all of them,
    // none was removed.
    let mut kept = 0;
    let mut buf = Vec::new();
    let read = each(&mut |line, row| {
        let k = row
            .key(key)
            .map_err(|message| ParseError { line, message })?;
        table.pack(&k, line, &row, &mut buf);
        let (fields, prev) = match table.see(stamp, &buf) {
            Seen::Same => {
                kept += 1;
                return Ok(());
            }
            Seen::Changed(old) => {
                kept += 1;
                let prev = table.fields(&old);
                replaced.push(old);
                let fields = row.into_fields();
                // The same fields in another order are no change.
                if prev == fields {
                    return Ok(());
                }
                (fields, Some(prev))
            }
            Seen::Added => (row.into_fields(), None),
            // Two rows of one key: which one holds would depend on their order.
            Seen::Again(first) => {
                return Err(ParseError {
                    line,
                    message: format!(
                        "lines {first} and {line} have the same key `{k}` ({}): each key may have one row",
                        key.join(", ")
                    ),
                });
            }
        };
        // A first version: every row is new, and none needs its line kept.
        if before > 0 {
            lines.push(line as u32);
        }
        if kept_fields.len() < chunk && !spilled {
            kept_fields.push((k, fields, prev, line));
        } else if !spilled {
            spilled = true;
            kept_fields = Vec::new();
        }
        Ok(())
    });
    if let Err(e) = read {
        table.undo(stamp, replaced);
        return Err(e);
    }
    let mut part = TableDiff::default();
    let mut add = |part: &mut TableDiff, k: String, fields: Fields, prev: Option<Fields>, line| {
        let new = Row::new(fields);
        let mut record = mk(new.clone(), k.clone(), prev.map(Row::new), RecordKind::Row);
        record.line = u32::try_from(line).unwrap_or(u32::MAX);
        part.records.push(record);
        part.upsert.push((k, new));
        if part.records.len() >= chunk {
            emit(std::mem::take(part));
        }
    };
    if !spilled {
        for (k, fields, prev, line) in kept_fields {
            add(&mut part, k, fields, prev, line);
        }
    } else {
        // Read again: the same bytes give the same rows, keys and lines.
        let prevs: HashMap<&str, &[u8]> =
            (replaced.iter()).map(|b| (key_text(b), &b[..])).collect();
        let mut at = 0;
        each(&mut |line, row| {
            if before > 0 {
                if lines.get(at) != Some(&(line as u32)) {
                    return Ok(());
                }
                at += 1;
            }
            let k = row
                .key(key)
                .map_err(|message| ParseError { line, message })?;
            let prev = prevs.get(k.as_str()).map(|b| table.fields(b));
            add(&mut part, k, row.into_fields(), prev, line);
            Ok(())
        })?;
    }
    let mut removed = if kept < before {
        table.take_unseen(stamp)
    } else {
        Vec::new()
    };
    removed.sort_unstable_by(|a, b| key_text(a).cmp(key_text(b)));
    for old in removed {
        let k = key_text(&old).to_string();
        part.records.push(mk(
            Row::new(table.fields(&old)),
            k.clone(),
            None,
            RecordKind::Removed,
        ));
        part.delete.push(k);
        if part.records.len() >= chunk {
            emit(std::mem::take(&mut part));
        }
    }
    if !part.is_empty() {
        emit(part);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Format;
    use crate::source::parse;

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
            doc: None,
            line: 0,
        };
        // Read whole, and in parts of two rows (which reads a version
        // with more than two changes twice): the same records either way.
        let mut small = t.clone();
        let mut parts = Vec::new();
        let in_parts = diff_each(
            &mut small,
            &key,
            mk,
            |row| parse::each_row(format, text.as_bytes(), row),
            0,
            2,
            &mut |d| parts.push(d),
        );
        let mut whole = TableDiff::default();
        let d = diff_each(
            t,
            &key,
            mk,
            |row| parse::each_row(format, text.as_bytes(), row),
            0,
            usize::MAX,
            &mut |d| whole.extend(d),
        )
        .map_err(|e| format!("{}: {}", e.line, e.message));
        assert_eq!(in_parts.is_ok(), d.is_ok());
        if d.is_err() {
            assert!(parts.is_empty(), "a refused version emits nothing");
        }
        d?;
        let seen = |d: TableDiff| -> Seen {
            assert_eq!(d.records.len(), d.upsert.len() + d.delete.len());
            (d.records.into_iter())
                .map(|r| {
                    let prev = r.prev.map(|p| p["rate"].as_str().unwrap_or("").to_string());
                    (r.key, r.kind, prev)
                })
                .collect()
        };
        assert!(parts.iter().all(|p| (1..=2).contains(&p.records.len())));
        let parts: Seen = parts.into_iter().flat_map(seen).collect();
        let whole = seen(whole);
        assert_eq!(parts, whole, "read whole and in parts");
        assert_eq!(small.len(), t.len());
        Ok(whole)
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
        // A refused version that saw a row unchanged, added one and changed
        // one leaves no mark: the next version still finds CN|2 removed and
        // JP|9 new.
        let e = diff(
            &mut t,
            "partner,product,rate\nCN,2,20\nJP,9,1\nCN,1,5\nJP,9,2\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with("5: lines 3 and 5 have the same key `JP|9`"),
            "{e}"
        );
        assert_eq!(t.len(), 2);
        assert!(t.get("JP|9").is_none(), "the added row undone");
        assert_eq!(
            t.get("CN|1").unwrap()["rate"],
            "11",
            "the changed row undone"
        );
        assert_eq!(
            diff(&mut t, "partner,product,rate\nCN,1,11\nJP,9,1\n").unwrap(),
            [
                ("JP|9".to_string(), RecordKind::Row, None),
                ("CN|2".to_string(), RecordKind::Removed, None),
            ]
        );
    }
}
