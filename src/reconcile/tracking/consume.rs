//! Consuming the change log (V10; docs/design.md, "Consuming the change log").
//!
//! A pass consumes the log rows its REPEATABLE READ snapshot sees by recording that snapshot
//! (`reconciler.tracking.consumed_snapshot`): one row written, however many log rows there
//! are. Rows of transactions the snapshot does not see stay pending
//! (`reconciler.pending_changes`). Consumed rows are removed a partition at a time: the
//! triggers write to the active partition, so the other one only receives rows from writers
//! that read the switch before it moved. Its ACCESS EXCLUSIVE lock, taken NOWAIT *before* the
//! snapshot, proves none of them is still in flight: every row in it is then visible to the
//! snapshot, so consumed, and TRUNCATE removes them all. After the commit that partition
//! becomes the active one. A sweep records the snapshot its comparison read (perhaps on a
//! replica), earlier than its consuming transaction: there the partition is emptied only when
//! a check under its lock finds no row the snapshot did not see, and no TRUNCATE marker
//! (which the sweep removes itself once it covered them).
//!
//! Why not DELETE: two buffer accesses per row, WAL and dead tuples for each (at 1% of 100k
//! organizations active, nine tenths of an incremental pass's buffers). Why not TRUNCATE the
//! one table: its lock would stop the app's inserts until the commit (15–200 ms measured).
//! A partition still locked by someone (a long app transaction, a `doctor` reading the log)
//! is only emptied by a later pass. The markers a consuming transaction writes ([`mark`]: "look
//! at it next pass") are written here too, so they commit with the consumption.

use deadpool_postgres::Transaction;
use tokio_postgres::error::SqlState;
use tokio_postgres::{GenericClient, IsolationLevel};
use tracing::info;
use uuid::Uuid;

use crate::db::lock::Fence;
use crate::db::{DbError, QueryContext};

const ACTIVE: &str = "SELECT last_value::int2 FROM reconciler.change_generation";
const SWITCH: &str = "SELECT pg_catalog.setval('reconciler.change_generation', $1::int2, true)";
const RECORD: &str = include_str!("sql/record_consumed.sql");
const MARK: &str = include_str!("sql/mark_changes.sql");
const COUNT_SEEN: &str = include_str!("sql/count_seen.sql");
const IDLE_DONE: &str = include_str!("sql/idle_partition_done.sql");

/// The partition a consuming transaction may empty, and whether it holds its lock.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    /// The partition the triggers do not write to (0 or 1).
    idle: i16,
    /// Its ACCESS EXCLUSIVE lock was free at once and it is emptied at the commit (then it
    /// becomes the active one: [`switch`]).
    locked: bool,
}

impl Drain {
    fn table(self) -> String {
        format!("reconciler.changes_{}", self.idle)
    }
}

/// Begin a consuming transaction: REPEATABLE READ, with the idle partition locked when its lock
/// is free at once. No query has run in it yet: the caller's first query takes the snapshot,
/// after the lock, so the snapshot sees every row of the idle partition.
///
/// # Errors
/// A statement failed.
pub async fn begin(
    client: &mut deadpool_postgres::Object,
) -> Result<(Transaction<'_>, Drain), DbError> {
    let idle = idle_partition(client).await?;
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await
        .context("begin consuming reconciler.changes")?;
    let locked = lock_at_once(&mut tx, idle).await?;
    Ok((tx, Drain { idle, locked }))
}

/// The partition the triggers do not write to.
async fn idle_partition(client: &deadpool_postgres::Object) -> Result<i16, DbError> {
    let active: i16 = client
        .query_one(ACTIVE, &[])
        .await
        .context("read which partition of reconciler.changes is active")?
        .get(0);
    Ok(1 - active)
}

/// LOCK … NOWAIT inside a savepoint: a lock that is not free leaves the transaction usable.
/// Neither statement takes the transaction's snapshot.
async fn lock_at_once(tx: &mut Transaction<'_>, idle: i16) -> Result<bool, DbError> {
    let savepoint = tx
        .savepoint("drain")
        .await
        .context("set a savepoint before locking the idle log partition")?;
    let lock = format!("LOCK TABLE reconciler.changes_{idle} IN ACCESS EXCLUSIVE MODE NOWAIT");
    match savepoint.batch_execute(&lock).await {
        Ok(()) => {
            savepoint
                .commit()
                .await
                .context("release the savepoint after locking the idle log partition")?;
            Ok(true)
        }
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            // Rare (a writer that read the switch before the last pass moved it is still in
            // its transaction, or a session reads the log); the log grows until it is free.
            info!(
                partition = %format!("reconciler.changes_{idle}"),
                "the consumed change-log partition is in use; a later pass empties it"
            );
            savepoint
                .rollback()
                .await
                .context("roll back to the savepoint after a busy idle log partition")?;
            Ok(false)
        }
        Err(e) => Err(DbError::Query {
            what: "lock the idle partition of reconciler.changes",
            source: e,
        }),
    }
}

/// Record the transaction's own snapshot as consumed (fenced) and, when the idle partition is
/// locked, empty it (its lock was taken before the snapshot, and the comparison saw no
/// TRUNCATE marker: every row in it is consumed); then commit. Call [`switch`] after.
///
/// # Errors
/// A statement failed, or the lock was lost ([`DbError::Fenced`]): nothing is consumed.
pub async fn commit(tx: Transaction<'_>, drain: Drain, fence: Fence) -> Result<(), DbError> {
    record(&tx, None, fence).await?;
    if drain.locked {
        empty(&tx, drain).await?;
    }
    tx.commit()
        .await
        .context("commit consuming reconciler.changes")
}

/// A sweep's consumption, after its comparison read `snapshot` (on this server or a replica
/// of it): in one READ COMMITTED transaction, count the rows it consumes, record it, mark
/// `drifted` (insurance until the pass settles them) and, when the idle partition's lock is
/// free at once and none of its rows is pending or a TRUNCATE marker (checked under the lock,
/// in a statement snapshot taken after it), empty it. Returns the rows consumed, the markers
/// and the drain to [`switch`].
///
/// # Errors
/// A statement failed, or the lock was lost ([`DbError::Fenced`]): nothing is consumed.
pub async fn commit_seen(
    client: &mut deadpool_postgres::Object,
    snapshot: &str,
    drifted: &[Uuid],
    fence: Fence,
) -> Result<(Consumed, Drain), DbError> {
    let idle = idle_partition(client).await?;
    let mut tx = client
        .transaction()
        .await
        .context("begin consuming reconciler.changes")?;
    let locked = lock_at_once(&mut tx, idle).await?;
    let folded: i64 = tx
        .query_one(COUNT_SEEN, &[&snapshot])
        .await
        .context("count the log rows the sweep's snapshot saw")?
        .get(0);
    record(&tx, Some(snapshot), fence).await?;
    let insurance = mark(&*tx, drifted, fence).await?;
    let mut drain = Drain { idle, locked };
    if locked {
        let sql = IDLE_DONE.replace("{partition}", &drain.table());
        drain.locked = tx
            .query_one(&sql, &[&snapshot])
            .await
            .context("check that the idle log partition holds nothing pending")?
            .get(0);
        if drain.locked {
            empty(&tx, drain).await?;
        }
    }
    tx.commit()
        .await
        .context("commit consuming reconciler.changes")?;
    Ok((Consumed { folded, insurance }, drain))
}

/// The consumed snapshot becomes `snapshot`, or the transaction's own (fenced).
async fn record(tx: &Transaction<'_>, snapshot: Option<&str>, fence: Fence) -> Result<(), DbError> {
    let held = tx
        .query_opt(RECORD, &[&fence.key, &fence.pid, &snapshot])
        .await
        .context("record the consumed snapshot of reconciler.changes")?
        .is_some();
    if held {
        Ok(())
    } else {
        Err(DbError::Fenced)
    }
}

async fn empty(tx: &Transaction<'_>, drain: Drain) -> Result<(), DbError> {
    tx.batch_execute(&format!("TRUNCATE {}", drain.table()))
        .await
        .context("empty the consumed partition of reconciler.changes")
}

/// After the commit: the emptied partition becomes the active one, so the other one drains.
/// Idempotent (it names the partition).
///
/// # Errors
/// The statement failed (the next pass empties the same partition again, harmlessly).
pub async fn switch(client: &impl GenericClient, drain: Drain) -> Result<(), DbError> {
    if !drain.locked {
        return Ok(());
    }
    client
        .query_one(SWITCH, &[&drain.idle])
        .await
        .context("switch the active partition of reconciler.changes")?;
    Ok(())
}

/// What committing a consumption leaves the pass.
#[derive(Debug, Clone, Default)]
pub struct Consumed {
    /// Log rows consumed (0 in a dry run, or when a TRUNCATE marker left the log as it is).
    pub folded: i64,
    /// The markers that keep the candidates in the log until the pass settled them.
    pub insurance: Vec<String>,
}

/// A marker for each of `orgs`: the next incremental pass looks at them (fenced). Returns the
/// markers' row ids (partition and ctid).
///
/// # Errors
/// The statement failed.
pub async fn mark(
    client: &impl GenericClient,
    orgs: &[Uuid],
    fence: Fence,
) -> Result<Vec<String>, DbError> {
    if orgs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client
        .query(MARK, &[&orgs, &fence.key, &fence.pid])
        .await
        .context("mark organizations for the next incremental pass")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
