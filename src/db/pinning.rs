//! The session-pinning check.
//!
//! **No transaction pooler.** A session advisory lock means nothing if consecutive statements
//! of one client connection can reach different server sessions. [`check_pinned`] proves they
//! cannot: it keeps another of our connections inside a transaction, so a pooler that hands
//! server sessions out per transaction must give that one a server session of its own, and
//! then asks the first connection again. Through a transaction pooler, either the second
//! connection lands on the first one's server session (a pooler reuses the most recent one), or
//! the first connection's next statement does not (or waits for a free one); both are caught,
//! on any port.

use std::time::Duration;

use super::error::{DbError, QueryContext};
use super::pool::Database;
use super::session::simple_row;

const BACKEND_PID: &str = "SELECT pg_catalog.pg_backend_pid()";
/// How long the pinning check waits for the first connection's second answer.
const PIN_CHECK_WAIT: Duration = Duration::from_secs(2);

/// Prove that `client` (a connection of its own, about to take the session advisory lock)
/// keeps one server session across statements: see the module docs.
///
/// # Errors
/// [`DbError::TransactionPooler`] when it does not; a failed statement.
pub async fn check_pinned(db: &Database, client: &tokio_postgres::Client) -> Result<(), DbError> {
    let first = backend_pid(client)
        .await
        .context("identify the lock connection's session")?;
    let other = db.client().await?;
    other
        .batch_execute("BEGIN")
        .await
        .context("begin the session check")?;
    let other_pid = backend_pid(&other).await;
    let again = tokio::time::timeout(PIN_CHECK_WAIT, backend_pid(client)).await;
    let _ = other.batch_execute("ROLLBACK").await;
    let other_pid = other_pid.context("identify another session")?;
    let detail = match again {
        _ if other_pid == first => Some(format!(
            "a second connection was given backend {first}, the one the first connection used"
        )),
        Err(_) => Some(format!(
            "the first connection's next statement found no free server session in {} s",
            PIN_CHECK_WAIT.as_secs()
        )),
        Ok(Ok(again)) if again != first => Some(format!(
            "two statements of one connection ran on backends {first} and {again}"
        )),
        Ok(Ok(_)) => None,
        Ok(Err(e)) => return Err(e).context("identify the lock connection's session again"),
    };
    match detail {
        Some(detail) => Err(DbError::TransactionPooler { detail }),
        None => Ok(()),
    }
}

async fn backend_pid(client: &tokio_postgres::Client) -> Result<i32, tokio_postgres::Error> {
    let row = simple_row(client, BACKEND_PID).await?;
    Ok(row
        .and_then(|r| r.get(0).and_then(|s| s.parse().ok()))
        .unwrap_or_default())
}

/// [`check_pinned`] on a connection of its own: for start-up and for commands that take no lock.
///
/// # Errors
/// As [`check_pinned`], and connection failures.
pub async fn check_target(db: &Database) -> Result<(), DbError> {
    let conn = db.dedicated().await?;
    check_pinned(db, &conn.client).await
}
