//! The task of a file source: the folders watched with notify, metadata
//! polled for filesystems without events, and every read on a thread of
//! the source's own.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::disk::sig;
use super::{Done, FileTracker};
use crate::record::Record;
use crate::source::batch::{Batch, Health, SourceError};
use crate::store::Checkpoint;

/// Quiet time after the last event before a file is read: editors and
/// `cp` write in several steps.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// The longest a burst of events may delay reading.
const MAX_WAIT: Duration = Duration::from_secs(1);
/// Metadata poll, for filesystems that send no events.
const POLL: Duration = Duration::from_secs(5);

/// What the reader thread is asked to do.
enum Job {
    /// First look at every file.
    Start,
    /// Read these files, which events or timers say may have changed.
    Read(Vec<PathBuf>),
    /// Read the files whose metadata changed (for filesystems without
    /// events).
    Poll,
}

/// Watches one file source until `shutdown`. All reading happens on a
/// thread of the source's own: a read that blocks (a file on a stuck NFS
/// or FUSE mount) holds that thread alone, never the runtime's workers,
/// so `/healthz`, the other sources and shutdown go on; this task stops
/// waiting for it at shutdown.
pub async fn run(tracker: FileTracker, tx: mpsc::Sender<Batch>, shutdown: CancellationToken) {
    let name = tracker.name().to_string();
    let (ntx, mut nrx) = mpsc::unbounded_channel::<notify::Result<Vec<PathBuf>>>();
    // Events are sorted on the watcher's thread: the folder may be busy with
    // other files (the store's, say), and those need not wake this task.
    let matcher = tracker.matcher();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let msg = match res {
            Ok(ev) => {
                let ours = matcher.relevant(ev);
                if ours.is_empty() {
                    return;
                }
                Ok(ours)
            }
            Err(e) => Err(e),
        };
        let _ = ntx.send(msg);
    });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(source = %name, error = %e, "cannot watch files; falling back to polling every {}s", POLL.as_secs());
            None
        }
    };
    if let Some(w) = watcher.as_mut() {
        use notify::Watcher;
        for dir in tracker.watch_dirs() {
            if let Err(e) = w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                tracing::error!(source = %name, dir = %dir.display(), error = %e, "cannot watch folder; polling it every {}s", POLL.as_secs());
            }
        }
    }

    let (jobs, job_rx) = std::sync::mpsc::channel::<Job>();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let tracker = tracker.with_parts(super::Parts::new(done_tx.clone()));
    let spawned = std::thread::Builder::new()
        .name(format!("tocsin-file-{name}"))
        .spawn(move || reader(tracker, job_rx, done_tx));
    if let Err(e) = spawned {
        tracing::error!(source = %name, error = %e, "cannot start the source's reader thread");
        return;
    }
    let _ = jobs.send(Job::Start);
    let mut busy = true;
    let mut dirty: HashSet<PathBuf> = HashSet::new();
    let mut poll_due = false;
    let mut recheck: Option<(std::time::Instant, Vec<PathBuf>)> = None;
    let mut watching = watcher.is_some();
    let mut poll = tokio::time::interval(POLL);
    poll.tick().await;
    loop {
        let recheck_at = match &recheck {
            Some((t, _)) => tokio::time::Instant::from_std(*t),
            None => tokio::time::Instant::now() + POLL * 1000,
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            done = done_rx.recv() => {
                let Some(done) = done else { break };
                // A part of a large table: the job goes on.
                if done.held.is_none() {
                    busy = false;
                    recheck = done.recheck;
                }
                report(&done.errors);
                if !send(&tx, &name, done.records, done.checkpoints, done.health, done.held).await {
                    break;
                }
            }
            // Tables waiting to settle are looked at again when their quiet
            // interval is over.
            _ = tokio::time::sleep_until(recheck_at), if recheck.is_some() && !busy => {
                dirty.extend(recheck.take().map(|(_, paths)| paths).unwrap_or_default());
            }
            ev = nrx.recv(), if watching => {
                match ev {
                    Some(Ok(ours)) => dirty.extend(ours),
                    Some(Err(e)) => {
                        tracing::warn!(source = %name, error = %e, "file watch error");
                        continue;
                    }
                    None => {
                        tracing::warn!(source = %name, "file watch ended; polling every {}s", POLL.as_secs());
                        watching = false;
                        continue;
                    }
                }
                // Gather the burst of events an edit makes before reading:
                // read once our files have been quiet for a moment, or at the
                // latest after MAX_WAIT, so a busy log is still read.
                let latest = tokio::time::Instant::now() + MAX_WAIT;
                let debounce = tokio::time::sleep(DEBOUNCE);
                tokio::pin!(debounce);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = &mut debounce => break,
                        more = nrx.recv() => match more {
                            Some(Ok(ours)) => {
                                dirty.extend(ours);
                                debounce.as_mut().reset((tokio::time::Instant::now() + DEBOUNCE).min(latest));
                            }
                            Some(Err(_)) => {}
                            None => {
                                watching = false;
                                break;
                            }
                        },
                    }
                }
            }
            _ = poll.tick() => poll_due = true,
        }
        if busy {
            continue;
        }
        let job = if !dirty.is_empty() {
            let mut paths: Vec<PathBuf> = dirty.drain().collect();
            paths.sort();
            Job::Read(paths)
        } else if poll_due {
            poll_due = false;
            Job::Poll
        } else {
            continue;
        };
        if jobs.send(job).is_err() {
            break;
        }
        busy = true;
    }
    drop(watcher);
}

/// The source's reader thread: does each job and hands back what it read.
/// Ends when the task is gone.
fn reader(
    mut tracker: FileTracker,
    jobs: std::sync::mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Done>,
) {
    while let Ok(job) = jobs.recv() {
        let now = Utc::now();
        let mut d = Done::default();
        match job {
            Job::Start => {
                let files = tracker.current_files();
                if files.is_empty() {
                    tracing::warn!(
                        source = tracker.name(),
                        "no file matches yet; waiting for one to appear"
                    );
                }
                for path in files {
                    let (records, errors) = tracker.start(&path, now);
                    if !errors.is_empty()
                        && let Ok(m) = std::fs::metadata(&path)
                    {
                        tracker.refused_io.insert(path.clone(), sig(&m));
                    }
                    d.errors.extend(errors);
                    d.records.extend(records);
                }
                d.health = tracker.availability(now);
            }
            Job::Poll => {
                let changed: Vec<PathBuf> = tracker
                    .current_files()
                    .into_iter()
                    .filter(|p| tracker.changed_on_disk(p))
                    .collect();
                tracker.read_paths(changed, now, &mut d);
                match tracker.availability(now) {
                    Some(h @ Health::Missing { .. }) => d.health = Some(h),
                    Some(h) => {
                        d.health.get_or_insert(h);
                    }
                    None => {}
                }
            }
            Job::Read(paths) => {
                tracker.read_paths(paths, now, &mut d);
                // A file that went away starts the missing clock at once.
                if let Some(h @ Health::Missing { .. }) = tracker.availability(now) {
                    d.health = Some(h);
                }
            }
        }
        d.checkpoints = tracker.take_checkpoints();
        d.recheck = tracker.next_recheck();
        if done.send(d).is_err() {
            return;
        }
    }
}

/// Sends what was read, with where reading got to, as one batch.
async fn send(
    tx: &mpsc::Sender<Batch>,
    name: &str,
    records: Vec<Record>,
    checkpoints: Vec<Checkpoint>,
    health: Option<Health>,
    held: Option<tokio::sync::OwnedSemaphorePermit>,
) -> bool {
    if records.is_empty() && checkpoints.is_empty() && health.is_none() {
        return true;
    }
    tx.send(Batch {
        source: name.to_string(),
        records,
        checkpoints,
        health,
        restart: false,
        held,
    })
    .await
    .is_ok()
}

fn report(errors: &[SourceError]) {
    for e in errors {
        tracing::error!(source = %e.source, "{e}");
    }
}
