//! `status`: the latest passes from `reconciler.runs` (what each found and did, how it ended)
//! and the time since the last successful one, as a table or as JSON (`--json`).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::db::{migrations, Database, DbError, QueryContext};

const RECENT_RUNS: &str = include_str!("reconcile/sql/recent_runs.sql");

/// One row of `reconciler.runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub id: Uuid,
    pub mode: String,
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
}

/// What `status` prints.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub last_success_at: Option<DateTime<Utc>>,
    pub seconds_since_last_success: Option<i64>,
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
    let last_success_at: Option<DateTime<Utc>> = rows.first().and_then(|r| r.get(14));
    let now: Option<DateTime<Utc>> = rows.first().map(|r| r.get(15));
    let runs = rows
        .iter()
        .map(|r| RunSummary {
            id: r.get(0),
            mode: r.get(1),
            host: r.get(2),
            started_at: r.get(3),
            finished_at: r.get(4),
            duration_ms: r.get(5),
            status: r.get(6),
            orgs_checked: r.get(7),
            drifted: r.get(8),
            repaired: r.get(9),
            lost_race: r.get(10),
            orphans_fixed: r.get(11),
            orphans_left: r.get(12),
            error: r.get(13),
            reverted_run_id: r.get(16),
            period_resets: r.get(17),
        })
        .collect();
    Ok(StatusReport {
        seconds_since_last_success: last_success_at
            .zip(now)
            .map(|(last, now)| (now - last).num_seconds()),
        last_success_at,
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
        if self.runs.is_empty() {
            return writeln!(f, "no passes recorded yet");
        }
        writeln!(
            f,
            "{:<36}  {:<6}  {:<20}  {:>8}  {:>7}  {:>7}  {:>8}  {:>9}  {:>7}  {:>7}  status",
            "run id",
            "mode",
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
                "{:<36}  {:<6}  {:<20}  {:>8}  {:>7}  {:>7}  {:>8}  {:>9}  {:>7}  {:>7}  {}{}",
                run.id,
                run.mode,
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
