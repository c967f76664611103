//! Channels deliver notifications: email, webhook, an append-only file, and
//! the daemon's log. A channel is built once from its config (secrets
//! resolved, clients made) and then only sends.

pub mod digest;
pub mod email;
mod error;
pub mod message;
pub mod template;
pub mod webhook;

use std::io::Write;
use std::path::PathBuf;

use crate::config::{ChannelConfig, ChannelKind};
use crate::notification::Notification;

pub use error::DeliveryError;
pub(crate) use error::error_chain;

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
