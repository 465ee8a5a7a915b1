//! Data checks, the incident's verification checklist: the counter column, counters in sync
//! with the truth ledger and the two ledgers with each other (through the pass's own
//! comparison), orphaned calls and bad durations, orphaned users.

use tokio_postgres::GenericClient;

use super::report::Check;
use crate::config::{Settings, Source};
use crate::db::{schema, DbError, QueryContext};
use crate::reconcile::mismatch::LedgerMismatch;
use crate::reconcile::queries::{self, PassQueries};
use crate::reconcile::scan::{self, ScanArgs};
use crate::reconcile::usage::{self, OrgUsage, UsageScan};
use crate::telemetry::{error_chain, OrNull};

const USED_MINUTES_COLUMN: &str = include_str!("sql/used_minutes_column.sql");
const NULL_COUNTERS: &str = include_str!("sql/null_counters.sql");
const ORPHANS: &str = include_str!("sql/orphans.sql");

/// How many of the worst drifted organizations a check names.
const WORST: usize = 5;

pub(super) async fn used_minutes_column(client: &impl GenericClient) -> Result<Check, DbError> {
    const NAME: &str = "used_minutes column";
    let row = client
        .query_opt(USED_MINUTES_COLUMN, &[])
        .await
        .context("look for organizations.used_minutes")?;
    let Some(row) = row else {
        return Ok(Check::fail(
            NAME,
            "public.organizations.used_minutes does not exist: the app's increments fail",
            "synqall-reconciler migrate (V1 adds it without rewriting the table)",
        ));
    };
    let data_type: String = row.get(0);
    let nulls: i64 = client
        .query_one(NULL_COUNTERS, &[])
        .await
        .context("count NULL counters")?
        .get(0);
    let detail = format!("present ({data_type}), {nulls} organization(s) with NULL");
    let check = if data_type != "integer" && data_type != "bigint" {
        Check::warn(
            NAME,
            detail,
            "used_minutes should be integer, as the seed and increment_used_minutes define it",
        )
    } else if nulls > 0 {
        Check::warn(
            NAME,
            detail,
            "synqall-reconciler --reconcile-now (a NULL counter is drift and is repaired)",
        )
    } else {
        Check::ok(NAME, detail)
    };
    Ok(check
        .fact("data_type", data_type)
        .fact("null_counters", nulls))
}

const SYNC: &str = "counters in sync";
const LEDGERS: &str = "ledgers agree";

/// The seed's "organizations have synced used_minutes" and the ledger cross-check, through the
/// pass's own comparison (same period, source and rounding as the daemon).
pub(super) async fn usage_checks(client: &impl GenericClient, settings: &Settings) -> Vec<Check> {
    let scan = async {
        let app_schema = schema::inspect(client).await?;
        let queries = PassQueries::new(&app_schema, &settings.usage);
        let period_start = usage::period_start(settings.usage.period, chrono::Utc::now());
        let args = ScanArgs {
            period_start,
            known_statuses: &settings.usage.known_statuses,
            orgs: None,
        };
        let (scan, changes) = scan::collect(client, &queries, &args).await?;
        let mismatches = current_mismatches(client, &changes).await?;
        Ok::<_, DbError>((scan, mismatches))
    };
    let (scan, mismatches) = match scan.await {
        Ok(found) => found,
        Err(e) => {
            let why = error_chain(&e);
            return vec![
                Check::not_checked(SYNC, &why),
                Check::not_checked(LEDGERS, &why),
            ];
        }
    };
    let source = settings.usage.source;
    let mut checks = vec![
        counters_in_sync(&scan, settings),
        ledgers_agree(&mismatches, source),
        call_statuses(&scan),
    ];
    if source == Source::UsageMetrics && scan.unowned_metric_minutes > 0 {
        checks.push(
            Check::warn(
                "usage_metrics without organization",
                format!(
                    "{} minutes in rows with NULL organization_id",
                    scan.unowned_metric_minutes
                ),
                "these minutes count for nobody; attribute the rows by hand",
            )
            .fact("unowned_metric_minutes", scan.unowned_metric_minutes),
        );
    }
    checks
}

/// Calls of a status the configuration does not know are not counted: name them.
fn call_statuses(scan: &UsageScan) -> Check {
    const NAME: &str = "call statuses";
    if scan.unknown_statuses.is_empty() {
        return Check::ok(NAME, "every call has a status in usage.known_statuses")
            .fact("uncounted_calls", 0);
    }
    let uncounted: i64 = scan.unknown_statuses.iter().map(|(_, n)| n).sum();
    let listed = scan
        .unknown_statuses
        .iter()
        .map(|(status, n)| match status {
            Some(status) => format!("{status:?}: {n}"),
            None => format!("NULL: {n}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    Check::warn(
        NAME,
        format!("calls with a status not in usage.known_statuses, not counted: {listed}"),
        "fix the app's status values (\"Completed\" and \" completed\" are not \"completed\"), \
         or add a status the app really uses to usage.known_statuses; where such calls were \
         billed, the pass lowers the counter",
    )
    .fact("uncounted_calls", uncounted)
}

/// Drifted counters, the worst named with their numbers.
fn counters_in_sync(scan: &UsageScan, settings: &Settings) -> Check {
    let source = settings.usage.source;
    let mut drifted: Vec<&OrgUsage> = scan
        .disagreeing
        .iter()
        .filter(|o| o.is_drifted(source))
        .collect();
    drifted.sort_by_key(|o| std::cmp::Reverse(o.delta(source).unsigned_abs()));
    let basis = format!(
        "period {}, truth {}",
        settings.usage.period.as_str(),
        source.as_str()
    );
    if drifted.is_empty() {
        return Check::ok(
            SYNC,
            format!("all {} organizations match ({basis})", scan.orgs_checked),
        )
        .fact("orgs_checked", scan.orgs_checked)
        .fact("drifted", 0);
    }
    let worst = drifted
        .iter()
        .take(WORST)
        .map(|o| {
            format!(
                "{} {} stored={} expected={} delta={}",
                o.org_id,
                o.name
                    .as_deref()
                    .map_or_else(|| "NULL".to_string(), |n| format!("{n:?}")),
                OrNull(o.stored),
                o.expected(source),
                o.delta(source)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Check::warn(
        SYNC,
        format!(
            "{} of {} organizations drift ({basis}); worst: {worst}",
            drifted.len(),
            scan.orgs_checked
        ),
        "synqall-reconciler --reconcile-now (or wait for the daemon's next pass); \
         a drift that persists across passes is an increment the app keeps losing",
    )
    .fact("orgs_checked", scan.orgs_checked)
    .fact("drifted", drifted.len())
    .fact(
        "minutes_missing",
        drifted.iter().map(|o| o.delta(source).max(0)).sum::<i64>(),
    )
    .fact(
        "minutes_overbilled",
        drifted
            .iter()
            .map(|o| (-o.delta(source)).max(0))
            .sum::<i64>(),
    )
}

/// The organizations whose ledgers disagree now: the recorded state (as of the last pass) with
/// the changes the comparison found since. Their count, and a few named.
struct Mismatches {
    count: i64,
    first: Vec<(uuid::Uuid, i64, i64)>,
}

async fn current_mismatches(
    client: &impl GenericClient,
    changes: &[LedgerMismatch],
) -> Result<Mismatches, DbError> {
    let changed: Vec<uuid::Uuid> = changes.iter().map(|c| c.org_id).collect();
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE NOT (organization_id = ANY ($1))) FROM \
             reconciler.ledger_mismatches",
            &[&changed],
        )
        .await
        .context("count the recorded ledger mismatches")?;
    let unchanged: i64 = row.get(0);
    let open: Vec<&LedgerMismatch> = changes.iter().filter(|c| c.is_open()).collect();
    let mut first: Vec<(uuid::Uuid, i64, i64)> = open
        .iter()
        .take(WORST)
        .map(|c| (c.org_id, c.calls_minutes, c.metrics_minutes))
        .collect();
    if first.len() < WORST {
        let more = client
            .query(
                "SELECT organization_id, calls_minutes, metrics_minutes \
                   FROM reconciler.ledger_mismatches \
                  WHERE NOT (organization_id = ANY ($1)) ORDER BY first_seen_at LIMIT $2",
                &[&changed, &((WORST - first.len()) as i64)],
            )
            .await
            .context("read the recorded ledger mismatches")?;
        first.extend(more.iter().map(|r| (r.get(0), r.get(1), r.get(2))));
    }
    Ok(Mismatches {
        count: unchanged + open.len() as i64,
        first,
    })
}

/// Organizations whose two ledgers disagree, the first named.
fn ledgers_agree(mismatches: &Mismatches, source: Source) -> Check {
    if mismatches.count == 0 {
        return Check::ok(
            LEDGERS,
            "calls and usage_metrics agree for every organization",
        )
        .fact("mismatches", 0);
    }
    let worst = mismatches
        .first
        .iter()
        .map(|(org, calls, metrics)| format!("{org} calls={calls} usage_metrics={metrics}"))
        .collect::<Vec<_>>()
        .join("; ");
    Check::warn(
        LEDGERS,
        format!(
            "{} organization(s) where completed calls and minutes_transcribed differ; {worst}",
            mismatches.count
        ),
        format!(
            "look at these organizations' calls and usage_metrics rows; counters follow \
             usage.source = {} and the other ledger is only reported",
            source.as_str()
        ),
    )
    .fact("mismatches", mismatches.count)
}

/// The seed's "orphaned calls" check, extended to calls not completed, and bad durations.
pub(super) async fn orphans(client: &impl GenericClient) -> Result<Vec<Check>, DbError> {
    let row = client
        .query_one(ORPHANS, &[])
        .await
        .context("count orphaned calls")?;
    let completed: i64 = row.get("orphaned_completed");
    let other: i64 = row.get("orphaned_other");
    let nulls: i64 = row.get("null_durations");
    let negatives: i64 = row.get("negative_durations");
    let invalid: i64 = row.get("invalid_durations");
    let invalid_metrics: i64 = row.get("invalid_metric_values");
    let detail = format!("{completed} completed and {other} other call(s) without organization_id");
    let orphans = if completed + other == 0 {
        Check::ok("orphaned calls", detail)
    } else {
        Check::warn(
            "orphaned calls",
            detail,
            "synqall-reconciler --reconcile-now attributes those with one possible organization; \
             the rest are named in `WARN orphaned call ambiguous` / `without membership` lines \
             and need a human decision",
        )
    }
    .fact("orphaned_completed", completed)
    .fact("orphaned_other", other);
    let detail = format!(
        "{nulls} completed call(s) with NULL duration_minutes, {negatives} negative, {invalid} \
         not a usable number (NaN, infinite, beyond bigint), all counted as 0; \
         {invalid_metrics} minutes_transcribed row(s) with an unusable metric_value (left out)"
    );
    let durations = if nulls + negatives + invalid + invalid_metrics == 0 {
        Check::ok("call durations", detail)
    } else {
        Check::warn(
            "call durations",
            detail,
            "correct these calls' duration_minutes (and those usage_metrics values); the \
             counters follow on the next pass",
        )
    }
    .fact("null_durations", nulls)
    .fact("negative_durations", negatives)
    .fact("invalid_durations", invalid)
    .fact("invalid_metric_values", invalid_metrics);
    Ok(vec![orphans, durations])
}

pub(super) async fn orphaned_users(client: &impl GenericClient) -> Check {
    const NAME: &str = "orphaned users";
    match client.query_one(queries::ORPHANED_USERS, &[]).await {
        Ok(row) => {
            let n: i64 = row.get(0);
            let detail = format!("{n} user(s) in auth.users without any organization");
            let check = if n == 0 {
                Check::ok(NAME, detail)
            } else {
                Check::warn(
                    NAME,
                    detail,
                    "the invitation flow should give every user an organization; their calls \
                     cannot be attributed until it does",
                )
            };
            check.fact("orphaned_users", n)
        }
        Err(e) => Check::not_checked(NAME, error_chain(&e)),
    }
}
