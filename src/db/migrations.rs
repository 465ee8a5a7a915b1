//! The shipped migrations (`migrations/V*.sql`, compiled in) and the runner that applies them.
//!
//! Why not refinery's runner: it keeps its history table in the connection's default schema,
//! which on Supabase is `public`, where the default privileges let the `anon` API role read and
//! write it. Ours lives in `reconciler.schema_migrations` (no API access), checksums what it
//! applied, applies each migration in its own transaction under an advisory lock (two
//! concurrent `migrate` runs cannot interleave) and with a short `lock_timeout`, so a migration
//! that would queue behind a long transaction on a production table fails fast instead of
//! stalling every query behind it.

use tokio_postgres::error::SqlState;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Database, DbError, QueryContext};

/// One shipped migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// FNV-1a of the SQL text: detects a migration edited after it was applied.
    pub fn checksum(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.sql.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    }
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "usage_tracking_fix",
        sql: include_str!("../../migrations/V1__usage_tracking_fix.sql"),
    },
    Migration {
        version: 2,
        name: "reconciler_journal",
        sql: include_str!("../../migrations/V2__reconciler_journal.sql"),
    },
    Migration {
        version: 3,
        name: "reconciler_role",
        sql: include_str!("../../migrations/V3__reconciler_role.sql"),
    },
    Migration {
        version: 4,
        name: "revert_and_periods",
        sql: include_str!("../../migrations/V4__revert_and_periods.sql"),
    },
    Migration {
        version: 5,
        name: "safety",
        sql: include_str!("../../migrations/V5__safety.sql"),
    },
    Migration {
        version: 6,
        name: "lease",
        sql: include_str!("../../migrations/V6__lease.sql"),
    },
    Migration {
        version: 7,
        name: "ledger_mismatches",
        sql: include_str!("../../migrations/V7__ledger_mismatches.sql"),
    },
    Migration {
        version: 8,
        name: "incremental",
        sql: include_str!("../../migrations/V8__incremental.sql"),
    },
    Migration {
        version: 9,
        name: "trigger_plans",
        sql: include_str!("../../migrations/V9__trigger_plans.sql"),
    },
    Migration {
        version: 10,
        name: "change_log_partitions",
        sql: include_str!("../../migrations/V10__change_log_partitions.sql"),
    },
];

/// Serialises concurrent `migrate` runs (transaction-scoped advisory lock).
const MIGRATE_LOCK_KEY: i64 = 7_356_172_090_143_225_002;

const BOOTSTRAP_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS reconciler;
CREATE TABLE IF NOT EXISTS reconciler.schema_migrations (
  version    integer PRIMARY KEY,
  name       text NOT NULL,
  checksum   text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
REVOKE ALL ON SCHEMA reconciler FROM PUBLIC;
REVOKE ALL ON reconciler.schema_migrations FROM PUBLIC;
";

/// What `migrate` did with one migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: i32,
    pub name: &'static str,
    /// Every NOTICE and WARNING the server sent while applying it (`"WARNING: …"`): on
    /// Supabase a GRANT the migrating role may not give is only a WARNING, and must be seen.
    pub notices: Vec<String>,
}

/// Versions and checksums recorded in the database; empty when nothing was ever applied.
///
/// # Errors
/// A query failure other than "the history table does not exist".
pub async fn applied_versions(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Vec<(i32, String)>, DbError> {
    match client
        .query(
            "SELECT version, checksum FROM reconciler.schema_migrations ORDER BY version",
            &[],
        )
        .await
    {
        Ok(rows) => Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect()),
        Err(e)
            if e.code() == Some(&SqlState::UNDEFINED_TABLE)
                || e.code() == Some(&SqlState::INVALID_SCHEMA_NAME) =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(DbError::Query {
            what: "read reconciler.schema_migrations",
            source: e,
        }),
    }
}

/// Fail unless every shipped migration is applied, unchanged.
///
/// # Errors
/// [`DbError::NotMigrated`] naming what is pending, [`DbError::MigrationChanged`].
pub async fn ensure_current(client: &impl tokio_postgres::GenericClient) -> Result<(), DbError> {
    let applied = applied_versions(client).await?;
    verify_checksums(&applied)?;
    let pending: Vec<String> = MIGRATIONS
        .iter()
        .filter(|m| !applied.iter().any(|(v, _)| *v == m.version))
        .map(|m| format!("V{}__{}", m.version, m.name))
        .collect();
    if pending.is_empty() {
        Ok(())
    } else {
        Err(DbError::NotMigrated {
            detail: format!("pending: {}", pending.join(", ")),
        })
    }
}

fn verify_checksums(applied: &[(i32, String)]) -> Result<(), DbError> {
    for (version, checksum) in applied {
        if let Some(m) = MIGRATIONS.iter().find(|m| m.version == *version) {
            if m.checksum() != *checksum {
                return Err(DbError::MigrationChanged {
                    version: *version,
                    applied: checksum.clone(),
                    shipped: m.checksum(),
                });
            }
        }
    }
    Ok(())
}

/// `migrate`: apply what is pending on a connection of its own, and log it.
///
/// # Errors
/// As [`apply_pending`].
pub async fn migrate(db: &Database) -> Result<Vec<Applied>, DbError> {
    let (mut conn, mut notices) = db.dedicated_with_notices().await?;
    super::pinning::check_pinned(db, &conn.client).await?;
    let applied = apply_pending(&mut conn.client, &mut notices).await?;
    if applied.is_empty() {
        info!("migrations: nothing to apply, the database is current");
    }
    for m in &applied {
        info!(version = m.version, name = m.name, "migration applied");
        for notice in &m.notices {
            warn!(
                version = m.version,
                server_said = notice.as_str(),
                "migration: the server said"
            );
        }
    }
    Ok(applied)
}

/// The notices received so far (those of the statement that just completed included).
async fn drain(notices: &mut mpsc::UnboundedReceiver<String>) -> Vec<String> {
    // The connection task hands a notice over before the statement's completion it preceded;
    // one yield lets it finish handing over.
    tokio::task::yield_now().await;
    let mut drained = Vec::new();
    while let Ok(notice) = notices.try_recv() {
        drained.push(notice);
    }
    drained
}

/// Apply every pending migration, each in its own transaction; returns what was applied
/// (empty when the database was current).
///
/// # Errors
/// The first failing migration (its transaction rolled back; earlier ones stay applied), or an
/// applied migration whose text changed.
pub async fn apply_pending(
    client: &mut tokio_postgres::Client,
    notices: &mut mpsc::UnboundedReceiver<String>,
) -> Result<Vec<Applied>, DbError> {
    let tx = client
        .transaction()
        .await
        .context("begin migration bootstrap")?;
    tx.query(
        "SELECT pg_catalog.pg_advisory_xact_lock($1)",
        &[&MIGRATE_LOCK_KEY],
    )
    .await
    .context("take the migration lock")?;
    tx.batch_execute(BOOTSTRAP_SQL)
        .await
        .context("create reconciler.schema_migrations")?;
    tx.commit().await.context("commit migration bootstrap")?;
    // The bootstrap's own "already exists, skipping" notices are not news.
    drain(notices).await;

    let mut done = Vec::new();
    for migration in MIGRATIONS {
        let tx = client.transaction().await.context("begin migration")?;
        tx.query(
            "SELECT pg_catalog.pg_advisory_xact_lock($1)",
            &[&MIGRATE_LOCK_KEY],
        )
        .await
        .context("take the migration lock")?;
        // Read under the lock: another `migrate` may have applied it meanwhile.
        let applied = applied_versions(&tx).await?;
        verify_checksums(&applied)?;
        if applied.iter().any(|(v, _)| *v == migration.version) {
            continue;
        }
        tx.batch_execute("SET LOCAL lock_timeout = '5s'")
            .await
            .context("set the migration lock_timeout")?;
        tx.batch_execute(migration.sql)
            .await
            .map_err(|source| DbError::Migration {
                version: migration.version,
                name: migration.name,
                source,
            })?;
        tx.execute(
            "INSERT INTO reconciler.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &migration.checksum()],
        )
        .await
        .context("record a migration")?;
        tx.commit().await.context("commit a migration")?;
        done.push(Applied {
            version: migration.version,
            name: migration.name,
            notices: drain(notices).await,
        });
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_increasing_and_checksums_distinct() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
            assert_ne!(pair[0].checksum(), pair[1].checksum());
        }
    }
}
