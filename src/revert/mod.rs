//! `revert RUN_ID`: undo one run's corrections, each only where the value is still the one the
//! run wrote (compare-and-set), and journal the undo.
//!
//! A revert is a run of its own (`reconciler.runs.mode = 'revert'`, `reverted_run_id`); every
//! counter and attribution it restores is a journal row pointing at the row it undoes, and a
//! unique index makes undoing the same row twice impossible, so a second revert is a no-op.
//! Everything happens in one transaction under the pass's advisory lock: no pass runs meanwhile,
//! and a failed revert leaves nothing half-restored.
//!
//! Skipped, with the reason printed: a counter changed after the run (the app incremented it,
//! or a later pass corrected it again), a call whose organization changed, rows deleted since.

use std::collections::HashSet;
use std::fmt;

use tokio_postgres::Transaction;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::Settings;
use crate::db::lock::{AdvisoryLock, Fence};
use crate::db::{host_name, migrations, Database, DbError, QueryContext};
use crate::telemetry::{LineBudget, OrNull};

const FIND_RUN: &str = include_str!("sql/find_run.sql");
const LOCK_ORGS: &str = include_str!("sql/lock_orgs.sql");
const LOCK_CALLS: &str = include_str!("sql/lock_calls.sql");
const COUNTER_CHANGES: &str = include_str!("sql/counter_changes.sql");
const CALL_CHANGES: &str = include_str!("sql/call_changes.sql");
const INSERT_REVERT_RUN: &str = include_str!("sql/insert_revert_run.sql");
const RESTORE_COUNTERS: &str = include_str!("sql/restore_counters.sql");
const RESTORE_CALLS: &str = include_str!("sql/restore_calls.sql");
const FINISH_REVERT_RUN: &str = include_str!("sql/finish_revert_run.sql");

/// Why a revert could not start.
#[derive(Debug, thiserror::Error)]
pub enum RevertError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("no run {0} in reconciler.runs (`synqall-reconciler status` lists them)")]
    UnknownRun(Uuid),
    #[error(
        "run {run} is itself a revert (of run {of}); run a pass to recompute the counters instead"
    )]
    RevertOfRevert { run: Uuid, of: String },
}

/// How a revert ended.
#[derive(Debug)]
pub enum RevertOutcome {
    /// A pass holds the advisory lock; nothing was done.
    LockHeld,
    Done(RevertReport),
}

/// What a revert restored and what it left alone.
#[derive(Debug, Default)]
pub struct RevertReport {
    pub reverted_run_id: Uuid,
    /// The revert's own run row; `None` when there was nothing to restore (nothing written).
    pub revert_run_id: Option<Uuid>,
    pub counters: Vec<RestoredCounter>,
    pub calls: Vec<RestoredCall>,
    pub skipped: Vec<Skipped>,
    /// Journal rows an earlier revert already undid.
    pub already_reverted: u64,
}

impl RevertReport {
    /// Something could not be restored because it changed after the run.
    pub fn anything_skipped(&self) -> bool {
        !self.skipped.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct RestoredCounter {
    pub org_id: Uuid,
    pub org_name: String,
    /// What the run wrote (and the counter held until now).
    pub from: Option<i64>,
    /// What it held before the run, now back.
    pub to: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct RestoredCall {
    pub call_id: Uuid,
    pub from: Option<Uuid>,
    pub to: Option<Uuid>,
}

/// A change of the run left as it is.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// `org <id>` or `call <id>`.
    pub what: String,
    pub reason: String,
}

/// Undo run `run_id`'s corrections.
///
/// # Errors
/// Unknown run, a revert of a revert, or a database failure (nothing restored then).
pub async fn revert(
    db: &Database,
    settings: &Settings,
    run_id: Uuid,
) -> Result<RevertOutcome, RevertError> {
    let mut client = db.client().await?;
    migrations::ensure_current(&**client).await?;
    let Some(lock) = AdvisoryLock::try_acquire(db, settings.lock.key, settings.lease()).await?
    else {
        info!(
            lock_key = settings.lock.key,
            "revert not started: the advisory lock is held by a running pass; try again"
        );
        return Ok(RevertOutcome::LockHeld);
    };
    let result = async {
        let tx = client
            .transaction()
            .await
            .context("begin the revert transaction")?;
        let report = revert_in(&tx, run_id, lock.fence()).await?;
        if report.revert_run_id.is_some() {
            tx.commit().await.context("commit the revert")?;
        }
        Ok::<_, RevertError>(report)
    }
    .await;
    lock.release().await;
    let report = result?;
    log_report(&report, settings.alert.max_critical_lines_per_pass);
    Ok(RevertOutcome::Done(report))
}

/// The revert inside its transaction; writes only when something is restored.
async fn revert_in(
    tx: &Transaction<'_>,
    run_id: Uuid,
    fence: Fence,
) -> Result<RevertReport, RevertError> {
    let run = find_run(tx, run_id).await?;
    let mut report = RevertReport {
        reverted_run_id: run_id,
        ..RevertReport::default()
    };
    // Locks first, in id order, so a concurrent app write waits for us or we for it (at most
    // lock_timeout), and what is read below cannot change before the write.
    tx.execute(LOCK_ORGS, &[&run_id])
        .await
        .context("lock the organizations the run changed")?;
    tx.execute(LOCK_CALLS, &[&run_id])
        .await
        .context("lock the calls the run attributed")?;
    let counters = plan_counters(tx, run_id, &mut report).await?;
    let calls = plan_calls(tx, run_id, &mut report).await?;
    if counters.is_empty() && calls.is_empty() {
        return Ok(report);
    }
    let revert_run_id = Uuid::new_v4();
    let inserted = tx
        .execute(
            INSERT_REVERT_RUN,
            &[
                &revert_run_id,
                &env!("CARGO_PKG_VERSION"),
                &host_name(),
                &run.get::<_, String>("period"),
                &run.get::<_, String>("source"),
                &run_id,
                &fence.key,
                &fence.pid,
            ],
        )
        .await
        .context("record the revert in reconciler.runs")?;
    if inserted == 0 {
        return Err(DbError::Fenced.into());
    }
    restore(tx, revert_run_id, counters, calls, &mut report, fence).await?;
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    tx.execute(
        FINISH_REVERT_RUN,
        &[
            &revert_run_id,
            &count(report.counters.len()),
            &count(report.calls.len()),
            &count(report.skipped.len()),
            &fence.key,
            &fence.pid,
        ],
    )
    .await
    .context("close the revert's run row")?;
    report.revert_run_id = Some(revert_run_id);
    Ok(report)
}

/// The run to revert; a revert itself cannot be reverted.
async fn find_run(tx: &Transaction<'_>, run_id: Uuid) -> Result<tokio_postgres::Row, RevertError> {
    let run = tx
        .query_opt(FIND_RUN, &[&run_id])
        .await
        .context("read the run to revert")?
        .ok_or(RevertError::UnknownRun(run_id))?;
    if run.get::<_, String>("mode") == "revert" {
        let of: Option<Uuid> = run.get("reverted_run_id");
        return Err(RevertError::RevertOfRevert {
            run: run_id,
            of: of.map_or_else(|| "unknown".into(), |id| id.to_string()),
        });
    }
    Ok(run)
}

/// The run's counter corrections that can be undone (journal row id and what to restore);
/// the others are counted or added to the report's skips with their reason.
async fn plan_counters(
    tx: &Transaction<'_>,
    run_id: Uuid,
    report: &mut RevertReport,
) -> Result<Vec<(i64, RestoredCounter)>, RevertError> {
    let mut counters = Vec::new();
    for row in tx
        .query(COUNTER_CHANGES, &[&run_id])
        .await
        .context("read the run's counter corrections")?
    {
        let org_id: Uuid = row.get("organization_id");
        let wrote: Option<i64> = row.get("new_used_minutes");
        // As text: the counter may be of any integer (or numeric) type.
        let current: Option<String> = row.get("current");
        let skip = |reason: String| Skipped {
            what: format!("org {org_id}"),
            reason,
        };
        if row.get::<_, Option<Uuid>>("reverted_by").is_some() {
            report.already_reverted += 1;
        } else if !row.get::<_, bool>("org_exists") {
            report
                .skipped
                .push(skip("the organization no longer exists".into()));
        } else if let Some(later) = row.get::<_, Option<Uuid>>("corrected_later_by") {
            report
                .skipped
                .push(skip(format!("corrected again by the later run {later}")));
        } else if current != wrote.map(|w| w.to_string()) {
            report.skipped.push(skip(format!(
                "used_minutes is now {}, the run wrote {}: changed after the run",
                OrNull(current),
                OrNull(wrote)
            )));
        } else {
            counters.push((
                row.get("id"),
                RestoredCounter {
                    org_id,
                    org_name: row.get::<_, Option<String>>("name").unwrap_or_default(),
                    from: wrote,
                    to: row.get("old_used_minutes"),
                },
            ));
        }
    }
    Ok(counters)
}

/// The run's attributions that can be undone; the others are counted or skipped with a reason.
async fn plan_calls(
    tx: &Transaction<'_>,
    run_id: Uuid,
    report: &mut RevertReport,
) -> Result<Vec<(i64, RestoredCall)>, RevertError> {
    let mut calls = Vec::new();
    for row in tx
        .query(CALL_CHANGES, &[&run_id])
        .await
        .context("read the run's call attributions")?
    {
        let call_id: Uuid = row.get("call_id");
        let wrote: Option<Uuid> = row.get("new_organization_id");
        let current: Option<Uuid> = row.get("current");
        let skip = |reason: String| Skipped {
            what: format!("call {call_id}"),
            reason,
        };
        if row.get::<_, Option<Uuid>>("reverted_by").is_some() {
            report.already_reverted += 1;
        } else if !row.get::<_, bool>("call_exists") {
            report
                .skipped
                .push(skip("the call no longer exists".into()));
        } else if current != wrote {
            report.skipped.push(skip(format!(
                "organization_id is now {}, the run set {}: changed after the run",
                OrNull(current),
                OrNull(wrote)
            )));
        } else {
            calls.push((
                row.get("id"),
                RestoredCall {
                    call_id,
                    from: wrote,
                    to: row.get("old_organization_id"),
                },
            ));
        }
    }
    Ok(calls)
}

/// Restore counters and attributions, compare-and-set, journalled as the revert's run.
async fn restore(
    tx: &Transaction<'_>,
    revert_run_id: Uuid,
    counters: Vec<(i64, RestoredCounter)>,
    calls: Vec<(i64, RestoredCall)>,
    report: &mut RevertReport,
    fence: Fence,
) -> Result<(), RevertError> {
    let counter_ids: Vec<i64> = counters.iter().map(|(id, _)| *id).collect();
    let call_ids: Vec<i64> = calls.iter().map(|(id, _)| *id).collect();
    // Sets: a run can have corrected every organization, and each is looked up below.
    let restored_counters: HashSet<i64> = tx
        .query(
            RESTORE_COUNTERS,
            &[&counter_ids, &revert_run_id, &fence.key, &fence.pid],
        )
        .await
        .context("restore counters")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let restored_calls: HashSet<i64> = tx
        .query(
            RESTORE_CALLS,
            &[&call_ids, &revert_run_id, &fence.key, &fence.pid],
        )
        .await
        .context("restore call attributions")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Under the row locks every compare-and-set holds; a miss is reported, never hidden.
    for (id, counter) in counters {
        if restored_counters.contains(&id) {
            report.counters.push(counter);
        } else {
            report.skipped.push(Skipped {
                what: format!("org {}", counter.org_id),
                reason: "used_minutes changed under the lock".into(),
            });
        }
    }
    for (id, call) in calls {
        if restored_calls.contains(&id) {
            report.calls.push(call);
        } else {
            report.skipped.push(Skipped {
                what: format!("call {}", call.call_id),
                reason: "organization_id changed under the lock".into(),
            });
        }
    }
    Ok(())
}

/// One line per restore and per skip (capped), and one summary line.
fn log_report(report: &RevertReport, max_lines: usize) {
    let reverted_run_id = report.reverted_run_id;
    let run_id = report
        .revert_run_id
        .map_or_else(|| "none".to_string(), |id| id.to_string());
    let mut budget = LineBudget::new("revert restored", max_lines);
    for c in &report.counters {
        if budget.allow() {
            info!(org_id = %c.org_id, from = %OrNull(c.from), to = %OrNull(c.to), %reverted_run_id,
                run_id = run_id.as_str(), "revert restored used_minutes");
        }
    }
    for c in &report.calls {
        if budget.allow() {
            info!(call_id = %c.call_id, from = %OrNull(c.from), to = %OrNull(c.to),
                %reverted_run_id, run_id = run_id.as_str(), "revert restored call organization_id");
        }
    }
    let mut skipped = LineBudget::new("revert skipped", max_lines);
    for s in &report.skipped {
        if skipped.allow() {
            warn!(item = s.what.as_str(), reason = s.reason.as_str(), %reverted_run_id,
                "revert skipped");
        }
    }
    // The promised summary of what the caps held back (keyed by the revert's own run).
    let summary_run = report.revert_run_id.unwrap_or(reverted_run_id);
    budget.finish(summary_run, false);
    skipped.finish(summary_run, false);
    info!(
        %reverted_run_id,
        run_id = run_id.as_str(),
        counters_restored = report.counters.len(),
        attributions_restored = report.calls.len(),
        skipped = report.skipped.len(),
        already_reverted = report.already_reverted,
        "revert finished"
    );
}

impl fmt::Display for RevertReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Revert of run {}", self.reverted_run_id)?;
        match self.revert_run_id {
            Some(id) => writeln!(f, "  journalled as run {id}")?,
            None => writeln!(f, "  nothing to restore; nothing was written")?,
        }
        for c in &self.counters {
            writeln!(
                f,
                "  restored used_minutes    org {} {:?}: {} -> {}",
                c.org_id,
                c.org_name,
                OrNull(c.from),
                OrNull(c.to)
            )?;
        }
        for c in &self.calls {
            writeln!(
                f,
                "  restored organization_id call {}: {} -> {}",
                c.call_id,
                OrNull(c.from),
                OrNull(c.to)
            )?;
        }
        for s in &self.skipped {
            writeln!(f, "  skipped {}: {}", s.what, s.reason)?;
        }
        writeln!(
            f,
            "Restored {} counter(s) and {} attribution(s); skipped {}; already reverted {}.",
            self.counters.len(),
            self.calls.len(),
            self.skipped.len(),
            self.already_reverted
        )?;
        if self.revert_run_id.is_some() {
            writeln!(
                f,
                "The next pass recomputes these counters with the configuration in effect then: \
                 if the run was wrong because of its configuration, fix that (or stop the daemon) first."
            )?;
        }
        Ok(())
    }
}
