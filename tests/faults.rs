//! Faults a production box sees, each with a cluster of its own (they stop the server): the
//! server restarted or down under a running daemon.

mod common;

use std::sync::Arc;

use common::{connect, run_bin, Daemon};
use synqall_reconciler::demo::{execute_sql, SUPABASE_ROLES_SQL, SUPABASE_STANDIN_SQL};
use synqall_reconciler::local_pg::LocalCluster;

/// A dedicated cluster with a migrated stand-in database `app`.
async fn own_cluster() -> (Arc<LocalCluster>, String) {
    let cluster = tokio::task::spawn_blocking(LocalCluster::start)
        .await
        .unwrap()
        .expect("start a dedicated cluster");
    execute_sql(&cluster.url("postgres"), SUPABASE_ROLES_SQL)
        .await
        .unwrap();
    execute_sql(&cluster.url("postgres"), "CREATE DATABASE app")
        .await
        .unwrap();
    let url = cluster.url("app");
    execute_sql(&url, SUPABASE_STANDIN_SQL).await.unwrap();
    let out = run_bin(&["migrate"], &[("DATABASE_URL", url.as_str())], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    (Arc::new(cluster), url)
}

async fn blocking(
    cluster: &Arc<LocalCluster>,
    f: fn(&LocalCluster) -> Result<(), synqall_reconciler::local_pg::LocalPgError>,
) {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || f(&cluster))
        .await
        .unwrap()
        .expect("cluster operation");
}

/// Plant an organization whose counter misses its only call; returns its id.
async fn plant_drift(url: &str, name: &str) -> uuid::Uuid {
    let client = connect(url).await;
    let org: uuid::Uuid = client
        .query_one(
            "INSERT INTO public.organizations (name, used_minutes) VALUES ($1, 0) RETURNING id",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    client
        .execute(
            "INSERT INTO public.calls (organization_id, status, duration_minutes) VALUES ($1, 'completed', 10)",
            &[&org],
        )
        .await
        .unwrap();
    org
}

#[tokio::test]
async fn server_restart_under_a_running_daemon_needs_no_daemon_restart_and_repairs_once() {
    let (cluster, url) = own_cluster().await;
    let mut daemon = Daemon::start(
        &url,
        &[("SYNQALL_RECONCILER__ALERT__STALLED_AFTER_SECONDS", "3")],
    );
    daemon.wait_for("reconcile pass finished", 1, 15).await;

    // A crash-like restart between two ticks.
    blocking(&cluster, |c| c.restart_server()).await;
    let first = plant_drift(&url, "After restart").await;
    daemon.wait_for(&format!("org_id={first}"), 1, 20).await;

    // Down for longer than the stall threshold: passes fail, one stall alert, then recovery.
    blocking(&cluster, |c| c.stop_server(true)).await;
    daemon.wait_for("reconcile pass failed", 1, 10).await;
    daemon
        .wait_for("CRITICAL reconciler stalled since", 1, 15)
        .await;
    blocking(&cluster, |c| c.start_server()).await;
    daemon.wait_for("reconciler recovered", 1, 20).await;
    let second = plant_drift(&url, "After outage").await;
    daemon.wait_for(&format!("org_id={second}"), 1, 20).await;
    let finished = daemon.grep("reconcile pass finished").len();
    daemon
        .wait_for("reconcile pass finished", finished + 2, 20)
        .await;

    assert_eq!(
        daemon.grep("CRITICAL reconciler stalled since").len(),
        1,
        "one stall line per episode"
    );
    let client = connect(&url).await;
    for org in [first, second] {
        let row = client
            .query_one(
                "SELECT o.used_minutes, (SELECT count(*) FROM reconciler.adjustments a WHERE a.organization_id = o.id)
                   FROM public.organizations o WHERE o.id = $1",
                &[&org],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, Option<i32>>(0), Some(10));
        assert_eq!(row.get::<_, i64>(1), 1, "repaired exactly once");
    }
    daemon.signal(libc::SIGTERM);
    assert_eq!(
        daemon.wait(15).await,
        Some(0),
        "the same daemon process ran throughout"
    );
}
