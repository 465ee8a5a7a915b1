//! The session advisory lock that makes one reconciler at a time active per database.
//!
//! It lives on its own connection, outside the pool: a session lock is released when its
//! connection ends, so a crashed holder frees it at once and another instance takes over at its
//! next tick. Before each write batch the pass calls [`AdvisoryLock::ensure_held`]; if the lock
//! connection is gone, another instance may already hold the lock, so the pass stops writing.

use super::{Database, DbError, DedicatedConnection, QueryContext};

/// A held session advisory lock.
pub struct AdvisoryLock {
    conn: DedicatedConnection,
    key: i64,
}

impl AdvisoryLock {
    /// Try to take the lock without waiting; `None` when another session holds it.
    ///
    /// # Errors
    /// The lock connection could not be opened or the query failed.
    pub async fn try_acquire(db: &Database, key: i64) -> Result<Option<Self>, DbError> {
        let conn = db.dedicated().await?;
        let row = conn
            .client
            .query_one("SELECT pg_catalog.pg_try_advisory_lock($1)", &[&key])
            .await
            .context("take the advisory lock")?;
        Ok(row.get::<_, bool>(0).then_some(Self { conn, key }))
    }

    /// Prove the lock is still ours: its connection still answers. A session lock cannot be
    /// lost while its connection lives.
    ///
    /// # Errors
    /// [`DbError::LockLost`] when the connection is gone.
    pub async fn ensure_held(&self) -> Result<(), DbError> {
        self.conn
            .client
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(DbError::LockLost)
    }

    /// Release explicitly (dropping also releases, when the connection closes).
    pub async fn release(self) {
        let _ = self
            .conn
            .client
            .query("SELECT pg_catalog.pg_advisory_unlock($1)", &[&self.key])
            .await;
    }
}
