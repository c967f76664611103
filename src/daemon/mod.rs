//! The daemon: wiring of sources → engine → channels, reloads, systemd
//! notifications, and shutdown. `run` takes a [`Control`] (stop, reload),
//! so the whole daemon can run in-process; signals live in `main.rs`.

mod deliver;
mod ha;
mod parts;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::diag::Diagnostic;
use crate::engine::Engine;
use crate::engine::keys::Key;
use crate::http::{Shared, label};
use crate::source::{self, Batch};
use crate::store::Store;
use crate::systemd;
use tokio::sync::Notify;

use crate::load::Loaded;
use parts::Parts;

/// How long queued notifications may take to go out once a stop is asked;
/// what is left stays in the outbox for the next start.
const GRACE: Duration = Duration::from_secs(10);

/// What tells a running daemon to stop or to reload (signals, in `main`).
#[derive(Clone, Default)]
pub struct Control {
    pub shutdown: CancellationToken,
    pub reload: Arc<Notify>,
}

/// Runs until `control.shutdown` is cancelled; reloads at
/// `control.reload` and when files in the rules folder change. On an
/// SQLite store the daemon leads alone; on a PostgreSQL store it leads or
/// stands by in turn with the other instances ([`ha`]).
pub async fn run(loaded: Loaded, control: Control) -> anyhow::Result<()> {
    let shared = Shared::new(loaded.config.state.clone());
    let http = match &loaded.config.http {
        Some(h) => {
            Some(crate::http::serve(h.listen, shared.clone(), control.shutdown.clone()).await?)
        }
        None => None,
    };
    let result = match loaded.config.state {
        crate::store::Location::File(_) => lead(loaded, control.clone(), shared, None).await,
        crate::store::Location::Postgres { .. } => ha::run(loaded, control.clone(), shared).await,
    };
    // The listener stops with the daemon, whatever ended it.
    control.shutdown.cancel();
    if let Some(h) = http {
        let _ = h.await;
    }
    result
}

/// Runs sources, rules and delivery until `control.shutdown`: alone on an
/// SQLite store, or as the leader of an HA group, writing under `fence`.
async fn lead(
    loaded: Loaded,
    control: Control,
    shared: Arc<Shared>,
    fence: Option<Arc<crate::store::pg::Fence>>,
) -> anyhow::Result<()> {
    let Loaded {
        mut config,
        compiled,
        mut cache,
        rules,
    } = loaded;
    cache.keep(rules);
    let shutdown = control.shutdown.clone();
    // Leading an HA group ends without the process: systemd hears of the
    // stop from `ha::run` then.
    let alone = fence.is_none();
    // One daemon per SQLite store; held until the process ends.
    let _lock = match config.state.file() {
        Some(file) => Some(crate::store::RunLock::take(file)?),
        None => None,
    };
    let mut store = Store::open_fenced(&config.state, fence.clone())?;
    let (btx, mut brx) = mpsc::channel::<Batch>(256);
    let mut parts = Parts {
        workers: HashMap::new(),
        sources: HashMap::new(),
        restarting: HashMap::new(),
        source_stop: shutdown.child_token(),
        batches: btx,
        shutdown: shutdown.clone(),
        drain: CancellationToken::new(),
        shared: shared.clone(),
        fence,
    };

    // Channels first: a channel that cannot be built (a missing secret) is
    // a startup error that names it. Each delivers from the outbox.
    let built = parts.build_channels(&config)?;
    parts.apply_channels(&config, built)?;

    let mut engine = Engine::new(compiled);
    // The internal source-health alert keeps its state beside the rules'.
    let (health_state, rule_state): (Vec<_>, Vec<_>) = store
        .states()?
        .into_iter()
        .partition(|(r, _, _)| r == crate::notification::UNHEALTHY_RULE);
    let (mut health, health_gone) = source::health::HealthTracker::new(
        &config,
        health_state.into_iter().map(|(_, k, st)| (k, st)).collect(),
    );
    if !health_gone.is_empty() {
        store.commit(&health_gone, &[], &[], &[], Utc::now())?;
    }
    shared.health().sources = health.unhealthy();
    let gone = engine.restore(rule_state);
    // `absent` rules count silence from now when they have no state yet.
    engine.arm(Utc::now());
    if !gone.is_empty() {
        let mut rules: Vec<&str> = gone.iter().map(|(r, _)| r.as_str()).collect();
        rules.dedup();
        tracing::info!(rules = ?rules, "dropping the state of rules that no longer exist");
        let changes: Vec<_> = gone
            .into_iter()
            .map(|(r, k)| (Arc::from(r), Key::new(&k), None))
            .collect();
        store.commit(&changes, &[], &[], &[], Utc::now())?;
    }

    parts.apply_sources(&config, &store)?;
    // Whether the rule files' last event left them whole (see watch_rules).
    let saved = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut rules_watch = watch_rules(&config.rules, control.reload.clone(), saved.clone());
    tracing::info!(
        rules = engine.compiled().rules.len(),
        sources = config.sources.len(),
        channels = config.channels.len(),
        state = %config.state.display(),
        "tocsin started"
    );
    let sd = systemd::Notifier::from_env();
    sd.ready(&status_line(&engine, &config, &health, &store));

    let http_listen = config.http.as_ref().map(|h| h.listen);
    let mut stats = crate::engine::Stats::default();
    let mut over_budget_logged = HashMap::new();
    let mut changes = Vec::new();
    let mut out = Vec::new();
    // Documents past `evidence.retention`: at start, then hourly.
    let mut prune = tokio::time::interval(Duration::from_secs(3600));
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = tokio::time::interval(sd.beat());
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let wait = engine
            .next_deadline()
            .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(3600));
        let mut checkpoints = Vec::new();
        // The documents the batch's notifications name, kept as evidence.
        let mut docs = Vec::new();
        // A part of a large table holds its source back until committed.
        let mut _held = None;
        let mut health_change = Vec::new();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            b = brx.recv() => {
                let Some(batch) = b else { break };
                if batch.restart {
                    // Every batch of the old task was committed in the
                    // turns before this one.
                    if let Err(e) = parts.restarted(&batch.source, &store) {
                        tracing::error!(source = %batch.source, "cannot start again: {e:#}");
                    }
                    continue;
                }
                let now = Utc::now();
                engine.observe_batch(&batch.records, now, &mut out);
                docs = documents_named(&batch.records, &out);
                checkpoints = batch.checkpoints;
                _held = batch.held;
                let m = &shared.metrics;
                let src = label("source", &batch.source);
                m.records.get_or_create(&src).inc_by(batch.records.len() as u64);
                match &batch.health {
                    Some(source::Health::Ok) => {
                        let t = now.timestamp_millis() as f64 / 1000.0;
                        m.source_last_success.get_or_create(&src).set(t);
                    }
                    Some(source::Health::Failed(_)) => {
                        m.source_errors.get_or_create(&src).inc();
                    }
                    // Said at every metadata poll while it lasts: not a
                    // new error each time.
                    Some(source::Health::Missing { .. }) | None => {}
                }
                if let Some(h) = &batch.health {
                    health_change.extend(health.observe(&batch.source, h, now, &mut out));
                    shared.health().sources = health.unhealthy();
                }
                tracing::debug!(source = %batch.source, records = batch.records.len(), notifications = out.len(), "batch evaluated");
            }
            _ = tokio::time::sleep(wait) => {
                engine.tick(Utc::now(), &mut out);
            }
            _ = control.reload.notified() => {
                sd.reloading();
                // Edits come in bursts (an editor writes, renames, touches):
                // wait until 50 ms pass without another (2 s at most, for a
                // file rewritten without pause), and take the burst as one
                // reload. A file renamed into place or closed after writing
                // is whole: then 10 ms without another event will do.
                let burst = std::time::Instant::now();
                while burst.elapsed() < Duration::from_secs(2) {
                    let quiet = if saved.load(std::sync::atomic::Ordering::Acquire) {
                        Duration::from_millis(10)
                    } else {
                        Duration::from_millis(50)
                    };
                    if tokio::time::timeout(quiet, control.reload.notified()).await.is_err() {
                        break;
                    }
                }
                let before = config.rules.clone();
                match reload(&mut config, &mut cache, &mut engine, &mut parts, &mut health, &mut store) {
                    Ok(changes) => {
                        health_change = changes;
                        shared.health().sources = health.unhealthy();
                        shared.metrics.reloaded(true);
                    }
                    Err(e) => {
                        tracing::error!("reload refused, the running config and rules stay in force: {e:#}");
                        shared.metrics.reloaded(false);
                    }
                }
                if config.http.as_ref().map(|h| h.listen) != http_listen {
                    tracing::warn!("http.listen changed: the listener moves at the next restart");
                }
                if config.rules != before {
                    rules_watch = watch_rules(&config.rules, control.reload.clone(), saved.clone());
                }
                sd.ready(&status_line(&engine, &config, &health, &store));
            }
            _ = beat.tick() => {
                sd.alive(&status_line(&engine, &config, &health, &store));
                continue;
            }
            _ = prune.tick() => {
                match store.prune_documents(Utc::now(), config.evidence.retention) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(documents = n, "dropped the documents no alert named for evidence.retention; the ledger says which"),
                    Err(e) => tracing::warn!("cannot drop old documents now: {e}"),
                }
                continue;
            }
        }
        count(
            &shared,
            &mut engine,
            &mut stats,
            &mut over_budget_logged,
            &out,
        );
        // State, read positions and notifications in one transaction; only
        // then are the channels told.
        engine.take_changes_into(&mut changes);
        changes.extend(health_change);
        if changes.is_empty() && checkpoints.is_empty() && out.is_empty() {
            continue;
        }
        // A store that cannot be written (disk full, say) holds the loop
        // here, trying again, rather than let a notification go unrecorded:
        // sources wait, and nothing read is lost.
        let mut delay = Duration::from_millis(500);
        'commit: while let Err(e) = store.commit(&changes, &checkpoints, &out, &docs, Utc::now()) {
            tracing::error!("{e}; trying again in {delay:?}");
            shared.health().store = Some(e.to_string());
            let again = tokio::time::sleep(delay);
            tokio::pin!(again);
            loop {
                tokio::select! {
                    _ = &mut again => break,
                    // Waiting for the store is being alive: systemd's
                    // watchdog must not kill the daemon for a full disk.
                    _ = beat.tick() => {
                        sd.alive(&format!("waiting for the store to be writable: {e}"));
                    }
                    _ = shutdown.cancelled() => {
                        // Not recorded: the next start reads the same changes
                        // again from the files and makes these notifications anew.
                        tracing::error!("stopping with {} notifications not recorded; the next start makes them again", out.len());
                        out.clear();
                        break 'commit;
                    }
                }
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
        if shared.health().store.take().is_some() {
            tracing::info!("the store is writable again");
        }
        for n in out.drain(..) {
            tracing::debug!(rule = %n.rule, key = %n.key, state = n.state.as_str(), "notification");
            for ch in n.notify.iter() {
                if let Some(w) = parts.workers.get(ch) {
                    w.wake.notify_one();
                }
            }
        }
    }
    drop(rules_watch);
    if alone {
        sd.stopping();
    }

    // Sources stop; channels deliver what is queued within the grace
    // period; the rest waits in the outbox for the next start.
    parts.source_stop.cancel();
    for (_, r) in parts.sources.drain() {
        let _ = r.handle.await;
    }
    parts.drain.cancel();
    let handles: Vec<_> = parts.workers.into_values().map(|w| w.handle).collect();
    let aborts: Vec<_> = handles.iter().map(|h| h.abort_handle()).collect();
    let drained = tokio::time::timeout(GRACE, async {
        for h in handles {
            let _ = h.await;
        }
    })
    .await;
    if drained.is_err() {
        aborts.iter().for_each(|a| a.abort());
        tracing::warn!(
            "stopping with notifications still queued after {}s; they go out at the next start",
            GRACE.as_secs()
        );
    }
    if alone {
        tracing::info!("tocsin stopped");
    } else {
        tracing::info!("stopped leading: sources and delivery stopped");
    }
    Ok(())
}

/// The documents of `records` that notifications of `out` name in their
/// evidence, each once. Records of one document share it, so the walk
/// compares pointers until the document changes.
fn documents_named(
    records: &[crate::record::Record],
    out: &[crate::notification::Notification],
) -> Vec<Arc<crate::record::Document>> {
    let mut docs: Vec<Arc<crate::record::Document>> = Vec::new();
    if out.iter().all(|n| n.evidence.document_sha256.is_none()) {
        return docs;
    }
    let mut last: Option<&Arc<crate::record::Document>> = None;
    for d in records.iter().filter_map(|r| r.doc.as_ref()) {
        if last.is_some_and(|l| Arc::ptr_eq(l, d)) {
            continue;
        }
        last = Some(d);
        // A document an alert named was hashed for its evidence; the
        // others are not hashed here either.
        let Some(sha) = d.sha256_known() else {
            continue;
        };
        let named = out
            .iter()
            .any(|n| n.evidence.document_sha256.as_deref() == Some(sha));
        if named && !docs.iter().any(|k| k.sha256_known() == Some(sha)) {
            docs.push(d.clone());
        }
    }
    docs
}

/// Moves the engine's figures and the notifications at hand into the
/// metrics.
fn count(
    shared: &Shared,
    engine: &mut Engine,
    last: &mut crate::engine::Stats,
    logged: &mut HashMap<Arc<str>, std::time::Instant>,
    out: &[crate::notification::Notification],
) {
    let m = &shared.metrics;
    for (rule, n) in engine.take_evaluations() {
        m.evaluations.get_or_create(&label("rule", &rule)).inc_by(n);
    }
    // Counted each time, logged once per rule per minute: a rule that runs
    // past its budget on every record must not flood the journal.
    for (rule, n) in engine.take_over_budget() {
        m.over_budget.get_or_create(&label("rule", &rule)).inc_by(n);
        let now = std::time::Instant::now();
        if logged
            .get(&rule)
            .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            logged.insert(rule.clone(), now);
            tracing::warn!(
                rule = %rule,
                count = n,
                "rule {rule}: its expression or a template ran past its evaluation budget ({n} time(s)); there the rule did not hold, or the default text was sent. Simplify it: fewer nested comprehensions or loops"
            );
        }
    }
    let s = &engine.stats;
    m.non_numeric.inc_by(s.non_numeric - last.non_numeric);
    m.expr_errors.inc_by(s.expr_errors - last.expr_errors);
    *last = s.clone();
    for n in out {
        m.notifications
            .get_or_create(&vec![
                ("rule", n.rule.to_string()),
                ("state", n.state.as_str().to_string()),
            ])
            .inc();
    }
}

/// Reads the config and rules again and, when everything validates,
/// swaps them in: state carries over by rule id, the state of removed rules
/// is dropped, and only sources and channels whose config changed restart.
/// Returns the source-health state to store; an error leaves everything as
/// it was.
fn reload(
    config: &mut Config,
    cache: &mut crate::rules::RuleCache,
    engine: &mut Engine,
    parts: &mut Parts,
    health: &mut source::health::HealthTracker,
    store: &mut Store,
) -> anyhow::Result<Vec<crate::store::StateChange>> {
    // Only the rule files that changed are read again.
    let loaded = match crate::load::load_with(&config.path, cache) {
        Ok(l) => l,
        Err(p) => {
            for d in &p.0 {
                tracing::error!("{}", d.headline());
            }
            anyhow::bail!(
                "{} problem(s) in the config or rules (each logged above)",
                p.0.iter().filter(|d| d.is_error()).count()
            );
        }
    };
    if loaded.config.state != config.state {
        anyhow::bail!(
            "`state:` changed to {}; a running daemon keeps its store, restart it to move the store",
            loaded.config.state.display()
        );
    }
    for w in crate::lint::warnings(&loaded) {
        tracing::warn!("{}", w.headline());
    }
    let crate::load::Loaded {
        config: new,
        rules,
        compiled,
        ..
    } = loaded;
    cache.keep(rules);
    let built = parts.build_channels(&new)?;
    let dropped = engine.replace_rules(compiled);
    engine.arm(Utc::now());
    if !dropped.is_empty() {
        tracing::info!(rules = ?dropped, "dropping the state of rules that no longer exist");
        store.forget_rules(&dropped)?;
    }
    let channels = parts.apply_channels(&new, built)?;
    let sources = parts.apply_sources(&new, store)?;
    let changes = health.reconfigure(&new, &sources);
    tracing::info!(
        rules = engine.compiled().rules.len(),
        sources = new.sources.len(),
        channels = new.channels.len(),
        restarted_sources = ?sources,
        restarted_channels = ?channels,
        "reloaded"
    );
    *config = new;
    Ok(changes)
}

/// "42 rules, 6 sources, 0 failing, 0 queued": the service's status line.
fn status_line(
    engine: &Engine,
    config: &Config,
    health: &source::health::HealthTracker,
    store: &Store,
) -> String {
    let queued = store.outbox_counts().map(|(p, _)| p).unwrap_or(0);
    format!(
        "{} rules, {} sources, {} failing, {queued} queued",
        engine.compiled().rules.len(),
        config.sources.len(),
        health.unhealthy().len()
    )
}

/// Watches the rules folder (or the rules file's folder): a change to a
/// rules file asks for a reload. Dropping the watcher ends the watch.
fn watch_rules(
    path: &Path,
    reload: Arc<Notify>,
    saved: Arc<std::sync::atomic::AtomicBool>,
) -> Option<notify::RecommendedWatcher> {
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    use notify::{EventKind, RecursiveMode, Watcher};
    let (dir, only) = if path.is_dir() {
        (path.to_path_buf(), None)
    } else {
        (
            path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            path.file_name().map(|n| n.to_owned()),
        )
    };
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        // Whether the file is whole after this event: closed after writing
        // or renamed into place (an atomic save), or gone; not while it is
        // being written.
        let whole = match ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
            | EventKind::Remove(_) => Some(true),
            EventKind::Access(_) => return,
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
                Some(false)
            }
            _ => None,
        };
        let relevant = ev.paths.iter().any(|p| {
            let name = p.file_name();
            match &only {
                Some(f) => name == Some(f.as_os_str()),
                None => {
                    !source::file::is_temp_name(p)
                        && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                }
            }
        });
        if relevant {
            if let Some(w) = whole {
                saved.store(w, std::sync::atomic::Ordering::Release);
            }
            reload.notify_one();
        }
    };
    let mut w = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(
                "cannot watch {} for rule changes (reload with SIGHUP): {e}",
                dir.display()
            );
            return None;
        }
    };
    if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(
            "cannot watch {} for rule changes (reload with SIGHUP): {e}",
            dir.display()
        );
        return None;
    }
    Some(w)
}

/// Prints diagnostics the way `tocsin check` does.
pub fn render(diags: &[Diagnostic]) -> String {
    crate::diag::render_all(diags)
}
