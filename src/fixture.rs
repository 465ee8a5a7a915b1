//! The Supabase stand-in that `demo`, the tests and the bench load: the API roles, the auth
//! schema, the four application tables with RLS and Supabase's default grants, the seed's SQL
//! as production ran it, and the demo's damaged sample data (all in `sql/fixture/`). One copy,
//! so the tests and the demo run against the same schema.

use tokio_postgres::NoTls;

use crate::local_pg::{ClusterOptions, LocalCluster, LocalPgError};

/// Supabase's API roles (cluster-wide, idempotent).
pub const SUPABASE_ROLES_SQL: &str = include_str!("../sql/fixture/supabase_roles.sql");
/// The Supabase stand-in: auth schema, the four application tables, RLS, default grants.
pub const SUPABASE_STANDIN_SQL: &str = include_str!("../sql/fixture/supabase_standin.sql");
/// The incident's one-off fix, verbatim: the production state before the first `migrate`.
pub const SEED_FIX_SQL: &str = include_str!("../sql/fixture/seed_fix.sql");
/// Sample data with planted drift and orphans.
pub const DEMO_DATA_SQL: &str = include_str!("../sql/fixture/demo_data.sql");

/// Why a stand-in could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error(transparent)]
    LocalPg(#[from] LocalPgError),
    #[error("Failed to load the Supabase stand-in: {0}")]
    Sql(#[from] tokio_postgres::Error),
    #[error("the cluster start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Connect once and run `sql`.
///
/// # Errors
/// Connection or statement failure.
pub async fn execute_sql(url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let task = tokio::spawn(connection);
    let result = client.batch_execute(sql).await;
    drop(client);
    let _ = task.await;
    result
}

/// Create database `name` on a throwaway cluster with the Supabase stand-in loaded (the API
/// roles, cluster-wide, are created first if missing); returns its URL. Not for concurrent use
/// on one cluster: two role creations can race.
///
/// # Errors
/// Connection or statement failure.
pub async fn create_standin_database(
    cluster: &LocalCluster,
    name: &str,
) -> Result<String, tokio_postgres::Error> {
    let admin = cluster.url("postgres");
    execute_sql(&admin, SUPABASE_ROLES_SQL).await?;
    execute_sql(&admin, &format!("CREATE DATABASE {name}")).await?;
    let url = cluster.url(name);
    execute_sql(&url, SUPABASE_STANDIN_SQL).await?;
    Ok(url)
}

/// A throwaway cluster of its own (started off the async runtime) with a stand-in database
/// `name`; returns the cluster and the database's URL. For tests and benches that stop,
/// reconfigure or tune their server.
///
/// # Errors
/// The cluster did not start or the stand-in did not load.
pub async fn standin_cluster(
    options: ClusterOptions,
    name: &str,
) -> Result<(LocalCluster, String), FixtureError> {
    let cluster = tokio::task::spawn_blocking(move || LocalCluster::start_with(options)).await??;
    let url = create_standin_database(&cluster, name).await?;
    Ok((cluster, url))
}
