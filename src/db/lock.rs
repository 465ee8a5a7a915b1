//! The session advisory lock that makes one reconciler at a time active per database, with a
//! lease that proves the holder alive (docs/design.md, "One writer").
//!
//! - **Its own connection.** A session lock lives exactly as long as its connection, so it
//!   lives outside the pool; a crashed holder frees it at once. Before the lock is taken, the
//!   connection is proven to keep one server session ([`super::pinning::check_pinned`]): a
//!   transaction pooler would make the lock meaningless.
//! - **A lease.** The holder renews `reconciler.lease.heartbeat_at` every third of
//!   `lock.lease_seconds` from that connection. A process that freezes (SIGSTOP, a VM pause, a
//!   partition) stops renewing; a standby that finds the lock held and the heartbeat older than
//!   the lease ends the holder's sessions and takes the lock over (WARN with the old holder's
//!   host and pid). A holder that keeps no lease (a person in psql) is never taken over.
//! - **Fencing.** [`AdvisoryLock::fence`] is the proof every write statement of a pass carries
//!   (`reconciler.holds_lock(key, pid)`): a resumed zombie's statements write nothing.
//! - **Deadlines.** The lock check and the heartbeat have client-side timeouts: a lock backend
//!   that stops answering is a lost lock, not a hung pass.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{info, warn};
use uuid::Uuid;

use super::{host_name, migrations, pinning, Database, DbError, DedicatedConnection, QueryContext};

const LEASE_ACQUIRE: &str = include_str!("sql/lease_acquire.sql");
const LEASE_HEARTBEAT: &str = include_str!("sql/lease_heartbeat.sql");
const LEASE_PASS: &str = include_str!("sql/lease_pass.sql");
const LEASE_RELEASE: &str = include_str!("sql/lease_release.sql");
const LEASE_HOLDER: &str = include_str!("sql/lease_holder.sql");
const TERMINATE_HOLDER: &str = include_str!("sql/terminate_holder.sql");
const HOLDS_LOCK: &str = include_str!("sql/holds_lock.sql");

/// A lock check (or heartbeat) that gets no answer in this long means the lock is lost.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// After ending a stale holder's sessions, how long to wait for its lock to be released.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// The proof a write statement carries that this instance still holds the lock: the lock key
/// and the backend pid of the lock's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub key: i64,
    pub pid: i32,
}

impl Fence {
    /// Whether the fence still holds, asked on any connection.
    ///
    /// # Errors
    /// The query failed.
    pub async fn holds(
        &self,
        client: &impl tokio_postgres::GenericClient,
    ) -> Result<bool, DbError> {
        Ok(client
            .query_one(HOLDS_LOCK, &[&self.key, &self.pid])
            .await
            .context("check the fence")?
            .get(0))
    }
}

/// A held session advisory lock and its lease.
pub struct AdvisoryLock {
    conn: Arc<DedicatedConnection>,
    fence: Fence,
    /// Set by the heartbeat when a renewal fails or hangs.
    lost: Arc<AtomicBool>,
    heartbeat: JoinHandle<()>,
}

/// Who holds the lock when it could not be taken.
#[derive(Debug, Clone)]
struct Holder {
    lock_pid: i32,
    /// The lease row's holder (None: no live lease row).
    lease_pid: Option<i32>,
    host: Option<String>,
    pass_pid: Option<i32>,
    heartbeat_age_s: Option<f64>,
}

impl AdvisoryLock {
    /// Take the lock without waiting; `None` when another live instance (or anyone without a
    /// lease) holds it. A holder whose lease expired is ended and taken over.
    ///
    /// # Errors
    /// The connection could not be opened, the database is not migrated, statements of one
    /// connection reach different server sessions (a transaction pooler), or a query failed.
    pub async fn try_acquire(
        db: &Database,
        key: i64,
        lease: Duration,
    ) -> Result<Option<Self>, DbError> {
        let conn = db.dedicated().await?;
        // First: through a transaction pooler even prepared statements go astray.
        pinning::check_pinned(db, &conn.client).await?;
        migrations::ensure_current(&conn.client).await?;
        if !try_lock(&conn.client, key).await? {
            let Some(holder) = stale_holder(&conn.client, key, lease).await? else {
                return Ok(None);
            };
            if !take_over(&conn.client, key, &holder, lease).await? {
                return Ok(None);
            }
        }
        Self::hold(conn, key, lease).await.map(Some)
    }

    /// The lock is ours: write the lease and start renewing it.
    async fn hold(conn: DedicatedConnection, key: i64, lease: Duration) -> Result<Self, DbError> {
        let pid: i32 = conn
            .client
            .query_one("SELECT pg_catalog.pg_backend_pid()", &[])
            .await
            .context("identify the lock session")?
            .get(0);
        conn.client
            .execute(LEASE_ACQUIRE, &[&key, &Uuid::new_v4(), &host_name()])
            .await
            .context("record the lease")?;
        let conn = Arc::new(conn);
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(renew(conn.clone(), key, lease, lost.clone()));
        Ok(Self {
            conn,
            fence: Fence { key, pid },
            lost,
            heartbeat,
        })
    }

    /// What every write statement of the pass carries.
    pub fn fence(&self) -> Fence {
        self.fence
    }

    /// Prove the lock is still ours: the heartbeat has not failed and the lock's connection
    /// still answers, within [`CHECK_TIMEOUT`].
    ///
    /// # Errors
    /// [`DbError::LockLost`] when the connection is gone, [`DbError::LockUnresponsive`] when it
    /// (or the heartbeat) stopped answering.
    pub async fn ensure_held(&self) -> Result<(), DbError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(DbError::LockUnresponsive {
                seconds: CHECK_TIMEOUT.as_secs(),
            });
        }
        match tokio::time::timeout(CHECK_TIMEOUT, self.conn.client.simple_query("SELECT 1")).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(DbError::LockLost(e)),
            Err(_) => {
                self.lost.store(true, Ordering::SeqCst);
                Err(DbError::LockUnresponsive {
                    seconds: CHECK_TIMEOUT.as_secs(),
                })
            }
        }
    }

    /// Tell the lease which backend and run the pass uses, so a standby taking over can end
    /// that session too (best effort: the lease is advice, the fence is the rule).
    pub async fn record_pass(&self, pass_pid: i32, run_id: Uuid) {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&self.fence.key, &pass_pid, &run_id];
        let update = self.conn.client.execute(LEASE_PASS, &params);
        let _ = tokio::time::timeout(CHECK_TIMEOUT, update).await;
    }

    /// Release explicitly (dropping also releases, when the connection closes).
    pub async fn release(self) {
        self.heartbeat.abort();
        let release = async {
            let _ = self
                .conn
                .client
                .execute(LEASE_RELEASE, &[&self.fence.key])
                .await;
            let _ = self
                .conn
                .client
                .query(
                    "SELECT pg_catalog.pg_advisory_unlock($1)",
                    &[&self.fence.key],
                )
                .await;
        };
        let _ = tokio::time::timeout(CHECK_TIMEOUT, release).await;
    }
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

async fn try_lock(client: &tokio_postgres::Client, key: i64) -> Result<bool, DbError> {
    Ok(client
        .query_one("SELECT pg_catalog.pg_try_advisory_lock($1)", &[&key])
        .await
        .context("take the advisory lock")?
        .get(0))
}

/// Renew the lease every third of it until aborted; a renewal that fails, hangs or finds the
/// lease no longer ours marks the lock lost.
async fn renew(conn: Arc<DedicatedConnection>, key: i64, lease: Duration, lost: Arc<AtomicBool>) {
    let every = (lease / 3).max(Duration::from_secs(1));
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await; // the first tick is now: the lease was just written
    loop {
        ticker.tick().await;
        let renewed =
            tokio::time::timeout(CHECK_TIMEOUT, conn.client.execute(LEASE_HEARTBEAT, &[&key]))
                .await;
        if !matches!(renewed, Ok(Ok(1))) {
            lost.store(true, Ordering::SeqCst);
            warn!(
                lock_key = key.to_string().as_str(),
                "the lease could not be renewed: this instance stops writing"
            );
            return;
        }
    }
}

/// The holder of `key`, if its lease expired (its heartbeat is older than `lease`).
async fn stale_holder(
    client: &tokio_postgres::Client,
    key: i64,
    lease: Duration,
) -> Result<Option<Holder>, DbError> {
    let Some(row) = client
        .query_opt(LEASE_HOLDER, &[&key])
        .await
        .context("read the lock holder's lease")?
    else {
        return Ok(None); // released meanwhile: the next pass takes it
    };
    let holder = Holder {
        lock_pid: row.get("lock_pid"),
        lease_pid: row.get("holder_pid"),
        host: row.get("host"),
        pass_pid: row.get("pass_pid"),
        heartbeat_age_s: row.get("heartbeat_age_s"),
    };
    let keeps_this_lease = holder.lease_pid == Some(holder.lock_pid);
    let expired = holder
        .heartbeat_age_s
        .is_some_and(|age| age > lease.as_secs_f64());
    Ok((keeps_this_lease && expired).then_some(holder))
}

/// End a stale holder's sessions and wait for its lock; whether the lock is now ours.
async fn take_over(
    client: &tokio_postgres::Client,
    key: i64,
    holder: &Holder,
    lease: Duration,
) -> Result<bool, DbError> {
    warn!(
        holder_host = holder.host.as_deref().unwrap_or("unknown"),
        holder_pid = holder.lock_pid,
        heartbeat_age_s = holder.heartbeat_age_s.unwrap_or_default().round() as i64,
        lease_seconds = lease.as_secs(),
        "taking over the advisory lock from a holder whose lease expired"
    );
    client
        .query(TERMINATE_HOLDER, &[&holder.lock_pid, &holder.pass_pid])
        .await
        .context("end the stale holder's sessions")?;
    let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
    while tokio::time::Instant::now() < deadline {
        if try_lock(client, key).await? {
            info!(holder_pid = holder.lock_pid, "took over the advisory lock");
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its backend does not end (frozen itself): the next tick tries again.
    warn!(
        holder_pid = holder.lock_pid,
        "the stale holder's session did not end; trying again at the next pass"
    );
    Ok(false)
}
