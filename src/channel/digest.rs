//! A digest: one message listing the notifications a digest channel
//! gathered.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::notification::{AlertState, DIGEST_RULE, Notification, Severity, format_ts, prefix};
use crate::record::Fields;

/// One message listing several notifications, for a digest channel. Its id
/// follows from theirs, so the same digest sent twice carries the same id.
pub fn digest<'a>(
    channel: &str,
    items: impl Iterator<Item = &'a Notification>,
    now: DateTime<Utc>,
) -> Notification {
    let items: Vec<&Notification> = items.collect();
    let firing = items
        .iter()
        .filter(|n| n.state == AlertState::Firing)
        .count();
    let mut body = String::new();
    let mut h = Sha256::new();
    for n in &items {
        h.update(n.id.as_bytes());
        body.push_str(&format!(
            "[{}] {} ({}, {})\n",
            prefix(n),
            n.summary,
            n.source,
            format_ts(n.at)
        ));
        if let Some(l) = &n.link {
            body.push_str(&format!("    {l}\n"));
        }
    }
    let severity = items
        .iter()
        .map(|n| n.severity)
        .max()
        .unwrap_or(Severity::Info);
    let id = crate::record::hex(&h.finalize()[..16]);
    let mut fields = Fields::new();
    fields.insert("count".into(), Value::from(items.len()));
    fields.insert(
        "notifications".into(),
        Value::Array(items.iter().map(|n| Value::from(n.id.clone())).collect()),
    );
    Notification {
        id,
        rule: DIGEST_RULE.into(),
        title: format!("tocsin digest for {channel}").into(),
        severity,
        state: AlertState::Firing,
        key: channel.to_string(),
        summary: format!(
            "{} notifications: {firing} firing, {} resolved",
            items.len(),
            items.len() - firing
        ),
        body,
        source: "tocsin".into(),
        labels: Default::default(),
        fields: Arc::new(fields),
        prev: None,
        link: None,
        started_at: items.first().map_or(now, |n| n.at),
        at: now,
        evidence: Default::default(),
        notify: Arc::from(vec![channel.to_string()]),
    }
}
