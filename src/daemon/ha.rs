//! High availability on a PostgreSQL store: instances with the same config
//! and store take turns. One leads, holding the store's lease; the others
//! stand by, with their config loaded and checked, and take the lease once
//! it has expired.
//!
//! A leader renews its lease every `ha.renew`. It counts its lease valid
//! until `ha.lease` after it *asked* for it (its own clock, not the
//! server's), so it gives up before the store lets another take over:
//! when a renewal fails, when the store says the lease is another's, or
//! when that time passes without a renewal (the process was paused, the
//! store cannot be reached). Giving up stops sources and delivery at once;
//! delivery also checks before each send, so a leader that wakes from a
//! pause sends nothing even before it has noticed. Its writes are fenced
//! by the lease's epoch in the store (see [`crate::store::pg::Fence`]), so
//! whatever it still tries to write is refused.
//!
//! The new leader starts as a restarted daemon does: from the states,
//! read positions and outbox in the store, so nothing the old leader
//! committed is read or alerted again, and nothing it had not committed is
//! lost.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::HaConfig;
use crate::http::{Role, Shared};
use crate::load::Loaded;
use crate::store::Store;
use crate::store::pg::Fence;
use crate::systemd;

use super::{Control, lead};

/// This instance's name in the lease: host and process.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tocsin".into());
    format!("{host}:{}", std::process::id())
}

/// The lease's own connection, used from blocking threads with a time
/// limit: a store that does not answer must not hold up giving up.
#[derive(Clone)]
struct LeaseStore(Arc<Mutex<Store>>);

impl LeaseStore {
    async fn call<R: Send + 'static>(
        &self,
        limit: Duration,
        f: impl FnOnce(&Store) -> Result<R, crate::store::StoreError> + Send + 'static,
    ) -> Result<R, String> {
        let store = self.0.clone();
        let task = tokio::task::spawn_blocking(move || {
            let s = store.lock().unwrap_or_else(|e| e.into_inner());
            f(&s).map_err(|e| e.to_string())
        });
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer from the store within {limit:?}")),
        }
    }
}

/// Stands by and leads in turn until `control.shutdown`.
pub(super) async fn run(
    loaded: Loaded,
    control: Control,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    let name = holder();
    let path = loaded.config.path.clone();
    let store = Store::open(&loaded.config.state)?;
    let lease_store = LeaseStore(Arc::new(Mutex::new(store)));
    let fence = Fence::new(name.clone());
    let sd = systemd::Notifier::from_env();
    let mut loaded = Some(loaded);
    loop {
        // Standing by.
        shared.set_role(Role::Standby);
        fence.set(0);
        tracing::info!(instance = %name, "standing by: another instance leads, or none has yet");
        sd.ready(&format!("standby ({name})"));
        let mut beat = tokio::time::interval(sd.beat());
        let (epoch, asked) = loop {
            let ha = loaded
                .as_ref()
                .map(|l| l.config.ha.clone())
                .unwrap_or_default();
            // Looked at every `renew`, and again just after the lease
            // held by another runs out.
            let mut wait = ha.renew;
            if let Some(l) = &loaded {
                let asked = Instant::now();
                let lease = ha.lease;
                let holder = name.clone();
                match lease_store
                    .call(ha.renew, move |s| {
                        Ok(match s.take_lease(&holder, lease)? {
                            Some(epoch) => Ok(epoch),
                            None => Err(s.lease()?.expires_in_ms),
                        })
                    })
                    .await
                {
                    Ok(Ok(epoch)) => break (epoch, asked),
                    Ok(Err(left_ms)) => {
                        let left = Duration::from_millis(left_ms.max(0) as u64 + 20);
                        wait = wait.min(left);
                    }
                    Err(e) => tracing::warn!("cannot look at the lease of {}: {e}", l.config.state),
                }
            }
            let wait = tokio::time::sleep(wait);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = control.shutdown.cancelled() => {
                        sd.stopping();
                        tracing::info!("tocsin stopped");
                        return Ok(());
                    }
                    _ = &mut wait => break,
                    _ = beat.tick() => sd.alive(&format!("standby ({name})")),
                    _ = control.reload.notified() => {
                        // A standby keeps its config checked, so that it can
                        // take over with the one in force.
                        match crate::load::load_kept(&path) {
                            Ok(l) => {
                                tracing::info!("reloaded: the config and rules are valid, and in force when this instance leads");
                                loaded = Some(l);
                                shared.metrics.reloaded(true);
                            }
                            Err(p) => {
                                tracing::error!("reload refused, the config and rules before stay in force:\n{}", super::render(&p.0));
                                shared.metrics.reloaded(false);
                            }
                        }
                    }
                }
            }
            if loaded.is_none() {
                loaded = crate::load::load_kept(&path).ok();
            }
        };
        // The lease is kept from now on, also while the config loads.
        let ha = loaded
            .as_ref()
            .map(|l| l.config.ha.clone())
            .unwrap_or_default();
        fence.set(epoch);
        shared.set_role(Role::Leader {
            epoch,
            until: asked + ha.lease,
        });
        tracing::info!(instance = %name, epoch, "leading: took the lease");
        let stop = control.shutdown.child_token();
        let keeper = tokio::spawn(keep_lease(
            lease_store.clone(),
            name.clone(),
            epoch,
            asked + ha.lease,
            ha,
            shared.clone(),
            stop.clone(),
        ));
        // The config and rules as they are now: files may have changed
        // since the last reload (the leader watches the rules folder; a
        // standby does not). Those last loaded serve if they no longer load.
        let previous = loaded.take();
        let l = match crate::load::load_kept(&path) {
            Ok(l) => Some(l),
            Err(p) => {
                tracing::error!(
                    "the config and rules do not load now, leading with those loaded before:\n{}",
                    super::render(&p.0)
                );
                previous
            }
        };
        let Some(l) = l else {
            keeper.abort();
            continue;
        };
        let led = lead(
            l,
            Control {
                shutdown: stop.clone(),
                reload: control.reload.clone(),
            },
            shared.clone(),
            Some(fence.clone()),
        )
        .await;
        keeper.abort();
        fence.set(0);
        shared.set_role(Role::Standby);
        // Let another take over now rather than when the lease expires
        // (nothing happens if it is another's already).
        let holder = name.clone();
        let _ = lease_store
            .call(Duration::from_secs(2), move |s| {
                s.release_lease(&holder, epoch)
            })
            .await;
        if control.shutdown.is_cancelled() {
            sd.stopping();
            tracing::info!("tocsin stopped");
            return led;
        }
        if let Err(e) = led {
            tracing::error!("stopped leading: {e:#}");
        }
        loaded = crate::load::load_kept(&path).ok();
    }
}

/// Renews the lease every `ha.renew` while this instance leads; stops it
/// (cancels `stop`) when the lease is lost or cannot be renewed in time.
async fn keep_lease(
    store: LeaseStore,
    name: String,
    epoch: i64,
    mut until: Instant,
    ha: HaConfig,
    shared: Arc<Shared>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        // Renewed every `renew`, and woken at `until` at the latest.
        let wait = ha
            .renew
            .min(until.saturating_duration_since(Instant::now()));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if Instant::now() >= until {
            tracing::error!(
                epoch,
                "the lease ran out before it could be renewed: stopping sources and delivery, standing by"
            );
            stop.cancel();
            return;
        }
        let asked = Instant::now();
        let holder = name.clone();
        let lease = ha.lease;
        let limit = until.saturating_duration_since(asked);
        match store
            .call(limit, move |s| s.renew_lease(&holder, epoch, lease))
            .await
        {
            Ok(true) => {
                until = asked + ha.lease;
                shared.set_role(Role::Leader { epoch, until });
            }
            Ok(false) => {
                tracing::error!(
                    epoch,
                    "another instance took the lease: stopping sources and delivery, standing by"
                );
                stop.cancel();
                return;
            }
            Err(e) => tracing::warn!(epoch, "cannot renew the lease: {e}"),
        }
    }
}
