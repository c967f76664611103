//! `tocsin send-test CHANNEL`: one test notification through a channel as
//! configured (secrets, TLS, signing and all), and the server's answer.

use std::path::Path;

use chrono::Utc;

use crate::notification::{AlertState, Notification, notification_id};

/// The test notification: a firing alert of the made-up rule
/// `tocsin-send-test`, so receivers can tell it apart.
pub fn notification(channel: &str) -> Notification {
    let now = Utc::now();
    let mut fields = serde_json::Map::new();
    fields.insert("channel".into(), channel.into());
    Notification {
        id: notification_id("tocsin-send-test", channel, AlertState::Firing, now),
        rule: "tocsin-send-test".into(),
        title: "tocsin test message".into(),
        severity: crate::rules::Severity::Info,
        state: AlertState::Firing,
        key: channel.into(),
        summary: format!("Test message from tocsin to channel {channel}"),
        body: format!(
            "This is a test of the channel `{channel}`, sent by `tocsin send-test`.\nNo rule fired; nothing needs doing.\n"
        ),
        source: "tocsin".into(),
        labels: Default::default(),
        fields: std::sync::Arc::new(fields),
        prev: None,
        link: None,
        started_at: now,
        at: now,
        evidence: Default::default(),
        notify: std::sync::Arc::from(vec![channel.to_string()]),
    }
}

/// Sends the test notification; returns the server's answer.
pub fn run(config_path: &Path, channel: &str) -> anyhow::Result<String> {
    let config = crate::config::Config::load_or_explain(config_path)?;
    let Some(cfg) = config.channels.iter().find(|c| c.name == channel) else {
        let names = config.channels.iter().map(|c| c.name.as_str());
        let hint = crate::diag::did_you_mean(channel, names)
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        anyhow::bail!("no channel `{channel}` in {}{hint}", config_path.display());
    };
    let ch = crate::channel::Channel::build(cfg)
        .map_err(|e| anyhow::anyhow!("channel `{channel}`: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let n = notification(channel);
    rt.block_on(ch.send(channel, &n))
        .map_err(|e| anyhow::anyhow!("channel `{channel}`: {e}"))
}
