//! The store: an SQLite file (bundled, WAL; the default) or a PostgreSQL
//! database (high availability), one interface over both. It holds per-(rule, key) state,
//! what each source has read (table rows, log cursors), the outbox of
//! notifications not yet delivered, and the delivery history.
//!
//! A batch of records is committed in one transaction: the state changes it
//! caused, the sources' new read positions and the notifications. Delivery
//! happens after, from the outbox, so a crash delays alerts and never loses
//! them.

mod copy;
pub(crate) mod db;
mod lease;
mod ledger;
mod location;
mod outbox;
pub mod pg;
pub(crate) mod sql;
mod sqlite;

pub use lease::Lease;
pub use ledger::{Entry, Kept, Verdict};
pub use location::Location;
pub use sqlite::{RunLock, backup};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use db::Db;
use sql::{DbError, DbResult, Tx, vals};

use crate::engine::{KeyState, Snapshot};
use crate::notification::Notification;
use crate::record::Row;

#[derive(Debug, thiserror::Error)]
#[error("state store {path}: {message}")]
pub struct StoreError {
    pub path: PathBuf,
    pub message: String,
}

/// The way feed item ids are made (see [`crate::source::feed::Item`]):
/// 1 before items without a guid got ids of their own, 2 since. A store
/// that saw a feed under 1 has its ids moved on the next poll.
pub const ITEM_IDS: i64 = 2;

/// Where a log file was read to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogCursor {
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
    pub line: usize,
    pub header: Option<Vec<String>>,
    pub count: usize,
    /// The length and SHA-256 of the file's first bytes.
    pub prefix: Option<(u64, [u8; 32])>,
}

/// What a source has read from one file, as stored.
#[derive(Clone, Debug)]
pub enum FileCheckpoint {
    /// The whole table as last read (raw rows, by key).
    Table(crate::rows::Table),
    Log(LogCursor),
}

/// A source's change of what it has read, committed with its batch.
#[derive(Clone, Debug)]
pub enum Checkpoint {
    Table {
        source: String,
        file: PathBuf,
        upsert: Vec<(String, Row)>,
        delete: Vec<String>,
    },
    Log {
        source: String,
        file: PathBuf,
        cursor: LogCursor,
    },
    /// A successful poll: the URL and the validators of what it got.
    Poll {
        source: String,
        url: String,
        validators: crate::source::fetch::Validators,
    },
    /// Feed items seen (new, or still there) at `at`; ids not seen since
    /// `forget_before` are dropped.
    Seen {
        source: String,
        ids: Vec<String>,
        at: DateTime<Utc>,
        forget_before: DateTime<Utc>,
        /// Ids no longer to be known (an item's old id, now moved on).
        forget: Vec<String>,
    },
}

/// What a polled source knew at its last successful poll.
#[derive(Clone, Debug, Default)]
pub struct PollState {
    /// The URL polled then: a different one now starts afresh.
    pub url: String,
    pub validators: crate::source::fetch::Validators,
    /// Feed item ids, with when each was last in the feed.
    pub seen: HashMap<String, DateTime<Utc>>,
    /// How those ids were made ([`ITEM_IDS`]).
    pub item_ids: i64,
}

pub use crate::engine::StateChange;

/// A notification waiting in the outbox for one channel.
#[derive(Clone, Debug)]
pub struct Pending {
    pub id: i64,
    pub channel: String,
    pub notification: Notification,
    pub attempts: u32,
    pub next_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// What became of one send.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The server's answer, and when.
    Delivered(String, DateTime<Utc>),
    /// Why not now, and when to try again.
    Retry(String, DateTime<Utc>),
    /// Why never, and when that was known.
    Failed(String, DateTime<Utc>),
}

/// What a channel is to do next.
#[derive(Debug)]
pub enum Next {
    Ready(Box<Pending>),
    /// Nothing is due before then.
    Wait(DateTime<Utc>),
    Empty,
}

/// A key firing now: rule, key, since when, last sent.
pub type Firing = (String, String, DateTime<Utc>, Option<DateTime<Utc>>);

/// A silence: notifications of `rule` (and `key`, when given) are recorded
/// in the history as silenced and not sent until `ends_at`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Silence {
    pub id: i64,
    pub rule: String,
    pub key: Option<String>,
    pub reason: String,
    pub by: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

impl Silence {
    pub fn matches(&self, n: &Notification, now: DateTime<Utc>) -> bool {
        self.starts_at <= now
            && now < self.ends_at
            && *self.rule == *n.rule
            && self.key.as_ref().is_none_or(|k| *k == n.key)
    }
}

/// One line of the delivery history.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub channel: String,
    pub rule: String,
    pub key: String,
    pub state: String,
    pub outcome: String,
    pub detail: String,
    pub id: String,
}

pub struct Store {
    db: Db,
    /// The store as named in messages (a PostgreSQL URL without password).
    path: PathBuf,
    /// Outbox rows this connection queued since PostgreSQL last counted
    /// the table ([`Store::commit`]).
    queued: u64,
}

/// After this many outbox rows queued, PostgreSQL counts the outbox again
/// (`ANALYZE`): planned on the counts of a table that was empty, finding
/// the first notification of each key reads the whole outbox for each
/// one sent (80 ms a batch at 10,000 pending, against 0.3 ms).
const ANALYZE_AFTER: u64 = 1000;

/// Turns any error into a [`StoreError`] naming the store's path.
fn sql_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> StoreError + Copy + '_ {
    move |e| StoreError {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> StoreError {
        StoreError {
            path: PathBuf::new(),
            message: e.message,
        }
    }
}

impl StoreError {
    /// Whether a PostgreSQL leader's write was refused because another
    /// instance holds the lease now.
    pub fn is_fenced(&self) -> bool {
        self.message.starts_with(pg::FENCED)
    }
}

impl Store {
    /// Opens (creating it, and an SQLite file's folder, when needed) and
    /// migrates.
    pub fn open(location: impl Into<Location>) -> Result<Store, StoreError> {
        Store::open_fenced(location, None)
    }

    /// Opens for a leader of an HA group: on PostgreSQL every write
    /// transaction is refused unless `fence` still holds the lease.
    pub fn open_fenced(
        location: impl Into<Location>,
        fence: Option<std::sync::Arc<pg::Fence>>,
    ) -> Result<Store, StoreError> {
        let location = location.into();
        let path = location.name();
        let err = |m: String| StoreError {
            path: path.clone(),
            message: m,
        };
        let db = match &location {
            Location::File(path) => Db::Sqlite(sqlite::open_sqlite(path).map_err(err)?),
            Location::Postgres { url, password, ca } => {
                let mut config: tokio_postgres::Config = url
                    .parse()
                    .map_err(|e| err(format!("not a PostgreSQL URL: {e}")))?;
                if let Some(p) = password {
                    config.password(p.resolve().map_err(err)?.expose());
                }
                let tls = pg::Tls::of(&config, ca.as_deref()).map_err(err)?;
                Db::Pg(Box::new(
                    pg::Pg::connect(config, tls, fence).map_err(|e| err(e.message))?,
                ))
            }
        };
        Ok(Store {
            db,
            path,
            queued: 0,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        sql_err(&self.path)(e)
    }

    /// Names the store in an error from below.
    fn named(&self, e: impl Into<StoreError>) -> StoreError {
        let mut e = e.into();
        e.path = self.path.clone();
        e
    }

    /// Every stored (rule, key) state.
    pub fn states(&self) -> Result<Vec<(String, String, KeyState)>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT rule, key, firing, since, last_sent, snapshot, seen, recent FROM rule_state",
                &[],
            )
            .map_err(|e| self.named(e))?;
        Ok(rows
            .into_iter()
            .map(|mut r| {
                let snapshot = r.opt_text(5);
                (
                    r.text(0),
                    r.text(1),
                    KeyState {
                        firing: r.int(2) != 0,
                        since: parse_ts(&r.text(3)).into(),
                        last_sent: r.opt_text(4).map(|s| parse_ts(&s).into()),
                        snapshot: snapshot
                            .and_then(|s| serde_json::from_str::<Snapshot>(&s).ok())
                            .map(std::sync::Arc::new),
                        window: r
                            .opt_text(7)
                            .and_then(|w| serde_json::from_str::<Vec<i64>>(&w).ok())
                            .unwrap_or_default()
                            .into_iter()
                            .filter_map(DateTime::from_timestamp_millis)
                            .collect::<Vec<_>>()
                            .into(),
                        due: crate::engine::keys::NOT_QUEUED,
                        dirty: false,
                    },
                )
            })
            .collect())
    }

    /// What a source has read, per file.
    pub fn checkpoints(
        &self,
        source: &str,
    ) -> Result<HashMap<PathBuf, FileCheckpoint>, StoreError> {
        let mut out: HashMap<PathBuf, FileCheckpoint> = HashMap::new();
        self.db
            .each(
                "SELECT file, key, row FROM table_rows WHERE source = ?1",
                &vals![source],
                |mut r| {
                    let (file, key, json) = (r.text(0), r.text(1), r.text(2));
                    let fields: crate::record::Fields =
                        serde_json::from_str(&json).map_err(DbError::new)?;
                    if let FileCheckpoint::Table(t) = out
                        .entry(PathBuf::from(file))
                        .or_insert_with(|| FileCheckpoint::Table(Default::default()))
                    {
                        t.insert(&key, fields);
                    }
                    Ok(())
                },
            )
            .map_err(|e| self.named(e))?;
        let rows = self
            .db
            .query(
                "SELECT file, dev, ino, \"offset\", line, header, count, prefix_len, prefix_hash FROM log_cursor WHERE source = ?1",
                &vals![source],
            )
            .map_err(|e| self.named(e))?;
        for mut r in rows {
            let header = r.opt_text(5);
            let c = LogCursor {
                dev: r.int(1) as u64,
                ino: r.int(2) as u64,
                offset: r.int(3) as u64,
                line: r.int(4) as usize,
                header: header.and_then(|h| serde_json::from_str(&h).ok()),
                count: r.int(6) as usize,
                prefix: match (r.opt_int(7), r.opt_blob(8)) {
                    (Some(len), Some(hash)) => {
                        <[u8; 32]>::try_from(hash).ok().map(|h| (len as u64, h))
                    }
                    _ => None,
                },
            };
            out.insert(PathBuf::from(r.text(0)), FileCheckpoint::Log(c));
        }
        Ok(out)
    }

    /// What a polled source knew at its last successful poll; `None` for a
    /// source never polled.
    pub fn poll_state(&self, source: &str) -> Result<Option<PollState>, StoreError> {
        let row = self
            .db
            .query_row(
                "SELECT url, etag, last_modified, item_ids FROM poll_state WHERE source = ?1",
                &vals![source],
            )
            .map_err(|e| self.named(e))?;
        let Some(mut r) = row else {
            return Ok(None);
        };
        let seen = self.seen(source)?;
        Ok(Some(PollState {
            url: r.text(0),
            validators: crate::source::fetch::Validators {
                etag: r.opt_text(1),
                last_modified: r.opt_text(2),
            },
            seen,
            item_ids: r.int(3),
        }))
    }

    /// Renames what a polled source stored under its URL in clear (stores
    /// written before) to the URL's identity
    /// ([`crate::config::Location::identity`]), so that no credential stays
    /// in the store.
    pub fn rename_location(
        &self,
        source: &str,
        plain: &str,
        identity: &str,
    ) -> Result<(), StoreError> {
        if plain == identity {
            return Ok(());
        }
        self.db
            .tx(Tx::Write, |db| {
                db.execute(
                    "UPDATE table_rows SET file = ?3 WHERE source = ?1 AND file = ?2",
                    &vals![source, plain, identity],
                )?;
                db.execute(
                    "UPDATE poll_state SET url = ?3 WHERE source = ?1 AND url = ?2",
                    &vals![source, plain, identity],
                )
            })
            .map(|_| ())
            .map_err(|e: DbError| self.named(e))
    }

    /// The item ids a source has seen (feed items, array log items), with
    /// when each was last written.
    pub fn seen(&self, source: &str) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT id, last_seen FROM feed_seen WHERE source = ?1",
                &vals![source],
            )
            .map_err(|e| self.named(e))?;
        Ok(rows
            .into_iter()
            .map(|mut r| (r.text(0), parse_ts(&r.text(1))))
            .collect())
    }

    /// Commits one batch: state changes, source checkpoints and the new
    /// notifications (one outbox row per channel), all or nothing; with the
    /// documents among `docs` that the notifications name, kept for their
    /// evidence.
    pub fn commit(
        &mut self,
        states: &[StateChange],
        checkpoints: &[Checkpoint],
        notes: &[Notification],
        docs: &[std::sync::Arc<crate::record::Document>],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let docs = ledger::compress_new(&self.db, docs).map_err(|e| self.named(e))?;
        // A write transaction: the silenced are appended to the ledger,
        // after the head it reads.
        self.db
            .tx(Tx::Write, |db| {
                ledger::keep(db, &docs, now)?;
                Self::write_states(db, states)?;
                for cp in checkpoints {
                    Self::write_checkpoint(db, cp)?;
                }
                Self::queue(db, notes, now)
            })
            .map_err(|e: DbError| self.named(e))?;
        if self.db.is_postgres() {
            self.queued += notes.iter().map(|n| n.notify.len() as u64).sum::<u64>();
            if self.queued >= ANALYZE_AFTER {
                self.queued = 0;
                // The counts only guide plans: a failure here is no
                // failure of the commit.
                if let Err(e) = self.db.execute("ANALYZE outbox", &[]) {
                    tracing::debug!("ANALYZE outbox: {e}");
                }
            }
        }
        Ok(())
    }

    fn write_states(db: &Db, states: &[StateChange]) -> DbResult<()> {
        for (rule, key, st) in states {
            match st {
                Some(s) => {
                    let recent = (!s.window.is_empty()).then(|| {
                        let ms: Vec<i64> = s.window.iter().map(|t| t.timestamp_millis()).collect();
                        serde_json::to_string(&ms).unwrap_or_default()
                    });
                    let snapshot = s
                        .snapshot
                        .as_ref()
                        .and_then(|s| serde_json::to_string(&**s).ok());
                    db.execute(
                        "INSERT INTO rule_state (rule, key, firing, since, last_sent, snapshot, seen, recent) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                         ON CONFLICT (rule, key) DO UPDATE SET firing = ?3, since = ?4, last_sent = ?5, snapshot = ?6, seen = ?7, recent = ?8",
                        &vals![&**rule, key.as_str(), s.firing as i64, ts(s.since.get()), s.last_sent.map(|t| ts(t.get())), snapshot, None::<String>, recent],
                    )?;
                }
                None => {
                    db.execute(
                        "DELETE FROM rule_state WHERE rule = ?1 AND key = ?2",
                        &vals![&**rule, key.as_str()],
                    )?;
                }
            }
        }
        Ok(())
    }

    fn write_checkpoint(db: &Db, cp: &Checkpoint) -> DbResult<()> {
        match cp {
            Checkpoint::Table {
                source,
                file,
                upsert,
                delete,
            } => {
                let file = file.to_string_lossy();
                // The statements are prepared once for all the rows: a
                // first version of a large table is a million of them.
                for (key, row) in upsert {
                    let json = serde_json::to_string(row).unwrap_or_default();
                    db.execute(
                        "INSERT INTO table_rows (source, file, key, row) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (source, file, key) DO UPDATE SET row = ?4",
                        &vals![source, &*file, key, json],
                    )?;
                }
                for key in delete {
                    db.execute(
                        "DELETE FROM table_rows WHERE source = ?1 AND file = ?2 AND key = ?3",
                        &vals![source, &*file, key],
                    )?;
                }
            }
            Checkpoint::Log {
                source,
                file,
                cursor: c,
            } => {
                let header = c
                    .header
                    .as_ref()
                    .and_then(|h| serde_json::to_string(h).ok());
                db.execute(
                    "INSERT INTO log_cursor (source, file, dev, ino, \"offset\", line, header, count, prefix_len, prefix_hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (source, file) DO UPDATE SET dev = ?3, ino = ?4, \"offset\" = ?5, line = ?6, header = ?7, count = ?8, prefix_len = ?9, prefix_hash = ?10",
                    &vals![source, &*file.to_string_lossy(), c.dev as i64, c.ino as i64, c.offset as i64, c.line as i64, header, c.count as i64, c.prefix.map(|p| p.0 as i64), c.prefix.map(|p| p.1.to_vec())],
                )?;
            }
            Checkpoint::Poll {
                source,
                url,
                validators: v,
            } => {
                db.execute(
                    "INSERT INTO poll_state (source, url, etag, last_modified, item_ids) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (source) DO UPDATE SET url = ?2, etag = ?3, last_modified = ?4, item_ids = ?5",
                    &vals![source, url, v.etag.as_deref(), v.last_modified.as_deref(), ITEM_IDS],
                )?;
            }
            Checkpoint::Seen {
                source,
                ids,
                at,
                forget_before,
                forget,
            } => {
                let at = ts(*at);
                for id in forget {
                    db.execute(
                        "DELETE FROM feed_seen WHERE source = ?1 AND id = ?2",
                        &vals![source, id],
                    )?;
                }
                for id in ids {
                    db.execute(
                        "INSERT INTO feed_seen (source, id, last_seen) VALUES (?1, ?2, ?3)
                         ON CONFLICT (source, id) DO UPDATE SET last_seen = ?3",
                        &vals![source, id, &at],
                    )?;
                }
                db.execute(
                    "DELETE FROM feed_seen WHERE source = ?1 AND last_seen < ?2",
                    &vals![source, ts(*forget_before)],
                )?;
            }
        }
        Ok(())
    }

    /// Puts notifications in the outbox, one row per channel; a silenced
    /// one goes into the history and the ledger instead.
    fn queue(db: &Db, notes: &[Notification], now: DateTime<Utc>) -> DbResult<()> {
        // Silences are read in the same transaction: one added by `tocsin
        // silence add` a moment ago applies to this batch.
        let silences = if notes.is_empty() {
            Vec::new()
        } else {
            Self::silences_in(db, now)?
        };
        for n in notes {
            if let Some(s) = silences.iter().find(|s| s.matches(n, now)) {
                let detail = format!("silence {}: {}", s.id, s.reason);
                for ch in n.notify.iter() {
                    db.execute(
                        "INSERT INTO history (notification_id, channel, rule, key, state, at, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'silenced', ?7)",
                        &vals![&n.id, ch, &*n.rule, &n.key, n.state.as_str(), ts(now), &detail],
                    )?;
                    ledger::append_outcome(db, n, ch, "silenced", &detail, now)?;
                }
                continue;
            }
            let json = serde_json::to_string(n).unwrap_or_default();
            for ch in n.notify.iter() {
                db.execute(
                    "INSERT INTO outbox (channel, notification, created_at, rule, key) VALUES (?1, ?2, ?3, ?4, ?5)",
                    &vals![ch, &json, ts(now), &*n.rule, &n.key],
                )?;
            }
        }
        Ok(())
    }

    /// Drops the state of rules removed by a reload.
    pub fn forget_rules(&mut self, rules: &[String]) -> Result<(), StoreError> {
        self.db
            .tx(Tx::Write, |db| {
                for r in rules {
                    db.execute("DELETE FROM rule_state WHERE rule = ?1", &vals![r])?;
                }
                Ok(())
            })
            .map_err(|e: DbError| self.named(e))
    }
}

/// Stores for tests, on both backends: an SQLite file in a temporary
/// folder, and a fresh PostgreSQL database ([`pg::ScratchDatabase`]).
#[cfg(test)]
pub(crate) mod testing {
    use super::{Location, Store};

    pub struct Backend {
        pub location: Location,
        _dir: Option<tempfile::TempDir>,
        _database: Option<super::pg::ScratchDatabase>,
    }

    impl Backend {
        pub fn open(&self) -> Store {
            Store::open(&self.location).unwrap()
        }

        pub fn sqlite() -> Backend {
            let dir = tempfile::tempdir().unwrap();
            Backend {
                location: Location::File(dir.path().join("sub/state.db")),
                _dir: Some(dir),
                _database: None,
            }
        }

        pub fn postgres() -> Backend {
            let db = super::pg::ScratchDatabase::create("unit");
            Backend {
                location: db.location(),
                _dir: None,
                _database: Some(db),
            }
        }

        /// Both backends.
        pub fn all() -> [Backend; 2] {
            [Backend::sqlite(), Backend::postgres()]
        }
    }
}

impl Store {
    /// Runs one statement behind the store's back (tests that change what
    /// it keeps).
    #[cfg(test)]
    pub(crate) fn raw(&self, sql: &str, params: &[sql::Value]) -> u64 {
        self.db.execute(sql, params).unwrap()
    }

    /// The first column of the first row a query returns.
    #[cfg(test)]
    pub(crate) fn raw_int(&self, sql: &str) -> i64 {
        self.db.query_row(sql, &[]).unwrap().unwrap().int(0)
    }

    #[cfg(test)]
    pub(crate) fn raw_text(&self, sql: &str) -> String {
        self.db.query_row(sql, &[]).unwrap().unwrap().text(0)
    }
}

#[cfg(test)]
mod tests;
