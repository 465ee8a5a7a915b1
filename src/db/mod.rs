//! Database access: where to connect ([`target`], [`tls`]), the connection pool, the dedicated
//! advisory-lock connection ([`lock`]), schema checks ([`schema`]) and migrations
//! ([`migrations`]).
//!
//! Every connection identifies itself as `application_name=synqall-reconciler` and carries
//! `statement_timeout` and `lock_timeout`, so a stuck pass shows up in `pg_stat_activity` by
//! name and cannot hold locks forever. The pool verifies connections before handing them out
//! (`RecyclingMethod::Verified`): after a server restart a stale connection is replaced instead
//! of failing the pass.

pub mod lock;
pub mod migrations;
pub mod schema;
pub mod target;
pub mod tls;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use self::target::DatabaseTarget;
use crate::config::Settings;

/// Shown as `application_name` in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "synqall-reconciler";

/// Database failures. Messages never contain the connection password: tokio-postgres errors
/// do not echo it, and targets are shown through [`DatabaseTarget::describe`].
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("Failed to connect to {target}: {detail}{hint}")]
    Connect {
        target: String,
        /// The whole cause chain, so the hint can come last.
        detail: String,
        /// What to do about it, when the cause is recognisable.
        hint: &'static str,
    },
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("Failed to get a connection to {target}: {detail}")]
    Pool { target: String, detail: String },
    #[error("Failed to {what}: {source}")]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the database is not migrated ({detail}); run `synqall-reconciler migrate` first")]
    NotMigrated { detail: String },
    #[error("the database lacks what the reconciler reads: {detail}")]
    Schema { detail: String },
    #[error("migration V{version} was changed after it was applied (checksum {applied} in the database, {shipped} shipped); refusing to continue")]
    MigrationChanged {
        version: i32,
        applied: String,
        shipped: String,
    },
    #[error("Failed to apply migration V{version}__{name}: {source}")]
    Migration {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the advisory lock connection was lost; stopped writing")]
    LockLost(#[source] tokio_postgres::Error),
}

impl DbError {
    /// The connection (or the server) is gone: whatever was tried next on it would fail the
    /// same way. A statement the server refused (a constraint, a timeout) is not a connection
    /// loss, nor is anything found before connecting (schema, migrations, configuration).
    pub fn is_connection_loss(&self) -> bool {
        match self {
            Self::Query { source, .. } | Self::Migration { source, .. } => {
                source.is_closed() || source.code().is_none()
            }
            Self::Connect { .. } | Self::Pool { .. } | Self::LockLost(_) => true,
            Self::Config(_)
            | Self::NotMigrated { .. }
            | Self::Schema { .. }
            | Self::MigrationChanged { .. } => false,
        }
    }
}

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

/// A connection failure, with a hint when the cause is a certificate problem.
fn connect_error(target: &str, source: tokio_postgres::Error) -> DbError {
    let text = crate::telemetry::error_chain(&source);
    let hint = if text.contains("certificate") || text.contains("CertificateUnknown") {
        "; the server's TLS certificate could not be verified: set database.ca_file to the CA \
         that signed it (for Supabase, the CA from Project Settings > Database > SSL)"
    } else {
        ""
    };
    DbError::Connect {
        target: target.to_string(),
        detail: text,
        hint,
    }
}

/// Attach "what we were doing" to a tokio-postgres error.
pub(crate) trait QueryContext<T> {
    fn context(self, what: &'static str) -> Result<T, DbError>;
}

impl<T> QueryContext<T> for Result<T, tokio_postgres::Error> {
    fn context(self, what: &'static str) -> Result<T, DbError> {
        self.map_err(|source| DbError::Query { what, source })
    }
}

/// The pool plus what is needed to open the lock connection beside it.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    target: String,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("target", &self.target)
            .finish()
    }
}

impl Database {
    /// Build the pool (no connection is made until one is needed).
    ///
    /// # Errors
    /// An unusable `database.ca_file`, or a pool that cannot be built; nothing here depends on
    /// the server.
    pub fn new(target: &DatabaseTarget, settings: &Settings) -> Result<Self, DbError> {
        let db = &settings.database;
        let mut config = target.pg_config().clone();
        config
            .application_name(APPLICATION_NAME)
            .connect_timeout(Duration::from_secs(db.connect_timeout_seconds))
            .keepalives_idle(Duration::from_secs(30))
            .options(format!(
                "-c statement_timeout={}s -c lock_timeout={}s -c idle_in_transaction_session_timeout={}s",
                db.statement_timeout_seconds,
                db.lock_timeout_seconds,
                db.statement_timeout_seconds.max(60) * 2
            ));
        let tls = tls::connector(db.ca_file.as_deref())?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(db.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(db.connect_timeout_seconds * 3)))
            .create_timeout(Some(Duration::from_secs(db.connect_timeout_seconds)))
            .build()
            .map_err(|e| DbError::Pool {
                target: target.describe(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            pool,
            config,
            tls,
            target: target.describe(),
        })
    }

    /// A pooled connection.
    ///
    /// # Errors
    /// The server is unreachable or refuses the login.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(source) => connect_error(&self.target, source),
            other => DbError::Pool {
                target: self.target.clone(),
                detail: other.to_string(),
            },
        })
    }

    /// A connection outside the pool, for the session advisory lock: the pool may recycle or
    /// drop its connections, and a session lock must live exactly as long as its connection.
    ///
    /// # Errors
    /// The server is unreachable or refuses the login.
    pub async fn dedicated(&self) -> Result<DedicatedConnection, DbError> {
        Ok(self.dedicated_with_notices().await?.0)
    }

    /// [`Database::dedicated`], also handing over every NOTICE and WARNING the server sends on
    /// it (as `"WARNING: text"`), for `migrate` to print.
    ///
    /// # Errors
    /// The server is unreachable or refuses the login.
    pub async fn dedicated_with_notices(
        &self,
    ) -> Result<(DedicatedConnection, mpsc::UnboundedReceiver<String>), DbError> {
        let (client, mut connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|source| connect_error(&self.target, source))?;
        let (notices, received) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notice(notice)) => {
                        let _ =
                            notices.send(format!("{}: {}", notice.severity(), notice.message()));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "dedicated connection closed");
                        break;
                    }
                }
            }
        });
        Ok((DedicatedConnection { client, task }, received))
    }

    /// `user@host:port/db`, safe to log.
    pub fn target(&self) -> &str {
        &self.target
    }
}

/// A connection outside the pool; dropping it closes the connection.
pub struct DedicatedConnection {
    pub client: tokio_postgres::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DedicatedConnection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lost_connection_counts_as_connection_loss() {
        let not_migrated = DbError::NotMigrated {
            detail: "pending: V4".into(),
        };
        assert!(!not_migrated.is_connection_loss());
        let schema = DbError::Schema {
            detail: "missing column".into(),
        };
        assert!(!schema.is_connection_loss());
        let config = DbError::Config(crate::config::ConfigError::key("database.url", "bad"));
        assert!(!config.is_connection_loss());
        let pool = DbError::Pool {
            target: "x".into(),
            detail: "timed out".into(),
        };
        assert!(pool.is_connection_loss());
    }
}
