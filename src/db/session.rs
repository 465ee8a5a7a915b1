//! Session settings: what every connection carries.
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
//!
//! The transaction-pooler check is [`super::pinning`].

use std::time::Duration;

use super::error::{DbError, QueryContext};

/// Shown as `application_name` in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "synqall-reconciler";

const SESSION_SETTINGS: &str = include_str!("sql/session_settings.sql");

/// Idle time before the server probes a silent client connection.
pub const TCP_KEEPALIVES_IDLE_SECONDS: u64 = 15;
/// Time between probes.
pub const TCP_KEEPALIVES_INTERVAL_SECONDS: u64 = 5;
/// Unanswered probes before the server drops the connection (idle + interval × count ≈ 30 s).
pub const TCP_KEEPALIVES_COUNT: u32 = 3;
/// Unacknowledged data older than this drops the connection (a partition mid-reply).
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// What every session carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
    /// A transaction left idle this long is ended by the server (its locks released).
    pub idle_in_transaction: Duration,
}

impl SessionSettings {
    /// The `SET` statements. `jit = off`: the comparison's expressions are simple and its
    /// cost estimate is large, so PostgreSQL would compile it with LLVM every pass, which took
    /// about 15% of the sweep's statement at 20k organizations (bench, `BENCH_EXPLAIN`) and
    /// more with inlining and optimization above `jit_optimize_above_cost`.
    fn statements(&self) -> String {
        format!(
            "SET statement_timeout = '{}ms'; SET lock_timeout = '{}ms'; \
             SET idle_in_transaction_session_timeout = '{}ms'; \
             SET tcp_keepalives_idle = {TCP_KEEPALIVES_IDLE_SECONDS}; \
             SET tcp_keepalives_interval = {TCP_KEEPALIVES_INTERVAL_SECONDS}; \
             SET tcp_keepalives_count = {TCP_KEEPALIVES_COUNT}; \
             SET tcp_user_timeout = '{}ms'; \
             SET jit = off;",
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

/// The first row of a simple (unprepared) query.
pub(super) async fn simple_row(
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

fn number(row: &tokio_postgres::SimpleQueryRow, column: &str) -> i64 {
    row.get(column)
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}
