//! Database access: where to connect ([`target`], [`tls`]), the pool and dedicated
//! connections ([`pool`]) with their session settings and the transaction-pooler check
//! ([`session`]), the advisory lock and its lease ([`lock`]), schema checks ([`schema`]),
//! migrations ([`migrations`]), and what can go wrong ([`error`]).
//!
//! Every connection identifies itself as `application_name=synqall-reconciler` and carries
//! `statement_timeout`, `lock_timeout`, `idle_in_transaction_session_timeout` and server-side
//! TCP keepalives, so a stuck pass shows up in `pg_stat_activity` by name, cannot hold locks
//! forever, and a partitioned client's backends die in about a minute.

pub mod error;
pub mod lock;
pub mod migrations;
pub mod pinning;
pub mod pool;
pub mod schema;
pub mod session;
pub mod target;
pub mod tls;
pub mod url;

pub use self::error::DbError;
pub(crate) use self::error::QueryContext;
pub use self::pool::{Database, DedicatedConnection};
pub use self::session::APPLICATION_NAME;
pub use self::target::DatabaseTarget;

/// This machine's host name, for telling instances apart in `reconciler.runs`.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
