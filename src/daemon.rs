//! The daemon: wiring of sources → engine → channels, and shutdown.
//! `run` takes `shutdown` as an argument, so tests run the whole daemon
//! in-process; signals live in `main.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::channel::Channel;
use crate::config::Config;
use crate::diag::{Diagnostic, Problems};
use crate::engine::{Compiled, Engine};
use crate::rules::RuleSet;
use crate::source::{self, Batch};
use crate::store::Store;
use tokio::sync::Notify;

/// Config and rules, validated and compiled.
pub struct Loaded {
    pub config: Config,
    pub rules: RuleSet,
    pub compiled: Compiled,
}

/// Loads and validates everything, reporting every problem at once.
pub fn load(config_path: &Path, rules_override: Option<&Path>) -> Result<Loaded, Problems> {
    let config = Config::load(config_path)?;
    let rules_path = rules_override.unwrap_or(&config.rules).to_path_buf();
    let (rules, mut diags) = RuleSet::load(&rules_path);
    // Compile even when some rules failed to parse, so that references to
    // sources and channels are checked in the same pass.
    match crate::engine::compile(&config, &rules) {
        Ok(compiled) if !diags.iter().any(Diagnostic::is_error) => Ok(Loaded {
            config,
            rules,
            compiled,
        }),
        Ok(_) => Err(Problems(diags)),
        Err(mut p) => {
            diags.append(&mut p.0);
            Err(Problems(diags))
        }
    }
}

/// How long queued notifications may take to go out once a stop is asked;
/// what is left stays in the outbox for the next start.
const GRACE: Duration = Duration::from_secs(10);

/// Runs until `shutdown` is cancelled.
pub async fn run(loaded: Loaded, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Loaded {
        config, compiled, ..
    } = loaded;
    let mut store = Store::open(&config.state)?;

    // Channels first: a channel that cannot be built (a missing secret) is
    // a startup error that names it. Each delivers from the outbox.
    let drain = CancellationToken::new();
    let mut wake: HashMap<String, Arc<Notify>> = HashMap::new();
    let mut deliveries = JoinSet::new();
    for c in &config.channels {
        let ch = Channel::build(c).map_err(|e| anyhow::anyhow!("channel `{}`: {e}", c.name))?;
        let w = Arc::new(Notify::new());
        wake.insert(c.name.clone(), w.clone());
        let worker_store = Store::open(&config.state)?;
        match &c.digest {
            Some(schedule) => {
                let task = deliver_digest(
                    c.name.clone(),
                    ch,
                    worker_store,
                    schedule.clone(),
                    shutdown.clone(),
                );
                deliveries.spawn(task);
            }
            None => {
                let task = deliver(
                    c.name.clone(),
                    ch,
                    worker_store,
                    c.retry_budget,
                    w,
                    shutdown.clone(),
                    drain.clone(),
                );
                deliveries.spawn(task);
            }
        }
    }

    let mut engine = Engine::new(compiled);
    // The internal source-health alert keeps its state beside the rules'.
    let (health_state, rule_state): (Vec<_>, Vec<_>) = store
        .states()?
        .into_iter()
        .partition(|(r, _, _)| r == source::health::RULE);
    let (mut health, health_gone) = source::health::HealthTracker::new(
        &config,
        health_state.into_iter().map(|(_, k, st)| (k, st)).collect(),
    );
    if !health_gone.is_empty() {
        store.commit(&health_gone, &[], &[], Utc::now())?;
    }
    let gone = engine.restore(rule_state);
    // `absent` rules count silence from now when they have no state yet.
    engine.arm(Utc::now());
    if !gone.is_empty() {
        let mut rules: Vec<&str> = gone.iter().map(|(r, _)| r.as_str()).collect();
        rules.dedup();
        tracing::info!(rules = ?rules, "dropping the state of rules that no longer exist");
        let changes: Vec<_> = gone.into_iter().map(|(r, k)| (r, k, None)).collect();
        store.commit(&changes, &[], &[], Utc::now())?;
    }

    let (btx, mut brx) = mpsc::channel::<Batch>(256);
    let source_stop = shutdown.child_token();
    let mut sources = JoinSet::new();
    for s in &config.sources {
        source::spawn(s, &store, btx.clone(), source_stop.clone(), &mut sources)?;
    }
    drop(btx);
    tracing::info!(
        rules = engine.compiled().rules.len(),
        sources = config.sources.len(),
        channels = config.channels.len(),
        state = %config.state.display(),
        "tocsin started"
    );

    let mut out = Vec::new();
    loop {
        let wait = engine
            .next_deadline()
            .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(3600));
        let mut checkpoints = Vec::new();
        let mut health_change = None;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            b = brx.recv() => {
                let Some(batch) = b else { break };
                let now = Utc::now();
                for rec in &batch.records {
                    engine.observe(rec, now, &mut out);
                }
                checkpoints = batch.checkpoints;
                if let Some(h) = &batch.health {
                    health_change = health.observe(&batch.source, h, now, &mut out);
                }
                tracing::debug!(source = %batch.source, records = batch.records.len(), notifications = out.len(), "batch evaluated");
            }
            _ = tokio::time::sleep(wait) => {
                engine.tick(Utc::now(), &mut out);
            }
        }
        // State, read positions and notifications in one transaction; only
        // then are the channels told.
        let mut changes = engine.take_changes();
        changes.extend(health_change);
        if changes.is_empty() && checkpoints.is_empty() && out.is_empty() {
            continue;
        }
        // A store that cannot be written (disk full, say) holds the loop
        // here, trying again, rather than let a notification go unrecorded:
        // sources wait, and nothing read is lost.
        let mut delay = Duration::from_millis(500);
        while let Err(e) = store.commit(&changes, &checkpoints, &out, Utc::now()) {
            tracing::error!("{e}; trying again in {delay:?}");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => {
                    // Not recorded: the next start reads the same changes
                    // again from the files and makes these notifications anew.
                    tracing::error!("stopping with {} notifications not recorded; the next start makes them again", out.len());
                    out.clear();
                    break;
                }
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
        for n in out.drain(..) {
            tracing::debug!(rule = %n.rule, key = %n.key, state = n.state.as_str(), "notification");
            for ch in n.notify.iter() {
                if let Some(w) = wake.get(ch) {
                    w.notify_one();
                }
            }
        }
    }

    // Sources stop; channels deliver what is queued within the grace
    // period; the rest waits in the outbox for the next start.
    source_stop.cancel();
    while sources.join_next().await.is_some() {}
    drain.cancel();
    let drained = tokio::time::timeout(GRACE, async {
        while deliveries.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        deliveries.abort_all();
        tracing::warn!(
            "stopping with notifications still queued after {}s; they go out at the next start",
            GRACE.as_secs()
        );
    }
    tracing::info!("tocsin stopped");
    Ok(())
}

/// One channel's delivery loop: the oldest pending notification first,
/// retried with exponential backoff and jitter; final answers and an
/// exhausted retry budget mark it failed.
async fn deliver(
    name: String,
    ch: Channel,
    mut store: Store,
    budget: Duration,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    drain: CancellationToken,
) {
    loop {
        let next = match store.next_pending(&name) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(channel = %name, "{e}");
                None
            }
        };
        let Some(p) = next else {
            if drain.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = drain.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        };
        if let Some(at) = p.next_at {
            let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            if !wait.is_zero() {
                if shutdown.is_cancelled() {
                    return; // waiting out a backoff is for the next start
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
        let n = &p.notification;
        let now = Utc::now();
        let result = match ch.send(&name, n).await {
            Ok(answer) => {
                tracing::info!(channel = %name, rule = %n.rule, key = %n.key, state = n.state.as_str(), id = %n.id, "delivered: {answer}");
                store.delivered(&p, &answer, now)
            }
            Err(e) if e.retryable && (now - p.created_at).to_std().unwrap_or_default() < budget => {
                let delay = backoff(p.attempts);
                tracing::warn!(channel = %name, id = %n.id, attempt = p.attempts + 1, "delivery failed, will retry in {delay:?}: {e}");
                store.retry_later(
                    &p,
                    now + chrono::Duration::from_std(delay).unwrap_or_default(),
                    &e.message,
                )
            }
            Err(e) => {
                tracing::error!(channel = %name, rule = %n.rule, key = %n.key, id = %n.id, "delivery failed for good: {e}");
                store.failed(&p, &e.message, now)
            }
        };
        if let Err(e) = result {
            tracing::error!(channel = %name, "{e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// A digest channel: at each tick of its schedule, everything pending goes
/// out as one message; nothing when there is nothing. What waits is in the
/// outbox, so a restart loses none of it. A failed send is tried again at
/// the next tick, or marked failed when the server's answer is final.
async fn deliver_digest(
    name: String,
    ch: Channel,
    mut store: Store,
    schedule: crate::schedule::Schedule,
    shutdown: CancellationToken,
) {
    loop {
        let next = schedule.next_after(Utc::now());
        let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        let items = match store.all_pending(&name) {
            Ok(items) if items.is_empty() => continue,
            Ok(items) => items,
            Err(e) => {
                tracing::error!(channel = %name, "{e}");
                continue;
            }
        };
        let now = Utc::now();
        let digest = crate::engine::digest(&name, items.iter().map(|p| &p.notification), now);
        let outcome = ch.send(&name, &digest).await;
        for p in &items {
            let r = match &outcome {
                Ok(answer) => {
                    store.delivered(p, &format!("in digest {}: {answer}", digest.id), now)
                }
                Err(e) if e.retryable => Ok(()),
                Err(e) => store.failed(p, &format!("in digest {}: {e}", digest.id), now),
            };
            if let Err(e) = r {
                tracing::error!(channel = %name, "{e}");
            }
        }
        match outcome {
            Ok(answer) => {
                tracing::info!(channel = %name, count = items.len(), id = %digest.id, "digest delivered: {answer}")
            }
            Err(e) if e.retryable => {
                tracing::warn!(channel = %name, count = items.len(), "digest failed, will try at the next tick: {e}")
            }
            Err(e) => {
                tracing::error!(channel = %name, count = items.len(), "digest failed for good: {e}")
            }
        }
    }
}

/// The delay before try `attempts + 1`: backon's exponential backoff with
/// jitter, 0.5 s doubling to at most 10 min, so that channels recovering
/// together do not retry in step. The attempt count lives in the outbox, so
/// the schedule goes on across restarts.
fn backoff(attempts: u32) -> Duration {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(600))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempts.min(64) as usize)
        .unwrap_or(Duration::from_secs(600))
}

/// Prints diagnostics the way `tocsin check` does.
pub fn render(diags: &[Diagnostic]) -> String {
    crate::diag::render_all(diags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let first = backoff(0);
        assert!(
            first >= Duration::from_millis(500) && first < Duration::from_millis(1100),
            "{first:?}"
        );
        let fifth = backoff(4);
        assert!(fifth >= Duration::from_secs(8), "{fifth:?}");
        assert!(
            backoff(40) <= Duration::from_secs(1200),
            "capped: {:?}",
            backoff(40)
        );
    }
}
