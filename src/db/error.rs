//! What can go wrong talking to the database, and [`QueryContext`] to say what was being done.
//! Messages never contain the connection password: tokio-postgres errors do not echo it, and
//! targets are shown through `DatabaseTarget::describe`.

/// Database failures.
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
    #[error(
        "the advisory lock connection stopped answering (no reply in {seconds} s); stopped writing"
    )]
    LockUnresponsive { seconds: u64 },
    #[error("fenced: this instance no longer holds the advisory lock (another took over); nothing more is written")]
    Fenced,
    #[error(
        "{what}: no answer within {seconds} s (client-side deadline); the statement was cancelled"
    )]
    Timeout { what: &'static str, seconds: u64 },
    #[error("statements of one connection reach different server sessions ({detail}): a transaction pooler (pgbouncer or Supavisor in transaction mode) sits in between, and it cannot keep the session advisory lock; connect directly (db.<project>.supabase.co:5432) or through a pooler in session mode (Supabase's session pooler, port 5432; pgbouncer pool_mode = session)")]
    TransactionPooler { detail: String },
    #[error("the session settings did not take ({detail}); a pooler that rewrites SET statements sits in between: connect directly or through a session-mode pooler")]
    SessionSettings { detail: String },
}

impl DbError {
    /// A problem of configuration, not of the moment (exit 78, not restarted by systemd): a
    /// bad setting, or a transaction pooler in the way.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            Self::Config(_) | Self::TransactionPooler { .. } | Self::SessionSettings { .. }
        )
    }

    /// The connection (or the server) is gone: whatever was tried next on it would fail the
    /// same way. A statement the server refused (a constraint, a timeout) is not a connection
    /// loss, nor is anything found before connecting (schema, migrations, configuration).
    pub fn is_connection_loss(&self) -> bool {
        match self {
            Self::Query { source, .. } | Self::Migration { source, .. } => {
                source.is_closed() || source.code().is_none()
            }
            Self::Connect { .. }
            | Self::Pool { .. }
            | Self::LockLost(_)
            | Self::LockUnresponsive { .. }
            | Self::Fenced
            | Self::Timeout { .. } => true,
            Self::Config(_)
            | Self::NotMigrated { .. }
            | Self::Schema { .. }
            | Self::MigrationChanged { .. }
            | Self::TransactionPooler { .. }
            | Self::SessionSettings { .. } => false,
        }
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
