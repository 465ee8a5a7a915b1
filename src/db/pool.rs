//! The connection pool and the dedicated connections beside it. Every connection identifies
//! itself as `application_name=synqall-reconciler` and gets its session settings with `SET`
//! right after connecting ([`super::session`]); the pool verifies connections before handing
//! them out (`RecyclingMethod::Verified`), so after a server restart a stale connection is
//! replaced instead of failing the pass.

use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::DbError;
use super::session::{self, SessionSettings, APPLICATION_NAME};
use super::target::DatabaseTarget;
use super::tls;
use crate::config::Settings;

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

/// The pool plus what is needed to open the lock connection beside it.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    target: String,
    session: SessionSettings,
    /// The hot standby the sweep reads from (`database.replica_url`), if configured.
    replica: Option<std::sync::Arc<Database>>,
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
        // Client-side keepalives too: this side notices a dead server as fast as it notices us.
        config
            .application_name(APPLICATION_NAME)
            .connect_timeout(Duration::from_secs(db.connect_timeout_seconds))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(session::TCP_KEEPALIVES_IDLE_SECONDS))
            .keepalives_interval(Duration::from_secs(
                session::TCP_KEEPALIVES_INTERVAL_SECONDS,
            ))
            .keepalives_retries(session::TCP_KEEPALIVES_COUNT)
            .tcp_user_timeout(session::TCP_USER_TIMEOUT);
        let session = SessionSettings {
            statement_timeout: Duration::from_secs(db.statement_timeout_seconds),
            lock_timeout: Duration::from_secs(db.lock_timeout_seconds),
            // Repair transactions set a much shorter one of their own (SET LOCAL).
            idle_in_transaction: Duration::from_secs(db.statement_timeout_seconds.max(60) * 2),
        };
        // The URL's sslrootcert and database.ca_file name the same thing; the URL's wins.
        let tls = tls::connector(target.root_cert().or(db.ca_file.as_deref()))?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .post_create(Hook::async_fn(move |client, _| {
                Box::pin(async move {
                    session::apply(client, &session)
                        .await
                        .map_err(|e| HookError::message(crate::telemetry::error_chain(&e)))
                })
            }))
            .max_size(db.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(db.connect_timeout_seconds * 3)))
            .create_timeout(Some(Duration::from_secs(db.connect_timeout_seconds)))
            // A connection whose server stopped answering is not handed out again.
            .recycle_timeout(Some(Duration::from_secs(db.connect_timeout_seconds)))
            .build()
            .map_err(|e| DbError::Pool {
                target: target.describe(),
                detail: e.to_string(),
            })?;
        let replica = match target.replica() {
            Some(replica) => Some(std::sync::Arc::new(Self::new(replica, settings)?)),
            None => None,
        };
        Ok(Self {
            pool,
            config,
            tls,
            target: target.describe(),
            session,
            replica,
        })
    }

    /// The hot standby of this database (`database.replica_url`), if one is configured.
    pub fn replica(&self) -> Option<&Database> {
        self.replica.as_deref()
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
        let conn = DedicatedConnection { client, task };
        session::apply(&conn.client, &self.session).await?;
        Ok((conn, received))
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
