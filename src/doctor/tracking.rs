//! Checks of what incremental passes rely on (docs/design.md, "Cost follows activity"): the
//! change-tracking triggers present and firing, a first sweep done, the log being consumed,
//! and the covering index their per-organization lookups read.

use tokio_postgres::GenericClient;

use super::report::Check;
use crate::db::{DbError, QueryContext};
use crate::reconcile::access::{self, ReadMode, SweepRead};

const CHANGE_TRACKING: &str = include_str!("sql/change_tracking.sql");

/// The triggers V8 creates, as `table.trigger`.
const TRIGGERS: &[&str] = &[
    "calls.synqall_reconciler_delete",
    "calls.synqall_reconciler_insert",
    "calls.synqall_reconciler_truncate",
    "calls.synqall_reconciler_update",
    "organizations.synqall_reconciler_delete",
    "organizations.synqall_reconciler_insert",
    "organizations.synqall_reconciler_update",
    "usage_metrics.synqall_reconciler_delete",
    "usage_metrics.synqall_reconciler_insert",
    "usage_metrics.synqall_reconciler_truncate",
    "usage_metrics.synqall_reconciler_update",
];

/// Below this many calls (the planner's estimate) a missing covering index is only advice.
const COVERING_INDEX_WARN_ROWS: i64 = 100_000;

/// The covering indexes an incremental pass's re-reads want, per table.
pub(super) const COVERING_INDEX_SQL: [(&str, &str); 2] = [
    (
        "public.calls",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS calls_organization_usage_idx ON public.calls \
         (organization_id) INCLUDE (status, duration_minutes, created_at);",
    ),
    (
        "public.usage_metrics",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS usage_metrics_organization_usage_idx ON \
         public.usage_metrics (organization_id) INCLUDE (metric_type, metric_value, created_at);",
    ),
];

pub(super) async fn change_tracking(client: &impl GenericClient) -> Result<Check, DbError> {
    const NAME: &str = "change tracking";
    let row = client
        .query_one(CHANGE_TRACKING, &[])
        .await
        .context("read the change tracking's state")?;
    let firing: Vec<String> = row.get("firing");
    let log_rows: i64 = row.get("log_rows");
    let oldest: Option<i64> = row.get("oldest_seconds");
    let stored: i64 = row.get("stored_rows");
    let built: Option<chrono::DateTime<chrono::Utc>> = row.get("initialized_at");
    let silent: Vec<&str> = TRIGGERS
        .iter()
        .copied()
        .filter(|t| !firing.iter().any(|f| f == t))
        .collect();
    let consumed = stored - log_rows;
    let log = match oldest {
        Some(age) => format!(
            "{log_rows} log rows for the next pass, the oldest {age} s old; {consumed} consumed \
             rows kept until their partition is emptied"
        ),
        None => format!(
            "nothing pending in the log; {consumed} consumed rows kept until their partition is \
             emptied"
        ),
    };
    let check = if !silent.is_empty() {
        Check::warn(
            NAME,
            format!(
                "{} of {} triggers missing or disabled ({}): incremental passes do not see \
                 those changes until the nightly sweep; {log}",
                silent.len(),
                TRIGGERS.len(),
                silent.join(", ")
            ),
            "ALTER TABLE public.<table> ENABLE TRIGGER <name> (a dropped one: its CREATE \
             TRIGGER from migrations/V8__incremental.sql); then synqall-reconciler \
             --reconcile-now (a sweep repairs what they missed)",
        )
    } else if built.is_none() {
        Check::warn(
            NAME,
            format!(
                "triggers firing, not ready yet: incremental passes run as sweeps until the \
                 first sweep; {log}"
            ),
            "synqall-reconciler --reconcile-now (a sweep makes the log usable)",
        )
    } else {
        Check::ok(
            NAME,
            format!("{} triggers firing, ready; {log}", TRIGGERS.len()),
        )
    };
    Ok(check
        .fact("log_rows", log_rows)
        .fact("consumed_log_rows", consumed)
        .fact("oldest_log_row_seconds", oldest)
        .fact("triggers_silent", silent.len()))
}

pub(super) async fn covering_index(client: &impl GenericClient) -> Result<Check, DbError> {
    const NAME: &str = "covering index";
    let indexes = access::inspect(client).await?;
    let missing: Vec<(&str, &str)> = COVERING_INDEX_SQL
        .iter()
        .copied()
        .filter(|(relation, _)| {
            indexes
                .iter()
                .any(|i| i.relation == *relation && !i.covered)
        })
        .collect();
    let estimate: i64 = indexes.iter().map(|i| i.rows_estimate).max().unwrap_or(0);
    let fix = missing
        .iter()
        .map(|(_, sql)| *sql)
        .collect::<Vec<_>>()
        .join(" ");
    let tables = missing
        .iter()
        .map(|(relation, _)| *relation)
        .collect::<Vec<_>>()
        .join(", ");
    Ok(if missing.is_empty() {
        let read = SweepRead::choose(&indexes);
        let sweep = match read.mode() {
            ReadMode::Indexes => "sweeps read the indexes too".to_string(),
            ReadMode::Tables => format!("sweeps read the tables: {}", read.why_tables()),
            ReadMode::OneIndex { relation } => format!(
                "sweeps read the index of {relation} and the other ledger's table: {}",
                read.why_tables()
            ),
        };
        Check::ok(
            NAME,
            format!(
                "calls and usage_metrics (organization_id) carry what a re-read needs: \
                 per-organization lookups read only the index; {sweep}"
            ),
        )
    } else if estimate >= COVERING_INDEX_WARN_ROWS {
        Check::warn(
            NAME,
            format!(
                "no covering index on {tables}: each incremental re-read of an organization \
                 reads the table's pages (about {estimate} rows)"
            ),
            fix,
        )
    } else {
        Check::ok(
            NAME,
            format!(
                "not needed yet at about {estimate} rows; past {COVERING_INDEX_WARN_ROWS}: {fix}"
            ),
        )
    }
    .fact("rows_estimate", estimate))
}
