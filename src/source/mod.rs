//! Sources turn the outside world into records; they know nothing of rules.
//! Each source runs as its own task and sends batches to the engine.

mod batch;
pub mod feed;
pub mod fetch;
pub mod file;
pub mod health;
pub mod parse;
pub mod poll;
mod table;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{SourceConfig, SourceKind};

pub use batch::{Batch, Health, SourceError};
pub(crate) use table::diff_table;

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
            Ok(tokio::spawn(file::watch::run(tracker, tx, shutdown)))
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
                _ => crate::rows::Table::default(),
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
