//! The outbox, history and silences: what each channel delivers next, what
//! was delivered or failed, what is firing, and the silences in force.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::{
    Firing, HistoryEntry, Next, Outcome, Pending, Silence, Store, StoreError, parse_ts, sql_err, ts,
};
use crate::notification::Notification;

/// The pending notifications of channel `?1` that are first of their
/// (rule, key): the only ones it may send, so that one waiting out a
/// backoff holds back only the later notifications of its own key.
const HEAD: &str = "o.channel = ?1 AND o.status = 'pending' AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.channel = o.channel AND e.status = 'pending' AND e.rule IS o.rule AND e.key IS o.key AND e.id < o.id)";

impl Store {
    /// What a channel delivers next: the oldest notification it may send
    /// now ([`Store::due`]); else when the next one is due; else nothing.
    pub fn next_due(&self, channel: &str, now: DateTime<Utc>) -> Result<Next, StoreError> {
        if let Some(p) = self.due(channel, now, 1)?.pop() {
            return Ok(Next::Ready(Box::new(p)));
        }
        Ok(self.next_wait(channel)?.map_or(Next::Empty, Next::Wait))
    }

    /// Up to `limit` notifications a channel may send now, oldest first:
    /// each the first pending one of its (rule, key), and due. Empty when
    /// none is.
    pub fn due(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        let filter = format!(
            "id IN (SELECT o.id FROM outbox o WHERE {HEAD} AND (o.next_at IS NULL OR o.next_at <= ?2) ORDER BY o.id LIMIT ?3) ORDER BY id"
        );
        let rows = self.outbox_rows(&filter, params![channel, ts(now), limit as i64])?;
        Ok(rows.into_iter().map(|(p, _)| p).collect())
    }

    /// When the first of a channel's notifications waiting out a backoff
    /// is due; `None` when none waits.
    pub fn next_wait(&self, channel: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let sql = format!("SELECT MIN(o.next_at) FROM outbox o WHERE {HEAD}");
        let at: Option<String> = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut st| st.query_row(params![channel], |r| r.get(0)))
            .map_err(|e| self.err(e))?;
        Ok(at.map(|t| parse_ts(&t)))
    }

    /// Outbox rows matching `filter` (SQL after WHERE, with `params`), each
    /// with its last error. Statements are cached: this runs once per
    /// batch a channel delivers.
    pub(super) fn outbox_rows(
        &self,
        filter: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<(Pending, String)>, StoreError> {
        let sql = format!(
            "SELECT id, channel, notification, attempts, next_at, created_at, last_error FROM outbox WHERE {filter}"
        );
        let mut st = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params, |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, channel, json, attempts, next_at, created, error) =
                row.map_err(|e| self.err(e))?;
            let notification: Notification = serde_json::from_str(&json)
                .map_err(|e| self.err(format!("outbox row {id}: {e}")))?;
            let pending = Pending {
                id,
                channel,
                notification,
                attempts: attempts as u32,
                next_at: next_at.map(|s| parse_ts(&s)),
                created_at: parse_ts(&created),
            };
            out.push((pending, error.unwrap_or_default()));
        }
        Ok(out)
    }

    /// Every pending notification of a channel, oldest first (a digest).
    pub fn all_pending(&self, channel: &str) -> Result<Vec<Pending>, StoreError> {
        let rows =
            self.outbox_rows("channel = ?1 AND status = 'pending' ORDER BY id", [channel])?;
        Ok(rows.into_iter().map(|(p, _)| p).collect())
    }

    /// Delivered: out of the outbox, into the history.
    pub fn delivered(
        &mut self,
        p: &Pending,
        answer: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.record([(p, &Outcome::Delivered(answer.into(), now))])
    }

    /// Failed for good: stays in the outbox as failed, and in the history.
    pub fn failed(
        &mut self,
        p: &Pending,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.record([(p, &Outcome::Failed(error.into(), now))])
    }

    /// A failed try that may pass later: when to try again, and why not now.
    pub fn retry_later(
        &mut self,
        p: &Pending,
        next_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        self.record([(p, &Outcome::Retry(error.into(), next_at))])
    }

    /// Records what became of sends, all in one transaction: delivered
    /// ones leave the outbox, failed ones stay marked failed, both go into
    /// the history and the ledger; one to retry gets its next time.
    pub fn record<'a>(
        &mut self,
        done: impl IntoIterator<Item = (&'a Pending, &'a Outcome)>,
    ) -> Result<(), StoreError> {
        // The transaction borrows the connection, so errors are made from
        // the path alone.
        let err = sql_err(&self.path);
        // Begun with the write lock: each channel appends to the ledger
        // from its own connection, after the head it reads.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        for (p, outcome) in done {
            let (name, detail, at) = match outcome {
                Outcome::Delivered(answer, at) => ("delivered", answer, at),
                Outcome::Failed(error, at) => ("failed", error, at),
                Outcome::Retry(error, next_at) => {
                    // Cached, as the other statements of a delivery are:
                    // these run once per notification sent.
                    tx.prepare_cached("UPDATE outbox SET attempts = attempts + 1, next_at = ?2, last_error = ?3 WHERE id = ?1")
                        .and_then(|mut st| st.execute(params![p.id, ts(*next_at), error]))
                        .map_err(err)?;
                    continue;
                }
            };
            if name == "delivered" {
                tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")
                    .and_then(|mut st| st.execute([p.id]))
                    .map_err(err)?;
            } else {
                tx.prepare_cached("UPDATE outbox SET status = 'failed', last_error = ?2, attempts = attempts + 1 WHERE id = ?1")
                    .and_then(|mut st| st.execute(params![p.id, detail]))
                    .map_err(err)?;
            }
            let n = &p.notification;
            tx.prepare_cached(
                "INSERT INTO history (notification_id, channel, rule, key, state, at, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut st| st.execute(params![n.id, p.channel, n.rule, n.key, n.state.as_str(), ts(*at), name, detail]))
            .map_err(err)?;
            super::ledger::append_outcome(&tx, n, &p.channel, name, detail, *at).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Keys firing now: (rule, key, since, last sent).
    pub fn firing(&self) -> Result<Vec<Firing>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT rule, key, since, last_sent FROM rule_state WHERE firing = 1 ORDER BY since, rule, key")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    parse_ts(&r.get::<_, String>(2)?),
                    r.get::<_, Option<String>>(3)?.map(|s| parse_ts(&s)),
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Deliveries (and final failures) since `since`, oldest first.
    pub fn history(&self, since: DateTime<Utc>) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT at, channel, rule, key, state, outcome, detail, notification_id FROM history WHERE at >= ?1 ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([ts(since)], |r| {
                Ok(HistoryEntry {
                    at: parse_ts(&r.get::<_, String>(0)?),
                    channel: r.get(1)?,
                    rule: r.get(2)?,
                    key: r.get(3)?,
                    state: r.get(4)?,
                    outcome: r.get(5)?,
                    detail: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                    id: r.get(7)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Notifications that failed for good and stay in the outbox.
    pub fn failed_notifications(&self) -> Result<Vec<(Pending, String)>, StoreError> {
        self.outbox_rows("status = 'failed' ORDER BY id", [])
    }

    /// Silences in force at `now`.
    pub(super) fn silences_in(
        conn: &Connection,
        now: DateTime<Utc>,
    ) -> rusqlite::Result<Vec<Silence>> {
        let mut st = conn.prepare_cached(
            "SELECT id, rule, key, reason, created_by, starts_at, ends_at FROM silences WHERE ends_at > ?1 ORDER BY id",
        )?;
        let rows = st.query_map([ts(now)], |r| {
            Ok(Silence {
                id: r.get(0)?,
                rule: r.get(1)?,
                key: r.get(2)?,
                reason: r.get(3)?,
                by: r.get(4)?,
                starts_at: parse_ts(&r.get::<_, String>(5)?),
                ends_at: parse_ts(&r.get::<_, String>(6)?),
            })
        })?;
        rows.collect()
    }

    /// Silences in force at `now`, oldest first.
    pub fn silences(&self, now: DateTime<Utc>) -> Result<Vec<Silence>, StoreError> {
        Self::silences_in(&self.conn, now).map_err(|e| self.err(e))
    }

    /// Adds a silence; returns it with its id. Expired silences are
    /// cleared at the same time.
    pub fn add_silence(
        &mut self,
        rule: &str,
        key: Option<&str>,
        reason: &str,
        by: &str,
        now: DateTime<Utc>,
        ends_at: DateTime<Utc>,
    ) -> Result<Silence, StoreError> {
        let err = sql_err(&self.path);
        let tx = self.conn.transaction().map_err(&err)?;
        tx.execute("DELETE FROM silences WHERE ends_at <= ?1", [ts(now)])
            .map_err(&err)?;
        tx.execute(
            "INSERT INTO silences (rule, key, reason, created_by, starts_at, ends_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![rule, key, reason, by, ts(now), ts(ends_at)],
        )
        .map_err(&err)?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(&err)?;
        Ok(Silence {
            id,
            rule: rule.to_string(),
            key: key.map(str::to_string),
            reason: reason.to_string(),
            by: by.to_string(),
            starts_at: now,
            ends_at,
        })
    }

    /// Ends a silence now; false when there is no silence with that id.
    pub fn remove_silence(&mut self, id: i64) -> Result<bool, StoreError> {
        self.conn
            .execute("DELETE FROM silences WHERE id = ?1", [id])
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    /// When the oldest pending notification was made, if any is pending.
    pub fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.conn
            .query_row(
                "SELECT MIN(created_at) FROM outbox WHERE status = 'pending'",
                [],
                |r| r.get::<_, Option<String>>(0),
            )
            .map(|t| t.map(|t| parse_ts(&t)))
            .map_err(|e| self.err(e))
    }

    /// Rows in the outbox by status.
    pub fn outbox_counts(&self) -> Result<(u64, u64), StoreError> {
        let count = |status: &str| -> Result<u64, StoreError> {
            self.conn
                .query_row(
                    "SELECT COUNT(*) FROM outbox WHERE status = ?1",
                    [status],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n as u64)
                .map_err(|e| self.err(e))
        };
        Ok((count("pending")?, count("failed")?))
    }
}
