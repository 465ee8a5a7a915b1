//! Operations checks: migrations applied and unchanged, a recent successful pass, the indexes
//! the pass's lookups rely on, and the seed's index that should go.

use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::report::Check;
use crate::config::{Settings, Source};
use crate::db::{migrations, DbError, QueryContext};
use crate::telemetry::error_chain;

const LAST_SUCCESS: &str = include_str!("sql/last_success.sql");
const LEADING_INDEX: &str = include_str!("sql/leading_index.sql");
const USED_MINUTES_INDEXES: &str = include_str!("sql/used_minutes_indexes.sql");

pub(super) fn migrations_check(result: &Result<(), DbError>) -> Check {
    const NAME: &str = "migrations";
    let shipped = migrations::MIGRATIONS
        .iter()
        .map(|m| format!("V{}", m.version))
        .collect::<Vec<_>>()
        .join(", ");
    match result {
        Ok(()) => Check::ok(NAME, format!("{shipped} applied, unchanged")),
        Err(DbError::NotMigrated { detail }) => {
            Check::fail(NAME, detail.clone(), "synqall-reconciler migrate")
        }
        Err(e @ DbError::MigrationChanged { .. }) => Check::fail(
            NAME,
            e.to_string(),
            "deploy the release whose migrations were applied; never edit an applied migration",
        ),
        Err(e) => Check::not_checked(NAME, error_chain(e)),
    }
}

pub(super) async fn last_success(
    client: &impl GenericClient,
    settings: &Settings,
) -> Result<Check, DbError> {
    const NAME: &str = "last successful pass";
    let row = client
        .query_one(LAST_SUCCESS, &[])
        .await
        .context("read reconciler.runs")?;
    let last_id: Option<Uuid> = row.get("last_ok_id");
    let last_at: Option<chrono::DateTime<chrono::Utc>> = row.get("last_ok_at");
    let latest_status: Option<String> = row.get("latest_status");
    let latest_error: Option<String> = row.get("latest_error");
    let now: chrono::DateTime<chrono::Utc> = row.get("now");
    let latest = match (latest_status.as_deref(), latest_error) {
        (Some("ok") | None, _) => String::new(),
        (Some(status), Some(error)) => format!("; the latest pass {status}: {error}"),
        (Some(status), None) => format!("; the latest pass {status}"),
    };
    let stalled_after = i64::try_from(settings.alert.stalled_after_seconds).unwrap_or(i64::MAX);
    Ok(match (last_id, last_at) {
        (Some(id), Some(at)) => {
            let age = (now - at).num_seconds();
            let detail = format!("{age} s ago (run {id}, finished {at}){latest}");
            let check = if age > stalled_after {
                Check::fail(
                    NAME,
                    format!("{detail}; older than alert.stalled_after_seconds = {stalled_after}"),
                    "systemctl status synqall-reconciler; journalctl -u synqall-reconciler | \
                     grep -E 'CRITICAL|ERROR'",
                )
            } else {
                Check::ok(NAME, detail)
            };
            check
                .fact("seconds_since_last_success", age)
                .fact("run_id", id.to_string())
                .fact("stalled_after_seconds", stalled_after)
        }
        _ => Check::warn(
            NAME,
            format!("no successful pass recorded{latest}"),
            "start the daemon (systemctl enable --now synqall-reconciler) or run \
             synqall-reconciler --reconcile-now",
        ),
    })
}

/// The indexes the pass's per-organization lookups rely on (README, "Indexes").
pub(super) async fn indexes(
    client: &impl GenericClient,
    settings: &Settings,
) -> Result<Check, DbError> {
    const NAME: &str = "indexes";
    let mut wanted = vec![
        ("calls", "organization_id", "calls_organization_id_idx"),
        (
            "user_organizations",
            "user_id",
            "user_organizations_user_id_idx",
        ),
    ];
    if settings.usage.source == Source::UsageMetrics {
        wanted.push((
            "usage_metrics",
            "organization_id",
            "usage_metrics_organization_id_idx",
        ));
    }
    let mut missing = Vec::new();
    let mut present = Vec::new();
    for (table, column, name) in wanted {
        let exists: bool = client
            .query_one(LEADING_INDEX, &[&table, &column])
            .await
            .context("look for an index")?
            .get(0);
        if exists {
            present.push(format!("{table}({column})"));
        } else {
            missing.push((
                format!("{table}({column})"),
                format!(
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON public.{table} ({column});"
                ),
            ));
        }
    }
    Ok(if missing.is_empty() {
        Check::ok(NAME, format!("present: {}", present.join(", ")))
    } else {
        Check::warn(
            NAME,
            format!(
                "no index leads with {}: orphan attribution and the repair re-read scan the table",
                missing
                    .iter()
                    .map(|(what, _)| what.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            missing
                .into_iter()
                .map(|(_, sql)| sql)
                .collect::<Vec<_>>()
                .join(" "),
        )
    })
}

/// The seed's index on used_minutes: nothing reads by it, and it makes every increment a
/// non-HOT update.
pub(super) async fn used_minutes_index(client: &impl GenericClient) -> Result<Check, DbError> {
    const NAME: &str = "used_minutes index";
    let rows = client
        .query(USED_MINUTES_INDEXES, &[])
        .await
        .context("look for indexes on used_minutes")?;
    if rows.is_empty() {
        return Ok(Check::ok(
            NAME,
            "no index on organizations.used_minutes: increments can be HOT updates",
        ));
    }
    let names: Vec<String> = rows
        .iter()
        .map(|r| r.get::<_, String>("index_name"))
        .collect();
    let bytes: i64 = rows.iter().map(|r| r.get::<_, i64>("index_bytes")).sum();
    let updates: i64 = rows[0].get("updates");
    let hot: i64 = rows[0].get("hot_updates");
    Ok(Check::warn(
        NAME,
        format!(
            "{} ({} KiB) on used_minutes: every increment changes an indexed column, so none can \
             be HOT; organizations: {hot} of {updates} updates HOT since statistics were reset",
            names.join(", "),
            bytes / 1024
        ),
        names
            .iter()
            .map(|n| format!("DROP INDEX CONCURRENTLY public.{n};"))
            .collect::<Vec<_>>()
            .join(" "),
    ))
}
