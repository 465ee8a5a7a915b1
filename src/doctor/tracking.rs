//! Checks of what incremental passes rely on (docs/design.md, "Cost follows activity"): the
//! change-tracking triggers present and firing, the totals built, the log being folded, and
//! the covering index their per-organization lookups read.

use tokio_postgres::GenericClient;

use super::report::Check;
use crate::db::{DbError, QueryContext};

const CHANGE_TRACKING: &str = include_str!("sql/change_tracking.sql");
const COVERING_INDEX: &str = include_str!("sql/covering_index.sql");

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

/// The covering index an incremental pass's lookups want.
pub(super) const COVERING_INDEX_SQL: &str = "CREATE INDEX CONCURRENTLY IF NOT EXISTS \
     calls_organization_usage_idx ON public.calls (organization_id) \
     INCLUDE (status, duration_minutes, created_at);";

pub(super) async fn change_tracking(client: &impl GenericClient) -> Result<Check, DbError> {
    const NAME: &str = "change tracking";
    let row = client
        .query_one(CHANGE_TRACKING, &[])
        .await
        .context("read the change tracking's state")?;
    let firing: Vec<String> = row.get("firing");
    let log_rows: i64 = row.get("log_rows");
    let oldest: Option<i64> = row.get("oldest_seconds");
    let built: Option<chrono::DateTime<chrono::Utc>> = row.get("initialized_at");
    let silent: Vec<&str> = TRIGGERS
        .iter()
        .copied()
        .filter(|t| !firing.iter().any(|f| f == t))
        .collect();
    let log = match oldest {
        Some(age) => format!("{log_rows} log rows to fold, the oldest {age} s old"),
        None => "no log rows to fold".to_string(),
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
            "synqall-reconciler migrate (recreates them), or ALTER TABLE public.<table> \
             ENABLE TRIGGER <name>; then synqall-reconciler --reconcile-now (a sweep rebuilds \
             what they missed)",
        )
    } else if built.is_none() {
        Check::warn(
            NAME,
            format!("triggers firing, totals not built yet: incremental passes run as sweeps until one builds them; {log}"),
            "synqall-reconciler --reconcile-now (a sweep builds them)",
        )
    } else {
        Check::ok(
            NAME,
            format!("{} triggers firing, totals built; {log}", TRIGGERS.len()),
        )
    };
    Ok(check
        .fact("log_rows", log_rows)
        .fact("oldest_log_row_seconds", oldest)
        .fact("triggers_silent", silent.len()))
}

pub(super) async fn covering_index(client: &impl GenericClient) -> Result<Check, DbError> {
    const NAME: &str = "covering index";
    let row = client
        .query_one(COVERING_INDEX, &[])
        .await
        .context("look for the covering index on calls")?;
    let covered: bool = row.get("covered");
    let estimate: i64 = row.get("calls_estimate");
    Ok(if covered {
        Check::ok(
            NAME,
            "calls (organization_id) carries status, duration_minutes and created_at: \
             per-organization lookups read only the index",
        )
    } else if estimate >= COVERING_INDEX_WARN_ROWS {
        Check::warn(
            NAME,
            format!(
                "no index on calls (organization_id) carrying status, duration_minutes and \
                 created_at: each incremental lookup reads the table's pages (about {estimate} \
                 calls)"
            ),
            COVERING_INDEX_SQL,
        )
    } else {
        Check::ok(
            NAME,
            format!(
                "not needed yet at about {estimate} calls; past {COVERING_INDEX_WARN_ROWS}: \
                 {COVERING_INDEX_SQL}"
            ),
        )
    }
    .fact("calls_estimate", estimate))
}
