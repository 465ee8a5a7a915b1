//! The Supabase stand-in that `demo`, the tests and the bench load: the API roles, the auth
//! schema, the four application tables with RLS and Supabase's default grants, the seed's SQL
//! as production ran it, and the demo's damaged sample data (all in `sql/fixture/`). One copy,
//! so the tests and the demo run against the same schema.

use tokio_postgres::NoTls;

use crate::local_pg::{ClusterOptions, LocalCluster, LocalPgError};

/// Supabase's API roles (cluster-wide, idempotent).
pub const SUPABASE_ROLES_SQL: &str = include_str!("../sql/fixture/supabase_roles.sql");
/// The Supabase stand-in: auth schema, the four application tables, RLS, default grants.
pub const SUPABASE_STANDIN_SQL: &str = concat!(
    include_str!("../sql/fixture/supabase_auth.sql"),
    include_str!("../sql/fixture/supabase_app.sql")
);
/// The application part of the stand-in alone (run as the application's owner).
pub const SUPABASE_APP_SQL: &str = include_str!("../sql/fixture/supabase_app.sql");
/// A Supabase project's roles, with `postgres` no superuser (run as `supabase_admin`).
pub const SUPABASE_PLATFORM_ROLES_SQL: &str =
    include_str!("../sql/fixture/supabase_platform_roles.sql");
/// A Supabase project's auth schema, owned by `supabase_admin` (run as `supabase_admin`).
pub const SUPABASE_PLATFORM_AUTH_SQL: &str =
    include_str!("../sql/fixture/supabase_platform_auth.sql");
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

/// A database laid out as a Supabase project's (on a cluster whose bootstrap superuser is
/// `supabase_admin`): `postgres` a non-superuser that owns the database and the application
/// tables, the auth schema owned by `supabase_admin`. Returns the URL as `postgres` (password
/// `postgres_password`).
///
/// # Errors
/// Connection or statement failure.
pub async fn create_supabase_like_database(
    cluster: &LocalCluster,
    name: &str,
    postgres_password: &str,
) -> Result<String, tokio_postgres::Error> {
    let admin = cluster.url("postgres");
    let roles = SUPABASE_PLATFORM_ROLES_SQL.replace("$POSTGRES_PASSWORD$", postgres_password);
    execute_sql(&admin, &roles).await?;
    execute_sql(&admin, &format!("CREATE DATABASE {name} OWNER postgres")).await?;
    execute_sql(&cluster.url(name), SUPABASE_PLATFORM_AUTH_SQL).await?;
    let owner = cluster.url_as("postgres", postgres_password, name);
    execute_sql(&owner, SUPABASE_APP_SQL).await?;
    Ok(owner)
}

/// Wait until the standby at `replica_url` has replayed everything the primary at
/// `primary_url` wrote so far (`pg_current_wal_lsn` there, `pg_last_wal_replay_lsn` here),
/// for at most `timeout`. Returns whether it did.
///
/// # Errors
/// Connection or statement failure.
pub async fn wait_replayed(
    primary_url: &str,
    replica_url: &str,
    timeout: std::time::Duration,
) -> Result<bool, tokio_postgres::Error> {
    let connect = |url: &str| {
        let url = url.to_string();
        async move {
            let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
            tokio::spawn(connection);
            Ok::<_, tokio_postgres::Error>(client)
        }
    };
    let lsn: String = connect(primary_url)
        .await?
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    let replica = connect(replica_url).await?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let done: bool = replica
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .await?
            .get(0);
        if done {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
