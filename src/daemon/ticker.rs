//! When the idle daemon loop wakes up: a schedule tick, an overdue pass, a heartbeat, or
//! shutdown. Kept apart from the loop so the timing rules can be tested with paused time.
//!
//! The rules that keep a wall-clock jump harmless:
//! - **No burst.** A tick only *requests* a pass, through a channel of capacity one; ticks that
//!   arrive while a pass runs are dropped ([`request_pass`] refuses them, and
//!   [`Ticker::pass_started`] drains any that slipped in). tokio-cron-scheduler computes its
//!   next tick from "now" after each one, so a jump forward fires once, not once per missed
//!   occurrence.
//! - **Never silent.** tokio-cron-scheduler compares against the wall clock: set back an hour, it
//!   would wait an hour. The ticker's own deadline runs on monotonic time: with no tick for
//!   [`crate::config::CronSchedule::overdue_after`], it wakes the loop for a pass by itself, and
//!   again after each such period, until ticks resume.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};

/// Why the idle loop woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The schedule asked for a pass.
    Tick,
    /// No tick for too long: run a pass anyway.
    Overdue,
    /// Nothing to do; prove liveness, check health.
    Heartbeat,
    /// Stop.
    Shutdown,
}

/// Ask for a pass unless one is running or already requested. Returns whether the request was
/// queued. Called by the scheduler job on each tick.
pub fn request_pass(requests: &mpsc::Sender<()>, pass_running: &AtomicBool) -> bool {
    !pass_running.load(Ordering::SeqCst) && requests.try_send(()).is_ok()
}

/// The idle loop's alarm clock.
pub struct Ticker {
    requests: mpsc::Receiver<()>,
    overdue_after: Duration,
    overdue: Pin<Box<Sleep>>,
    heartbeat: Interval,
}

impl Ticker {
    pub fn new(requests: mpsc::Receiver<()>, overdue_after: Duration, heartbeat: Duration) -> Self {
        let mut heartbeat = tokio::time::interval(heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            requests,
            overdue_after,
            overdue: Box::pin(tokio::time::sleep(overdue_after)),
            heartbeat,
        }
    }

    /// Wait for the next reason to wake.
    pub async fn wait(&mut self, shutdown: &mut Pin<&mut impl Future<Output = ()>>) -> Wake {
        tokio::select! {
            () = shutdown.as_mut() => Wake::Shutdown,
            Some(()) = self.requests.recv() => Wake::Tick,
            () = self.overdue.as_mut() => Wake::Overdue,
            _ = self.heartbeat.tick() => Wake::Heartbeat,
        }
    }

    /// A pass starts now: restart the overdue clock, forget requests queued meanwhile.
    pub fn pass_started(&mut self) {
        self.overdue
            .as_mut()
            .reset(Instant::now() + self.overdue_after);
        while self.requests.try_recv().is_ok() {}
    }

    /// A pass ended: requests that arrived during it are not run late.
    pub fn pass_finished(&mut self) {
        while self.requests.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_secs(300);
    const OVERDUE: Duration = Duration::from_secs(605);

    /// Run the ticker for `span` of (paused) time; count the wakes that start passes.
    async fn passes_during(ticker: &mut Ticker, span: Duration) -> (usize, usize) {
        let end = Instant::now() + span;
        let never = std::future::pending::<()>();
        tokio::pin!(never);
        let (mut ticks, mut overdue) = (0, 0);
        while Instant::now() < end {
            let wake = tokio::select! {
                w = ticker.wait(&mut never) => w,
                () = tokio::time::sleep_until(end) => break,
            };
            match wake {
                Wake::Tick => ticks += 1,
                Wake::Overdue => overdue += 1,
                Wake::Heartbeat | Wake::Shutdown => continue,
            }
            ticker.pass_started();
            ticker.pass_finished();
        }
        (ticks, overdue)
    }

    #[tokio::test(start_paused = true)]
    async fn regular_ticks_never_trigger_an_overdue_pass() {
        let (tx, rx) = mpsc::channel(1);
        let running = std::sync::Arc::new(AtomicBool::new(false));
        let sender = {
            let running = running.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(GAP).await;
                    request_pass(&tx, &running);
                }
            })
        };
        let mut ticker = Ticker::new(rx, OVERDUE, Duration::from_secs(1));
        let (ticks, overdue) = passes_during(&mut ticker, Duration::from_secs(3650)).await;
        assert_eq!((ticks, overdue), (12, 0));
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn wall_clock_set_back_an_hour_does_not_stop_passes() {
        // The scheduler stays silent for an hour (its next tick is an hour away on the wall
        // clock); the monotonic guard keeps passes coming, one per overdue period.
        let (_tx, rx) = mpsc::channel(1);
        let mut ticker = Ticker::new(rx, OVERDUE, Duration::from_secs(1));
        let (ticks, overdue) = passes_during(&mut ticker, Duration::from_secs(3600)).await;
        assert_eq!(ticks, 0);
        assert_eq!(overdue, 5, "3600 s / 605 s");
    }

    #[tokio::test(start_paused = true)]
    async fn wall_clock_jumping_forward_runs_one_pass_not_a_burst() {
        // However many ticks fire at once (missed occurrences), one pass is requested, and
        // ticks during a running pass are refused.
        let (tx, rx) = mpsc::channel(1);
        let running = AtomicBool::new(false);
        let accepted = (0..12).filter(|_| request_pass(&tx, &running)).count();
        assert_eq!(accepted, 1);
        let mut ticker = Ticker::new(rx, OVERDUE, Duration::from_secs(1));
        let (ticks, overdue) = passes_during(&mut ticker, Duration::from_secs(60)).await;
        assert_eq!((ticks, overdue), (1, 0));

        running.store(true, Ordering::SeqCst);
        assert!(
            !request_pass(&tx, &running),
            "a tick during a pass is refused"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_queued_during_a_pass_are_not_run_late() {
        let (tx, rx) = mpsc::channel(1);
        let mut ticker = Ticker::new(rx, OVERDUE, Duration::from_secs(1));
        tx.try_send(()).unwrap();
        ticker.pass_finished();
        let (ticks, _) = passes_during(&mut ticker, Duration::from_secs(10)).await;
        assert_eq!(ticks, 0);
    }
}
