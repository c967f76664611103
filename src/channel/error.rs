//! How a delivery fails: whether to try again, and whether the whole
//! channel is down.

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
