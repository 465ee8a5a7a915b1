//! The pass's SQL, kept in `sql/*.sql` beside this file so it can be read, diffed and run by
//! hand in psql. A few are templates: the minutes expressions depend on the column types found
//! by [`crate::db::schema::inspect`] and on `usage.rounding`, and are filled in once per pass
//! (integer columns are summed as they are, which keeps `sum(int4)` fast).

use crate::config::{Period, Rounding, Source, UsageSettings};
use crate::db::schema::{AppSchema, MinutesType};

pub const LOCK_ORGS: &str = include_str!("sql/lock_orgs.sql");
pub const ORPHANED_USERS: &str = include_str!("sql/orphaned_users.sql");
pub const BAD_DURATIONS: &str = include_str!("sql/bad_durations.sql");
pub const APPLY_REPAIRS: &str = include_str!("sql/apply_repairs.sql");
pub const ATTRIBUTE_CALLS: &str = include_str!("sql/attribute_calls.sql");
pub const INSERT_RUN: &str = include_str!("sql/insert_run.sql");
pub const FINISH_RUN: &str = include_str!("sql/finish_run.sql");
pub const CLOSE_ABANDONED_RUNS: &str = include_str!("sql/close_abandoned_runs.sql");

const DRIFTED_ORGS_TEMPLATE: &str = include_str!("sql/drifted_orgs.sql");
const CALL_FINGERPRINTS_TEMPLATE: &str = include_str!("sql/call_fingerprints.sql");
const METRIC_FINGERPRINTS_TEMPLATE: &str = include_str!("sql/metric_fingerprints.sql");
const ORPHANED_CALLS_TEMPLATE: &str = include_str!("sql/orphaned_calls.sql");
const PREVIOUS_CALL_TOTALS_TEMPLATE: &str = include_str!("sql/previous_call_totals.sql");
const PREVIOUS_METRIC_TOTALS_TEMPLATE: &str = include_str!("sql/previous_metric_totals.sql");
pub const PERIOD_HISTORY: &str = include_str!("sql/period_history.sql");

/// The per-pass SQL, with the templates filled in.
#[derive(Debug, Clone)]
pub struct PassQueries {
    pub drifted_orgs: String,
    pub fingerprints: String,
    pub orphaned_calls: String,
    /// The truth ledger's totals over the previous calendar month (period rollover).
    pub previous_totals: String,
}

impl PassQueries {
    /// Fill the templates for this schema and configuration.
    pub fn new(schema: &AppSchema, usage: &UsageSettings) -> Self {
        let (rounding, source) = (usage.rounding, usage.source);
        let call_total = call_total_expr(schema.duration_type, rounding);
        let metric_total = metric_total_expr(schema.metric_type, rounding);
        let (call_count, metric_count) = match source {
            Source::Calls => ("count(*)", "0::bigint"),
            Source::UsageMetrics => ("0::bigint", "count(*)"),
        };
        let fill = |template: &str| {
            template
                .replace("{call_total}", &call_total)
                .replace("{metric_total}", &metric_total)
                .replace("{call_count}", call_count)
                .replace("{metric_count}", metric_count)
        };
        let (expected, fingerprints, previous_totals) = match source {
            Source::Calls => (
                "calls_minutes",
                fill(CALL_FINGERPRINTS_TEMPLATE),
                fill(PREVIOUS_CALL_TOTALS_TEMPLATE),
            ),
            Source::UsageMetrics => (
                "metrics_minutes",
                fill(METRIC_FINGERPRINTS_TEMPLATE),
                fill(PREVIOUS_METRIC_TOTALS_TEMPLATE),
            ),
        };
        // A quota is monthly: compared only when the counter covers a calendar month.
        let quota = if usage.period == Period::CalendarMonth && schema.max_minutes_monthly {
            "o.max_minutes_monthly"
        } else {
            "NULL::integer"
        };
        let membership_created_at = if schema.membership_created_at {
            "m.created_at"
        } else {
            "NULL::timestamptz"
        };
        Self {
            drifted_orgs: fill(DRIFTED_ORGS_TEMPLATE)
                .replace("{expected}", expected)
                .replace("{quota}", quota),
            fingerprints,
            previous_totals,
            orphaned_calls: ORPHANED_CALLS_TEMPLATE
                .replace("{membership_created_at}", membership_created_at),
        }
    }
}

/// An organization's calls total: NULL and negative durations count 0 (bad data, named by
/// [`BAD_DURATIONS`] for drifted organizations), fractional ones are rounded per call. One
/// filtered sum: every extra per-row aggregate costs a few percent of the whole pass.
fn call_total_expr(ty: MinutesType, rounding: Rounding) -> String {
    let column = "c.duration_minutes";
    let valid = format!("FILTER (WHERE {column} >= 0)");
    match ty {
        MinutesType::Integer | MinutesType::BigInt => {
            format!("COALESCE(sum({column}) {valid}, 0)::bigint")
        }
        MinutesType::Fractional => {
            let function = rounding_function(rounding);
            format!("COALESCE(sum({function}({column}::numeric)) {valid}, 0)::bigint")
        }
    }
}

fn rounding_function(rounding: Rounding) -> &'static str {
    match rounding {
        Rounding::Ceil => "ceil",
        Rounding::Round => "round",
        Rounding::Floor => "floor",
    }
}

/// An organization's usage_metrics total: the raw sum, rounded once and floored at 0. Summing
/// raw values keeps this aggregate as cheap as a bare `sum(metric_value)` (per-row rounding of
/// a numeric column costs about 10% of the whole pass); minutes_transcribed rows are written
/// in whole minutes by the app, where both definitions agree.
fn metric_total_expr(ty: MinutesType, rounding: Rounding) -> String {
    let sum = "COALESCE(sum(m.metric_value), 0)";
    match ty {
        MinutesType::Integer | MinutesType::BigInt => format!("GREATEST({sum}, 0)::bigint"),
        MinutesType::Fractional => {
            let function = rounding_function(rounding);
            format!("GREATEST({function}({sum}::numeric), 0)::bigint")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_fully_filled() {
        for schema in [
            AppSchema {
                duration_type: MinutesType::Integer,
                metric_type: MinutesType::Fractional,
                membership_created_at: true,
                max_minutes_monthly: true,
            },
            AppSchema {
                duration_type: MinutesType::Fractional,
                metric_type: MinutesType::BigInt,
                membership_created_at: false,
                max_minutes_monthly: false,
            },
        ] {
            for (source, period) in [
                (Source::Calls, Period::AllTime),
                (Source::UsageMetrics, Period::CalendarMonth),
            ] {
                let usage = UsageSettings {
                    period,
                    source,
                    rounding: Rounding::Round,
                    settle_seconds: 0,
                    batch_size: 1,
                };
                let q = PassQueries::new(&schema, &usage);
                for text in [
                    &q.drifted_orgs,
                    &q.fingerprints,
                    &q.orphaned_calls,
                    &q.previous_totals,
                ] {
                    // '{}' is the empty-array literal; no other brace may survive.
                    assert!(!text.replace("'{}'", "").contains('{'), "{text}");
                }
            }
        }
    }

    #[test]
    fn fractional_minutes_are_rounded_per_call_and_bad_ones_left_out() {
        assert_eq!(
            call_total_expr(MinutesType::Fractional, Rounding::Floor),
            "COALESCE(sum(floor(c.duration_minutes::numeric)) FILTER (WHERE c.duration_minutes >= 0), 0)::bigint"
        );
        assert_eq!(
            call_total_expr(MinutesType::Integer, Rounding::Floor),
            "COALESCE(sum(c.duration_minutes) FILTER (WHERE c.duration_minutes >= 0), 0)::bigint"
        );
    }
}
