//! `doctor`: the incident write-up's verification checklist and the security checks, automated.
//! Each check prints `OK`, `WARN` or `FAIL` with its numbers and, when not OK, the fix.
//!
//! FAIL is for what is broken or exploitable (an unmigrated database, a hijackable or
//! over-granted `increment_used_minutes`, an exposed journal, a stalled reconciler); WARN is for
//! what a pass repairs or a human should look at (drift, orphans, ledger mismatch, a missing
//! index). `doctor` writes nothing: the function's input checks are probed in transactions that
//! are rolled back. A check that cannot run (privileges, a missing table) is a WARN saying so;
//! the others still run.

use std::fmt;

use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::config::{DatabaseTarget, Settings, Source};
use crate::db::{migrations, schema, Database, DbError, QueryContext};
use crate::reconcile::queries::{self, PassQueries};
use crate::reconcile::report::OrNull;
use crate::reconcile::usage;

const FUNCTION: &str = include_str!("sql/function.sql");
const ORPHANS: &str = include_str!("sql/orphans.sql");
const LAST_SUCCESS: &str = include_str!("sql/last_success.sql");
const LEADING_INDEX: &str = include_str!("sql/leading_index.sql");
const USED_MINUTES_INDEXES: &str = include_str!("sql/used_minutes_indexes.sql");
const JOURNAL_EXPOSURE: &str = include_str!("sql/journal_exposure.sql");

/// How many of the worst drifted organizations a check names.
const WORST: usize = 5;

/// The outcome of one check, worst last (so `max` is the overall verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    /// What was found, with the numbers.
    pub detail: String,
    /// What to do about it (absent when OK).
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            verdict: Verdict::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            verdict: Verdict::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            verdict: Verdict::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// A check that could not run is a WARN naming why: never a silent OK.
    fn not_checked(name: &'static str, why: impl fmt::Display) -> Self {
        Self::warn(
            name,
            format!("not checked: {why}"),
            "run doctor as the database owner (or a role that can read this), or fix the cause above",
        )
    }
}

/// Everything `doctor` found.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    pub database: String,
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// Some check FAILed (exit 2).
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.verdict == Verdict::Fail)
    }

    fn count(&self, verdict: Verdict) -> usize {
        self.checks.iter().filter(|c| c.verdict == verdict).count()
    }
}

/// Run every check.
///
/// # Errors
/// Only when the database cannot be reached at all; a failing check is a line of the report.
pub async fn doctor(
    db: &Database,
    settings: &Settings,
    target: &DatabaseTarget,
) -> Result<DoctorReport, DbError> {
    let conn = db.dedicated().await?;
    let client = &conn.client;
    let mut checks = vec![connection(client, settings).await];
    let migrated = migrations::ensure_current(client).await;
    checks.push(migrations_check(&migrated));
    let migrated = migrated.is_ok();
    checks.push(or_not_checked(
        "used_minutes column",
        used_minutes_column(client).await,
    ));
    checks.push(or_not_checked(
        "increment_used_minutes",
        function(client, migrated).await,
    ));
    if migrated {
        checks.push(or_not_checked(
            "journal privileges",
            journal_privileges(client).await,
        ));
    }
    checks.extend(usage_checks(client, settings).await);
    checks.extend(or_not_checked_many("orphaned calls", orphans(client).await));
    checks.push(orphaned_users(client).await);
    checks.push(if migrated {
        or_not_checked("last successful pass", last_success(client, settings).await)
    } else {
        Check::fail(
            "last successful pass",
            "no reconciler journal in this database",
            "synqall-reconciler migrate, then start the daemon (or --reconcile-now)",
        )
    });
    checks.push(or_not_checked("indexes", indexes(client, settings).await));
    checks.push(or_not_checked(
        "used_minutes index",
        used_minutes_index(client).await,
    ));
    Ok(DoctorReport {
        database: target.describe(),
        checks,
    })
}

fn or_not_checked(name: &'static str, result: Result<Check, DbError>) -> Check {
    result.unwrap_or_else(|e| Check::not_checked(name, crate::telemetry::error_chain(&e)))
}

fn or_not_checked_many(name: &'static str, result: Result<Vec<Check>, DbError>) -> Vec<Check> {
    result.unwrap_or_else(|e| vec![Check::not_checked(name, crate::telemetry::error_chain(&e))])
}

/// Session state must survive between statements: a transaction pooler would hand the next
/// statement to another backend, and the pass's advisory lock would mean nothing.
async fn connection(client: &tokio_postgres::Client, settings: &Settings) -> Check {
    const NAME: &str = "connection";
    let probe = async {
        let first = client
            .query_one(
                "SELECT pg_catalog.pg_backend_pid(), pg_catalog.current_setting('application_name'),
                        current_user::text, pg_catalog.current_setting('server_version')",
                &[],
            )
            .await
            .context("identify the session")?;
        let second: i32 = client
            .query_one("SELECT pg_catalog.pg_backend_pid()", &[])
            .await
            .context("identify the session again")?
            .get(0);
        Ok::<_, DbError>((
            first.get::<_, i32>(0),
            second,
            first.get::<_, String>(1),
            first.get::<_, String>(2),
            first.get::<_, String>(3),
        ))
    };
    match probe.await {
        Ok((pid, again, app, user, version)) if pid == again => {
            let detail = format!(
                "PostgreSQL {version} as {user}, one backend across statements (pid {pid}), \
                 application_name={app}, lock key {}",
                settings.lock.key
            );
            if app == crate::db::APPLICATION_NAME {
                Check::ok(NAME, detail)
            } else {
                Check::warn(
                    NAME,
                    detail,
                    "a pooler rewrote application_name: connect directly (db.<ref>.supabase.co:5432) \
                     or through the session pooler",
                )
            }
        }
        Ok((pid, again, ..)) => Check::fail(
            NAME,
            format!("statements ran on different backends (pid {pid}, then {again}): a transaction pooler"),
            "use the direct connection (db.<ref>.supabase.co:5432) or the session pooler; \
             the transaction pooler cannot hold the advisory lock",
        ),
        Err(e) => Check::not_checked(NAME, crate::telemetry::error_chain(&e)),
    }
}

fn migrations_check(result: &Result<(), DbError>) -> Check {
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
        Err(e) => Check::not_checked(NAME, crate::telemetry::error_chain(e)),
    }
}

async fn used_minutes_column(client: &impl GenericClient) -> Result<Check, DbError> {
    const NAME: &str = "used_minutes column";
    let row = client
        .query_opt(
            "SELECT data_type::text FROM information_schema.columns
              WHERE table_schema = 'public' AND table_name = 'organizations'
                AND column_name = 'used_minutes'",
            &[],
        )
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
        .query_one(
            "SELECT count(*) FROM public.organizations WHERE used_minutes IS NULL",
            &[],
        )
        .await
        .context("count NULL counters")?
        .get(0);
    let detail = format!("present ({data_type}), {nulls} organization(s) with NULL");
    Ok(if data_type != "integer" && data_type != "bigint" {
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
    })
}

/// The seed's function is SECURITY DEFINER with no search_path, executable by PUBLIC, and
/// accepts any input: each of those is a FAIL.
async fn function(client: &tokio_postgres::Client, migrated: bool) -> Result<Check, DbError> {
    const NAME: &str = "increment_used_minutes";
    let fix = if migrated {
        "migrations are applied, so the function was replaced afterwards (the seed SQL re-run?): \
         re-create it with `psql -f migrations/V1__usage_tracking_fix.sql` (re-runnable)"
    } else {
        "synqall-reconciler migrate (V1 replaces it: SET search_path = '', input checks, EXECUTE \
         only for authenticated (own organizations) and service_role)"
    };
    let rows = client
        .query(FUNCTION, &[])
        .await
        .context("inspect increment_used_minutes")?;
    if rows.is_empty() {
        return Ok(Check::fail(
            NAME,
            "public.increment_used_minutes does not exist: the app cannot record usage",
            fix,
        ));
    }
    let mut problems = Vec::new();
    let mut facts = Vec::new();
    let mut probe_note = "";
    for row in &rows {
        let signature: String = row.get("signature");
        let definer: bool = row.get("security_definer");
        let search_path: String = row.get("search_path_setting");
        if definer && search_path.is_empty() {
            problems.push(format!(
                "{signature} is SECURITY DEFINER without a fixed search_path (a caller's objects can hijack it)"
            ));
        }
        if row.get::<_, bool>("public_executes") {
            problems.push(format!("PUBLIC may execute {signature}"));
        }
        if row.get::<_, Option<bool>>("anon_executes") == Some(true) {
            problems.push(format!("anon may execute {signature}"));
        }
        facts.push(format!(
            "{signature}: {}, {}",
            if definer {
                "SECURITY DEFINER"
            } else {
                "SECURITY INVOKER"
            },
            if search_path.is_empty() {
                "no search_path".to_string()
            } else {
                search_path
            }
        ));
        if signature.ends_with("(uuid,integer)") {
            if row.get::<_, bool>("we_execute") {
                problems.extend(probe_input_checks(client).await?);
                probe_note = "rejects NULL/non-positive minutes and unknown organizations \
                              (probed, rolled back)";
            } else {
                probe_note = "input checks not probed: this login may not execute it";
            }
        }
    }
    Ok(if problems.is_empty() {
        Check::ok(
            NAME,
            format!(
                "{}; PUBLIC and anon may not execute it; {probe_note}",
                facts.join("; ")
            ),
        )
    } else {
        Check::fail(NAME, problems.join("; "), fix)
    })
}

/// Call the function with bad input inside a transaction that is rolled back: each call must
/// fail with the expected error, not succeed silently.
async fn probe_input_checks(client: &tokio_postgres::Client) -> Result<Vec<String>, DbError> {
    let unknown_org = Uuid::new_v4();
    let probes: [(&str, Option<Uuid>, Option<i32>, SqlState); 4] = [
        (
            "accepts minutes_to_add = -5",
            Some(unknown_org),
            Some(-5),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "accepts minutes_to_add = NULL",
            Some(unknown_org),
            None,
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "accepts org_id = NULL",
            None,
            Some(1),
            SqlState::NULL_VALUE_NOT_ALLOWED,
        ),
        (
            "accepts an unknown org_id without error",
            Some(unknown_org),
            Some(1),
            SqlState::NO_DATA_FOUND,
        ),
    ];
    let mut problems = Vec::new();
    for (problem, org, minutes, expected) in probes {
        client
            .batch_execute("BEGIN")
            .await
            .context("begin a probe transaction")?;
        let result = client
            .query(
                "SELECT public.increment_used_minutes($1, $2)",
                &[&org, &minutes],
            )
            .await;
        client
            .batch_execute("ROLLBACK")
            .await
            .context("roll the probe back")?;
        match result {
            Ok(_) => problems.push(problem.to_string()),
            Err(e) if e.code() == Some(&expected) => {}
            // Not a member (an authenticated-like login): rejected, which is what matters.
            Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {}
            Err(e) => problems.push(format!("{problem}: unexpected error {e}")),
        }
    }
    Ok(problems)
}

async fn journal_privileges(client: &impl GenericClient) -> Result<Check, DbError> {
    const NAME: &str = "journal privileges";
    let mut problems = Vec::new();
    let mut role_found = false;
    for row in client
        .query(JOURNAL_EXPOSURE, &[])
        .await
        .context("read privileges on the reconciler schema")?
    {
        let role: String = row.get("role");
        if role == "synqall_reconciler" {
            role_found = true;
            for (flag, what) in [
                ("rolsuper", "is a superuser"),
                ("rolbypassrls", "bypasses RLS"),
                (
                    "rolcanlogin",
                    "can log in (log in through a member login instead)",
                ),
            ] {
                if row.get::<_, bool>(flag) {
                    problems.push(format!("synqall_reconciler {what}"));
                }
            }
        } else if row.get::<_, bool>("schema_usage") || row.get::<_, bool>("table_access") {
            problems.push(format!("{role} can reach the reconciler schema"));
        }
    }
    if !role_found {
        problems.push("role synqall_reconciler is missing".into());
    }
    Ok(if problems.is_empty() {
        Check::ok(
            NAME,
            "anon/authenticated cannot reach reconciler.*; synqall_reconciler is NOLOGIN, no superuser, no BYPASSRLS",
        )
    } else {
        Check::fail(
            NAME,
            problems.join("; "),
            "re-apply migrations/V2 and V3 with psql -f (re-runnable), and revoke what was granted by hand",
        )
    })
}

/// The seed's "organizations have synced used_minutes" and the ledger cross-check, through the
/// pass's own comparison (same period, source and rounding as the daemon).
async fn usage_checks(client: &impl GenericClient, settings: &Settings) -> Vec<Check> {
    const SYNC: &str = "counters in sync";
    const LEDGERS: &str = "ledgers agree";
    let scan = async {
        let app_schema = schema::inspect(client).await?;
        let queries = PassQueries::new(&app_schema, &settings.usage);
        let period_start = usage::period_start(settings.usage.period, chrono::Utc::now());
        usage::scan(client, &queries, period_start).await
    };
    let scan = match scan.await {
        Ok(scan) => scan,
        Err(e) => {
            let why = crate::telemetry::error_chain(&e);
            return vec![
                Check::not_checked(SYNC, &why),
                Check::not_checked(LEDGERS, &why),
            ];
        }
    };
    let source = settings.usage.source;
    let mut drifted: Vec<&usage::OrgUsage> = scan
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
    let sync = if drifted.is_empty() {
        Check::ok(
            SYNC,
            format!("all {} organizations match ({basis})", scan.orgs_checked),
        )
    } else {
        let worst = drifted
            .iter()
            .take(WORST)
            .map(|o| {
                format!(
                    "{} {:?} stored={} expected={} delta={}",
                    o.org_id,
                    o.name,
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
    };
    let mismatched: Vec<&usage::OrgUsage> = scan
        .disagreeing
        .iter()
        .filter(|o| o.ledgers_disagree())
        .collect();
    let ledgers = if mismatched.is_empty() {
        Check::ok(
            LEDGERS,
            "calls and usage_metrics agree for every organization",
        )
    } else {
        let worst = mismatched
            .iter()
            .take(WORST)
            .map(|o| {
                format!(
                    "{} calls={} usage_metrics={}",
                    o.org_id, o.calls_minutes, o.metrics_minutes
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        Check::warn(
            LEDGERS,
            format!(
                "{} organization(s) where completed calls and minutes_transcribed differ; {worst}",
                mismatched.len()
            ),
            format!(
                "look at these organizations' calls and usage_metrics rows; counters follow \
                 usage.source = {} and the other ledger is only reported",
                source.as_str()
            ),
        )
    };
    let mut checks = vec![sync, ledgers];
    if source == Source::UsageMetrics && scan.unowned_metric_minutes > 0 {
        checks.push(Check::warn(
            "usage_metrics without organization",
            format!(
                "{} minutes in rows with NULL organization_id",
                scan.unowned_metric_minutes
            ),
            "these minutes count for nobody; attribute the rows by hand",
        ));
    }
    checks
}

/// The seed's "orphaned calls" check, extended to calls not completed, and bad durations.
async fn orphans(client: &impl GenericClient) -> Result<Vec<Check>, DbError> {
    let row = client
        .query_one(ORPHANS, &[])
        .await
        .context("count orphaned calls")?;
    let completed: i64 = row.get("orphaned_completed");
    let other: i64 = row.get("orphaned_other");
    let nulls: i64 = row.get("null_durations");
    let negatives: i64 = row.get("negative_durations");
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
    };
    let detail = format!(
        "{nulls} completed call(s) with NULL duration_minutes, {negatives} negative (counted as 0)"
    );
    let durations = if nulls + negatives == 0 {
        Check::ok("call durations", detail)
    } else {
        Check::warn(
            "call durations",
            detail,
            "correct these calls' duration_minutes; the counters follow on the next pass",
        )
    };
    Ok(vec![orphans, durations])
}

async fn orphaned_users(client: &impl GenericClient) -> Check {
    const NAME: &str = "orphaned users";
    match client.query_one(queries::ORPHANED_USERS, &[]).await {
        Ok(row) => {
            let n: i64 = row.get(0);
            let detail = format!("{n} user(s) in auth.users without any organization");
            if n == 0 {
                Check::ok(NAME, detail)
            } else {
                Check::warn(
                    NAME,
                    detail,
                    "the invitation flow should give every user an organization; their calls \
                     cannot be attributed until it does",
                )
            }
        }
        Err(e) => Check::not_checked(NAME, e),
    }
}

async fn last_success(client: &impl GenericClient, settings: &Settings) -> Result<Check, DbError> {
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
            if age > stalled_after {
                Check::fail(
                    NAME,
                    format!("{detail}; older than alert.stalled_after_seconds = {stalled_after}"),
                    "systemctl status synqall-reconciler; journalctl -u synqall-reconciler | \
                     grep -E 'CRITICAL|ERROR'",
                )
            } else {
                Check::ok(NAME, detail)
            }
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
async fn indexes(client: &impl GenericClient, settings: &Settings) -> Result<Check, DbError> {
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
async fn used_minutes_index(client: &impl GenericClient) -> Result<Check, DbError> {
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

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "synqall-reconciler doctor: {}", self.database)?;
        for check in &self.checks {
            writeln!(
                f,
                "{:<5} {:<24} {}",
                check.verdict.label(),
                check.name,
                check.detail
            )?;
            if let Some(fix) = &check.fix {
                writeln!(f, "{:<30} fix: {fix}", "")?;
            }
        }
        writeln!(
            f,
            "{} FAIL, {} WARN, {} OK",
            self.count(Verdict::Fail),
            self.count(Verdict::Warn),
            self.count(Verdict::Ok)
        )
    }
}
