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

use super::batch::{Batch, Health};
use super::fetch::{Fetched, Fetcher};
use super::{feed, parse};
use crate::config::{FeedSource, Format, HttpSource, SourceConfig, SourceKind};
use crate::record::{Fields, Record, RecordKind, Row, with_constants};
use crate::rows::Table;
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
    /// The seen ids were made the way earlier versions made them: the next
    /// poll moves them to today's ([`crate::store::ITEM_IDS`]).
    earlier_ids: bool,
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
            earlier_ids: stored.is_some_and(|s| s.item_ids < crate::store::ITEM_IDS),
        }
    }

    /// The items of one document: a record per item not seen before
    /// (oldest first), and what the store must remember.
    ///
    /// An item not seen under its id may have been under an alias (its id
    /// before another item came to share its link, or before this version):
    /// then it is not new, it is known under its id from now on, and the
    /// alias is forgotten, so that a later item with the same alias is new.
    /// An alias goes to one item only, the oldest, except when moving ids
    /// written by earlier versions, which gave one id to all the items that
    /// now have it as an alias.
    pub fn items(
        &mut self,
        items: Vec<feed::Item>,
        now: DateTime<Utc>,
    ) -> (Vec<Record>, Checkpoint) {
        let moving = std::mem::take(&mut self.earlier_ids);
        let ids: std::collections::HashSet<String> = items.iter().map(|i| i.id.clone()).collect();
        // Oldest first: dated by date, then undated ones, last listed first.
        let mut items: Vec<feed::Item> = items.into_iter().rev().collect();
        items.sort_by_key(|i| (i.date.is_none(), i.date));
        let mut new = Vec::new();
        let mut write = Vec::new();
        let mut forget = Vec::new();
        for item in items {
            if let Some(t) = self.seen.get_mut(&item.id) {
                if now - *t >= REFRESH_SEEN {
                    *t = now;
                    write.push(item.id.clone());
                }
                continue;
            }
            let alias = item.aliases.iter().find(|a| {
                !ids.contains(*a) && (self.seen.contains_key(*a) || moving && forget.contains(*a))
            });
            if let Some(a) = alias {
                if !forget.contains(a) {
                    self.seen.remove(a);
                    forget.push(a.clone());
                }
                self.seen.insert(item.id.clone(), now);
                write.push(item.id.clone());
                continue;
            }
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
        if !self.known && !self.seen.is_empty() {
            tracing::info!(source = %self.source, items = self.seen.len(), backfilled = new.len(), "first poll of this feed: its items are recorded as seen (those within `backfill` go to the rules)");
        }
        self.known = true;
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
                    doc: None,
                    line: 0,
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
                forget,
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
    rows: Table,
}

impl HttpTracker {
    pub fn new(cfg: &SourceConfig, h: &HttpSource, rows: Table) -> HttpTracker {
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
            doc: None,
            line: 0,
        };
        let diff = super::table::diff_table(&mut self.rows, parsed, &self.cfg.key, mk).map_err(
            |(line, m)| match line {
                0 => m,
                l => format!("line {l}: {m}"),
            },
        )?;
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
    table: Table,
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
                status,
            }) => {
                // The document as fetched, for the evidence of its alerts.
                let bytes = bytes::Bytes::from(bytes);
                let doc = crate::record::Document::fetched(
                    crate::secret::mask_url(&poll.url.to_string()),
                    status.map(|status| crate::record::HttpAnswer {
                        status,
                        etag: validators.etag.clone(),
                        last_modified: validators.last_modified.clone(),
                    }),
                    bytes.clone(),
                );
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
                parsed.map(|(mut records, mut cps)| {
                    for r in &mut records {
                        r.doc = Some(doc.clone());
                    }
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
                    held: None,
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

    fn tracker() -> FeedTracker {
        let cfg = crate::config::Config::parse(
            std::path::Path::new("tocsin.yaml"),
            "rules: rules.yaml\nsources:\n  - { name: news, type: feed, url: \"http://127.0.0.1:1/feed\", every: 1m }\nchannels:\n  - { name: audit, type: file, path: alerts.jsonl }\n",
        )
        .unwrap();
        let src = cfg.sources[0].clone();
        let SourceKind::Feed(f) = &src.kind else {
            unreachable!()
        };
        let stored = PollState {
            url: f.poll.url.identity(),
            item_ids: crate::store::ITEM_IDS,
            ..Default::default()
        };
        FeedTracker::new(&src, f, Some(&stored))
    }

    /// Items without guid: (title, link).
    fn doc(items: &[(&str, &str)]) -> Vec<feed::Item> {
        let mut s = String::from("<rss version=\"2.0\"><channel><title>T</title>");
        for (t, l) in items {
            s.push_str(&format!("<item><title>{t}</title><link>{l}</link></item>"));
        }
        feed::parse(
            format!("{s}</channel></rss>").as_bytes(),
            None,
            "http://x.example/",
        )
        .unwrap()
    }

    fn new_titles(t: &mut FeedTracker, items: &[(&str, &str)], now: DateTime<Utc>) -> Vec<String> {
        t.items(doc(items), now)
            .0
            .iter()
            .map(|r| r.fields.get("title").unwrap().as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn an_item_whose_link_comes_to_be_shared_is_not_new_again() {
        let now = Utc::now();
        let mut t = tracker();
        let a = ("A", "http://x.example/news");
        let b = ("B", "http://x.example/news");
        let c = ("C", "http://x.example/news");
        assert_eq!(new_titles(&mut t, &[a], now), ["A"]);
        // A's id was its link; now that B shares it, both have content
        // hashes: only B is new.
        assert_eq!(new_titles(&mut t, &[b, a], now), ["B"]);
        assert!(new_titles(&mut t, &[b, a], now).is_empty());
        // A third item with the link is new too (the link, A's old id, was
        // forgotten when A moved on).
        assert_eq!(new_titles(&mut t, &[c, b, a], now), ["C"]);
        // Back to one item with the link: its id is the link again, and it
        // is known under its hash.
        assert!(new_titles(&mut t, &[a], now).is_empty());
        assert!(new_titles(&mut t, &[a], now).is_empty());
    }

    #[test]
    fn items_known_under_earlier_ids_are_not_new() {
        let now = Utc::now();
        let mut t = tracker();
        // A store written by an earlier version: the two items sharing a
        // link known under it.
        t.earlier_ids = true;
        t.seen.insert("http://x.example/news".into(), now);
        let (a, b) = (
            ("A", "http://x.example/news"),
            ("B", "http://x.example/news"),
        );
        let (records, cp) = t.items(doc(&[b, a]), now);
        assert!(records.is_empty());
        let Checkpoint::Seen { forget, ids, .. } = cp else {
            unreachable!()
        };
        assert_eq!(forget, ["http://x.example/news"]);
        assert_eq!(ids.len(), 2);
        // Moved once: a later item with that link is new.
        let c = ("C", "http://x.example/news");
        assert_eq!(new_titles(&mut t, &[c, b, a], now), ["C"]);
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        for _ in 0..100 {
            let j = jitter("s", Duration::from_secs(10));
            assert!(j >= chrono::Duration::zero() && j < chrono::Duration::seconds(10));
        }
        assert_eq!(jitter("s", Duration::ZERO), chrono::Duration::zero());
    }
}
