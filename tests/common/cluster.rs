//! The throwaway PostgreSQL clusters of a test binary: one shared cluster (started on first
//! use, the Supabase API roles created), and clusters of their own for tests that stop,
//! restart or reconfigure their server ([`cluster_with`]).

use std::sync::OnceLock;

use synqall_reconciler::fixture::{execute_sql, standin_cluster, SUPABASE_ROLES_SQL};
use synqall_reconciler::local_pg::{ClusterOptions, LocalCluster};
use tokio_postgres::{Client, NoTls};

static CLUSTER: OnceLock<LocalCluster> = OnceLock::new();

/// The shared cluster of this test binary, started on first use with the API roles created.
pub fn cluster() -> &'static LocalCluster {
    CLUSTER.get_or_init(|| {
        // Runs inside a test's runtime: do the blocking work and the role setup on a thread of
        // its own.
        std::thread::spawn(|| {
            let cluster = LocalCluster::start().unwrap_or_else(|e| {
                panic!("cannot start the test PostgreSQL cluster: {e}");
            });
            let url = cluster.url("postgres");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(execute_sql(&url, SUPABASE_ROLES_SQL))
                .expect("create the Supabase API roles");
            cluster
        })
        .join()
        .expect("cluster start-up thread panicked")
    })
}

/// A cluster of its own with `options` and nothing in it.
pub async fn empty_cluster(options: ClusterOptions) -> LocalCluster {
    tokio::task::spawn_blocking(move || LocalCluster::start_with(options))
        .await
        .expect("cluster start-up task")
        .unwrap_or_else(|e| panic!("cannot start a test PostgreSQL cluster: {e}"))
}

/// A cluster of its own with `options` and a stand-in database `name`; returns the cluster
/// and the database's URL. PostgreSQL missing is a failure saying what to install.
pub async fn cluster_with(options: ClusterOptions, name: &str) -> (LocalCluster, String) {
    standin_cluster(options, name)
        .await
        .unwrap_or_else(|e| panic!("cannot start a test PostgreSQL cluster: {e}"))
}

/// Connect and drive the connection on the current runtime.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}
