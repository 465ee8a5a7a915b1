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
    /// As written in the configuration.
    given: String,
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
        let given = expression.trim().to_string();
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let expression = match (fields.as_slice(), fields.len()) {
            ([one], 1) if one.starts_with('@') => macro_expression(one).ok_or_else(|| {
                format!(
                    "`{one}` is not a schedule macro; use @yearly, @monthly, @weekly, @daily or \
                     @hourly, or 5 fields (minute hour day month weekday)"
                )
            })?,
            (_, 5) => format!("0 {}", fields.join(" ")),
            (_, 6) => fields.join(" "),
            (_, n) => {
                return Err(format!(
                    "`{expression}` has {n} fields; expected 5 (minute hour day month weekday) \
                     or 6 (second minute hour day month weekday), in UTC, or a macro such as \
                     @hourly"
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
            given,
            expression,
            cron,
            longest_gap,
        })
    }

    /// What the expression means, in words, for messages and the start-up line.
    pub fn meaning(&self) -> String {
        let fields = self.given.split_whitespace().count();
        let form = match fields {
            5 => " (5 fields: minute hour day month weekday)",
            6 => " (6 fields: second minute hour day month weekday)",
            _ => "",
        };
        format!("`{}`{form}", self.given)
    }

    /// For a schedule whose gaps are suspiciously long, the expression probably meant: `0 */5 *
    /// * *` is minute 0 of every 5th hour; `*/5 * * * *` is every 5 minutes.
    pub fn likely_meant(&self) -> Option<String> {
        let fields: Vec<&str> = self.given.split_whitespace().collect();
        match fields.as_slice() {
            [minute, hour, "*", "*", "*"]
                if minute.parse::<u32>().is_ok() && hour.starts_with("*/") =>
            {
                Some(format!("{hour} * * * *"))
            }
            _ => None,
        }
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

/// The 6-field form of a schedule macro.
fn macro_expression(name: &str) -> Option<String> {
    let expression = match name {
        "@yearly" | "@annually" => "0 0 0 1 1 *",
        "@monthly" => "0 0 0 1 * *",
        "@weekly" => "0 0 0 * * 0",
        "@daily" | "@midnight" => "0 0 0 * * *",
        "@hourly" => "0 0 * * * *",
        _ => return None,
    };
    Some(expression.to_string())
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
    fn macros_mean_what_cron_means_by_them() {
        let hourly = CronSchedule::parse("@hourly").unwrap();
        assert_eq!(hourly.expression(), "0 0 * * * *");
        assert_eq!(hourly.longest_gap(), Duration::from_secs(3600));
        assert!(CronSchedule::parse("@sometimes").is_err());
    }

    #[test]
    fn a_five_hour_schedule_suggests_five_minutes() {
        let s = CronSchedule::parse("0 */5 * * *").unwrap();
        // 00, 05, 10, 15, 20 h: five hours apart, four from 20 h to midnight.
        assert_eq!(s.longest_gap(), Duration::from_secs(5 * 3600));
        assert_eq!(s.likely_meant().as_deref(), Some("*/5 * * * *"));
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
