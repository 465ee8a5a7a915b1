//! Change tracking for incremental passes (docs/design.md, "Cost follows activity").
//!
//! Triggers (V8) log, in the application's own transactions, what each statement added to or
//! removed from each organization's ledgers (`reconciler.changes`, append-only, no key). The
//! reconciler folds that log into per-organization, per-month totals
//! (`reconciler.ledger_totals`), so that at every snapshot *ledger = totals + pending changes*.
//! An incremental pass then compares only the organizations in the log, reading the log, their
//! totals and their counters, never the ledgers ([`compare_and_fold`]); what it finds is only a
//! candidate, re-read exactly from the ledgers before anything is settled or repaired.
//!
//! What the triggers cannot see (triggers disabled, a restore, a bulk load under
//! `session_replication_role = replica`, an edit of the reconciler's own tables) the sweep finds:
//! it compares the tracking with the ledgers for every organization and rebuilds the totals
//! where they went wrong ([`rebuild`]). The first sweep builds them all.

use chrono::{DateTime, Utc};
use tokio_postgres::IsolationLevel;
use uuid::Uuid;

use super::mismatch::LedgerMismatch;
use super::queries::PassQueries;
use super::scan::ScanStream;
use super::usage::UsageScan;
use crate::db::lock::Fence;
use crate::db::{DbError, QueryContext};

const STATE: &str = include_str!("sql/tracking_state.sql");
const FOLD: &str = include_str!("sql/fold_changes.sql");
const MARK: &str = include_str!("sql/mark_changes.sql");
const MARK_INITIALIZED: &str = include_str!("sql/mark_initialized.sql");
const REBUILD_CLEAR: &str = include_str!("sql/rebuild_clear.sql");
const REBUILD_BUILD: &str = include_str!("sql/rebuild_build.sql");
const UNKNOWN_MARKERS: &str =
    "SELECT ctid::text FROM reconciler.changes WHERE organization_id IS NULL";
const CLEAR_UNKNOWN_MARKERS: &str = "DELETE FROM reconciler.changes \
     WHERE ctid = ANY ($1::text[]::tid[]) AND organization_id IS NULL \
       AND (SELECT reconciler.holds_lock($2, $3))";

type Client = deadpool_postgres::Object;

/// What the tracking table and the journal say before a pass decides what kind it is.
#[derive(Debug, Clone, Copy)]
pub struct TrackingState {
    /// The totals were built by a sweep: incremental passes may use them.
    pub initialized: bool,
    /// This database's identity (a replica must show the same).
    pub database_id: Uuid,
    /// The latest successful sweep's organization count and billed minutes (the
    /// mass-correction guard of an incremental pass measures against them).
    pub sweep_orgs: Option<i64>,
    pub sweep_billed_minutes: Option<i64>,
    /// The latest pass's ledger-mismatch count.
    pub last_mismatches: Option<i64>,
}

/// Read the tracking state.
///
/// # Errors
/// The query failed.
pub async fn state(client: &impl tokio_postgres::GenericClient) -> Result<TrackingState, DbError> {
    let row = client
        .query_one(STATE, &[])
        .await
        .context("read reconciler.tracking")?;
    Ok(TrackingState {
        initialized: row
            .get::<_, Option<DateTime<Utc>>>("initialized_at")
            .is_some(),
        database_id: row.get("database_id"),
        sweep_orgs: row.get::<_, Option<i32>>("sweep_orgs").map(i64::from),
        sweep_billed_minutes: row.get("sweep_billed_minutes"),
        last_mismatches: row.get::<_, Option<i32>>("last_mismatches").map(i64::from),
    })
}

/// The log rows that name no organization (a TRUNCATE): a sweep is due. Their row ids, so the
/// sweep that covered them removes exactly those ([`clear_unknown`]).
///
/// # Errors
/// The query failed.
pub async fn unknown_markers(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Vec<String>, DbError> {
    Ok(client
        .query(UNKNOWN_MARKERS, &[])
        .await
        .context("look for TRUNCATE markers in reconciler.changes")?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Remove the TRUNCATE markers a sweep covered (fenced).
///
/// # Errors
/// The statement failed.
pub async fn clear_unknown(
    client: &impl tokio_postgres::GenericClient,
    markers: &[String],
    fence: Fence,
) -> Result<(), DbError> {
    if markers.is_empty() {
        return Ok(());
    }
    client
        .execute(CLEAR_UNKNOWN_MARKERS, &[&markers, &fence.key, &fence.pid])
        .await
        .context("remove the TRUNCATE markers the sweep covered")?;
    Ok(())
}

/// Fold the log into the totals (fenced); `marks` get a marker back, so the next incremental
/// pass looks at them again. Returns how many log rows were folded.
///
/// # Errors
/// The statement failed.
pub async fn fold(
    client: &impl tokio_postgres::GenericClient,
    marks: &[uuid::Uuid],
    fence: Fence,
) -> Result<i64, DbError> {
    let row = client
        .query_one(FOLD, &[&marks, &fence.key, &fence.pid])
        .await
        .context("fold reconciler.changes into reconciler.ledger_totals")?;
    if !row.get::<_, bool>("held") {
        return Err(DbError::Fenced);
    }
    Ok(row.get("folded"))
}

/// A marker for each of `orgs`: the next incremental pass looks at them (fenced).
///
/// # Errors
/// The statement failed.
pub async fn mark(
    client: &impl tokio_postgres::GenericClient,
    orgs: &[Uuid],
    fence: Fence,
) -> Result<(), DbError> {
    if orgs.is_empty() {
        return Ok(());
    }
    client
        .execute(MARK, &[&orgs, &fence.key, &fence.pid])
        .await
        .context("mark organizations for the next incremental pass")?;
    Ok(())
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rebuilt {
    pub log_rows: i64,
    pub totals_rows: u64,
}

/// Rebuild the totals of `orgs` (all of them with `None`: the first build) from the ledgers,
/// in one REPEATABLE READ transaction, so that the log rows it forgets and the ledger rows it
/// reads belong to one snapshot. Rebuilt organizations get a marker: the next incremental pass
/// looks at them. The first build also records that the tracking is ready.
///
/// # Errors
/// A statement failed, or the lock was lost ([`DbError::Fenced`]).
pub async fn rebuild(
    client: &mut Client,
    orgs: Option<&[Uuid]>,
    run_id: Uuid,
    fence: Fence,
) -> Result<Rebuilt, DbError> {
    let (filter, all) = match orgs {
        Some(_) => ("= ANY ($1::uuid[])", false),
        // $1 is named in every variant (its type must be known); an empty array here.
        None => ("IS NOT NULL AND $1::uuid[] IS NOT NULL", true),
    };
    let some: Vec<Uuid> = orgs.map(<[Uuid]>::to_vec).unwrap_or_default();
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await
        .context("begin the rebuild of the change-tracking totals")?;
    let clear = REBUILD_CLEAR.replace("{org_filter}", filter);
    let cleared = tx
        .query_one(clear.as_str(), &[&some, &fence.key, &fence.pid, &all])
        .await
        .context("clear the change-tracking totals")?;
    if !cleared.get::<_, bool>("held") {
        return Err(DbError::Fenced);
    }
    let build = REBUILD_BUILD.replace("{org_filter}", filter);
    let built = tx
        .execute(build.as_str(), &[&some, &fence.key, &fence.pid])
        .await
        .context("build the change-tracking totals from the ledgers")?;
    if all {
        tx.execute(MARK_INITIALIZED, &[&run_id, &fence.key, &fence.pid])
            .await
            .context("record that the change tracking is built")?;
    } else {
        mark(&*tx, &some, fence).await?;
    }
    tx.commit()
        .await
        .context("commit the change-tracking totals")?;
    Ok(Rebuilt {
        log_rows: cleared.get("log_rows"),
        totals_rows: built,
    })
}

/// What the incremental comparison found.
#[derive(Debug, Clone, Default)]
pub struct DirtyScan {
    /// Candidates (in `disagreeing`, to be re-read exactly), and the log's size.
    pub scan: UsageScan,
    /// Ledger mismatches that appeared, changed or resolved among the organizations in the log.
    pub mismatches: Vec<LedgerMismatch>,
    /// Log rows folded (0 in a dry run).
    pub folded: i64,
}

/// The incremental comparison, then (unless `dry_run`) the fold of exactly the log rows it
/// read, in one REPEATABLE READ transaction. Candidates are marked again, so a pass that stops
/// before repairing them leaves them for the next one.
///
/// # Errors
/// A statement failed, or the lock was lost.
pub async fn compare_and_fold(
    client: &mut Client,
    queries: &PassQueries,
    period_start: Option<DateTime<Utc>>,
    fence: Fence,
    dry_run: bool,
) -> Result<DirtyScan, DbError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await
        .context("begin the incremental comparison")?;
    let mut found = DirtyScan::default();
    let mut rows = ScanStream::start(&*tx, &queries.compare_dirty, &[&period_start]).await?;
    while let Some(row) = rows.next().await {
        found.scan.absorb(row?, &mut found.mismatches);
    }
    if !dry_run {
        let candidates: Vec<Uuid> = found.scan.disagreeing.iter().map(|o| o.org_id).collect();
        found.folded = fold(&*tx, &candidates, fence).await?;
    }
    tx.commit()
        .await
        .context("commit the incremental comparison")?;
    Ok(found)
}
