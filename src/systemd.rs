//! Talking to systemd (`Type=notify`): readiness, reloads, stopping, the
//! watchdog and a status line, over `$NOTIFY_SOCKET`. Without systemd
//! (no socket) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

pub struct Notifier {
    /// `WatchdogSec=` of the unit, when the watchdog is on.
    watchdog: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier {
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// How often the main loop should prove it is alive: half the watchdog
    /// interval, else every 10 s (the status line is refreshed then).
    pub fn beat(&self) -> Duration {
        self.watchdog
            .map(|w| (w / 2).max(Duration::from_millis(50)))
            .unwrap_or(Duration::from_secs(10))
    }

    fn send(&self, states: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::debug!("cannot tell systemd: {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload begins; `ready` ends it, whether it was applied or refused.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// From the main loop: it is alive (the watchdog), and how it is doing.
    pub fn alive(&self, status: &str) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog, NotifyState::Status(status)]);
        } else {
            self.send(&[NotifyState::Status(status)]);
        }
    }
}
