//! The evidence ledger: every notification delivered, failed or silenced is
//! appended as an entry whose hash covers the one before it, so no entry
//! can be changed or removed unnoticed; and the document behind each alert
//! is kept once by its SHA-256, compressed, for `evidence.retention`.
//!
//! An entry is a JSON object written in canonical form (keys sorted, no
//! spaces) and stored as those exact bytes; its hash is
//! `SHA-256(previous hash || entry)`, the previous hash as its 32 bytes
//! (32 zero bytes before the first entry), in hex. Documents are kept
//! zlib-compressed; one unused for the retention is dropped, and a
//! `pruned` entry naming it is appended, so the chain says why it is gone.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::db::Db;
use super::sql::{DbError, DbResult, Row, Tx, vals};
use super::{Store, StoreError, parse_ts, ts};
use crate::notification::Notification;
use crate::record::Document;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE ledger (
    seq INTEGER PRIMARY KEY, at TEXT NOT NULL, notification_id TEXT,
    entry TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE documents (
    sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL,
    kept_at TEXT NOT NULL, used_at TEXT NOT NULL, data BLOB NOT NULL);
"#;

/// One entry as stored.
#[derive(Clone, Debug)]
pub struct Entry {
    pub seq: i64,
    /// The canonical JSON the hash covers.
    pub entry: String,
    pub hash: String,
}

impl Entry {
    /// The entry's fields.
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.entry).unwrap_or(Value::Null)
    }
}

/// A document kept for the evidence of an alert.
#[derive(Clone, Debug)]
pub struct Kept {
    pub kept_at: DateTime<Utc>,
    pub bytes: Vec<u8>,
}

/// What `audit verify` found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub entries: u64,
    pub documents: u64,
    /// The last entry's hash: kept elsewhere, it shows later that no entry
    /// was cut off the end.
    pub head: Option<String>,
    /// Each problem, by the entry it concerns, first entry first.
    pub problems: Vec<(i64, String)>,
}

/// The hash of `entry` after `prev` (hex; empty before the first entry).
fn chain(prev: &str, entry: &str) -> String {
    let mut prev_raw = [0u8; 32];
    if !prev.is_empty() {
        for (i, b) in prev_raw.iter_mut().enumerate() {
            *b = prev
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0);
        }
    }
    let mut h = Sha256::new();
    h.update(prev_raw);
    h.update(entry.as_bytes());
    crate::record::hex(&h.finalize())
}

/// The canonical form of an entry: keys sorted at every level, no spaces.
fn canonical(mut v: Value) -> String {
    v.sort_all_objects();
    serde_json::to_string(&v).unwrap_or_default()
}

/// Appends an entry made of `fields` (the sequence number is added), in
/// a write transaction of `db`, under the ledger's lock so that no other
/// connection appends between reading the head and writing after it.
pub(super) fn append(
    db: &Db,
    at: DateTime<Utc>,
    notification_id: Option<&str>,
    mut fields: serde_json::Map<String, Value>,
) -> DbResult<i64> {
    let (seq, prev) = db.ledger_head()?;
    let seq = seq + 1;
    fields.insert("seq".into(), seq.into());
    fields.insert("at".into(), ts(at).into());
    let entry = canonical(Value::Object(fields));
    let hash = chain(&prev, &entry);
    db.execute(
        "INSERT INTO ledger (seq, at, notification_id, entry, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
        &vals![seq, ts(at), notification_id, entry, &hash],
    )?;
    db.appended(seq, &hash);
    Ok(seq)
}

/// Whether the document `sha` is kept.
fn is_kept(db: &Db, sha: &str) -> DbResult<bool> {
    Ok(db
        .query_row("SELECT 1 FROM documents WHERE sha256 = ?1", &vals![sha])?
        .is_some())
}

/// Appends what became of `n` on `channel`: `delivered`, `failed` or
/// `silenced`, with the server's answer or the reason. The entry names the
/// document behind it when that is kept.
pub(super) fn append_outcome(
    db: &Db,
    n: &Notification,
    channel: &str,
    outcome: &str,
    detail: &str,
    at: DateTime<Utc>,
) -> DbResult<i64> {
    let document = match &n.evidence.document_sha256 {
        Some(sha) if is_kept(db, sha)? => Some(sha.clone()),
        _ => None,
    };
    let payload = serde_json::to_value(n).unwrap_or(Value::Null);
    let mut fields = serde_json::Map::new();
    fields.insert("outcome".into(), outcome.into());
    fields.insert("channel".into(), channel.into());
    fields.insert("detail".into(), detail.into());
    fields.insert("document".into(), document.into());
    fields.insert("notification".into(), payload);
    append(db, at, Some(&n.id), fields)
}

/// Compresses the documents of `docs` that the store does not keep yet;
/// done before the transaction, so that the write lock is not held while a
/// large table is compressed.
pub(super) fn compress_new(
    db: &Db,
    docs: &[std::sync::Arc<Document>],
) -> DbResult<Vec<(String, usize, Vec<u8>)>> {
    use std::io::Write;
    let mut out: Vec<(String, usize, Vec<u8>)> = Vec::new();
    for d in docs {
        let Some(bytes) = &d.bytes else { continue };
        let sha = d.sha256();
        if out.iter().any(|(s, _, _)| s == sha) {
            continue;
        }
        if is_kept(db, sha)? {
            out.push((sha.to_string(), bytes.len(), Vec::new()));
            continue;
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        // Writing into a Vec cannot fail.
        let data = z
            .write_all(bytes)
            .and_then(|()| z.finish())
            .unwrap_or_default();
        out.push((sha.to_string(), bytes.len(), data));
    }
    Ok(out)
}

/// Keeps the documents compressed by [`compress_new`] (an empty `data`:
/// already kept, only marked used now).
pub(super) fn keep(db: &Db, docs: &[(String, usize, Vec<u8>)], now: DateTime<Utc>) -> DbResult<()> {
    for (sha, size, data) in docs {
        let used = db.execute_now(
            "UPDATE documents SET used_at = ?2 WHERE sha256 = ?1",
            &vals![sha, ts(now)],
        )?;
        if used == 0 && !data.is_empty() {
            db.execute(
                "INSERT INTO documents (sha256, size, kept_at, used_at, data) VALUES (?1, ?2, ?3, ?3, ?4)",
                &vals![sha, *size as i64, ts(now), data.clone()],
            )?;
        }
    }
    Ok(())
}

fn entry_of(mut r: Row) -> Entry {
    Entry {
        seq: r.int(0),
        entry: r.text(1),
        hash: r.text(2),
    }
}

fn inflate(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

impl Store {
    /// Drops the documents no alert has used for `retention`, and appends
    /// a `pruned` entry naming them. Returns how many were dropped.
    pub fn prune_documents(
        &mut self,
        now: DateTime<Utc>,
        retention: std::time::Duration,
    ) -> Result<usize, StoreError> {
        let cutoff = now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        self.db
            .tx(Tx::Write, |db| {
                let mut gone: Vec<String> = db
                    .query(
                        "DELETE FROM documents WHERE used_at < ?1 RETURNING sha256",
                        &vals![ts(cutoff)],
                    )?
                    .into_iter()
                    .map(|mut r| r.text(0))
                    .collect();
                if gone.is_empty() {
                    return Ok(0);
                }
                gone.sort();
                let mut fields = serde_json::Map::new();
                fields.insert("outcome".into(), "pruned".into());
                fields.insert(
                    "detail".into(),
                    format!(
                        "documents no alert used for {}",
                        humantime::format_duration(retention)
                    )
                    .into(),
                );
                fields.insert("documents".into(), json!(gone));
                append(db, now, None, fields)?;
                Ok(gone.len())
            })
            .map_err(|e: DbError| self.named(e))
    }

    /// Ledger entries at or after `since` (all when `None`), in order.
    pub fn ledger(&self, since: Option<DateTime<Utc>>) -> Result<Vec<Entry>, StoreError> {
        let mut all = Vec::new();
        self.each_entry(since, |e| {
            all.push(e);
            Ok(())
        })?;
        Ok(all)
    }

    /// Calls `f` with each ledger entry at or after `since` (all when
    /// `None`), in order, one at a time: an export of a large ledger holds
    /// one entry, not all.
    pub fn each_entry(
        &self,
        since: Option<DateTime<Utc>>,
        mut f: impl FnMut(Entry) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        let from = match since {
            Some(t) => self.first_since(t)?,
            None => 0,
        };
        self.db
            .each(
                "SELECT seq, entry, hash FROM ledger WHERE seq >= ?1 ORDER BY seq",
                &vals![from],
                |r| f(entry_of(r)).map_err(DbError::new),
            )
            .map_err(|e| self.named(e))
    }

    /// The number of the first entry at or after `since`. Entries are
    /// appended as time goes, so it is found by halving on the entry
    /// numbers, without an index on the times (one more page written per
    /// notification).
    fn first_since(&self, since: DateTime<Utc>) -> Result<i64, StoreError> {
        let at = |seq: i64| -> Result<Option<(i64, String)>, StoreError> {
            Ok(self
                .db
                .query_row(
                    "SELECT seq, at FROM ledger WHERE seq >= ?1 ORDER BY seq LIMIT 1",
                    &vals![seq],
                )
                .map_err(|e| self.named(e))?
                .map(|mut r| (r.int(0), r.text(1))))
        };
        let since = ts(since);
        let (mut lo, mut hi) = (0i64, i64::MAX / 2);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match at(mid)? {
                Some((seq, t)) if t < since => lo = seq + 1,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    /// The entries of one notification (by its id), or the entry `seq`
    /// when `id` is a number.
    pub fn ledger_entries_of(&self, id: &str) -> Result<Vec<Entry>, StoreError> {
        let rows = match id.parse::<i64>() {
            Ok(seq) => self.db.query(
                "SELECT seq, entry, hash FROM ledger WHERE seq = ?1",
                &vals![seq],
            ),
            Err(_) => self.db.query(
                "SELECT seq, entry, hash FROM ledger WHERE notification_id = ?1 ORDER BY seq",
                &vals![id],
            ),
        };
        Ok(rows
            .map_err(|e| self.named(e))?
            .into_iter()
            .map(entry_of)
            .collect())
    }

    /// A kept document's compressed bytes.
    fn document_data(&self, sha256: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .db
            .query_row(
                "SELECT kept_at, data FROM documents WHERE sha256 = ?1",
                &vals![sha256],
            )
            .map_err(|e| self.named(e))?
            .map(|mut r| (r.text(0), r.blob(1))))
    }

    /// A kept document, inflated (`Err` when its bytes cannot be read back).
    pub fn document(&self, sha256: &str) -> Result<Option<Kept>, StoreError> {
        let Some((kept_at, data)) = self.document_data(sha256)? else {
            return Ok(None);
        };
        let bytes = inflate(&data).map_err(|e| self.err(format!("document {sha256}: {e}")))?;
        Ok(Some(Kept {
            kept_at: parse_ts(&kept_at),
            bytes,
        }))
    }

    /// Checks the chain from the first entry to the last, and every kept
    /// document an entry names: its bytes must have the SHA-256 they are
    /// kept under, unless a later `pruned` entry dropped it.
    pub fn verify_ledger(&self) -> Result<Verdict, StoreError> {
        let mut v = Verdict::default();
        let mut prev = String::new();
        let mut expected = 1;
        // (first entry naming it, sha256), in entry order.
        let mut named: Vec<(i64, String)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut pruned = std::collections::HashSet::new();
        self.db
            .each("SELECT seq, entry, hash FROM ledger ORDER BY seq", &[], |mut r| {
                let seq = r.int(0);
                // Read as bytes: a changed byte may leave text that is not UTF-8.
                let entry = r.blob(1);
                let hash = r.text(2);
                v.entries += 1;
                if seq != expected {
                    let gone = if seq - 1 == expected {
                        format!("entry {expected} is missing")
                    } else {
                        format!("entries {expected} to {} are missing", seq - 1)
                    };
                    v.problems.push((
                        seq,
                        format!(
                            "{gone}: the ledger goes from entry {} to entry {seq}",
                            expected - 1
                        ),
                    ));
                }
                expected = seq + 1;
                let text = String::from_utf8_lossy(&entry);
                if chain(&prev, &text) != hash || text.as_bytes() != entry.as_slice() {
                    v.problems.push((
                        seq,
                        format!(
                            "entry {seq} does not match its hash: the entry (or the hash before it) was changed after it was written"
                        ),
                    ));
                }
                match serde_json::from_slice::<Value>(&entry) {
                    Ok(e) => {
                        if e.get("seq").and_then(Value::as_i64) != Some(seq) {
                            v.problems
                                .push((seq, format!("entry {seq} says it is entry {}", e["seq"])));
                        }
                        if let Some(sha) = e.get("document").and_then(Value::as_str)
                            && seen.insert(sha.to_string())
                        {
                            named.push((seq, sha.to_string()));
                        }
                        if let Some(list) = e.get("documents").and_then(Value::as_array) {
                            pruned
                                .extend(list.iter().filter_map(Value::as_str).map(str::to_string));
                        }
                    }
                    Err(err) => v
                        .problems
                        .push((seq, format!("entry {seq} is not JSON: {err}"))),
                }
                prev = hash;
                Ok(())
            })
            .map_err(|e| self.named(e))?;
        v.head = (!prev.is_empty()).then_some(prev);
        for (seq, sha) in named {
            match self.document_data(&sha)? {
                Some((_, data)) => {
                    v.documents += 1;
                    let ok = inflate(&data)
                        .map(|b| crate::record::sha256_hex(&b) == sha)
                        .unwrap_or(false);
                    if !ok {
                        v.problems.push((
                            seq,
                            format!(
                                "the document of entry {seq} ({sha}) was changed: its kept bytes no longer have that SHA-256"
                            ),
                        ));
                    }
                }
                None if pruned.contains(&sha) => {}
                None => v.problems.push((
                    seq,
                    format!(
                        "the document of entry {seq} ({sha}) is missing, and no `pruned` entry says it was dropped"
                    ),
                )),
            }
        }
        v.problems.sort_by_key(|(seq, _)| *seq);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::sql::vals;
    use crate::store::testing::Backend;
    use crate::store::{Next, tests::note};

    fn doc(text: &str) -> Arc<Document> {
        Document::file(
            &Arc::from(std::path::Path::new("/d/t.csv")),
            bytes::Bytes::copy_from_slice(text.as_bytes()),
        )
    }

    /// A note naming `d` in its evidence.
    fn note_of(id: &str, d: &Document) -> Notification {
        let mut n = note(id, &["mail"]);
        n.evidence.document_sha256 = Some(d.sha256().to_string());
        n
    }

    fn deliver_all(s: &mut Store, now: DateTime<Utc>) {
        while let Next::Ready(p) = s.next_due("mail", now).unwrap() {
            s.delivered(&p, "250 OK", now).unwrap();
        }
    }

    fn problems(s: &Store) -> Vec<(i64, String)> {
        s.verify_ledger().unwrap().problems
    }

    #[test]
    fn each_outcome_is_chained_and_its_document_kept_once() {
        for b in Backend::all() {
            chained(&mut b.open());
        }
    }

    fn chained(s: &mut Store) {
        let now = Utc::now();
        let (v1, v2) = (doc("partner,rate\nCN,160\n"), doc("partner,rate\nCN,170\n"));
        s.commit(
            &[],
            &[],
            &[note_of("a", &v1)],
            std::slice::from_ref(&v1),
            now,
        )
        .unwrap();
        s.commit(
            &[],
            &[],
            &[note_of("b", &v1), note_of("c", &v2)],
            &[v1.clone(), v2.clone()],
            now,
        )
        .unwrap();
        s.add_silence(
            "r",
            None,
            "maintenance",
            "ops",
            now,
            now + chrono::Duration::hours(1),
        )
        .unwrap();
        s.commit(
            &[],
            &[],
            &[note_of("d", &v2)],
            std::slice::from_ref(&v2),
            now,
        )
        .unwrap();
        deliver_all(s, now);

        let entries = s.ledger(None).unwrap();
        let outcomes: Vec<(i64, String, String)> = entries
            .iter()
            .map(|e| {
                let v = e.value();
                (
                    e.seq,
                    v["notification"]["id"].as_str().unwrap().into(),
                    v["outcome"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                (1, "d".into(), "silenced".into()),
                (2, "a".into(), "delivered".into()),
                (3, "b".into(), "delivered".into()),
                (4, "c".into(), "delivered".into()),
            ]
        );
        // Each entry's hash covers the one before it, over its exact bytes.
        let mut prev = String::new();
        for e in &entries {
            assert_eq!(e.hash, chain(&prev, &e.entry));
            prev = e.hash.clone();
        }
        let c = entries[3].value();
        assert_eq!(c["document"], v2.sha256());
        assert_eq!(c["channel"], "mail");
        assert_eq!(c["detail"], "250 OK");
        assert_eq!(c["notification"]["fields"]["rate_pct"], "160");
        assert!(
            entries[3].entry.starts_with(r#"{"at":"#),
            "keys sorted: {}",
            entries[3].entry
        );
        // Two documents, each kept once, read back byte for byte.
        let n = s.raw_int("SELECT COUNT(*) FROM documents");
        assert_eq!(n, 2);
        let kept = s.document(v1.sha256()).unwrap().unwrap();
        assert_eq!(kept.bytes, b"partner,rate\nCN,160\n");
        assert_eq!(s.ledger_entries_of("b").unwrap()[0].seq, 3);
        assert_eq!(s.ledger_entries_of("4").unwrap()[0].seq, 4);

        let v = s.verify_ledger().unwrap();
        assert_eq!((v.entries, v.documents), (4, 2));
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(v.head.as_deref(), Some(entries[3].hash.as_str()));
    }

    #[test]
    fn a_changed_byte_anywhere_is_found_and_named() {
        for b in Backend::all() {
            tampering(&mut b.open());
        }
    }

    fn tampering(s: &mut Store) {
        let now = Utc::now();
        let (v1, v2) = (doc("CN,160\n"), doc("CN,170\n"));
        for (id, d) in [("a", &v1), ("b", &v2), ("c", &v1)] {
            s.commit(&[], &[], &[note_of(id, d)], std::slice::from_ref(d), now)
                .unwrap();
        }
        deliver_all(s, now);
        assert!(problems(s).is_empty());

        // One digit of entry 2's payload.
        s.raw(
            "UPDATE ledger SET entry = replace(entry, '\"160\"', '\"150\"') WHERE seq = 2",
            &[],
        );
        let p = problems(s);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, 2);
        assert!(
            p[0].1.contains("entry 2 does not match its hash"),
            "{}",
            p[0].1
        );
        s.raw(
            "UPDATE ledger SET entry = replace(entry, '\"150\"', '\"160\"') WHERE seq = 2",
            &[],
        );
        assert!(problems(s).is_empty(), "put back, it verifies again");

        // One byte of a kept document: its compressed bytes, then its
        // stored text after recompressing a changed version.
        let data = s.document_data(v2.sha256()).unwrap().unwrap().1;
        let mut bad = data.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x01;
        s.raw(
            "UPDATE documents SET data = ?2 WHERE sha256 = ?1",
            &vals![v2.sha256(), bad],
        );
        let p = problems(s);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, 2, "named by the first entry that names it");
        assert!(
            p[0].1.contains(v2.sha256()) && p[0].1.contains("was changed"),
            "{}",
            p[0].1
        );

        // A document removed without a `pruned` entry.
        s.raw(
            "DELETE FROM documents WHERE sha256 = ?1",
            &vals![v1.sha256()],
        );
        let p = problems(s);
        assert_eq!(p.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2]);
        assert!(p[0].1.contains("is missing"), "{}", p[0].1);

        // An entry removed from the middle.
        s.raw("DELETE FROM ledger WHERE seq = 2", &[]);
        let p = problems(s);
        assert!(
            p.iter()
                .any(|(seq, m)| *seq == 3 && m.contains("entry 2 is missing")),
            "{p:?}"
        );
    }

    #[test]
    fn documents_unused_for_the_retention_are_pruned_with_an_entry_that_says_so() {
        for b in Backend::all() {
            pruning(&mut b.open());
        }
    }

    fn pruning(s: &mut Store) {
        let t0 = Utc::now();
        let day = chrono::Duration::days(1);
        let (old, used) = (doc("CN,160\n"), doc("CN,170\n"));
        s.commit(
            &[],
            &[],
            &[note_of("a", &old), note_of("b", &used)],
            &[old.clone(), used.clone()],
            t0,
        )
        .unwrap();
        // `used` is named again later: its retention counts from then.
        s.commit(
            &[],
            &[],
            &[note_of("c", &used)],
            std::slice::from_ref(&used),
            t0 + day * 100,
        )
        .unwrap();
        deliver_all(s, t0 + day * 100);
        let retention = std::time::Duration::from_secs(400 * 86_400);
        assert_eq!(s.prune_documents(t0 + day * 399, retention).unwrap(), 0);
        assert_eq!(s.prune_documents(t0 + day * 401, retention).unwrap(), 1);
        assert!(s.document(old.sha256()).unwrap().is_none());
        assert!(s.document(used.sha256()).unwrap().is_some());
        // Found from a time by halving on the entry numbers.
        let since = |t| {
            s.ledger(Some(t))
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(since(t0), [1, 2, 3, 4]);
        assert_eq!(since(t0 + day * 100), [1, 2, 3, 4]);
        assert_eq!(since(t0 + day * 200), [4]);
        assert_eq!(since(t0 + day * 500), Vec::<i64>::new());
        let last = s.ledger(None).unwrap().pop().unwrap().value();
        assert_eq!(last["outcome"], "pruned");
        assert_eq!(last["documents"], json!([old.sha256()]));
        let v = s.verify_ledger().unwrap();
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(v.documents, 1);

        // The marker is part of the chain: taking it out is found.
        let seq = s.ledger(None).unwrap().pop().unwrap().seq;
        s.raw("DELETE FROM ledger WHERE seq = ?1", &vals![seq]);
        assert!(
            problems(s)
                .iter()
                .any(|(_, m)| m.contains(old.sha256()) && m.contains("is missing"))
        );
    }
}
