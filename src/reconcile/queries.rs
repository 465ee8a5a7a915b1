//! The pass's SQL, kept in `sql/*.sql` beside this file so it can be read, diffed and run by
//! hand in psql. Several are templates: the minutes and counter expressions depend on the
//! column types found by [`crate::db::schema::inspect`] and on `usage.rounding`, and are filled
//! in once per pass (integer columns are summed as they are, which keeps `sum(int4)` fast).
//!
//! Bad values never fail a statement: durations and metric values that are NULL, negative,
//! NaN, infinite or beyond bigint are left out of the sums (and named elsewhere), totals are
//! clamped to bigint before the cast, and a fractional counter that holds no whole number of
//! minutes is read as "invalid" instead of being cast.

use crate::config::{Period, Rounding, Source, UsageSettings};
use crate::db::schema::{AppSchema, CounterType, MinutesType};

pub const ORPHANED_USERS: &str = include_str!("sql/orphaned_users.sql");
pub const APPLY_REPAIRS: &str = include_str!("sql/apply_repairs.sql");
pub const ATTRIBUTE_CALLS: &str = include_str!("sql/attribute_calls.sql");
pub const INSERT_RUN: &str = include_str!("sql/insert_run.sql");
pub const FINISH_RUN: &str = include_str!("sql/finish_run.sql");
pub const CLOSE_ABANDONED_RUNS: &str = include_str!("sql/close_abandoned_runs.sql");
pub const PERIOD_HISTORY: &str = include_str!("sql/period_history.sql");
pub const APPLY_MISMATCHES: &str = include_str!("sql/apply_mismatches.sql");

const DRIFTED_ORGS_TEMPLATE: &str = include_str!("sql/drifted_orgs.sql");
const UNKNOWN_STATUSES_TEMPLATE: &str = include_str!("sql/unknown_statuses.sql");
const COMPARE_DIRTY_TEMPLATE: &str = include_str!("tracking/sql/compare_dirty.sql");
const LOCK_ORGS_TEMPLATE: &str = include_str!("sql/lock_orgs.sql");
const CALL_FINGERPRINTS_TEMPLATE: &str = include_str!("sql/call_fingerprints.sql");
const METRIC_FINGERPRINTS_TEMPLATE: &str = include_str!("sql/metric_fingerprints.sql");
const ORPHANED_CALLS_TEMPLATE: &str = include_str!("sql/orphaned_calls.sql");
const PREVIOUS_CALL_TOTALS_TEMPLATE: &str = include_str!("sql/previous_call_totals.sql");
const PREVIOUS_METRIC_TOTALS_TEMPLATE: &str = include_str!("sql/previous_metric_totals.sql");
const BAD_DURATIONS_TEMPLATE: &str = include_str!("sql/bad_durations.sql");
const BAD_METRIC_VALUES_TEMPLATE: &str = include_str!("sql/bad_metric_values.sql");
const STATUS_STATISTICS: &str = include_str!("sql/status_statistics.sql");

/// Both ledgers' totals as the planner chooses: every statement but a steered sweep's.
const UNSHAPED: (TotalsShape, TotalsShape) = (TotalsShape::AsPlanned, TotalsShape::AsPlanned);

/// The largest bigint, as SQL: totals are clamped to it and values above it are not minutes.
const BIGINT_MAX: &str = "9223372036854775807";

/// The per-pass SQL, with the templates filled in.
#[derive(Debug, Clone)]
pub struct PassQueries {
    /// The comparison of every organization that also counts calls of unknown statuses
    /// (`doctor`).
    pub drifted_orgs: String,
    /// The sweep's comparison of every organization, completed calls only (`$1` alone), the
    /// ledgers' shapes left for [`Self::sweep_comparison`]; usage values summed each way of
    /// [`MetricSum`].
    sweep_exact: String,
    sweep_raw: String,
    /// The comparison of some organizations (`$3`), unknown statuses and bad values counted:
    /// an incremental pass's exact re-read.
    pub candidate_orgs: String,
    /// Whether the planner's statistics of `calls.status` show a status the sweep did not
    /// count (`sql/status_statistics.sql`).
    pub status_statistics: &'static str,
    /// The names of the unknown call statuses, with their calls (every organization, and
    /// some).
    pub unknown_statuses: String,
    pub candidate_unknown_statuses: String,
    /// The incremental comparison, from the change log.
    pub compare_dirty: String,
    pub lock_orgs: String,
    pub fingerprints: String,
    pub orphaned_calls: String,
    /// The truth ledger's totals over the previous calendar month (period rollover).
    pub previous_totals: String,
    pub bad_durations: String,
    pub bad_metric_values: String,
    /// The type of `used_minutes`: what a repair may write.
    pub counter_type: CounterType,
}

impl PassQueries {
    /// Fill the templates for this schema and configuration.
    pub fn new(schema: &AppSchema, usage: &UsageSettings) -> Self {
        let (rounding, source) = (usage.rounding, usage.source);
        let values = value_exprs(schema, usage);
        let fill = |template: &str| {
            values
                .iter()
                .fold(template.to_string(), |sql, (name, value)| {
                    sql.replace(name, value)
                })
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
            "o.max_minutes_monthly::bigint"
        } else {
            "NULL::bigint"
        };
        let membership_created_at = if schema.membership_created_at {
            "m.created_at"
        } else {
            "NULL::timestamptz"
        };
        let comparison = |template: &str| {
            fill(template)
                .replace("{expected}", expected)
                .replace("{quota}", quota)
                .replace("{tracked_calls}", log_calls_column(rounding))
                .replace(
                    "{source_is_metrics}",
                    if source == Source::UsageMetrics {
                        "true"
                    } else {
                        "false"
                    },
                )
        };
        // The variant first: the bad-value counts and call totals it names are templates too.
        let variant = |which, sum| {
            metric_sum_exprs(schema.metric_type, rounding, sum)
                .iter()
                .fold(
                    comparison(&comparison_variant(DRIFTED_ORGS_TEMPLATE, which)),
                    |sql, (name, value)| sql.replace(name, value),
                )
        };
        Self {
            drifted_orgs: shaped(&variant(Comparison::Everything, MetricSum::Exact), UNSHAPED),
            sweep_exact: variant(Comparison::Sweep, MetricSum::Exact),
            sweep_raw: variant(Comparison::Sweep, MetricSum::Raw),
            candidate_orgs: shaped(&variant(Comparison::Some, MetricSum::Exact), UNSHAPED),
            status_statistics: STATUS_STATISTICS,
            unknown_statuses: filter_orgs(UNKNOWN_STATUSES_TEMPLATE.to_string(), false),
            candidate_unknown_statuses: filter_orgs(UNKNOWN_STATUSES_TEMPLATE.to_string(), true),
            compare_dirty: comparison(COMPARE_DIRTY_TEMPLATE),
            lock_orgs: fill(LOCK_ORGS_TEMPLATE),
            fingerprints,
            previous_totals,
            orphaned_calls: ORPHANED_CALLS_TEMPLATE
                .replace("{membership_created_at}", membership_created_at),
            bad_durations: fill(BAD_DURATIONS_TEMPLATE),
            bad_metric_values: fill(BAD_METRIC_VALUES_TEMPLATE),
            counter_type: schema.counter_type,
        }
    }

    /// The sweep's comparison with the (calls, usage_metrics) totals asked for as `shapes`
    /// says and usage values summed as `sum` says (`access::SweepRead::shapes`,
    /// `access::SweepRead::metric_sum`).
    pub fn sweep_comparison(&self, shapes: (TotalsShape, TotalsShape), sum: MetricSum) -> String {
        let template = match sum {
            MetricSum::Exact => &self.sweep_exact,
            MetricSum::Raw => &self.sweep_raw,
        };
        shaped(template, shapes)
    }
}

/// How the sweep's comparison asks for one ledger's totals (`access::SweepRead::shapes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalsShape {
    /// As the planner chooses (under the transaction's settings).
    AsPlanned,
    /// `ORDER BY organization_id`: with sorts off, only an index-only scan of the covering
    /// index delivers it.
    Sorted,
}

/// `{order_c}` and `{order_m}` filled for each ledger's shape.
fn shaped(sql: &str, (calls, usage): (TotalsShape, TotalsShape)) -> String {
    let order = |shape: TotalsShape, alias: &str| match shape {
        TotalsShape::AsPlanned => String::new(),
        TotalsShape::Sorted => format!("ORDER BY {alias}.organization_id"),
    };
    sql.replace("{order_c}", &order(calls, "c"))
        .replace("{order_m}", &order(usage, "m"))
}

/// The placeholders every template shares, with their values for this schema and
/// configuration (`{completed_call_total}` before `{call_total}`: neither contains the other,
/// but the order is fixed all the same).
fn value_exprs(schema: &AppSchema, usage: &UsageSettings) -> Vec<(&'static str, String)> {
    let rounding = usage.rounding;
    let (stored, stored_invalid) = stored_exprs(schema.counter_type);
    let metric_count = match usage.source {
        Source::Calls => "0::bigint",
        Source::UsageMetrics => "count(*)",
    };
    vec![
        (
            "{completed_call_total}",
            call_total_expr(
                schema.duration_type,
                rounding,
                "c.status = 'completed' AND ",
            ),
        ),
        (
            "{call_total}",
            call_total_expr(schema.duration_type, rounding, ""),
        ),
        (
            "{metric_total}",
            metric_total_expr(schema.metric_type, rounding),
        ),
        ("{call_count}", "count(*)".to_string()),
        ("{metric_count}", metric_count.to_string()),
        ("{stored}", stored),
        ("{stored_invalid}", stored_invalid),
        (
            "{invalid_duration}",
            invalid_value("c.duration_minutes", schema.duration_type),
        ),
        (
            "{invalid_metric}",
            invalid_value("m.metric_value", schema.metric_type),
        ),
    ]
}

/// The change log's column of per-call rounded minutes for `rounding`.
fn log_calls_column(rounding: Rounding) -> &'static str {
    match rounding {
        Rounding::Ceil => "calls_ceil",
        Rounding::Round => "calls_round",
        Rounding::Floor => "calls_floor",
    }
}

/// Which organizations a comparison (`sql/drifted_orgs.sql`) reads, and what it counts
/// besides minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    /// Every organization, completed calls only: the sweep, whose per-row work is the
    /// floor's (reading the calls of unknown statuses too and counting them apart cost ~12%
    /// of its CPU at 100k organizations / 10M calls).
    Sweep,
    /// Every organization, calls of unknown statuses counted apart (`doctor`).
    Everything,
    /// The organizations of `$3`, calls of unknown statuses and bad values counted.
    Some,
}

/// `sql/drifted_orgs.sql` as `which` reads it (the value placeholders left for `fill`).
fn comparison_variant(template: &str, which: Comparison) -> String {
    let filtered = filter_orgs(template.to_string(), which == Comparison::Some);
    if which == Comparison::Sweep {
        filtered
            .replace("{call_rows}", "c.status = 'completed'")
            .replace("{unknown_calls}", "0::bigint")
            .replace("{unknown_status_total}", "NULL::bigint")
            // Every row read is a completed call: the total needs no condition on status.
            .replace("{completed_call_total}", "{call_total}")
    } else {
        filtered
            .replace(
                "{call_rows}",
                "(c.status = 'completed' OR (c.status = ANY ($2::text[])) IS NOT TRUE)",
            )
            .replace(
                "{unknown_calls}",
                "count(*) FILTER (WHERE c.status IS DISTINCT FROM 'completed')",
            )
            .replace(
                "{unknown_status_total}",
                "(SELECT COALESCE(sum(unknown_calls), 0) FROM call_totals)::bigint",
            )
    }
}

/// The comparison for every organization, or (`some`) for the organizations in `$3`, which
/// also counts their bad values.
fn filter_orgs(sql: String, some: bool) -> String {
    let filter = |column: &str| {
        if some {
            format!("AND {column} = ANY ($3::uuid[])")
        } else {
            String::new()
        }
    };
    let (bad_call_counts, bad_metric_count, bad_values) = if some {
        (
            "count(*) FILTER (WHERE c.status = 'completed' AND c.duration_minutes IS NULL) \
               AS null_durations, \
             count(*) FILTER (WHERE c.status = 'completed' AND c.duration_minutes < 0) \
               AS negative_durations, \
             count(*) FILTER (WHERE c.status = 'completed' AND {invalid_duration}) \
               AS invalid_durations",
            "count(*) FILTER (WHERE {invalid_metric}) AS invalid_metric_values",
            "ARRAY[COALESCE(ct.null_durations, 0), COALESCE(ct.negative_durations, 0), \
                   COALESCE(ct.invalid_durations, 0), COALESCE(mt.invalid_metric_values, 0)]",
        )
    } else {
        (
            "NULL::bigint AS null_durations, NULL::bigint AS negative_durations, \
             NULL::bigint AS invalid_durations",
            "NULL::bigint AS invalid_metric_values",
            "NULL::bigint[]",
        )
    };
    sql.replace("{bad_call_counts}", bad_call_counts)
        .replace("{bad_metric_count}", bad_metric_count)
        .replace("{bad_values}", bad_values)
        .replace("{filter_c}", &filter("c.organization_id"))
        .replace("{filter_m}", &filter("m.organization_id"))
        .replace("{filter_o}", &filter("o.id"))
        .replace("{filter_lm}", &filter("lm.organization_id"))
}

/// The counter as bigint, and whether its value cannot be compared: integer counters cast
/// exactly; a fractional one only when it holds a whole number of minutes within bigint.
fn stored_exprs(counter: CounterType) -> (String, String) {
    let column = "o.used_minutes";
    match counter {
        CounterType::SmallInt | CounterType::Integer | CounterType::BigInt => {
            (format!("{column}::bigint"), "false".to_string())
        }
        CounterType::Fractional => {
            let whole = format!(
                "({column}::numeric = trunc({column}::numeric) \
                 AND {column}::numeric BETWEEN -{BIGINT_MAX} AND {BIGINT_MAX})"
            );
            (
                format!("CASE WHEN {whole} THEN {column}::numeric::bigint END"),
                format!("({column} IS NOT NULL AND NOT {whole})"),
            )
        }
    }
}

/// A duration or metric value the ledgers leave out as not a number of minutes: NaN, infinite
/// or beyond bigint (NaN sorts above every number in PostgreSQL, so one comparison covers all
/// three). Integer columns cannot hold such a value.
fn invalid_value(column: &str, ty: MinutesType) -> String {
    match ty {
        MinutesType::Integer | MinutesType::BigInt => "false".to_string(),
        MinutesType::Fractional => format!("{column}::numeric > {BIGINT_MAX}"),
    }
}

/// An organization's calls total: NULL, negative and unusable durations count 0 (bad data,
/// named by the bad-durations query for drifted organizations), fractional ones are rounded
/// per call. One filtered sum: every extra per-row aggregate costs a few percent of the whole
/// pass. `only` narrows the rows summed (a condition ending in `AND `, or empty).
fn call_total_expr(ty: MinutesType, rounding: Rounding, only: &str) -> String {
    let column = "c.duration_minutes";
    match ty {
        // sum(int4) is a bigint and cannot overflow on any real table.
        MinutesType::Integer => {
            format!("COALESCE(sum({column}) FILTER (WHERE {only}{column} >= 0), 0)::bigint")
        }
        // sum(int8) is numeric: clamp before the cast.
        MinutesType::BigInt => format!(
            "LEAST(COALESCE(sum({column}) FILTER (WHERE {only}{column} >= 0), 0), \
             {BIGINT_MAX})::bigint"
        ),
        MinutesType::Fractional => {
            let function = rounding_function(rounding);
            format!(
                "LEAST(COALESCE(sum({function}({column}::numeric)) \
                 FILTER (WHERE {only}{column} >= 0 AND {column}::numeric <= {BIGINT_MAX}), 0), \
                 {BIGINT_MAX})::bigint"
            )
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
/// in whole minutes by the app, where both definitions agree. Unusable values are left out.
fn metric_total_expr(ty: MinutesType, rounding: Rounding) -> String {
    let column = "m.metric_value";
    match ty {
        MinutesType::Integer | MinutesType::BigInt => {
            format!("LEAST(GREATEST(COALESCE(sum({column}), 0), 0), {BIGINT_MAX})::bigint")
        }
        MinutesType::Fractional => {
            let function = rounding_function(rounding);
            format!(
                "LEAST(GREATEST({function}(COALESCE(sum({column}::numeric) \
                 FILTER (WHERE {column}::numeric BETWEEN -{BIGINT_MAX} AND {BIGINT_MAX}), 0)), 0), \
                 {BIGINT_MAX})::bigint"
            )
        }
    }
}

/// How a comparison sums usage_metrics' values (`sql/drifted_orgs.sql`, [`metric_sum_exprs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricSum {
    /// Each value tested as it is summed: NaN, infinite and beyond-bigint values left out.
    Exact,
    /// Summed raw, as cheap per row as the floor's bare sum (the per-row test of `Exact`
    /// cost ~4% of the sweep's CPU at 100k organizations / 10M calls); an organization whose
    /// raw sum is not a usable number is summed again exactly, once per such organization,
    /// which only the covering index of usage_metrics makes cheap: the sweep sums raw only
    /// when that index is there (`access::SweepRead::metric_sum`).
    Raw,
}

/// The comparison's usage_metrics totals (`sql/drifted_orgs.sql`) summed as `how` says:
/// `{metric_sum}`, the per-organization aggregate in metric_totals; and the minutes made of
/// it for an organization (`{metric_minutes}`, over `mt`, the metric_totals row, which may be
/// missing) and for the rows without organization (`{unowned_metric_minutes}`).
///
/// Integer values need no test (they are never NaN, infinite or beyond bigint): both ways
/// are the same. Summed raw, one NaN or infinite value makes a raw sum so, and one beyond
/// bigint makes it beyond bigint unless values as absurd cancel it: where the raw sum is not
/// a usable number, that organization's rows are summed again as `Exact` does (through the
/// index, outside the parallel aggregate). Values that cancel that way are counted as their
/// sum; the fingerprint re-read under the row lock leaves them out, so a repair over them is
/// lost_race, never written.
fn metric_sum_exprs(
    ty: MinutesType,
    rounding: Rounding,
    how: MetricSum,
) -> [(&'static str, String); 3] {
    let sum = "mt.metric_sum";
    let (aggregate, owned, unowned) = match (ty, how) {
        (MinutesType::Integer | MinutesType::BigInt, _) => {
            let minutes = format!("LEAST(GREATEST(COALESCE({sum}, 0), 0), {BIGINT_MAX})::bigint");
            ("sum(m.metric_value)".to_string(), minutes.clone(), minutes)
        }
        (MinutesType::Fractional, MetricSum::Exact) => (
            metric_total_expr(ty, rounding),
            format!("COALESCE({sum}, 0)"),
            sum.to_string(),
        ),
        (MinutesType::Fractional, MetricSum::Raw) => {
            let function = rounding_function(rounding);
            let exact = metric_total_expr(ty, rounding).replace("m.metric_value", "x.metric_value");
            let again = |org: &str| {
                format!(
                    "(SELECT {exact} FROM public.usage_metrics x \
                      WHERE {org} AND x.metric_type = 'minutes_transcribed' \
                        AND ($1::timestamptz IS NULL OR x.created_at >= $1))"
                )
            };
            let usable = format!(
                "WHEN {sum} BETWEEN -{BIGINT_MAX} AND {BIGINT_MAX} \
                 THEN GREATEST({function}({sum}), 0)::bigint"
            );
            (
                "sum(m.metric_value::numeric)".to_string(),
                format!(
                    "CASE {usable} WHEN mt.organization_id IS NULL THEN 0 ELSE {} END",
                    again("x.organization_id = mt.organization_id")
                ),
                format!(
                    "CASE {usable} ELSE {} END",
                    again("x.organization_id IS NULL")
                ),
            )
        }
    };
    [
        ("{metric_sum}", aggregate),
        ("{metric_minutes}", owned),
        ("{unowned_metric_minutes}", unowned),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_fully_filled() {
        for schema in [
            AppSchema {
                counter_type: CounterType::Integer,
                duration_type: MinutesType::Integer,
                metric_type: MinutesType::Fractional,
                membership_created_at: true,
                max_minutes_monthly: true,
            },
            AppSchema {
                counter_type: CounterType::Fractional,
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
                    known_statuses: vec!["completed".into()],
                };
                let q = PassQueries::new(&schema, &usage);
                let sorted = [
                    (
                        (TotalsShape::Sorted, TotalsShape::AsPlanned),
                        MetricSum::Exact,
                    ),
                    (
                        (TotalsShape::AsPlanned, TotalsShape::Sorted),
                        MetricSum::Raw,
                    ),
                ]
                .map(|(shapes, sum)| q.sweep_comparison(shapes, sum));
                // The sweep's has `$1` alone (`scan::lean_sweep_params`).
                let code = |sql: &str| {
                    sql.lines()
                        .filter(|l| !l.trim_start().starts_with("--"))
                        .collect::<String>()
                };
                assert!(!code(&sorted[0]).contains("$2") && code(&q.candidate_orgs).contains("$2"));
                assert!(!code(&sorted[1]).contains("$2"));
                for text in [
                    &sorted[0],
                    &sorted[1],
                    &q.drifted_orgs,
                    &q.candidate_orgs,
                    &q.compare_dirty,
                    &q.lock_orgs,
                    &q.fingerprints,
                    &q.orphaned_calls,
                    &q.previous_totals,
                    &q.bad_durations,
                    &q.bad_metric_values,
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
            call_total_expr(MinutesType::Fractional, Rounding::Floor, ""),
            "LEAST(COALESCE(sum(floor(c.duration_minutes::numeric)) FILTER (WHERE \
             c.duration_minutes >= 0 AND c.duration_minutes::numeric <= 9223372036854775807), 0), \
             9223372036854775807)::bigint"
        );
        assert_eq!(
            call_total_expr(MinutesType::Integer, Rounding::Floor, ""),
            "COALESCE(sum(c.duration_minutes) FILTER (WHERE c.duration_minutes >= 0), 0)::bigint"
        );
    }
}
