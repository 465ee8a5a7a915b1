//! `reconciler.runs`: one row per pass that took the lock and was not a dry run, opened at the
//! start (`status = running`) and closed with its outcome and counts. The per-correction journal
//! rows (`adjustments`, `call_repairs`) are written by the statements that make the corrections.

use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::outcome::{PassKind, RunMode};
use super::queries::{CLOSE_ABANDONED_RUNS, FINISH_RUN, INSERT_RUN};
use super::report::PassReport;
use crate::config::{Period, Source};
use crate::db::lock::Fence;
use crate::db::{host_name, DbError, QueryContext};

/// Final status of a run row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Every drift found was repaired (or there was none).
    Ok,
    /// Drift was found and not all of it repaired: failed, refused or raced repairs.
    Partial,
    /// The mass-correction guard held every repair back.
    Refused,
    Failed,
    Cancelled,
}

impl RunStatus {
    /// The journal's spelling (`reconciler.runs.status`), also the metrics outcome.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Partial => "partial",
            Self::Refused => "refused",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// How a pass that ran to its end (or was cancelled) is recorded.
    pub fn of(report: &PassReport) -> Self {
        if report.cancelled {
            Self::Cancelled
        } else if report.mass_correction.is_some() && !report.dry_run {
            Self::Refused
        } else if report.partial() {
            Self::Partial
        } else {
            Self::Ok
        }
    }
}

/// Open the run row, first closing rows of runs that were abandoned (safe: the caller holds the
/// advisory lock, so no other pass is running).
///
/// # Errors
/// The statements failed.
pub async fn open_run(
    client: &impl GenericClient,
    run_id: Uuid,
    (mode, kind): (RunMode, PassKind),
    period: Period,
    source: Source,
    fence: Fence,
) -> Result<(), DbError> {
    let abandoned = client
        .query(CLOSE_ABANDONED_RUNS, &[&fence.key, &fence.pid])
        .await
        .context("close abandoned runs")?;
    for row in &abandoned {
        let abandoned_id: Uuid = row.get(0);
        tracing::warn!(
            abandoned_run_id = %abandoned_id,
            "closed a run left 'running' by a process that ended before finishing it"
        );
    }
    let inserted = client
        .execute(
            INSERT_RUN,
            &[
                &run_id,
                &mode.as_str(),
                &env!("CARGO_PKG_VERSION"),
                &host_name(),
                &period.as_str(),
                &source.as_str(),
                &fence.key,
                &fence.pid,
                &kind.as_str(),
            ],
        )
        .await
        .context("record the run in reconciler.runs")?;
    if inserted == 0 {
        return Err(DbError::Fenced);
    }
    Ok(())
}

/// Close the run row with the report's counts.
///
/// # Errors
/// The update failed.
pub async fn close_run(
    client: &impl GenericClient,
    report: &PassReport,
    status: RunStatus,
    error: Option<&str>,
    fence: Fence,
) -> Result<(), DbError> {
    let n = |v: u64| i32::try_from(v).unwrap_or(i32::MAX);
    let closed = client
        .execute(
            FINISH_RUN,
            &[
                &report.run_id,
                &status.as_str(),
                &i32::try_from(report.orgs_checked).unwrap_or(i32::MAX),
                &n(report.drifted),
                &n(report.repaired),
                &n(report.lost_race),
                &n(report.orphans_fixed),
                &n(report.orphans_left()),
                &error,
                &n(report.period_resets),
                &n(report.failed),
                &n(report.refused),
                &fence.key,
                &fence.pid,
                &n(report.ledger_mismatches),
                &report.billed_minutes,
            ],
        )
        .await
        .context("close the run in reconciler.runs")?;
    if closed == 0 && !fence.holds(client).await? {
        return Err(DbError::Fenced);
    }
    Ok(())
}
