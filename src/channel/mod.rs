//! Channels deliver notifications: email, webhook, an append-only file, and
//! the daemon's log. A channel is built once from its config (secrets
//! resolved, clients made) and then only sends.

pub mod email;
pub mod template;
pub mod webhook;

use std::io::Write;
use std::path::PathBuf;

use crate::config::{ChannelConfig, ChannelKind};
use crate::notification::Notification;

/// Why a delivery failed, and whether trying again may help (network
/// errors, timeouts, HTTP 429/5xx, SMTP 4xx) or not (anything else), and
/// whether the failure is the channel's (the server unreachable or
/// overloaded: every notification would fail alike) rather than this
/// notification's (a payload the receiver rejects).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub retryable: bool,
    pub channel_down: bool,
    pub message: String,
}

impl DeliveryError {
    pub fn retry(message: impl Into<String>) -> Self {
        DeliveryError {
            retryable: true,
            channel_down: false,
            message: message.into(),
        }
    }
    /// Retryable, and for the whole channel: its notifications wait their
    /// turn in order.
    pub fn down(message: impl Into<String>) -> Self {
        DeliveryError {
            channel_down: true,
            ..DeliveryError::retry(message)
        }
    }
    pub fn fatal(message: impl Into<String>) -> Self {
        DeliveryError {
            retryable: false,
            channel_down: false,
            message: message.into(),
        }
    }
}

/// An error with its causes, as one line: what a server said is usually
/// in the innermost. A URL in it is masked ([`crate::secret::mask_text`]).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    crate::secret::mask_text(&s)
}

// One value per configured channel, built once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Channel {
    Email(email::Email),
    Webhook(webhook::Webhook),
    File(PathBuf),
    Log,
}

impl Channel {
    /// Builds a channel; fails when a secret cannot be read or a client not
    /// made: a startup error naming the channel.
    pub fn build(cfg: &ChannelConfig) -> Result<Channel, String> {
        Ok(match &cfg.kind {
            ChannelKind::Email(e) => Channel::Email(email::Email::build(e)?),
            ChannelKind::Webhook(w) => Channel::Webhook(webhook::Webhook::build(w)?),
            ChannelKind::File { path } => Channel::File(path.clone()),
            ChannelKind::Log => Channel::Log,
        })
    }

    /// Sends one notification; returns what the server said on success.
    pub async fn send(&self, channel: &str, n: &Notification) -> Result<String, DeliveryError> {
        match self {
            Channel::Email(e) => e.send(n).await,
            Channel::Webhook(w) => w.send(n).await,
            Channel::File(path) => append_line(path, n),
            Channel::Log => {
                tracing::info!(
                    target: "tocsin::alert",
                    channel,
                    rule = %n.rule,
                    key = %n.key,
                    state = n.state.as_str(),
                    severity = n.severity.as_str(),
                    id = %n.id,
                    "{}",
                    n.summary
                );
                Ok("written to the log".into())
            }
        }
    }
}

/// One JSON line per notification; a single `write` on an `O_APPEND` file
/// so concurrent readers never see half a line.
fn append_line(path: &PathBuf, n: &Notification) -> Result<String, DeliveryError> {
    let mut line = serde_json::to_vec(n).map_err(|e| DeliveryError::fatal(e.to_string()))?;
    line.push(b'\n');
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| DeliveryError::retry(format!("cannot open {}: {e}", path.display())))?;
    f.write_all(&line)
        .map_err(|e| DeliveryError::retry(format!("cannot write {}: {e}", path.display())))?;
    Ok(format!("appended to {}", path.display()))
}
