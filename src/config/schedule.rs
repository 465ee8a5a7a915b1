//! `schedule.cron` as a typed value: parsed and validated once, when the configuration is
//! loaded, with the same parser and options tokio-cron-scheduler uses, then handed to the daemon
//! as it is (no second parse there).
//!
//! Accepted: 5 fields (minute first, a zero seconds field is added) or 6 fields (seconds first),
//! in UTC. The longest gap between two upcoming ticks is computed here too: the daemon uses it
//! to notice a scheduler that went silent (a wall clock set back).

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde::Deserialize;

/// How many upcoming occurrences are inspected to find the longest gap between ticks.
const GAP_SAMPLE: usize = 64;

/// A validated cron schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct CronSchedule {
    /// The 6-field form handed to the scheduler.
    expression: String,
    cron: Cron,
    longest_gap: Duration,
}

impl TryFrom<String> for CronSchedule {
    type Error = String;

    fn try_from(expression: String) -> Result<Self, String> {
        Self::parse(&expression)
    }
}

impl CronSchedule {
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
    pub fn next_tick(&self) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&Utc::now(), false).ok()
    }

    /// The longest gap between two upcoming ticks.
    pub fn longest_gap(&self) -> Duration {
        self.longest_gap
    }

    /// With no tick for this long (monotonic time), the daemon runs a pass by itself: the
    /// scheduler's wall clock was probably set back. Twice the longest gap, plus slack.
    pub fn overdue_after(&self) -> Duration {
        self.longest_gap * 2 + Duration::from_secs(5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_fields_get_a_zero_seconds_field() {
        let s = CronSchedule::parse("*/5 * * * *").unwrap();
        assert_eq!(s.expression(), "0 */5 * * * *");
        assert_eq!(s.overdue_after(), Duration::from_secs(605));
    }

    #[test]
    fn six_fields_are_seconds_first() {
        let s = CronSchedule::parse("*/2 * * * * *").unwrap();
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
            assert!(CronSchedule::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
