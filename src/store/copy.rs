//! `tocsin migrate`: copies a stopped store into an empty one, SQLite to
//! PostgreSQL or back, table by table in one transaction: states, read
//! positions, the outbox, the history, silences, the ledger (its entries'
//! exact bytes, so the chain verifies the same) and the kept documents.

use super::sql::{DbError, Tx};
use super::{Store, StoreError};

/// Each table and its columns, the same on both backends.
const TABLES: &[(&str, &str)] = &[
    (
        "rule_state",
        "rule, key, firing, since, last_sent, snapshot, seen, recent",
    ),
    ("table_rows", "source, file, key, row"),
    (
        "log_cursor",
        "source, file, dev, ino, \"offset\", line, header, count, prefix_len, prefix_hash",
    ),
    (
        "outbox",
        "id, channel, notification, created_at, attempts, next_at, status, last_error, rule, key",
    ),
    (
        "history",
        "id, notification_id, channel, rule, key, state, at, outcome, detail",
    ),
    ("poll_state", "source, url, etag, last_modified, item_ids"),
    ("feed_seen", "source, id, last_seen"),
    (
        "silences",
        "id, rule, key, reason, created_by, starts_at, ends_at",
    ),
    ("ledger", "seq, at, notification_id, entry, hash"),
    ("documents", "sha256, size, kept_at, used_at, data"),
];

/// The tables whose `id` PostgreSQL numbers from a sequence.
const SERIAL: &[&str] = &["outbox", "history", "silences"];

impl Store {
    /// Rows in each table that holds any.
    pub fn row_counts(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let mut out = Vec::new();
        for (table, _) in TABLES {
            let n = self
                .db
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), &[])
                .map_err(|e| self.named(e))?
                .map_or(0, |mut r| r.int(0));
            if n > 0 {
                out.push((*table, n as u64));
            }
        }
        Ok(out)
    }

    /// Copies everything `self` holds into `to`, which must be empty;
    /// returns the rows copied per table.
    pub fn copy_into(&self, to: &mut Store) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let held = to.row_counts()?;
        if !held.is_empty() {
            let list: Vec<String> = held.iter().map(|(t, n)| format!("{n} in {t}")).collect();
            return Err(to.err(format!(
                "holds data already ({} rows): copy into an empty store (a new database, or a file that does not exist yet)",
                list.join(", ")
            )));
        }
        let postgres = to.db.is_postgres();
        let copied = to
            .db
            .tx(Tx::Write, |dst| {
                let mut copied = Vec::new();
                for (table, columns) in TABLES {
                    let n = columns.split(',').count();
                    let marks: Vec<String> = (1..=n).map(|i| format!("?{i}")).collect();
                    let insert = format!(
                        "INSERT INTO {table} ({columns}) VALUES ({})",
                        marks.join(", ")
                    );
                    let mut rows = 0u64;
                    self.db
                        .each(&format!("SELECT {columns} FROM {table}"), &[], |r| {
                            dst.execute(&insert, &r.0)?;
                            rows += 1;
                            Ok(())
                        })
                        .map_err(|e| DbError::new(format!("{table}: {e}")))?;
                    if postgres && SERIAL.contains(table) {
                        dst.execute(
                            &format!("SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"),
                            &[],
                        )?;
                    }
                    copied.push((*table, rows));
                }
                Ok::<_, DbError>(copied)
            })
            .map_err(|e| to.named(e))?;
        Ok(copied)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use crate::store::testing::Backend;
    use crate::store::{Next, tests::note};

    #[test]
    fn a_store_copied_to_the_other_backend_and_back_keeps_everything_and_its_ledger_verifies() {
        let (sqlite, pg, back) = (Backend::sqlite(), Backend::postgres(), Backend::sqlite());
        let now = Utc::now();
        {
            let mut s = sqlite.open();
            s.commit(
                &[],
                &[],
                &[note("n1", &["mail"]), note("n2", &["mail"])],
                &[],
                now,
            )
            .unwrap();
            let Next::Ready(p) = s.next_due("mail", now).unwrap() else {
                panic!("due")
            };
            s.delivered(&p, "250 OK", now).unwrap();
            s.add_silence(
                "r",
                None,
                "planned",
                "ops",
                now,
                now + chrono::Duration::hours(1),
            )
            .unwrap();
        }
        let (from, mut to) = (sqlite.open(), pg.open());
        let copied = from.copy_into(&mut to).unwrap();
        assert_eq!(to.row_counts().unwrap(), from.row_counts().unwrap());
        assert!(copied.contains(&("outbox", 1)), "{copied:?}");
        assert_eq!(
            to.ledger(None).unwrap()[0].hash,
            from.ledger(None).unwrap()[0].hash
        );
        assert!(to.verify_ledger().unwrap().problems.is_empty());
        // Numbering goes on after the copied rows.
        let s = to
            .add_silence(
                "r",
                Some("k"),
                "more",
                "ops",
                now,
                now + chrono::Duration::hours(1),
            )
            .unwrap();
        assert_eq!(s.id, 2);
        let Next::Ready(p) = to.next_due("mail", now).unwrap() else {
            panic!("the pending one is there")
        };
        assert_eq!(p.notification.id, "n2");
        // A store with data is no target.
        let e = from.copy_into(&mut to).unwrap_err().to_string();
        assert!(e.contains("holds data already"), "{e}");
        // And back.
        let mut again = back.open();
        to.copy_into(&mut again).unwrap();
        assert_eq!(again.row_counts().unwrap(), to.row_counts().unwrap());
        assert_eq!(again.silences(now).unwrap().len(), 2);
    }
}
