//! Source health: consecutive failures per source. After `fail_after` in a
//! row (for a file source: versions refused in a row), or when a file
//! source has had no readable file for `health.missing_after`, an internal
//! `source-unhealthy` alert fires for that source to the channels under
//! `health: {notify}`, saying which; it resolves when the source recovers.
//! Its state lives in the store with the rules' state, so a restart
//! neither repeats nor forgets it.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::batch::Health;
use crate::config::Config;
use crate::engine::KeyState;
use crate::engine::keys::Key;
use crate::notification::{AlertState, Notification, notification_id};
use crate::rules::Severity;
use crate::store::StateChange;

use crate::notification::UNHEALTHY_RULE as RULE;

pub struct HealthTracker {
    notify: Arc<[String]>,
    missing_after: std::time::Duration,
    fail_after: HashMap<String, u32>,
    failures: HashMap<String, u32>,
    last_error: HashMap<String, String>,
    /// Unhealthy sources, since when.
    firing: HashMap<String, DateTime<Utc>>,
}

impl HealthTracker {
    /// `stored` is this alert's state from the store (key = source). The
    /// state of sources no longer in the config is dropped: their changes
    /// to store come back with the tracker.
    pub fn new(cfg: &Config, stored: Vec<(String, KeyState)>) -> (HealthTracker, Vec<StateChange>) {
        let mut tracker = HealthTracker {
            notify: Arc::from(Vec::new()),
            missing_after: cfg.health.missing_after,
            fail_after: HashMap::new(),
            failures: HashMap::new(),
            last_error: HashMap::new(),
            firing: HashMap::new(),
        };
        let mut gone = Vec::new();
        for (k, st) in stored {
            if cfg.source(&k).is_none() {
                gone.push((RULE.into(), Key::new(&k), None));
            } else if st.firing {
                tracker.firing.insert(k, st.since.get());
            }
        }
        // Thresholds and channels as a reload sets them; nothing else is
        // gone by now.
        gone.extend(tracker.reconfigure(cfg, &[]));
        (tracker, gone)
    }

    /// A reloaded config: new thresholds and channels; sources that are gone
    /// are forgotten (their stored state goes with the returned changes),
    /// and a source restarted by the reload counts its failures anew.
    pub fn reconfigure(&mut self, cfg: &Config, restarted: &[String]) -> Vec<StateChange> {
        self.notify = Arc::from(cfg.health.notify.clone());
        self.missing_after = cfg.health.missing_after;
        self.fail_after = cfg
            .sources
            .iter()
            .map(|s| (s.name.clone(), s.fail_after))
            .collect();
        for s in restarted {
            self.failures.remove(s);
        }
        let gone: Vec<String> = self
            .firing
            .keys()
            .filter(|k| cfg.source(k).is_none())
            .cloned()
            .collect();
        self.failures.retain(|k, _| cfg.source(k).is_some());
        self.last_error.retain(|k, _| cfg.source(k).is_some());
        gone.into_iter()
            .map(|k| {
                self.firing.remove(&k);
                (RULE.into(), Key::new(&k), None)
            })
            .collect()
    }

    /// Sources reported unhealthy now, with their last error.
    pub fn unhealthy(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .firing
            .keys()
            .map(|s| {
                (
                    s.clone(),
                    self.last_error.get(s).cloned().unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Counts one outcome; returns the state change to store when the
    /// source turns unhealthy or recovers, with its notification in `out`.
    pub fn observe(
        &mut self,
        source: &str,
        outcome: &Health,
        now: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) -> Option<StateChange> {
        match outcome {
            Health::Ok => {
                self.failures.remove(source);
                let since = self.firing.remove(source)?;
                tracing::info!(source, "source recovered");
                let error = self.last_error.remove(source).unwrap_or_default();
                let why = Why::Recovered(error);
                out.push(self.note(source, AlertState::Resolved, since, &why, now));
                Some((RULE.into(), Key::new(source), None))
            }
            Health::Failed(e) => {
                let n = self.failures.entry(source.to_string()).or_default();
                *n += 1;
                let n = *n;
                self.last_error.insert(source.to_string(), e.clone());
                let limit = self.fail_after.get(source).copied().unwrap_or(3);
                if n < limit || self.firing.contains_key(source) {
                    return None;
                }
                tracing::warn!(source, failures = n, "source unhealthy: {e}");
                self.fire(source, &Why::Failures(n, e.clone()), now, out)
            }
            Health::Missing { since, reason } => {
                self.last_error.insert(source.to_string(), reason.clone());
                let gone = (now - *since).to_std().unwrap_or_default();
                if gone < self.missing_after || self.firing.contains_key(source) {
                    return None;
                }
                tracing::warn!(source, "source unhealthy: {reason}");
                self.fire(source, &Why::Missing(gone, reason.clone()), now, out)
            }
        }
    }

    fn fire(
        &mut self,
        source: &str,
        why: &Why,
        now: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) -> Option<StateChange> {
        self.firing.insert(source.to_string(), now);
        out.push(self.note(source, AlertState::Firing, now, why, now));
        Some((
            RULE.into(),
            Key::new(source),
            Some(KeyState {
                firing: true,
                last_sent: Some(now.into()),
                ..KeyState::inactive(now)
            }),
        ))
    }

    fn note(
        &self,
        source: &str,
        state: AlertState,
        since: DateTime<Utc>,
        why: &Why,
        now: DateTime<Utc>,
    ) -> Notification {
        let (summary, body, failures, error) = match why {
            Why::Failures(n, error) => (
                format!("source {source} is failing: {n} failures in a row"),
                format!("Source {source} failed {n} times in a row.\nLast error: {error}\n"),
                *n,
                error,
            ),
            Why::Missing(gone, reason) => {
                let gone =
                    humantime::format_duration(std::time::Duration::from_secs(gone.as_secs()));
                (
                    format!("source {source} has had no readable file for {gone}"),
                    format!("Source {source} has had no readable file for {gone}: {reason}\n"),
                    0,
                    reason,
                )
            }
            Why::Recovered(error) => (
                format!("source {source} recovered"),
                format!("Source {source} reads again.\nLast error before recovery: {error}\n"),
                0,
                error,
            ),
        };
        let mut fields = serde_json::Map::new();
        fields.insert("source".into(), json!(source));
        fields.insert("failures".into(), json!(failures));
        fields.insert("error".into(), json!(error));
        let started = match state {
            AlertState::Firing => now,
            AlertState::Resolved => since,
        };
        Notification {
            id: notification_id(RULE, source, state, now),
            rule: RULE.into(),
            title: "Source unhealthy".into(),
            severity: Severity::Warning,
            state,
            key: source.into(),
            summary,
            body,
            source: source.into(),
            labels: Default::default(),
            fields: std::sync::Arc::new(fields),
            prev: None,
            link: None,
            started_at: started,
            at: now,
            evidence: Default::default(),
            notify: self.notify.clone(),
        }
    }
}

/// Why a source is unhealthy, or that it recovered.
enum Why {
    /// Failures (versions refused) in a row, and the last error.
    Failures(u32, String),
    /// No readable file for this long, and why.
    Missing(std::time::Duration, String),
    /// Recovered; the last error before.
    Recovered(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = "rules: r.yaml\nsources:\n  - {name: news, type: feed, url: 'http://127.0.0.1:1/f', every: 1m}\nchannels:\n  - {name: ops, type: log}\nhealth: {notify: [ops]}\n";
        Config::parse(std::path::Path::new("/tmp/t.yaml"), text).unwrap()
    }

    #[test]
    fn fires_once_after_fail_after_and_resolves_on_recovery() {
        let (mut h, _) = HealthTracker::new(&config(), vec![]);
        let now = Utc::now();
        let mut out = Vec::new();
        let fail = Health::Failed("the server answered 500".into());
        assert!(h.observe("news", &fail, now, &mut out).is_none());
        assert!(h.observe("news", &fail, now, &mut out).is_none());
        assert!(h.observe("news", &fail, now, &mut out).is_some());
        assert!(h.observe("news", &fail, now, &mut out).is_none(), "once");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].state, AlertState::Firing);
        assert_eq!(&*out[0].notify, &["ops".to_string()]);
        assert!(out[0].summary.contains("3 failures"), "{}", out[0].summary);
        assert_eq!(h.unhealthy().len(), 1);
        let (_, _, st) = h.observe("news", &Health::Ok, now, &mut out).unwrap();
        assert!(st.is_none());
        assert_eq!(out[1].state, AlertState::Resolved);
        assert!(h.observe("news", &Health::Ok, now, &mut out).is_none());
        // A failure then a success never reaches the limit.
        h.observe("news", &fail, now, &mut out);
        h.observe("news", &Health::Ok, now, &mut out);
        h.observe("news", &fail, now, &mut out);
        h.observe("news", &fail, now, &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn state_of_removed_sources_is_dropped() {
        let st = |firing| KeyState {
            firing,
            ..KeyState::inactive(Utc::now())
        };
        let (h, gone) = HealthTracker::new(
            &config(),
            vec![("news".into(), st(true)), ("old-feed".into(), st(true))],
        );
        assert_eq!(h.unhealthy().len(), 1);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].1.as_str(), "old-feed");
        assert!(gone[0].2.is_none());
    }
}
