//! One channel's delivery from the outbox: the oldest due notification
//! first, retries with backoff, digests, and what each send did recorded.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::channel::Channel;
use crate::http::{Shared, label};
use crate::store::{Outcome, Pending, Store};

/// When a delivery worker stops: `retire` at once (replaced by a reload),
/// `shutdown` rather than wait out a backoff, `drain` once the outbox is
/// empty.
pub(super) struct Stops {
    pub(super) retire: CancellationToken,
    pub(super) shutdown: CancellationToken,
    pub(super) drain: CancellationToken,
}

/// One channel's delivery loop: the oldest due notification first, one
/// waiting out a backoff holding back only the later ones of its (rule,
/// key); retried with exponential backoff and jitter; final answers and an
/// exhausted retry budget mark it failed. What a send did is kept until
/// the store has recorded it: a store that cannot be written (a full disk)
/// delays the record, and nothing is sent again meanwhile.
pub(super) async fn deliver(
    name: String,
    ch: Channel,
    mut store: Store,
    budget: Duration,
    wake: Arc<Notify>,
    stops: Stops,
    shared: Arc<Shared>,
) {
    let Stops {
        retire,
        shutdown,
        drain,
    } = stops;
    let m = &shared.metrics;
    let ch_label = label("channel", &name);
    // Sends not yet recorded: recorded together, in one transaction.
    let mut unrecorded: Vec<(Pending, Outcome)> = Vec::new();
    let mut record_delay = Duration::from_millis(500);
    let mut paused: Option<chrono::DateTime<Utc>> = None;
    loop {
        if !unrecorded.is_empty() {
            match store.record(unrecorded.iter().map(|(p, o)| (p, o))) {
                Ok(()) => {
                    unrecorded.clear();
                    record_delay = Duration::from_millis(500);
                }
                Err(e) if retire.is_cancelled() => {
                    // Replaced by a reload, which waits for this worker:
                    // the successor finds these pending and sends them
                    // again (same ids).
                    tracing::error!(channel = %name, sends = unrecorded.len(), "{e}; not recorded, sent again by the reloaded channel");
                    return;
                }
                Err(e) => {
                    tracing::error!(channel = %name, sends = unrecorded.len(), "{e}; the send is recorded later, and not repeated");
                    tokio::select! {
                        _ = tokio::time::sleep(record_delay) => {}
                        _ = shutdown.cancelled() => return,
                        _ = retire.cancelled() => {}
                    }
                    record_delay = (record_delay * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
        }
        // Replaced by a reload: the successor takes over the outbox.
        if retire.is_cancelled() {
            return;
        }
        if let Some(until) = paused.take() {
            let wait = (until - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            if shutdown.is_cancelled() && !wait.is_zero() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
                _ = retire.cancelled() => return,
            }
        }
        let batch = match store.due(&name, Utc::now(), BATCH) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(channel = %name, "{e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                    _ = retire.cancelled() => return,
                }
                continue;
            }
        };
        if batch.is_empty() {
            let next_at = match store.next_wait(&name) {
                Ok(at) => at,
                Err(e) => {
                    tracing::error!(channel = %name, "{e}");
                    Some(Utc::now() + chrono::Duration::seconds(1))
                }
            };
            match next_at {
                None => {
                    if drain.is_cancelled() {
                        return;
                    }
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = drain.cancelled() => {}
                        _ = retire.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
                Some(at) => {
                    if shutdown.is_cancelled() {
                        return; // waiting out a backoff is for the next start
                    }
                    let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = wake.notified() => {}
                        _ = shutdown.cancelled() => return,
                        _ = retire.cancelled() => return,
                    }
                }
            }
            continue;
        }
        // One at a time, in order; recorded together after the batch, or
        // sooner when sending takes long, the channel goes down, or the
        // worker is replaced.
        let started = std::time::Instant::now();
        for p in batch {
            // A leader whose lease ran out (paused, or cut off from the
            // store) sends nothing more: another instance may lead now.
            if !shared.may_act() {
                break;
            }
            let n = &p.notification;
            let result = ch.send(&name, n).await;
            let now = Utc::now();
            let outcome = match result {
                Ok(answer) => {
                    tracing::info!(channel = %name, rule = %n.rule, key = %n.key, state = n.state.as_str(), id = %n.id, "delivered: {answer}");
                    m.deliveries.get_or_create(&ch_label).inc();
                    shared.channel(&name, None);
                    Outcome::Delivered(answer, now)
                }
                Err(e)
                    if e.retryable
                        && (now - p.created_at).to_std().unwrap_or_default() < budget =>
                {
                    let delay = backoff(p.attempts);
                    tracing::warn!(channel = %name, id = %n.id, attempt = p.attempts + 1, "delivery failed, will retry in {delay:?}: {e}");
                    m.retries.get_or_create(&ch_label).inc();
                    shared.channel(&name, Some(&e.message));
                    let until = now + chrono::Duration::from_std(delay).unwrap_or_default();
                    if e.channel_down {
                        // The server's trouble, not this notification's: the
                        // channel waits with it, so its notifications keep
                        // their order.
                        paused = Some(until);
                    }
                    Outcome::Retry(e.message, until)
                }
                Err(e) => {
                    tracing::error!(channel = %name, rule = %n.rule, key = %n.key, id = %n.id, "delivery failed for good: {e}");
                    m.failures.get_or_create(&ch_label).inc();
                    shared.channel(&name, Some(&e.message));
                    Outcome::Failed(e.message, now)
                }
            };
            unrecorded.push((p, outcome));
            if paused.is_some() || retire.is_cancelled() || started.elapsed() >= BATCH_TIME {
                break;
            }
        }
    }
}

/// Sends are recorded together, in one transaction, up to this many and
/// at least every [`BATCH_TIME`]: a transaction per send held delivery to
/// a fifth of what the receiver takes. A crash before the record sends
/// these again, with the same ids: at most 32, and only those of the last
/// 10 ms, so a channel slower than that (SMTP) records each send before
/// the next.
const BATCH: usize = 32;
const BATCH_TIME: Duration = Duration::from_millis(10);

/// A digest channel: at each tick of its schedule, everything pending goes
/// out as one message; nothing when there is nothing. What waits is in the
/// outbox, so a restart loses none of it. A failed send is tried again at
/// the next tick, or marked failed when the server's answer is final.
pub(super) async fn deliver_digest(
    name: String,
    ch: Channel,
    mut store: Store,
    schedule: crate::schedule::Schedule,
    stops: Stops,
    shared: Arc<Shared>,
) {
    let Stops {
        retire, shutdown, ..
    } = stops;
    let m = &shared.metrics;
    let ch_label = label("channel", &name);
    loop {
        let next = schedule.next_after(Utc::now());
        let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
            _ = retire.cancelled() => return,
        }
        let items = match store.all_pending(&name) {
            Ok(items) if items.is_empty() => continue,
            Ok(items) => items,
            Err(e) => {
                tracing::error!(channel = %name, "{e}");
                continue;
            }
        };
        if !shared.may_act() {
            continue;
        }
        let now = Utc::now();
        let digest =
            crate::channel::digest::digest(&name, items.iter().map(|p| &p.notification), now);
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
                m.deliveries
                    .get_or_create(&ch_label)
                    .inc_by(items.len() as u64);
                shared.channel(&name, None);
                tracing::info!(channel = %name, count = items.len(), id = %digest.id, "digest delivered: {answer}")
            }
            Err(e) if e.retryable => {
                m.retries
                    .get_or_create(&ch_label)
                    .inc_by(items.len() as u64);
                shared.channel(&name, Some(&e.message));
                tracing::warn!(channel = %name, count = items.len(), "digest failed, will try at the next tick: {e}")
            }
            Err(e) => {
                m.failures
                    .get_or_create(&ch_label)
                    .inc_by(items.len() as u64);
                shared.channel(&name, Some(&e.message));
                tracing::error!(channel = %name, count = items.len(), "digest failed for good: {e}")
            }
        }
    }
}

/// The delay before try `attempts + 1`: backon's exponential backoff with
/// jitter, 0.5 s doubling to at most 10 min, so that channels recovering
/// together do not retry in step. The attempt count lives in the outbox, so
/// the schedule goes on across restarts.
pub(super) fn backoff(attempts: u32) -> Duration {
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
