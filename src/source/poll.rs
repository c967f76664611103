//! Polled sources: `feed` (each new item is one record) and `http` (a JSON
//! or CSV document read as a table). One task per source fetches on its
//! schedule, one poll at a time; the trackers are synchronous and turn a
//! fetched document into records and store checkpoints.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::fetch::{Fetched, Fetcher};
use super::{Batch, Health, feed, parse};
use crate::config::{FeedSource, Format, HttpSource, SourceConfig, SourceKind};
use crate::record::{Fields, Record, RecordKind, Row, with_constants};
use crate::store::{Checkpoint, PollState};

/// Seen ids are written again at most this often while they stay in the
/// feed, so their retention clock keeps running without a write per poll.
const REFRESH_SEEN: chrono::Duration = chrono::Duration::days(1);

/// New-item detection for one feed.
pub struct FeedTracker {
    source: Arc<str>,
    constants: Fields,
    backfill: Option<Duration>,
    retention: Duration,
    /// False until the first successful poll of this source at this URL:
    /// that poll records what is there and alerts on none (but `backfill`).
    known: bool,
    seen: HashMap<String, DateTime<Utc>>,
}

impl FeedTracker {
    pub fn new(cfg: &SourceConfig, f: &FeedSource, stored: Option<&PollState>) -> FeedTracker {
        let (url, plain) = (f.poll.url.identity(), f.poll.url.to_string());
        let stored = stored.filter(|s| s.url == url || s.url == plain);
        FeedTracker {
            source: Arc::from(cfg.name.as_str()),
            constants: cfg.fields.clone(),
            backfill: f.backfill,
            retention: f.retention,
            known: stored.is_some(),
            seen: stored.map(|s| s.seen.clone()).unwrap_or_default(),
        }
    }

    /// The items of one document: a record per item not seen before
    /// (oldest first), and what the store must remember.
    pub fn items(
        &mut self,
        items: Vec<feed::Item>,
        now: DateTime<Utc>,
    ) -> (Vec<Record>, Checkpoint) {
        let mut new = Vec::new();
        let mut write = Vec::new();
        for item in items {
            match self.seen.get_mut(&item.id) {
                Some(t) => {
                    if now - *t >= REFRESH_SEEN {
                        *t = now;
                        write.push(item.id.clone());
                    }
                }
                None => {
                    self.seen.insert(item.id.clone(), now);
                    write.push(item.id.clone());
                    let wanted = self.known
                        || self.backfill.is_some_and(|b| {
                            item.date.is_some_and(|d| {
                                now - d <= chrono::Duration::from_std(b).unwrap_or_default()
                            })
                        });
                    if wanted {
                        new.push(item);
                    }
                }
            }
        }
        if !self.known && !self.seen.is_empty() {
            tracing::info!(source = %self.source, items = self.seen.len(), backfilled = new.len(), "first poll of this feed: its items are recorded as seen (those within `backfill` go to the rules)");
        }
        self.known = true;
        // Oldest first; undated items keep their place after dated ones.
        new.sort_by_key(|i| i.date.is_none());
        new.sort_by_key(|i| i.date);
        let records = new
            .into_iter()
            .map(|i| {
                let mut fields = i.fields;
                for (k, v) in &self.constants {
                    fields.insert(k.clone(), v.clone());
                }
                Record {
                    source: self.source.clone(),
                    key: i.id,
                    fields: Row::new(fields),
                    prev: None,
                    observed: now,
                    kind: RecordKind::Event,
                }
            })
            .collect();
        let forget_before = now - chrono::Duration::from_std(self.retention).unwrap_or_default();
        self.seen.retain(|_, t| *t >= forget_before);
        (
            records,
            Checkpoint::Seen {
                source: self.source.to_string(),
                ids: write,
                at: now,
                forget_before,
            },
        )
    }
}

/// An `http` source's table: the rows as last fetched.
pub struct HttpTracker {
    source: Arc<str>,
    constants: Fields,
    cfg: HttpSource,
    url: String,
    rows: HashMap<String, Row>,
}

impl HttpTracker {
    pub fn new(cfg: &SourceConfig, h: &HttpSource, rows: HashMap<String, Row>) -> HttpTracker {
        HttpTracker {
            source: Arc::from(cfg.name.as_str()),
            constants: cfg.fields.clone(),
            url: h.poll.url.identity(),
            cfg: h.clone(),
            rows,
        }
    }

    /// The format of an answer: as configured, else by Content-Type, else
    /// by the URL's extension, else JSON.
    fn format(&self, content_type: Option<&str>) -> Format {
        if let Some(f) = self.cfg.format {
            return f;
        }
        let ct = content_type
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if ct.contains("csv") {
            return Format::Csv;
        }
        if ct.contains("tab-separated") {
            return Format::Tsv;
        }
        if ct.contains("json") {
            return Format::Json;
        }
        std::path::Path::new(
            self.cfg
                .poll
                .url
                .to_string()
                .split(['?', '#'])
                .next()
                .unwrap_or_default(),
        )
        .extension()
        .and_then(|e| e.to_str())
        .and_then(Format::from_name)
        .filter(|f| matches!(f, Format::Csv | Format::Tsv))
        .unwrap_or(Format::Json)
    }

    /// Parses a document and compares it with the rows held.
    pub fn document(
        &mut self,
        bytes: &[u8],
        content_type: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Record>, Option<Checkpoint>), String> {
        let format = self.format(content_type);
        let parsed = match format {
            Format::Json => {
                let v: Value =
                    serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
                let v = match &self.cfg.items {
                    Some(p) if !p.is_empty() => v
                        .pointer(p)
                        .cloned()
                        .ok_or_else(|| format!("the document has nothing at `items: {p}`"))?,
                    _ => v,
                };
                parse::array_rows(v).map_err(|e| e.to_string())?
            }
            f => parse::rows(f, bytes).map_err(|e| e.to_string())?,
        };
        let source = self.source.clone();
        let constants = &self.constants;
        let mk = |fields: Row, key: String, prev: Option<Row>, kind: RecordKind| Record {
            source: source.clone(),
            key,
            fields: with_constants(fields, constants),
            prev,
            observed: now,
            kind,
        };
        let diff =
            super::diff_table(&mut self.rows, parsed, &self.cfg.key, mk).map_err(|(line, m)| {
                match line {
                    0 => m,
                    l => format!("line {l}: {m}"),
                }
            })?;
        let cp = (!diff.upsert.is_empty() || !diff.delete.is_empty()).then(|| Checkpoint::Table {
            source: self.source.to_string(),
            file: self.url.clone().into(),
            upsert: diff.upsert,
            delete: diff.delete,
        });
        Ok((diff.records, cp))
    }
}

enum Tracker {
    Feed(FeedTracker),
    Http(Box<HttpTracker>),
}

/// Counters of one polled source, for logs (and metrics).
#[derive(Debug, Default, Clone, Copy)]
pub struct PollStats {
    pub polls: u64,
    pub not_modified: u64,
    pub failures: u64,
    pub records: u64,
}

/// Polls one source until `shutdown`: once at start, then on its schedule
/// (plus jitter). A poll that outlasts its interval delays the next; two
/// never overlap.
pub async fn run(
    cfg: SourceConfig,
    stored: Option<PollState>,
    table: HashMap<String, Row>,
    tx: mpsc::Sender<Batch>,
    shutdown: CancellationToken,
) {
    let Some(poll) = cfg.poll().cloned() else {
        return;
    };
    let url = poll.url.identity();
    // Stores written before kept the URL itself.
    let plain = poll.url.to_string();
    let mut tracker = match &cfg.kind {
        SourceKind::Feed(f) => Tracker::Feed(FeedTracker::new(&cfg, f, stored.as_ref())),
        SourceKind::Http(h) => Tracker::Http(Box::new(HttpTracker::new(&cfg, h, table))),
        SourceKind::File(_) => return,
    };
    let mut held = stored
        .filter(|s| s.url == url || s.url == plain)
        .map(|s| s.validators)
        .unwrap_or_default();
    let fetcher = match Fetcher::new(&poll) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(source = %cfg.name, "{e}");
            let _ = tx.send(Batch::health(&cfg.name, Health::Failed(e))).await;
            return;
        }
    };
    let base = poll.url.base();
    let mut stats = PollStats::default();
    let mut first = true;
    loop {
        if !first {
            let now = Utc::now();
            let next = poll.schedule.next_after(now) + jitter(&cfg.name, poll.jitter);
            let wait = (next - now).to_std().unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
        }
        first = false;
        stats.polls += 1;
        let fetched = tokio::select! {
            f = fetcher.fetch(&held) => f,
            _ = shutdown.cancelled() => return,
        };
        let now = Utc::now();
        let outcome = match fetched {
            Ok(Fetched::NotModified) => {
                stats.not_modified += 1;
                tracing::debug!(source = %cfg.name, url = %url, polls = stats.polls, not_modified = stats.not_modified, "not modified; nothing to parse");
                Ok((Vec::new(), Vec::new()))
            }
            Ok(Fetched::Body {
                bytes,
                content_type,
                validators,
            }) => {
                let parsed = match &mut tracker {
                    Tracker::Feed(t) => {
                        feed::parse(&bytes, content_type.as_deref(), &base).map(|items| {
                            let (records, cp) = t.items(items, now);
                            (records, vec![cp])
                        })
                    }
                    Tracker::Http(t) => t
                        .document(&bytes, content_type.as_deref(), now)
                        .map(|(records, cp)| (records, cp.into_iter().collect())),
                };
                parsed.map(|(records, mut cps)| {
                    cps.push(Checkpoint::Poll {
                        source: cfg.name.clone(),
                        url: url.clone(),
                        validators: validators.clone(),
                    });
                    held = validators;
                    (records, cps)
                })
            }
            Err(e) => Err(e),
        };
        let batch = match outcome {
            Ok((records, checkpoints)) => {
                stats.records += records.len() as u64;
                tracing::debug!(source = %cfg.name, records = records.len(), "polled");
                Batch {
                    source: cfg.name.clone(),
                    records,
                    checkpoints,
                    health: Some(Health::Ok),
                    restart: false,
                }
            }
            Err(e) => {
                stats.failures += 1;
                let e = format!("{url}: {e}");
                tracing::error!(source = %cfg.name, polls = stats.polls, failures = stats.failures, "{e}");
                Batch::health(&cfg.name, Health::Failed(e))
            }
        };
        if tx.send(batch).await.is_err() {
            return;
        }
    }
}

/// A random delay in `0..max`, spreading polls of many sources.
fn jitter(name: &str, max: Duration) -> chrono::Duration {
    if max.is_zero() {
        return chrono::Duration::zero();
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(name.as_bytes());
    let frac = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    chrono::Duration::from_std(max.mul_f64(frac)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_bound() {
        for _ in 0..100 {
            let j = jitter("s", Duration::from_secs(10));
            assert!(j >= chrono::Duration::zero() && j < chrono::Duration::seconds(10));
        }
        assert_eq!(jitter("s", Duration::ZERO), chrono::Duration::zero());
    }
}
