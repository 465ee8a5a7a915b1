//! Stall detection: no successful pass for `alert.stalled_after_seconds` logs
//! `CRITICAL reconciler stalled since …` once per episode, and a line again when a pass
//! succeeds. A pass skipped because another instance holds the lock counts as healthy: that
//! instance is doing the work (and watches its own health).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tracing::info;

use crate::telemetry::critical;

/// Tracks the time since the last successful pass.
#[derive(Debug)]
pub struct Health {
    stalled_after: Duration,
    last_ok: Instant,
    last_ok_wall: DateTime<Utc>,
    last_error: Option<String>,
    alerted: bool,
}

impl Health {
    /// Healthy as of now (start-up is not a stall).
    pub fn new(stalled_after: Duration) -> Self {
        Self {
            stalled_after,
            last_ok: Instant::now(),
            last_ok_wall: Utc::now(),
            last_error: None,
            alerted: false,
        }
    }

    /// A pass succeeded (or another instance holds the lock).
    pub fn record_success(&mut self) {
        if self.alerted {
            info!(
                stalled_since = %self.last_ok_wall.format("%Y-%m-%dT%H:%M:%SZ"),
                "reconciler recovered: a pass succeeded again"
            );
        }
        self.last_ok = Instant::now();
        self.last_ok_wall = Utc::now();
        self.last_error = None;
        self.alerted = false;
    }

    /// A pass failed; the stall clock keeps running.
    pub fn record_failure(&mut self, error: &str) {
        self.last_error = Some(error.to_string());
    }

    /// Log the stall line if the threshold was crossed and it was not logged yet.
    pub fn check(&mut self) {
        if self.alerted || self.last_ok.elapsed() < self.stalled_after {
            return;
        }
        self.alerted = true;
        let since = self.last_ok_wall.format("%Y-%m-%dT%H:%M:%SZ");
        critical!(
            stalled_after_seconds = self.stalled_after.as_secs(),
            last_error = self.last_error.as_deref().unwrap_or("none"),
            "reconciler stalled since {since}: no successful pass"
        );
    }

    /// Whether a stall is being reported (for STATUS).
    pub fn is_stalled(&self) -> bool {
        self.alerted
    }
}
