//! systemd notifications (`Type=notify`): READY once config and schedule are up, STATUS with
//! the last pass's outcome, STOPPING at shutdown, and WATCHDOG pings that stop when the daemon
//! stops making progress. Without `NOTIFY_SOCKET` (not under systemd) all of it is a no-op.
//!
//! The watchdog is not a blind timer: it pings only while the [`Progress`] stamp moves (the
//! idle loop bumps it every second, a pass after every step and batch). A wedged loop or a pass
//! stuck longer than the watchdog interval stops the pings and systemd restarts the service.
//! The unit's `WatchdogSec` must therefore exceed the longest legitimate silent step:
//! `database.statement_timeout_seconds`.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::reconcile::control::Progress;

/// Sends notifications when running under systemd.
#[derive(Debug, Clone, Copy)]
pub struct Notifier;

impl Notifier {
    fn send(states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            debug!(error = %e, "systemd notification failed");
        }
    }

    /// `READY=1` with a first status.
    pub fn ready(status: &str) {
        Self::send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STATUS=…` (shown by `systemctl status`).
    pub fn status(status: &str) {
        Self::send(&[NotifyState::Status(status)]);
    }

    /// `STOPPING=1`.
    pub fn stopping() {
        Self::send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if any.
    pub fn watchdog_interval() -> Option<Duration> {
        sd_notify::watchdog_enabled()
    }

    /// Start the watchdog task that pings every quarter `interval` while `progress` moves.
    pub fn spawn_watchdog(interval: Duration, progress: Progress) -> JoinHandle<()> {
        tokio::spawn(watchdog_loop(interval, progress))
    }
}

async fn watchdog_loop(interval: Duration, progress: Progress) {
    // Ping at a quarter of the interval, so one late wake-up never costs a restart.
    let mut ticker = tokio::time::interval(interval / 4);
    let mut withholding = false;
    loop {
        ticker.tick().await;
        let silent = progress.since_last();
        if silent < interval {
            Notifier::send(&[NotifyState::Watchdog]);
            withholding = false;
        } else if !withholding {
            withholding = true;
            warn!(
                silent_ms = crate::telemetry::millis(silent),
                watchdog_ms = crate::telemetry::millis(interval),
                "no progress: withholding the systemd watchdog ping"
            );
        }
    }
}
