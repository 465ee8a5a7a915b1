//! What the caller of a pass can see and steer while it runs: a progress stamp (the daemon's
//! systemd watchdog pings only while it moves) and a cancellation token (shutdown stops a pass
//! at the next safe point: between batches, or during the settle wait).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// A monotonic "last progress" stamp shared between a pass and whoever watches it.
#[derive(Debug, Clone)]
pub struct Progress {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Progress {
    /// Record that work moved forward now.
    pub fn bump(&self) {
        let ms = crate::telemetry::millis(self.origin.elapsed());
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time since the last [`Progress::bump`].
    pub fn since_last(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// Handles given to [`super::run_once`].
#[derive(Debug, Clone, Default)]
pub struct PassControl {
    /// Cancelled: stop at the next safe point and close the run as `cancelled`.
    pub cancel: CancellationToken,
    pub progress: Progress,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bump_resets_the_time_since_progress() {
        let p = Progress::default();
        std::thread::sleep(Duration::from_millis(30));
        assert!(p.since_last() >= Duration::from_millis(30));
        p.bump();
        assert!(p.since_last() < Duration::from_millis(30));
    }
}
