//! The SQLite backend's own parts: its schema versions, opening and
//! migrating a file, the run lock that keeps one daemon per file, and the
//! online backup.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::{StoreError, ledger};

/// Schema versions, applied in order at open.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE rule_state (
    rule TEXT NOT NULL, key TEXT NOT NULL,
    firing INTEGER NOT NULL, since TEXT NOT NULL, last_sent TEXT, snapshot TEXT,
    PRIMARY KEY (rule, key));
CREATE TABLE table_rows (
    source TEXT NOT NULL, file TEXT NOT NULL, key TEXT NOT NULL, row TEXT NOT NULL,
    PRIMARY KEY (source, file, key));
CREATE TABLE log_cursor (
    source TEXT NOT NULL, file TEXT NOT NULL,
    dev INTEGER NOT NULL, ino INTEGER NOT NULL, offset INTEGER NOT NULL,
    line INTEGER NOT NULL, header TEXT, count INTEGER NOT NULL,
    PRIMARY KEY (source, file));
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL,
    notification TEXT NOT NULL, created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_at TEXT,
    status TEXT NOT NULL DEFAULT 'pending', last_error TEXT);
CREATE INDEX outbox_by_channel ON outbox (channel, status, id);
CREATE TABLE history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, notification_id TEXT NOT NULL,
    channel TEXT NOT NULL, rule TEXT NOT NULL, key TEXT NOT NULL,
    state TEXT NOT NULL, at TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT);
"#,
    r#"
CREATE TABLE poll_state (
    source TEXT PRIMARY KEY, url TEXT NOT NULL, etag TEXT, last_modified TEXT);
CREATE TABLE feed_seen (
    source TEXT NOT NULL, id TEXT NOT NULL, last_seen TEXT NOT NULL,
    PRIMARY KEY (source, id));
ALTER TABLE rule_state ADD COLUMN seen TEXT;
"#,
    r#"
ALTER TABLE rule_state ADD COLUMN recent TEXT;
"#,
    r#"
CREATE TABLE silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT NOT NULL, key TEXT,
    reason TEXT NOT NULL, created_by TEXT NOT NULL,
    starts_at TEXT NOT NULL, ends_at TEXT NOT NULL);
"#,
    r#"
ALTER TABLE log_cursor ADD COLUMN prefix_len INTEGER;
ALTER TABLE log_cursor ADD COLUMN prefix_hash BLOB;
"#,
    r#"
ALTER TABLE outbox ADD COLUMN rule TEXT;
ALTER TABLE outbox ADD COLUMN key TEXT;
UPDATE outbox SET rule = json_extract(notification, '$.rule'), key = json_extract(notification, '$.key');
CREATE INDEX outbox_by_key ON outbox (channel, status, rule, key, id);
"#,
    r#"
ALTER TABLE poll_state ADD COLUMN item_ids INTEGER NOT NULL DEFAULT 1;
"#,
    ledger::SCHEMA,
];

/// The right to run on a store: an exclusive lock on `<state>.lock`,
/// which holds the holder's PID. The kernel releases it when the process
/// ends, however it ends, so a `kill -9` leaves no stale lock.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    /// Takes the lock, or says who holds it.
    pub fn take(state: &Path) -> Result<RunLock, StoreError> {
        use std::io::{Read, Seek, Write};
        let path = PathBuf::from(format!("{}.lock", state.display()));
        let err = |message: String| StoreError {
            path: path.clone(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("cannot create its folder: {e}")))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| err(format!("cannot open: {e}")))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(err(format!(
                    "another tocsin{} is running on the store {}: one daemon per store (stop it first; `tocsin alerts`, `check`, `eval` and `silence` work beside it)",
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (PID {holder})")
                    },
                    state.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(err(format!("cannot lock: {e}")));
            }
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(|e| err(format!("cannot write: {e}")))?;
        Ok(RunLock { _file: file })
    }
}

/// An online, consistent copy of the store at `path` into `to`, through
/// SQLite's backup API: one read transaction, so a daemon writing at the
/// same time is neither stopped nor half-copied. The copy is written beside
/// `to`, flushed to disk and renamed into place, so `to` is either the
/// whole copy or not there. Returns the size of the copy in bytes.
pub fn backup(path: &Path, to: &Path) -> Result<u64, StoreError> {
    use rusqlite::backup::{Backup, StepResult};
    let err = |m: String| StoreError {
        path: path.to_path_buf(),
        message: m,
    };
    if !path.exists() {
        return Err(err(
            "no store here yet: the daemon creates it on its first run".into(),
        ));
    }
    if let (Ok(a), Ok(b)) = (path.canonicalize(), to.canonicalize())
        && a == b
    {
        return Err(err(format!(
            "{} is the store itself: name another file",
            to.display()
        )));
    }
    let src = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| err(format!("cannot open: {e}")))?;
    src.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| err(e.to_string()))?;
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = to.with_file_name(format!(".{name}.partial"));
    let _ = std::fs::remove_file(&tmp);
    let to_err = |e: &dyn std::fmt::Display| err(format!("cannot write {}: {e}", tmp.display()));
    {
        let mut dst = Connection::open(&tmp).map_err(|e| to_err(&e))?;
        let copy = Backup::new(&src, &mut dst).map_err(|e| to_err(&e))?;
        // All pages in one step, one read transaction: a consistent copy.
        loop {
            match copy
                .step(-1)
                .map_err(|e| err(format!("cannot read: {e}")))?
            {
                StepResult::Done => break,
                StepResult::More => continue,
                _ => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
        drop(copy);
        let check: String = dst
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| to_err(&e))?;
        if check != "ok" {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(format!("the copy does not check out: {check}")));
        }
        dst.pragma_update(None, "journal_mode", "DELETE")
            .map_err(|e| to_err(&e))?;
    }
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| to_err(&e))?;
    std::fs::rename(&tmp, to).map_err(|e| to_err(&e))?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    std::fs::metadata(to)
        .map(|m| m.len())
        .map_err(|e| to_err(&e))
}

/// Opens an SQLite store, creating its folder, and migrates it.
pub(super) fn open_sqlite(path: &Path) -> Result<rusqlite::Connection, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create its folder: {e}"))?;
    }
    let conn = Connection::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let setup = || -> rusqlite::Result<()> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Every statement the store runs stays prepared.
        conn.set_prepared_statement_cache_capacity(64);
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(&format!(
                "BEGIN; {m}; PRAGMA user_version = {}; COMMIT;",
                i + 1
            ))?;
        }
        Ok(())
    };
    setup().map_err(|e| format!("cannot set up: {e}"))?;
    Ok(conn)
}
