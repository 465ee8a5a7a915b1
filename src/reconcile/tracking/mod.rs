//! Change tracking for incremental passes (docs/design.md, "Cost follows activity").
//!
//! Triggers (V8) log, in the application's own transactions, what each statement changed per
//! organization (`reconciler.changes`, append-only, no key, no index): ledger deltas and
//! counter deltas, or a marker ("look at it"). After every pass each organization is in sync
//! or marked; so an organization whose counter moved exactly as its ledgers did is still in
//! sync, and only the others are candidates, re-read exactly from the ledgers before anything
//! is settled or repaired ([`Consuming`], in the same snapshot). The log is consumed in the
//! snapshot the organizations were judged in (an incremental pass's comparison, a sweep's:
//! [`consume_seen`]): the rows that snapshot saw are consumed, those of transactions still in
//! flight stay for the next pass; no lock the application's writes wait on.
//!
//! What the triggers cannot see (triggers disabled, a restore, a bulk load under
//! `session_replication_role = replica`, an edit of the reconciler's own tables) the sweep
//! finds and repairs, and a sweep leaves every organization in sync or marked again. The
//! first sweep marks the tracking usable ([`mark_initialized`]).

mod consume;

pub use consume::{mark, Consumed, Drain};

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, IsolationLevel};
use uuid::Uuid;

use super::queries::PassQueries;
use super::scan::ScanStream;
use super::usage::UsageScan;
use crate::db::lock::Fence;
use crate::db::{DbError, QueryContext};

const STATE: &str = include_str!("sql/tracking_state.sql");
const MARK_INITIALIZED: &str = include_str!("sql/mark_initialized.sql");
const UNKNOWN_MARKERS: &str = "SELECT tableoid::oid::text || '/' || ctid::text \
     FROM reconciler.changes WHERE organization_id IS NULL";
const UNMARK: &str = include_str!("sql/unmark.sql");

type Client = deadpool_postgres::Object;

/// What the tracking table and the journal say before a pass decides what kind it is.
#[derive(Debug, Clone, Copy)]
pub struct TrackingState {
    /// A sweep covered every organization since the triggers exist: incremental passes may
    /// rely on the log.
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

/// The log rows that name no organization (a TRUNCATE): a sweep is due. Their row ids
/// (partition and ctid), so the sweep that covered them removes exactly those
/// ([`clear_unknown`]). Read them after the sweep's [`consume`], which may move them.
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
        .execute(UNMARK, &[&markers, &fence.key, &fence.pid, &true])
        .await
        .context("remove the TRUNCATE markers the sweep covered")?;
    Ok(())
}

/// After a sweep compared every organization in `snapshot`: the log rows that snapshot saw
/// are consumed, and the sweep's drift gets insurance markers (fenced), in one transaction;
/// then the idle partition is emptied when none of its rows is still pending
/// ([`consume::commit_seen`]). Returns the rows consumed and the markers.
///
/// # Errors
/// A statement failed, or the lock was lost ([`DbError::Fenced`]).
pub async fn consume_seen(
    client: &mut Client,
    snapshot: &str,
    drifted: &[Uuid],
    fence: Fence,
) -> Result<Consumed, DbError> {
    let (consumed, drain) = consume::commit_seen(client, snapshot, drifted, fence).await?;
    consume::switch(&***client, drain).await?;
    Ok(consumed)
}

/// Take a pass's insurance markers out again, once its candidates were settled (those left
/// drifted got markers of their own). Fenced.
///
/// # Errors
/// The statement failed.
pub async fn unmark(
    client: &impl GenericClient,
    markers: &[String],
    fence: Fence,
) -> Result<(), DbError> {
    if markers.is_empty() {
        return Ok(());
    }
    client
        .execute(UNMARK, &[&markers, &fence.key, &fence.pid, &false])
        .await
        .context("remove the pass's own markers")?;
    Ok(())
}

/// The first sweep covered every organization: incremental passes may rely on the log.
///
/// # Errors
/// The statement failed.
pub async fn mark_initialized(
    client: &impl GenericClient,
    run_id: Uuid,
    fence: Fence,
) -> Result<(), DbError> {
    client
        .execute(MARK_INITIALIZED, &[&run_id, &fence.key, &fence.pid])
        .await
        .context("record that the change tracking is usable")?;
    Ok(())
}

/// The incremental comparison and the consumption of exactly the log rows it read, in one
/// REPEATABLE READ transaction ([`consume`]'s; read-only in a dry run): the rows its snapshot
/// saw are consumed, those of transactions still in flight stay for the next pass. The
/// candidates are re-read in the same snapshot ([`Consuming::reader`]), so "in sync" means in
/// sync at the very point the consumed rows end: a change that commits between the two reads
/// is neither counted twice nor hides a drift. Candidates get insurance markers, so a pass
/// that stops before settling them leaves them for the next one.
pub struct Consuming<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    /// None in a dry run: nothing is consumed.
    drain: Option<consume::Drain>,
}

impl<'a> Consuming<'a> {
    /// # Errors
    /// A statement failed.
    pub async fn begin(client: &'a mut Client, dry_run: bool) -> Result<Self, DbError> {
        if dry_run {
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .context("begin the incremental comparison")?;
            return Ok(Self { tx, drain: None });
        }
        let (tx, drain) = consume::begin(client).await?;
        Ok(Self {
            tx,
            drain: Some(drain),
        })
    }

    /// The comparison from the pending log rows; the transaction's first query (its snapshot).
    /// Its candidates (in `disagreeing`) are to be re-read exactly; `log_rows` is the log's size.
    ///
    /// # Errors
    /// The query failed.
    pub async fn compare(
        &self,
        queries: &PassQueries,
        period_start: Option<DateTime<Utc>>,
    ) -> Result<UsageScan, DbError> {
        let mut found = UsageScan::default();
        let mut rows =
            ScanStream::start(&*self.tx, &queries.compare_dirty, &[&period_start]).await?;
        let mut none = Vec::new();
        while let Some(row) = rows.next().await {
            found.absorb(row?, &mut none);
        }
        Ok(found)
    }

    /// The transaction, for reads in the comparison's snapshot.
    pub fn reader(&self) -> &tokio_postgres::Transaction<'a> {
        &self.tx
    }

    /// Consume (fenced), with insurance markers for `candidates` (those of `found`), and
    /// commit; then the caller [`switch`]es with the returned drain. A TRUNCATE marker in the
    /// log leaves it as it is (the next pass sweeps).
    ///
    /// # Errors
    /// A statement failed, or the lock was lost.
    pub async fn commit(
        self,
        found: &UsageScan,
        candidates: &[Uuid],
        fence: Fence,
    ) -> Result<(Consumed, Option<Drain>), DbError> {
        let Some(drain) = self.drain else {
            self.tx
                .commit()
                .await
                .context("commit the incremental comparison")?;
            return Ok((Consumed::default(), None));
        };
        if found.unknown_organizations {
            return Ok((Consumed::default(), None));
        }
        let insurance = mark(&*self.tx, candidates, fence).await?;
        consume::commit(self.tx, drain, fence).await?;
        Ok((
            Consumed {
                folded: found.log_rows,
                insurance,
            },
            Some(drain),
        ))
    }
}

/// After a consuming commit: the emptied partition becomes the active one.
///
/// # Errors
/// The statement failed.
pub async fn switch(client: &Client, drain: Option<Drain>) -> Result<(), DbError> {
    match drain {
        Some(drain) => consume::switch(&***client, drain).await,
        None => Ok(()),
    }
}
