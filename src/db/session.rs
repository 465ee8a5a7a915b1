//! Session settings and the session-pinning check.
//!
//! **Settings with `SET`.** Every connection gets its timeouts and server-side TCP keepalives
//! with `SET` right after connecting, and the values are read back (as `SHOW` would) to prove
//! they took. Not as the startup parameter `options`: pgbouncer and Supavisor refuse unknown
//! startup parameters ("unsupported startup parameter: options"), even in session mode.
//!
//! **Keepalives.** `tcp_keepalives_idle`/`_interval`/`_count` and `tcp_user_timeout` make the
//! server notice a client that vanished (a partition, a frozen VM) within about a minute,
//! instead of the operating system's default of hours, so a dead instance's lock and row locks
//! are released. They do not apply over a Unix socket (the server reports 0 there).
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

use super::{Database, DbError, QueryContext};

const SESSION_SETTINGS: &str = include_str!("sql/session_settings.sql");
const BACKEND_PID: &str = "SELECT pg_catalog.pg_backend_pid()";

/// Idle time before the server probes a silent client connection.
pub const TCP_KEEPALIVES_IDLE_SECONDS: u64 = 15;
/// Time between probes.
pub const TCP_KEEPALIVES_INTERVAL_SECONDS: u64 = 5;
/// Unanswered probes before the server drops the connection (idle + interval × count ≈ 30 s).
pub const TCP_KEEPALIVES_COUNT: u32 = 3;
/// Unacknowledged data older than this drops the connection (a partition mid-reply).
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the pinning check waits for the first connection's second answer.
const PIN_CHECK_WAIT: Duration = Duration::from_secs(2);

/// What every session carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
    /// A transaction left idle this long is ended by the server (its locks released).
    pub idle_in_transaction: Duration,
}

impl SessionSettings {
    /// The `SET` statements.
    fn statements(&self) -> String {
        format!(
            "SET statement_timeout = '{}ms'; SET lock_timeout = '{}ms'; \
             SET idle_in_transaction_session_timeout = '{}ms'; \
             SET tcp_keepalives_idle = {TCP_KEEPALIVES_IDLE_SECONDS}; \
             SET tcp_keepalives_interval = {TCP_KEEPALIVES_INTERVAL_SECONDS}; \
             SET tcp_keepalives_count = {TCP_KEEPALIVES_COUNT}; \
             SET tcp_user_timeout = '{}ms';",
            self.statement_timeout.as_millis(),
            self.lock_timeout.as_millis(),
            self.idle_in_transaction.as_millis(),
            TCP_USER_TIMEOUT.as_millis(),
        )
    }
}

/// Apply the settings to a fresh connection and prove they took.
///
/// # Errors
/// A statement failed, or a setting reads back different (a pooler rewrote it).
pub async fn apply(
    client: &tokio_postgres::Client,
    settings: &SessionSettings,
) -> Result<(), DbError> {
    client
        .batch_execute(&settings.statements())
        .await
        .context("apply the session settings")?;
    // Simple queries only, here and in the pinning check: they run before anything proves
    // that prepared statements (bound to one server session) can be used at all.
    let row = simple_row(client, SESSION_SETTINGS)
        .await
        .context("read the session settings back")?
        .ok_or_else(|| DbError::SessionSettings {
            detail: "the server returned no settings".into(),
        })?;
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let mut wrong = Vec::new();
    for (name, column, want) in [
        (
            "statement_timeout",
            "statement_timeout_ms",
            ms(settings.statement_timeout),
        ),
        ("lock_timeout", "lock_timeout_ms", ms(settings.lock_timeout)),
        (
            "idle_in_transaction_session_timeout",
            "idle_in_transaction_ms",
            ms(settings.idle_in_transaction),
        ),
    ] {
        let got = number(&row, column);
        if got != want {
            wrong.push(format!("{name} is {got} ms, not {want} ms"));
        }
    }
    if row.get("unix_socket") != Some("t") {
        let idle = number(&row, "keepalives_idle_s");
        // 0 means "the operating system's default": the socket does not support the setting.
        if idle != 0 && idle != TCP_KEEPALIVES_IDLE_SECONDS as i64 {
            wrong.push(format!("tcp_keepalives_idle is {idle} s"));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(DbError::SessionSettings {
            detail: wrong.join(", "),
        })
    }
}

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

/// The first row of a simple (unprepared) query.
async fn simple_row(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<Option<tokio_postgres::SimpleQueryRow>, tokio_postgres::Error> {
    Ok(client
        .simple_query(sql)
        .await?
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        }))
}

/// [`check_pinned`] on a connection of its own: for start-up and for commands that take no lock.
///
/// # Errors
/// As [`check_pinned`], and connection failures.
pub async fn check_target(db: &Database) -> Result<(), DbError> {
    let conn = db.dedicated().await?;
    check_pinned(db, &conn.client).await
}

fn number(row: &tokio_postgres::SimpleQueryRow, column: &str) -> i64 {
    row.get(column)
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}
