//! Sources turn the outside world into records; they know nothing of rules.
//! Each source runs as its own task and sends batches to the engine.

pub mod file;
pub mod parse;

use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{SourceConfig, SourceKind};
use crate::record::Record;

/// Records of one source that arrived together.
#[derive(Debug)]
pub struct Batch {
    pub source: String,
    pub records: Vec<Record>,
    /// Where reading got to, committed with the batch's outcome.
    pub checkpoints: Vec<crate::store::Checkpoint>,
}

/// A failed read or parse: logged with where and why; the source goes on.
#[derive(Debug, Clone)]
pub struct SourceError {
    pub source: String,
    pub file: Option<PathBuf>,
    pub line: usize,
    pub message: String,
    /// Worth trying again shortly (the file was being written).
    pub retry: bool,
}

impl SourceError {
    pub fn io(source: &str, path: &Path, e: std::io::Error) -> SourceError {
        SourceError {
            source: source.to_string(),
            file: Some(path.to_path_buf()),
            line: 0,
            message: format!("cannot read: {e}"),
            retry: false,
        }
    }

    fn retry(mut self) -> SourceError {
        self.retry = true;
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
        if self.file.is_some() && !self.retry {
            f.write_str(" (the previous content stays in force; fix the file and save it again)")?;
        }
        Ok(())
    }
}

/// Starts the task of one source.
/// `stored` is what the store says this source read in earlier runs.
pub fn spawn(
    cfg: &SourceConfig,
    stored: std::collections::HashMap<PathBuf, crate::store::FileCheckpoint>,
    tx: mpsc::Sender<Batch>,
    shutdown: CancellationToken,
    set: &mut tokio::task::JoinSet<()>,
) {
    match &cfg.kind {
        SourceKind::File(f) => {
            let tracker = file::FileTracker::new(cfg, f).with_checkpoints(stored);
            set.spawn(file::run(tracker, tx, shutdown));
        }
    }
}
