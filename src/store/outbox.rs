//! The outbox, history and silences: what each channel delivers next, what
//! was delivered or failed, what is firing, and the silences in force.

use chrono::{DateTime, Utc};

use super::db::Db;
use super::sql::{DbError, DbResult, Row, Tx, Value, vals};
use super::{
    Firing, HistoryEntry, Next, Outcome, Pending, Silence, Store, StoreError, parse_ts, ts,
};
use crate::notification::Notification;

/// The pending notifications of channel `?1` that are first of their
/// (rule, key): the only ones it may send, so that one waiting out a
/// backoff holds back only the later notifications of its own key.
const HEAD: &str = "o.channel = ?1 AND o.status = 'pending' AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.channel = o.channel AND e.status = 'pending' AND e.rule = o.rule AND e.key = o.key AND e.id < o.id)";

/// The columns [`pending`] reads.
const COLUMNS: &str = "id, channel, notification, attempts, next_at, created_at, last_error";

/// A row of [`COLUMNS`]: the notification, and its last error.
fn pending(mut r: Row) -> DbResult<(Pending, String)> {
    let id = r.int(0);
    let notification: Notification = serde_json::from_str(&r.text(2))
        .map_err(|e| DbError::new(format!("outbox row {id}: {e}")))?;
    let pending = Pending {
        id,
        channel: r.text(1),
        notification,
        attempts: r.int(3) as u32,
        next_at: r.opt_text(4).map(|s| parse_ts(&s)),
        created_at: parse_ts(&r.text(5)),
    };
    Ok((pending, r.opt_text(6).unwrap_or_default()))
}

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
    /// none is. On PostgreSQL they are claimed (`FOR UPDATE SKIP LOCKED`)
    /// in a leader's write transaction: an instance that lost the lease
    /// gets an error, not notifications to send.
    pub fn due(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        let params = vals![channel, ts(now), limit as i64];
        let rows = if self.db.is_postgres() {
            let sql = format!(
                "SELECT {COLUMNS} FROM outbox WHERE id IN (SELECT o.id FROM outbox o WHERE {HEAD} AND (o.next_at IS NULL OR o.next_at <= ?2) ORDER BY o.id LIMIT ?3 FOR UPDATE OF o SKIP LOCKED) ORDER BY id"
            );
            self.db
                .tx(Tx::Write, |db| Self::outbox_rows(db, &sql, &params))
        } else {
            let sql = format!(
                "SELECT {COLUMNS} FROM outbox WHERE id IN (SELECT o.id FROM outbox o WHERE {HEAD} AND (o.next_at IS NULL OR o.next_at <= ?2) ORDER BY o.id LIMIT ?3) ORDER BY id"
            );
            Self::outbox_rows(&self.db, &sql, &params)
        };
        let rows = rows.map_err(|e| self.named(e))?;
        Ok(rows.into_iter().map(|(p, _)| p).collect())
    }

    /// When the first of a channel's notifications waiting out a backoff
    /// is due; `None` when none waits.
    pub fn next_wait(&self, channel: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let sql = format!("SELECT MIN(o.next_at) FROM outbox o WHERE {HEAD}");
        let at = self
            .db
            .query_row(&sql, &vals![channel])
            .map_err(|e| self.named(e))?
            .and_then(|mut r| r.opt_text(0));
        Ok(at.map(|t| parse_ts(&t)))
    }

    /// The outbox rows `sql` selects (its columns [`COLUMNS`]), each with
    /// its last error.
    fn outbox_rows(db: &Db, sql: &str, params: &[Value]) -> DbResult<Vec<(Pending, String)>> {
        db.query(sql, params)?.into_iter().map(pending).collect()
    }

    fn outbox_where(
        &self,
        filter: &str,
        params: &[Value],
    ) -> Result<Vec<(Pending, String)>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM outbox WHERE {filter}");
        Self::outbox_rows(&self.db, &sql, params).map_err(|e| self.named(e))
    }

    /// Every pending notification of a channel, oldest first (a digest).
    pub fn all_pending(&self, channel: &str) -> Result<Vec<Pending>, StoreError> {
        let rows = self.outbox_where(
            "channel = ?1 AND status = 'pending' ORDER BY id",
            &vals![channel],
        )?;
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
        // A write transaction: each channel appends to the ledger from its
        // own connection, after the head it reads.
        self.db
            .tx(Tx::Write, |db| {
                for (p, outcome) in done {
                    Self::record_one(db, p, outcome)?;
                }
                Ok(())
            })
            .map_err(|e: DbError| self.named(e))
    }

    fn record_one(db: &Db, p: &Pending, outcome: &Outcome) -> DbResult<()> {
        let (name, detail, at) = match outcome {
            Outcome::Delivered(answer, at) => ("delivered", answer, at),
            Outcome::Failed(error, at) => ("failed", error, at),
            Outcome::Retry(error, next_at) => {
                db.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_at = ?2, last_error = ?3 WHERE id = ?1",
                    &vals![p.id, ts(*next_at), error],
                )?;
                return Ok(());
            }
        };
        if name == "delivered" {
            db.execute("DELETE FROM outbox WHERE id = ?1", &vals![p.id])?;
        } else {
            db.execute(
                "UPDATE outbox SET status = 'failed', last_error = ?2, attempts = attempts + 1 WHERE id = ?1",
                &vals![p.id, detail],
            )?;
        }
        let n = &p.notification;
        db.execute(
            "INSERT INTO history (notification_id, channel, rule, key, state, at, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            &vals![&n.id, &p.channel, &*n.rule, &n.key, n.state.as_str(), ts(*at), name, detail],
        )?;
        super::ledger::append_outcome(db, n, &p.channel, name, detail, *at)?;
        Ok(())
    }

    /// Keys firing now: (rule, key, since, last sent).
    pub fn firing(&self) -> Result<Vec<Firing>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT rule, key, since, last_sent FROM rule_state WHERE firing = 1 ORDER BY since, rule, key",
                &[],
            )
            .map_err(|e| self.named(e))?;
        Ok(rows
            .into_iter()
            .map(|mut r| {
                (
                    r.text(0),
                    r.text(1),
                    parse_ts(&r.text(2)),
                    r.opt_text(3).map(|s| parse_ts(&s)),
                )
            })
            .collect())
    }

    /// Deliveries (and final failures) since `since`, oldest first.
    pub fn history(&self, since: DateTime<Utc>) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT at, channel, rule, key, state, outcome, detail, notification_id FROM history WHERE at >= ?1 ORDER BY id",
                &vals![ts(since)],
            )
            .map_err(|e| self.named(e))?;
        Ok(rows
            .into_iter()
            .map(|mut r| HistoryEntry {
                at: parse_ts(&r.text(0)),
                channel: r.text(1),
                rule: r.text(2),
                key: r.text(3),
                state: r.text(4),
                outcome: r.text(5),
                detail: r.opt_text(6).unwrap_or_default(),
                id: r.text(7),
            })
            .collect())
    }

    /// Notifications that failed for good and stay in the outbox.
    pub fn failed_notifications(&self) -> Result<Vec<(Pending, String)>, StoreError> {
        self.outbox_where("status = 'failed' ORDER BY id", &[])
    }

    /// Silences in force at `now`.
    pub(super) fn silences_in(db: &Db, now: DateTime<Utc>) -> DbResult<Vec<Silence>> {
        let rows = db.query(
            "SELECT id, rule, key, reason, created_by, starts_at, ends_at FROM silences WHERE ends_at > ?1 ORDER BY id",
            &vals![ts(now)],
        )?;
        Ok(rows
            .into_iter()
            .map(|mut r| Silence {
                id: r.int(0),
                rule: r.text(1),
                key: r.opt_text(2),
                reason: r.text(3),
                by: r.text(4),
                starts_at: parse_ts(&r.text(5)),
                ends_at: parse_ts(&r.text(6)),
            })
            .collect())
    }

    /// Silences in force at `now`, oldest first.
    pub fn silences(&self, now: DateTime<Utc>) -> Result<Vec<Silence>, StoreError> {
        Self::silences_in(&self.db, now).map_err(|e| self.named(e))
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
        let id = self
            .db
            .tx(Tx::Write, |db| {
                db.execute("DELETE FROM silences WHERE ends_at <= ?1", &vals![ts(now)])?;
                Ok::<_, DbError>(
                    db.query_row(
                        "INSERT INTO silences (rule, key, reason, created_by, starts_at, ends_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                        &vals![rule, key, reason, by, ts(now), ts(ends_at)],
                    )?
                    .map_or(0, |mut r| r.int(0)),
                )
            })
            .map_err(|e| self.named(e))?;
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
        self.db
            .execute("DELETE FROM silences WHERE id = ?1", &vals![id])
            .map(|n| n > 0)
            .map_err(|e| self.named(e))
    }

    /// When the oldest pending notification was made, if any is pending.
    pub fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .db
            .query_row(
                "SELECT MIN(created_at) FROM outbox WHERE status = 'pending'",
                &[],
            )
            .map_err(|e| self.named(e))?
            .and_then(|mut r| r.opt_text(0))
            .map(|t| parse_ts(&t)))
    }

    /// Rows in the outbox by status.
    pub fn outbox_counts(&self) -> Result<(u64, u64), StoreError> {
        let count = |status: &str| -> Result<u64, StoreError> {
            self.db
                .query_row(
                    "SELECT COUNT(*) FROM outbox WHERE status = ?1",
                    &vals![status],
                )
                .map(|r| r.map_or(0, |mut r| r.int(0)) as u64)
                .map_err(|e| self.named(e))
        };
        Ok((count("pending")?, count("failed")?))
    }
}
