//! What tocsin sends: a notification (the webhook payload, one line of
//! `tocsin eval`), its id, severity and state, the subject prefix every
//! channel shows, and the rule ids tocsin itself notifies under. Below the
//! engine, the store and the channels, which all speak of it; it imports
//! none of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::record::{Changed, Row};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One notification: the webhook `json` payload, one line of `tocsin eval`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    pub rule: Arc<str>,
    pub title: Arc<str>,
    pub severity: Severity,
    pub state: AlertState,
    pub key: String,
    pub summary: String,
    pub body: String,
    pub source: Arc<str>,
    pub labels: Arc<BTreeMap<String, String>>,
    pub fields: Row,
    pub prev: Option<Changed>,
    pub link: Option<String>,
    #[serde(with = "secs")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "secs")]
    pub at: DateTime<Utc>,
    /// Why it was sent (notifications stored before it existed read back
    /// with none).
    #[serde(default)]
    pub evidence: Evidence,
    /// Channels this notification goes to.
    #[serde(skip)]
    pub notify: Arc<[String]>,
}

/// What a compliance reviewer needs to show why an alert was sent: where
/// the data was read, its hash, when, and the rules in force.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// `file:line` of the row or line (tables and logs).
    pub location: Option<String>,
    /// The feed or document fetched (feeds and http sources), credentials
    /// masked.
    pub url: Option<String>,
    /// The SHA-256 of the document read: the table version, the log line,
    /// the feed or http document as fetched.
    pub document_sha256: Option<String>,
    /// When the data was read.
    pub read_at: Option<String>,
    /// The server's answer (documents fetched over HTTP).
    pub http: Option<crate::record::HttpAnswer>,
    /// What the condition's phrases and patterns found.
    #[serde(default)]
    pub matched: Vec<Matched>,
    /// The SHA-256 of the rule files in force.
    pub rules_sha256: Option<String>,
}

/// A phrase or pattern of the condition, found in a field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Matched {
    pub field: String,
    /// The phrase, as its words are read (`export control*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phrase: Option<String>,
    /// The regular expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The text found, as written in the field.
    pub text: String,
}

impl Notification {
    /// Appends the payload as one line of JSON.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        // Writing to a Vec fails only when a map has a key that is not text,
        // which a payload never has.
        let _ = serde_json::to_writer(&mut *out, self);
        out.push(b'\n');
    }
}

/// `2026-04-09T00:00:01Z`: RFC 3339, UTC, whole seconds.
pub fn format_ts(t: DateTime<Utc>) -> String {
    let mut s = String::with_capacity(20);
    push_ts(&mut s, t);
    s
}

/// [`format_ts`] appended to `out`.
pub fn push_ts(out: &mut String, t: DateTime<Utc>) {
    out.push_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
}

/// Stable for one notification (an idempotency key): derived from what
/// makes it unique, so retries and replays carry the same id.
pub fn notification_id(rule: &str, key: &str, state: AlertState, at: DateTime<Utc>) -> String {
    let nanos = at.timestamp_nanos_opt().unwrap_or_default().to_le_bytes();
    let mut h = Sha256::new();
    for part in [
        rule.as_bytes(),
        &[0],
        key.as_bytes(),
        &[0],
        state.as_str().as_bytes(),
        &[0],
        &nanos,
    ] {
        h.update(part);
    }
    crate::record::hex(&h.finalize()[..16])
}

/// The rule name digests carry.
pub const DIGEST_RULE: &str = "tocsin-digest";

/// The rule source health notifies under.
pub const UNHEALTHY_RULE: &str = "source-unhealthy";

/// Null, empty text, an empty list or mapping: nothing to show.
pub fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// `FIRING critical` or `RESOLVED`.
pub fn prefix(n: &Notification) -> String {
    if &*n.rule == DIGEST_RULE {
        return "DIGEST".to_string();
    }
    match n.state {
        AlertState::Firing => format!("FIRING {}", n.severity.as_str()),
        AlertState::Resolved => "RESOLVED".to_string(),
    }
}

/// Timestamps in payloads: RFC 3339, UTC, whole seconds.
mod secs {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_ts(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn notification_ids_stay_what_they_were() {
        // Receivers drop repeats by id: the same inputs give the same id
        // from one version to the next.
        let at = Utc.with_ymd_and_hms(2026, 4, 1, 12, 30, 0).unwrap();
        let long = "k".repeat(300);
        let got = [
            notification_id("r", "k", AlertState::Firing, at),
            notification_id("r", "k", AlertState::Resolved, at),
            notification_id("us-cn-tariff", "", AlertState::Firing, at),
            notification_id(
                "r",
                &long,
                AlertState::Firing,
                at + chrono::Duration::nanoseconds(7),
            ),
        ];
        // The first and last as Python's hashlib gives them for the same
        // bytes: sha256(b"r\0k\0firing\0" + nanoseconds, little-endian).
        assert_eq!(
            got,
            [
                "8f5ca0d7ab8575786f60e1fc2940cb60",
                "d15fb0e32667a9606287e6e9b7402649",
                "ffe4c4d7b23a088ce0cdedb8cd7e5831",
                "f9f8771ef853dedf7b8ddfb676fe959e",
            ]
        );
        // Around the ends of one and two padded blocks (55/56 and 119/120
        // bytes hashed) and of the stack buffer (128/129), as hashlib gives
        // them.
        for (n, want) in [
            (37, "2677085f0bce459332bf42c8c80af607"),
            (38, "8b67cb1fb67bb9de47050a0972731a10"),
            (101, "34cf474dfd6335ef213c08fd01deec41"),
            (102, "4e575e97be7f0a6ba5777d8d3e668b83"),
            (110, "9e9b7d7be2dd0ade477ba271830f169f"),
            (111, "496f6756340d76faed85c5041737b707"),
        ] {
            let key = "k".repeat(n);
            assert_eq!(
                notification_id("r", &key, AlertState::Firing, at),
                want,
                "{n}"
            );
        }
    }
}
