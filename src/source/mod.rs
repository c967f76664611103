//! Sources turn the outside world into records; they know nothing of rules.
//! Each source runs as its own task and sends batches to the engine.

pub mod feed;
pub mod fetch;
pub mod file;
pub mod health;
pub mod parse;
pub mod poll;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{SourceConfig, SourceKind};
use crate::record::{Fields, Record, RecordKind, Row};

/// Records of one source that arrived together.
#[derive(Debug)]
pub struct Batch {
    pub source: String,
    pub records: Vec<Record>,
    /// Where reading got to, committed with the batch's outcome.
    pub checkpoints: Vec<crate::store::Checkpoint>,
    /// How the read went, for the source's health: `None` when the batch
    /// says nothing of it.
    pub health: Option<Health>,
    /// Not from the source: the source's previous task has ended and all
    /// its batches came before this one (a reload restarts it now).
    pub restart: bool,
}

impl Batch {
    /// A batch that only reports health.
    pub fn health(source: &str, health: Health) -> Batch {
        Batch {
            source: source.to_string(),
            records: Vec::new(),
            checkpoints: Vec::new(),
            health: Some(health),
            restart: false,
        }
    }

    /// The marker that a source's previous task is over (see `restart`).
    pub fn restart(source: &str) -> Batch {
        Batch {
            source: source.to_string(),
            records: Vec::new(),
            checkpoints: Vec::new(),
            health: None,
            restart: true,
        }
    }
}

/// The outcome of one read or poll of a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// A fetch error, a non-2xx answer, a document that does not parse.
    Failed(String),
    /// A file source has had no readable file since `since` (missing, or
    /// not a regular file), for `reason`.
    Missing {
        since: chrono::DateTime<chrono::Utc>,
        reason: String,
    },
}

/// A failed read or parse: logged with where and why; the source goes on.
#[derive(Debug, Clone)]
pub struct SourceError {
    pub source: String,
    pub file: Option<PathBuf>,
    pub line: usize,
    pub message: String,
    /// A bad line of a log: skipped, the lines after it read.
    pub skipped: bool,
}

impl SourceError {
    pub fn io(source: &str, path: &Path, e: std::io::Error) -> SourceError {
        SourceError {
            source: source.to_string(),
            file: Some(path.to_path_buf()),
            line: 0,
            message: format!("cannot read: {e}"),
            skipped: false,
        }
    }

    /// Marks a bad line of a log, which is skipped.
    pub(crate) fn skipped(mut self) -> SourceError {
        self.skipped = true;
        self
    }
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, self.line) {
            (Some(p), 0) => write!(f, "{}: {}", p.display(), self.message)?,
            (Some(p), l) => write!(f, "{}:{l}: {}", p.display(), self.message)?,
            (None, _) => write!(f, "source {}: {}", self.source, self.message)?,
        }
        if self.skipped {
            f.write_str(" (the line is skipped; the lines after it are read)")?;
        } else if self.file.is_some() {
            f.write_str(" (the previous content stays in force; fix the file and save it again)")?;
        }
        Ok(())
    }
}

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

/// Starts the task of one source, from what the store says it read in
/// earlier runs.
pub fn spawn(
    cfg: &SourceConfig,
    store: &crate::store::Store,
    tx: mpsc::Sender<Batch>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, crate::store::StoreError> {
    match &cfg.kind {
        SourceKind::File(f) => {
            let tracker = file::FileTracker::new(cfg, f)
                .with_checkpoints(store.checkpoints(&cfg.name)?)
                .with_seen(store.seen(&cfg.name)?);
            Ok(tokio::spawn(file::run(tracker, tx, shutdown)))
        }
        SourceKind::Feed(_) | SourceKind::Http(_) => {
            let (url, plain) = cfg
                .poll()
                .map(|p| (p.url.identity(), p.url.to_string()))
                .unwrap_or_default();
            store.rename_location(&cfg.name, &plain, &url)?;
            let mut stored = store.checkpoints(&cfg.name)?;
            let poll = store.poll_state(&cfg.name)?;
            let table = match stored.remove(std::path::Path::new(&url)) {
                Some(crate::store::FileCheckpoint::Table(rows)) => rows,
                _ => HashMap::new(),
            };
            Ok(tokio::spawn(poll::run(
                cfg.clone(),
                poll,
                table,
                tx,
                shutdown,
            )))
        }
    }
}
