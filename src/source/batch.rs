//! What a source sends the engine: a batch of records, where reading got
//! to, and the source's health; and the errors a source reports.

use std::path::{Path, PathBuf};

use crate::record::Record;

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
    /// Held until the batch is committed: a part of a large table version
    /// holds its source back from making the next until then.
    pub held: Option<tokio::sync::OwnedSemaphorePermit>,
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
            held: None,
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
            held: None,
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
