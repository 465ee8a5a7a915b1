//! Confirm-then-write (step 5 of a pass, docs/design.md "Confirm before writing"): a drift is
//! repaired by [`repair_batch`] only if, after the settle time, the counter S and the truth
//! ledger's fingerprint F (count and minutes of its counted rows) are what the scan saw. The
//! app increments in a separate transaction a moment after completing a call, so a drift that
//! is still moving is an increment in flight, not a loss. The repair locks the rows (skipping
//! locked ones), re-checks S and F under the lock, writes S + delta computed on F
//! (compare-and-set), and writes the journal row in the same statement.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::queries::{PassQueries, APPLY_REPAIRS};
use super::usage::{Fingerprint, OrgUsage};
use crate::config::{Period, Source};
use crate::db::lock::Fence;
use crate::db::{DbError, QueryContext};

/// Why a drifted organization could not be locked: another transaction holds its row (or it
/// was deleted). Not waited for: an increment in flight holds that lock.
pub const ROW_BUSY: &str = "row locked by another transaction or deleted";

/// What happened to one drifted organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairAction {
    /// Counter set to `new`, journalled.
    Repaired { new: i64 },
    /// Dry run: would have been repaired.
    WouldRepair,
    /// The counter or the ledger moved, or the row was locked: left to the next pass.
    LostRace { reason: &'static str },
    /// Not written on purpose: the correct value does not fit `used_minutes`, or the counter
    /// holds no whole number of minutes.
    Refused { reason: String },
    /// The write failed (a trigger refused it, a constraint, a timeout): nothing written.
    Failed { reason: String },
    /// Another instance took the lock over: this one writes nothing more.
    Fenced,
}

impl RepairAction {
    /// The `action=` word of the CRITICAL line.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Repaired { .. } => "repaired",
            Self::WouldRepair => "would_repair",
            Self::LostRace { .. } => "lost_race",
            Self::Refused { .. } => "refused",
            Self::Failed { .. } => "failed",
            Self::Fenced => "fenced",
        }
    }

    /// Why nothing was written, when that is the outcome.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::LostRace { reason } => Some(reason),
            Self::Refused { reason } | Self::Failed { reason } => Some(reason),
            Self::Fenced => Some("another instance holds the advisory lock now"),
            Self::Repaired { .. } | Self::WouldRepair => None,
        }
    }
}

/// Everything the repair of one batch needs besides the rows.
#[derive(Debug, Clone)]
pub struct RepairContext<'a> {
    pub queries: &'a PassQueries,
    pub run_id: Uuid,
    pub source: Source,
    pub period: Period,
    pub period_start: Option<DateTime<Utc>>,
    /// Every write carries it: nothing is written once another instance holds the lock.
    pub fence: Fence,
    /// `SET LOCAL` of every repair transaction: row locks are held for seconds at most, even
    /// when this process freezes inside one.
    pub idle_timeout: std::time::Duration,
    pub lock_timeout: std::time::Duration,
}

/// Confirm and repair one batch in one transaction; returns an action per organization.
///
/// # Errors
/// A statement or the commit failed: nothing of the batch was written.
pub async fn repair_batch(
    client: &mut deadpool_postgres::Object,
    ctx: &RepairContext<'_>,
    batch: &[&OrgUsage],
) -> Result<Vec<(Uuid, RepairAction)>, DbError> {
    let tx = client
        .transaction()
        .await
        .context("begin a repair transaction")?;
    tx.batch_execute(&format!(
        // synqall_reconciler.repairing: the change log's trigger does not log this
        // transaction's counter writes (they leave the organization in sync; V8).
        "SET LOCAL idle_in_transaction_session_timeout = '{}ms'; SET LOCAL lock_timeout = '{}ms'; \
         SET LOCAL synqall_reconciler.repairing = 'on'",
        ctx.idle_timeout.as_millis(),
        ctx.lock_timeout.as_millis()
    ))
    .await
    .context("bound the repair transaction's lock holds")?;
    let seen = read_under_lock(&tx, ctx, batch).await?;
    let mut actions = Vec::with_capacity(batch.len());
    let mut writes: Vec<(&OrgUsage, i64)> = Vec::new();
    for org in batch {
        match confirm(org, &seen, ctx) {
            Confirmed::Write(new) => writes.push((org, new)),
            Confirmed::Skip(action) => actions.push((org.org_id, action)),
        }
    }
    if !writes.is_empty() {
        let written = apply(&tx, ctx, &writes).await?;
        // Under the row locks the compare-and-set cannot miss: a miss is the fence.
        if written.len() < writes.len() && !ctx.fence.holds(&*tx).await? {
            return Err(DbError::Fenced);
        }
        for (org, new) in writes {
            let action = if written.contains(&org.org_id) {
                RepairAction::Repaired { new }
            } else {
                // Cannot happen under the row lock; kept so a surprise is reported, not hidden.
                RepairAction::LostRace {
                    reason: "used_minutes changed under the lock",
                }
            };
            actions.push((org.org_id, action));
        }
    }
    tx.commit().await.context("commit repairs")?;
    Ok(actions)
}

/// What the batch's organizations look like now, under their row locks.
struct UnderLock {
    /// Counter of each organization locked (and whether it is a whole number of minutes);
    /// absent: locked by someone else (or deleted).
    counters: HashMap<Uuid, (Option<i64>, bool)>,
    fingerprints: HashMap<Uuid, Fingerprint>,
}

/// Lock the rows (skipping locked ones) and re-read S and F under the lock.
async fn read_under_lock(
    tx: &tokio_postgres::Transaction<'_>,
    ctx: &RepairContext<'_>,
    batch: &[&OrgUsage],
) -> Result<UnderLock, DbError> {
    let ids: Vec<Uuid> = batch.iter().map(|o| o.org_id).collect();
    let counters: HashMap<Uuid, (Option<i64>, bool)> = tx
        .query(ctx.queries.lock_orgs.as_str(), &[&ids])
        .await
        .context("lock organizations for repair")?
        .iter()
        .map(|r| (r.get("id"), (r.get("stored"), r.get("stored_invalid"))))
        .collect();
    let locked_ids: Vec<Uuid> = counters.keys().copied().collect();
    let fingerprints = tx
        .query(
            ctx.queries.fingerprints.as_str(),
            &[&locked_ids, &ctx.period_start],
        )
        .await
        .context("re-read ledger fingerprints")?
        .iter()
        .map(|r| {
            (
                r.get(0),
                Fingerprint {
                    entries: r.get(1),
                    minutes: r.get(2),
                },
            )
        })
        .collect();
    Ok(UnderLock {
        counters,
        fingerprints,
    })
}

/// The decision for one organization once its row is locked.
enum Confirmed {
    /// S and F are what the scan saw: write this value.
    Write(i64),
    Skip(RepairAction),
}

/// S and F unchanged, and the value fits: write S + delta (delta computed on F, which equals
/// F's total). Anything else is left alone with its reason.
fn confirm(org: &OrgUsage, seen: &UnderLock, ctx: &RepairContext<'_>) -> Confirmed {
    let lost = |reason| Confirmed::Skip(RepairAction::LostRace { reason });
    let refused = |reason| Confirmed::Skip(RepairAction::Refused { reason });
    let counter = ctx.queries.counter_type;
    match seen.counters.get(&org.org_id) {
        None => lost(ROW_BUSY),
        Some(&(now, invalid)) if now != org.stored || invalid != org.stored_invalid => {
            lost("used_minutes changed since the scan")
        }
        Some(_)
            if seen
                .fingerprints
                .get(&org.org_id)
                .copied()
                .unwrap_or_default()
                != org.fingerprint(ctx.source) =>
        {
            lost("ledger changed since the scan")
        }
        Some(_) if org.stored_invalid => refused(
            "used_minutes holds no whole number of minutes (a fraction, NaN or beyond bigint); \
             set it by hand, the next pass checks it"
                .to_string(),
        ),
        Some(_) => {
            let new = org
                .stored
                .unwrap_or(0)
                .saturating_add(org.delta(ctx.source));
            // i64::MAX is where totals are clamped: the real value is larger still.
            if new > counter.max() || new == i64::MAX {
                refused(format!(
                    "expected {new} does not fit used_minutes ({})",
                    counter.sql_name()
                ))
            } else {
                Confirmed::Write(new)
            }
        }
    }
}

/// The compare-and-set writes and their journal rows, one statement; returns the ids written.
async fn apply(
    tx: &tokio_postgres::Transaction<'_>,
    ctx: &RepairContext<'_>,
    writes: &[(&OrgUsage, i64)],
) -> Result<Vec<Uuid>, DbError> {
    let org_ids: Vec<Uuid> = writes.iter().map(|(o, _)| o.org_id).collect();
    let old: Vec<Option<i64>> = writes.iter().map(|(o, _)| o.stored).collect();
    let new: Vec<i64> = writes.iter().map(|(_, n)| *n).collect();
    let calls: Vec<i64> = writes.iter().map(|(o, _)| o.calls_minutes).collect();
    let metrics: Vec<i64> = writes.iter().map(|(o, _)| o.metrics_minutes).collect();
    let reasons: Vec<&str> = writes.iter().map(|(o, _)| o.reason()).collect();
    Ok(tx
        .query(
            APPLY_REPAIRS,
            &[
                &org_ids,
                &old,
                &new,
                &calls,
                &metrics,
                &ctx.run_id,
                &ctx.period.as_str(),
                &ctx.period_start,
                &reasons,
                &ctx.fence.key,
                &ctx.fence.pid,
            ],
        )
        .await
        .context("write repairs and their journal rows")?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
