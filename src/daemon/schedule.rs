//! The pass schedule: `schedule.cron` (UTC, 5 fields minute-first or 6 fields seconds-first)
//! parsed with the same parser and options tokio-cron-scheduler uses, and the scheduler job that
//! turns each tick into a message for the daemon loop.
//!
//! tokio-cron-scheduler spawns each tick and forgets it: it neither prevents overlapping runs
//! nor waits for them at shutdown. So a tick here runs nothing itself; it only asks the loop
//! for a pass, and is dropped (with an INFO line) when a pass is already running. It also reads
//! the wall clock: if that clock is set back, its next tick can be an hour away. The loop
//! therefore keeps its own monotonic guard ([`super::ticker`], [`Schedule::overdue_after`]).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tracing::info;

use super::ticker::request_pass;

/// How many upcoming occurrences are inspected to find the longest gap between ticks.
const GAP_SAMPLE: usize = 64;

/// A validated schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The 6-field form handed to the scheduler.
    expression: String,
    cron: Cron,
    longest_gap: Duration,
}

impl Schedule {
    /// Parse a 5-field (minute first) or 6-field (seconds first) cron expression, in UTC.
    ///
    /// # Errors
    /// A message saying what is wrong, for the `schedule.cron` config error.
    pub fn parse(expression: &str) -> Result<Self, String> {
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let expression = match fields.len() {
            5 => format!("0 {}", fields.join(" ")),
            6 => fields.join(" "),
            n => {
                return Err(format!(
                    "`{expression}` has {n} fields; expected 5 (minute hour day month weekday) \
                     or 6 (second minute hour day month weekday), in UTC"
                ))
            }
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(&expression)
            .map_err(|e| format!("`{expression}` is not a valid cron expression: {e}"))?;
        let upcoming: Vec<_> = cron.iter_after(Utc::now()).take(GAP_SAMPLE).collect();
        if upcoming.len() < 2 {
            return Err(format!("`{expression}` never fires again"));
        }
        let longest_gap = upcoming
            .windows(2)
            .map(|w| (w[1] - w[0]).to_std().unwrap_or_default())
            .max()
            .unwrap_or_default();
        Ok(Self {
            expression,
            cron,
            longest_gap,
        })
    }

    /// The 6-field expression.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// Next tick after now (UTC), for the startup line.
    pub fn next_tick(&self) -> Option<chrono::DateTime<Utc>> {
        self.cron.find_next_occurrence(&Utc::now(), false).ok()
    }

    /// With no tick for this long (monotonic time), the loop runs a pass by itself: the
    /// scheduler's wall clock was probably set back. Twice the longest gap, plus slack.
    pub fn overdue_after(&self) -> Duration {
        self.longest_gap * 2 + Duration::from_secs(5)
    }

    /// Start the scheduler; each tick sends a request on `ticks` unless `pass_running`.
    ///
    /// # Errors
    /// The scheduler could not be created or started.
    pub async fn start(
        &self,
        ticks: mpsc::Sender<()>,
        pass_running: Arc<AtomicBool>,
    ) -> Result<JobScheduler, JobSchedulerError> {
        let scheduler = JobScheduler::new().await?;
        let job = Job::new_async(self.expression.as_str(), move |_id, _scheduler| {
            let ticks = ticks.clone();
            let pass_running = pass_running.clone();
            Box::pin(async move {
                if !request_pass(&ticks, &pass_running) {
                    info!("schedule tick skipped: a pass is running or about to start");
                }
            })
        })?;
        scheduler.add(job).await?;
        scheduler.start().await?;
        Ok(scheduler)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_fields_get_a_zero_seconds_field() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        assert_eq!(s.expression(), "0 */5 * * * *");
        assert_eq!(s.overdue_after(), Duration::from_secs(605));
    }

    #[test]
    fn six_fields_are_seconds_first() {
        let s = Schedule::parse("*/2 * * * * *").unwrap();
        assert_eq!(s.overdue_after(), Duration::from_secs(9));
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        for bad in [
            "",
            "every five minutes",
            "* * *",
            "61 * * * *",
            "0 0 31 2 * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
