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
use crate::engine::{Compiled, Engine, Notification};
use crate::rules::RuleSet;
use crate::source::{self, Batch};

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

/// How long queued notifications may take to go out once a stop is asked.
const GRACE: Duration = Duration::from_secs(10);

/// Runs until `shutdown` is cancelled.
pub async fn run(loaded: Loaded, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Loaded {
        config, compiled, ..
    } = loaded;

    // Channels first: a channel that cannot be built (a missing secret) is
    // a startup error that names it.
    let mut senders: HashMap<String, mpsc::Sender<Arc<Notification>>> = HashMap::new();
    let mut deliveries = JoinSet::new();
    for c in &config.channels {
        let ch = Channel::build(c).map_err(|e| anyhow::anyhow!("channel `{}`: {e}", c.name))?;
        let (tx, rx) = mpsc::channel(4096);
        senders.insert(c.name.clone(), tx);
        deliveries.spawn(deliver(c.name.clone(), ch, rx));
    }

    let (btx, mut brx) = mpsc::channel::<Batch>(256);
    let source_stop = shutdown.child_token();
    let mut sources = JoinSet::new();
    for s in &config.sources {
        source::spawn(s, btx.clone(), source_stop.clone(), &mut sources);
    }
    drop(btx);
    tracing::info!(
        rules = compiled.rules.len(),
        sources = config.sources.len(),
        channels = config.channels.len(),
        "tocsin started"
    );

    let mut engine = Engine::new(compiled);
    let mut out = Vec::new();
    loop {
        let wait = engine
            .next_deadline()
            .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            b = brx.recv() => {
                let Some(batch) = b else { break };
                let now = Utc::now();
                for rec in &batch.records {
                    engine.observe(rec, now, &mut out);
                }
                tracing::debug!(source = %batch.source, records = batch.records.len(), notifications = out.len(), "batch evaluated");
            }
            _ = tokio::time::sleep(wait) => {
                engine.tick(Utc::now(), &mut out);
            }
        }
        route(&mut out, &senders).await;
    }

    // Sources stop; channels drain what is queued, within the grace period.
    source_stop.cancel();
    while sources.join_next().await.is_some() {}
    drop(senders);
    let drained = tokio::time::timeout(GRACE, async {
        while deliveries.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "stopping with notifications still queued after {}s",
            GRACE.as_secs()
        );
    }
    tracing::info!("tocsin stopped");
    Ok(())
}

async fn route(
    out: &mut Vec<Notification>,
    senders: &HashMap<String, mpsc::Sender<Arc<Notification>>>,
) {
    for n in out.drain(..) {
        tracing::debug!(rule = %n.rule, key = %n.key, state = n.state.as_str(), "notification");
        let n = Arc::new(n);
        for ch in n.notify.iter() {
            if let Some(tx) = senders.get(ch) {
                let _ = tx.send(Arc::clone(&n)).await;
            }
        }
    }
}

/// One channel's delivery loop: in order, with retries and backoff.
async fn deliver(name: String, ch: Channel, mut rx: mpsc::Receiver<Arc<Notification>>) {
    const ATTEMPTS: u32 = 6;
    while let Some(n) = rx.recv().await {
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            match ch.send(&name, &n).await {
                Ok(answer) => {
                    tracing::info!(channel = %name, rule = %n.rule, key = %n.key, state = n.state.as_str(), id = %n.id, "delivered: {answer}");
                    break;
                }
                Err(e) if e.retryable && attempt < ATTEMPTS => {
                    tracing::warn!(channel = %name, id = %n.id, attempt, "delivery failed, will retry in {delay:?}: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
                Err(e) => {
                    tracing::error!(channel = %name, rule = %n.rule, key = %n.key, id = %n.id, "delivery failed for good: {e}");
                    break;
                }
            }
        }
    }
}

/// Prints diagnostics the way `tocsin check` does.
pub fn render(diags: &[Diagnostic]) -> String {
    crate::diag::render_all(diags)
}
