//! `status`: the latest passes from `reconciler.runs` (what each found and did, how it ended)
//! and the time since the last successful one, as a table or as JSON (`--json`). Its SQL is in
//! `sql/` beside this file.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::db::{migrations, Database, DbError, QueryContext};

const RECENT_RUNS: &str = include_str!("sql/recent_runs.sql");
const LAST_SUCCESS: &str = include_str!("sql/last_success.sql");

/// One row of `reconciler.runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub id: Uuid,
    pub mode: String,
    /// `sweep` (every organization), `incremental` (those in the change log) or `revert`.
    pub kind: String,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub status: String,
    pub orgs_checked: Option<i32>,
    pub drifted: Option<i32>,
    pub repaired: Option<i32>,
    pub lost_race: Option<i32>,
    pub orphans_fixed: Option<i32>,
    pub orphans_left: Option<i32>,
    pub error: Option<String>,
    /// For a `revert` run: the run it undid.
    pub reverted_run_id: Option<Uuid>,
    /// Counters reset at a calendar-month boundary (not drift).
    pub period_resets: Option<i32>,
    /// Organizations whose ledgers disagreed at this pass.
    pub ledger_mismatches: Option<i32>,
}

/// What `status` prints.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub last_success_at: Option<DateTime<Utc>>,
    pub seconds_since_last_success: Option<i64>,
    /// Organizations whose calls and usage_metrics ledgers disagree now (as of the latest
    /// pass), and since when the oldest of them does.
    pub ledger_mismatches: i64,
    pub oldest_mismatch_at: Option<DateTime<Utc>>,
    pub runs: Vec<RunSummary>,
}

/// Read the latest `limit` runs.
///
/// # Errors
/// Unreachable or unmigrated database.
pub async fn status(db: &Database, limit: i64) -> Result<StatusReport, DbError> {
    let client = db.client().await?;
    migrations::ensure_current(&**client).await?;
    let rows = client
        .query(RECENT_RUNS, &[&limit])
        .await
        .context("read reconciler.runs")?;
    // Read apart from the listed rows: the last success may be older than all of them.
    let last = client
        .query_one(LAST_SUCCESS, &[])
        .await
        .context("read the last successful pass")?;
    let last_success_at: Option<DateTime<Utc>> = last.get("last_success_at");
    let now: DateTime<Utc> = last.get("now");
    let runs = rows
        .iter()
        .map(|r| RunSummary {
            id: r.get("id"),
            mode: r.get("mode"),
            kind: r.get("kind"),
            host: r.get("host"),
            started_at: r.get("started_at"),
            finished_at: r.get("finished_at"),
            duration_ms: r.get("duration_ms"),
            status: r.get("status"),
            orgs_checked: r.get("orgs_checked"),
            drifted: r.get("drifted"),
            repaired: r.get("repaired"),
            lost_race: r.get("lost_race"),
            orphans_fixed: r.get("orphans_fixed"),
            orphans_left: r.get("orphans_left"),
            error: r.get("error"),
            reverted_run_id: r.get("reverted_run_id"),
            period_resets: r.get("period_resets"),
            ledger_mismatches: r.get("ledger_mismatches"),
        })
        .collect();
    Ok(StatusReport {
        seconds_since_last_success: last_success_at.map(|last| (now - last).num_seconds()),
        last_success_at,
        ledger_mismatches: last.get("ledger_mismatches"),
        oldest_mismatch_at: last.get("oldest_mismatch_at"),
        runs,
    })
}

fn or_dash<T: fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// What the status column adds: the error, the run a revert undid, month resets.
fn run_note(run: &RunSummary) -> String {
    let mut note = String::new();
    if let Some(error) = &run.error {
        note.push_str(&format!(": {error}"));
    }
    if let Some(reverted) = run.reverted_run_id {
        note.push_str(&format!(" (reverted {reverted})"));
    }
    if let Some(resets) = run.period_resets.filter(|n| *n > 0) {
        note.push_str(&format!(" ({resets} month resets)"));
    }
    note
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.last_success_at, self.seconds_since_last_success) {
            (Some(at), Some(ago)) => writeln!(
                f,
                "last successful pass: {} ({ago} s ago)",
                at.format("%Y-%m-%dT%H:%M:%SZ")
            )?,
            _ => writeln!(f, "last successful pass: never")?,
        }
        match (self.ledger_mismatches, self.oldest_mismatch_at) {
            (0, _) | (_, None) => writeln!(f, "ledger mismatches: none")?,
            (n, Some(since)) => writeln!(
                f,
                "ledger mismatches: {n} organizations (calls and usage_metrics disagree; the \
                 oldest since {})",
                since.format("%Y-%m-%dT%H:%M:%SZ")
            )?,
        }
        if self.runs.is_empty() {
            return writeln!(f, "no passes recorded yet");
        }
        writeln!(
            f,
            "{:<36}  {:<6}  {:<11}  {:<20}  {:>8}  {:>7}  {:>7}  {:>8}  {:>9}  {:>7}  {:>7}  status",
            "run id",
            "mode",
            "kind",
            "started (UTC)",
            "ms",
            "orgs",
            "drifted",
            "repaired",
            "lost race",
            "orph+",
            "orph-"
        )?;
        for run in &self.runs {
            writeln!(
                f,
                "{:<36}  {:<6}  {:<11}  {:<20}  {:>8}  {:>7}  {:>7}  {:>8}  {:>9}  {:>7}  {:>7}  {}{}",
                run.id,
                run.mode,
                run.kind,
                run.started_at.format("%Y-%m-%dT%H:%M:%SZ"),
                or_dash(run.duration_ms),
                or_dash(run.orgs_checked),
                or_dash(run.drifted),
                or_dash(run.repaired),
                or_dash(run.lost_race),
                or_dash(run.orphans_fixed),
                or_dash(run.orphans_left),
                run.status,
                run_note(run)
            )?;
        }
        Ok(())
    }
}
