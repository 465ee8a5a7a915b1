//! What can go wrong starting or stopping a throwaway cluster.

use std::io;

/// Errors starting or stopping a local cluster.
#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    #[error(
        "PostgreSQL server binaries not found (looked in $PG_BINDIR, `pg_config --bindir` and \
         /usr/lib/postgresql/*/bin). Install them: `apt-get install -y postgresql` \
         (Debian/Ubuntu), or set PG_BINDIR to the directory holding initdb and postgres"
    )]
    BinariesNotFound,
    #[error("running as root but there is no `postgres` user to run the server as; install the `postgresql` package or run as an ordinary user")]
    NoPostgresUser,
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("I/O error while {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("the local PostgreSQL keeper thread is gone")]
    KeeperGone,
}

pub(super) fn io_err(what: &str) -> impl FnOnce(io::Error) -> LocalPgError + '_ {
    move |source| LocalPgError::Io {
        what: what.to_string(),
        source,
    }
}
