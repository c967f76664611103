//! What the daemon runs besides the engine: a delivery worker per channel
//! and a task per source, started, and restarted on reload when their
//! config changed.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::channel::Channel;
use crate::config::Config;
use crate::http::Shared;
use crate::source::{self, Batch};
use crate::store::Store;

use super::deliver::{Stops, deliver, deliver_digest};

/// A channel's delivery worker.
pub(super) struct Worker {
    /// The channel's config as built (its `Debug`, which names every field
    /// and shows secrets only as where they come from).
    pub(super) config: String,
    pub(super) wake: Arc<Notify>,
    /// Stops this worker alone (the channel changed or went away).
    pub(super) retire: CancellationToken,
    pub(super) handle: tokio::task::JoinHandle<()>,
}

/// A running source.
pub(super) struct Running {
    pub(super) config: String,
    pub(super) stop: CancellationToken,
    pub(super) handle: tokio::task::JoinHandle<()>,
}

/// Everything the daemon runs besides the engine: channels and sources,
/// started, and restarted on reload when their config changed.
pub(super) struct Parts {
    pub(super) workers: HashMap<String, Worker>,
    pub(super) sources: HashMap<String, Running>,
    /// Sources changed by a reload, waiting for their previous task's
    /// batches to be committed (its restart marker) before they start
    /// again from what the store says they read.
    pub(super) restarting: HashMap<String, crate::config::SourceConfig>,
    pub(super) source_stop: CancellationToken,
    pub(super) batches: mpsc::Sender<Batch>,
    pub(super) shutdown: CancellationToken,
    pub(super) drain: CancellationToken,
    pub(super) shared: Arc<Shared>,
    /// A leader's fence on a PostgreSQL store: its workers write under it.
    pub(super) fence: Option<Arc<crate::store::pg::Fence>>,
}

impl Parts {
    /// Builds every channel of `config` that is new or changed, before any
    /// is swapped in, so that a channel that cannot be built (a missing
    /// secret) refuses the whole config.
    pub(super) fn build_channels(
        &self,
        config: &Config,
    ) -> anyhow::Result<Vec<(crate::config::ChannelConfig, Channel)>> {
        let mut built = Vec::new();
        for c in &config.channels {
            let same = self
                .workers
                .get(&c.name)
                .is_some_and(|w| w.config == format!("{c:?}"));
            if !same {
                let ch =
                    Channel::build(c).map_err(|e| anyhow::anyhow!("channel `{}`: {e}", c.name))?;
                built.push((c.clone(), ch));
            }
        }
        Ok(built)
    }

    /// Swaps in the channels built by `build_channels`; channels no longer
    /// in `config` stop. A replaced worker finishes the send it is in before
    /// its successor starts, so nothing goes out twice.
    pub(super) fn apply_channels(
        &mut self,
        config: &Config,
        built: Vec<(crate::config::ChannelConfig, Channel)>,
    ) -> anyhow::Result<Vec<String>> {
        let mut changed = Vec::new();
        let names = config.channels.iter().map(|c| c.name.as_str());
        for n in gone(&self.workers, names) {
            if let Some(w) = self.workers.remove(&n) {
                w.retire.cancel();
                // A channel that is gone fails no more.
                self.shared.channel(&n, None);
                changed.push(n);
            }
        }
        for (c, ch) in built {
            let before = self.workers.remove(&c.name).map(|w| {
                w.retire.cancel();
                w.handle
            });
            let wake = Arc::new(Notify::new());
            // Not a child of `shutdown`: at a stop, workers drain the
            // outbox for the grace period.
            let retire = CancellationToken::new();
            let store = Store::open_fenced(&config.state, self.fence.clone())?;
            let task = {
                let (name, wake, retire) = (c.name.clone(), wake.clone(), retire.clone());
                let (shutdown, drain) = (self.shutdown.clone(), self.drain.clone());
                let shared = self.shared.clone();
                let budget = c.retry_budget;
                let digest = c.digest.clone();
                async move {
                    if let Some(h) = before {
                        let _ = h.await;
                    }
                    let stops = Stops {
                        retire,
                        shutdown,
                        drain,
                    };
                    match digest {
                        Some(schedule) => {
                            deliver_digest(name, ch, store, schedule, stops, shared).await
                        }
                        None => deliver(name, ch, store, budget, wake, stops, shared).await,
                    }
                }
            };
            changed.push(c.name.clone());
            self.workers.insert(
                c.name.clone(),
                Worker {
                    config: format!("{c:?}"),
                    wake,
                    retire,
                    handle: tokio::spawn(task),
                },
            );
        }
        Ok(changed)
    }

    /// Starts the sources of `config` that are new and stops those that
    /// changed or went away; returns the names of all three. A changed
    /// source starts again only once every batch its old task sent is
    /// committed ([`Parts::restarted`]), so that it reads on from where
    /// that task got to, not from before.
    pub(super) fn apply_sources(
        &mut self,
        config: &Config,
        store: &Store,
    ) -> anyhow::Result<Vec<String>> {
        let mut changed = Vec::new();
        let names = config.sources.iter().map(|s| s.name.as_str());
        for n in gone(&self.sources, names) {
            if let Some(r) = self.sources.remove(&n) {
                r.stop.cancel();
                changed.push(n);
            }
        }
        self.restarting
            .retain(|n, _| config.sources.iter().any(|s| &s.name == n));
        for s in &config.sources {
            let text = format!("{s:?}");
            if self.sources.get(&s.name).is_some_and(|r| r.config == text) {
                continue;
            }
            changed.push(s.name.clone());
            if let Some(old) = self.sources.remove(&s.name) {
                old.stop.cancel();
                let (tx, name) = (self.batches.clone(), s.name.clone());
                tokio::spawn(async move {
                    let _ = old.handle.await;
                    let _ = tx.send(Batch::restart(&name)).await;
                });
                self.restarting.insert(s.name.clone(), s.clone());
            } else if let Some(pending) = self.restarting.get_mut(&s.name) {
                *pending = s.clone();
            } else {
                self.start_source(s, store)?;
            }
        }
        Ok(changed)
    }

    /// The old task of `name` is over and its batches are committed: the
    /// source starts again with its new config.
    pub(super) fn restarted(&mut self, name: &str, store: &Store) -> anyhow::Result<()> {
        match self.restarting.remove(name) {
            Some(cfg) => self.start_source(&cfg, store),
            None => Ok(()),
        }
    }

    pub(super) fn start_source(
        &mut self,
        s: &crate::config::SourceConfig,
        store: &Store,
    ) -> anyhow::Result<()> {
        let stop = self.source_stop.child_token();
        tracing::debug!(source = %s.name, "source starts");
        let handle = source::spawn(s, store, self.batches.clone(), stop.clone())?;
        self.sources.insert(
            s.name.clone(),
            Running {
                config: format!("{s:?}"),
                stop,
                handle,
            },
        );
        Ok(())
    }
}

/// The names in `running` that are not among `names`.
pub(super) fn gone<'a, V>(
    running: &HashMap<String, V>,
    names: impl Iterator<Item = &'a str>,
) -> Vec<String> {
    let keep: std::collections::HashSet<&str> = names.collect();
    running
        .keys()
        .filter(|n| !keep.contains(n.as_str()))
        .cloned()
        .collect()
}
