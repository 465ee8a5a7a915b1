//! Faults a production box sees, each with a cluster of its own (they stop the server): the
//! server restarted or down under a running daemon.

mod common;

use std::sync::Arc;

use common::{cluster_with, connect, run_bin, Daemon};
use synqall_reconciler::fixture::execute_sql;
use synqall_reconciler::local_pg::{ClusterOptions, LocalCluster};

/// A dedicated cluster with a migrated stand-in database `app`.
async fn own_cluster() -> (Arc<LocalCluster>, String) {
    let (cluster, url) = cluster_with(ClusterOptions::default(), "app").await;
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
    // The pass that repaired it finished (stopping the server under it would fail it after
    // its repair: still repaired once, but not the pass this test counts).
    daemon.wait_for(" repaired=1 ", 1, 20).await;

    // Down for longer than the stall threshold: passes fail, one stall alert, then recovery.
    blocking(&cluster, |c| c.stop_server(true)).await;
    daemon.wait_for("reconcile pass failed", 1, 10).await;
    daemon
        .wait_for("CRITICAL reconciler stalled since", 1, 15)
        .await;
    // One stall line for the episode, however many passes failed in it.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        daemon.grep("CRITICAL reconciler stalled since").len(),
        1,
        "one stall line per episode"
    );
    blocking(&cluster, |c| c.start_server()).await;
    daemon.wait_for("reconciler recovered", 1, 20).await;
    let second = plant_drift(&url, "After outage").await;
    daemon.wait_for(&format!("org_id={second}"), 1, 20).await;
    let finished = daemon.grep("reconcile pass finished").len();
    daemon
        .wait_for("reconcile pass finished", finished + 2, 20)
        .await;

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
    // Repaired by incremental passes (the first pass built the tracking).
    let repairing: Vec<String> = daemon
        .grep("reconcile pass finished")
        .into_iter()
        .filter(|l| l.contains(" repaired=1 "))
        .collect();
    assert_eq!(repairing.len(), 2, "{repairing:#?}");
    assert!(
        repairing.iter().all(|l| l.contains(" kind=incremental ")),
        "{repairing:#?}"
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(
        daemon.wait(15).await,
        Some(0),
        "the same daemon process ran throughout"
    );
}

/// `n` organizations whose counter (0) misses their one 5-minute call, and repair batches made
/// slow (50 ms each, 10 organizations per batch) so that a pass lasts long enough to be hit.
const SLOW_DRIFT_SQL: &str = "
    INSERT INTO public.organizations (name, used_minutes)
      SELECT 'org ' || i, 0 FROM generate_series(1, 300) i;
    INSERT INTO public.calls (user_id, organization_id, status, duration_minutes)
      SELECT gen_random_uuid(), id, 'completed', 5 FROM public.organizations;
    CREATE FUNCTION public.slow_down() RETURNS trigger LANGUAGE plpgsql AS
      $$ BEGIN PERFORM pg_sleep(0.05); RETURN NULL; END $$;
    CREATE TRIGGER slow_down AFTER INSERT ON reconciler.adjustments
      FOR EACH STATEMENT EXECUTE FUNCTION public.slow_down();";

const SMALL_BATCHES: &[(&str, &str)] = &[("SYNQALL_RECONCILER__USAGE__BATCH_SIZE", "10")];

/// Every counter right, and repaired exactly once.
async fn assert_converged_once(url: &str) {
    let client = connect(url).await;
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE o.used_minutes IS DISTINCT FROM 5),
                    count(*) FILTER (WHERE (SELECT count(*) FROM reconciler.adjustments a
                                             WHERE a.organization_id = o.id) <> 1)
               FROM public.organizations o",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0, "counters not converged");
    assert_eq!(
        row.get::<_, i64>(1),
        0,
        "an organization was repaired twice or not journalled"
    );
}

/// Wait until no counter is wrong (the daemon keeps ticking).
async fn wait_converged(url: &str, secs: u64) {
    let client = connect(url).await;
    for _ in 0..secs * 10 {
        let wrong: i64 = client
            .query_one(
                "SELECT count(*) FROM public.organizations WHERE used_minutes IS DISTINCT FROM 5",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(1);
        if wrong == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("not converged after {secs}s");
}

#[tokio::test]
async fn server_restarted_mid_pass_converges_without_double_repair() {
    let (cluster, url) = own_cluster().await;
    execute_sql(&url, SLOW_DRIFT_SQL).await.unwrap();
    let mut daemon = Daemon::start(&url, SMALL_BATCHES);
    daemon.wait_for("action=repaired", 30, 20).await;
    blocking(&cluster, |c| c.restart_server()).await;
    daemon.wait_for("reconcile pass failed", 1, 10).await;
    wait_converged(&url, 40).await;
    assert_converged_once(&url).await;
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(15).await, Some(0));
}

#[tokio::test]
async fn reconciler_backend_terminated_mid_batch_converges_without_double_repair() {
    let db = common::TestDb::migrated().await;
    db.exec(SLOW_DRIFT_SQL).await;
    let mut daemon = Daemon::start(&db.url, SMALL_BATCHES);
    daemon.wait_for("action=repaired", 30, 20).await;
    // The backend running a repair batch: it sits in the slow trigger's pg_sleep. (Matched by
    // wait event, not query text: pg_stat_activity truncates the text at 1 kB.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let killed: i64 = loop {
        let n: i64 = db
            .scalar(&format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                  WHERE datname = '{}' AND application_name = 'synqall-reconciler'
                    AND state = 'active' AND wait_event = 'PgSleep'",
                db.name
            ))
            .await;
        if n > 0 {
            break n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no repair batch caught in its slow trigger within 20 s:\n{}",
            daemon.lines().join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(killed, 1);
    daemon.wait_for("reconcile pass failed", 1, 10).await;
    wait_converged(&db.url, 40).await;
    assert_converged_once(&db.url).await;
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(15).await, Some(0));
}

#[tokio::test]
async fn lock_connection_killed_mid_pass_stops_writing_then_converges() {
    let db = common::TestDb::migrated().await;
    db.exec(SLOW_DRIFT_SQL).await;
    let mut daemon = Daemon::start(&db.url, SMALL_BATCHES);
    daemon.wait_for("action=repaired", 30, 20).await;
    let killed: i64 = db
        .scalar(&format!(
            "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l
               JOIN pg_database d ON d.oid = l.database
              WHERE l.locktype = 'advisory' AND d.datname = '{}'",
            db.name
        ))
        .await;
    assert_eq!(killed, 1, "one lock holder");
    let failed = daemon.wait_for("reconcile pass failed", 1, 10).await;
    assert!(
        failed[0].contains("advisory lock connection was lost"),
        "{}",
        failed[0]
    );
    wait_converged(&db.url, 40).await;
    assert_converged_once(&db.url).await;
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(15).await, Some(0));
}

#[tokio::test]
async fn statement_timeout_fails_the_pass_cleanly_with_nothing_half_written() {
    let db = common::TestDb::migrated().await;
    db.exec(
        "INSERT INTO public.organizations (name, used_minutes)
           SELECT 'org ' || i, 0 FROM generate_series(1, 300) i;
         INSERT INTO public.calls (user_id, organization_id, status, duration_minutes)
           SELECT gen_random_uuid(), id, 'completed', 5 FROM public.organizations;
         INSERT INTO public.calls (user_id, organization_id, status, duration_minutes)
           SELECT gen_random_uuid(), NULL, 'completed', 5 FROM generate_series(1, 5);",
    )
    .await;
    // As the least-privilege role, every calls row costs 10 ms to read: a "huge table".
    let url = db.reconciler_login().await;
    db.exec(
        "CREATE FUNCTION public.slow_true() RETURNS boolean LANGUAGE sql AS
           $$ SELECT true FROM pg_sleep(0.01) $$;
         ALTER POLICY synqall_reconciler_read ON public.calls USING (public.slow_true());",
    )
    .await;
    let before = db.row_versions().await;
    let out = common::run_bin(
        &["--reconcile-now"],
        &[("DATABASE_URL", url.as_str())],
        &[(
            "SYNQALL_RECONCILER__DATABASE__STATEMENT_TIMEOUT_SECONDS",
            "1",
        )],
    )
    .await;
    assert_eq!(out.code(), 1, "{}", out.stderr);
    let failed = out.grep("ERROR reconcile pass failed");
    assert_eq!(failed.len(), 1, "{}", out.stderr);
    assert!(failed[0].contains("statement timeout"), "{}", failed[0]);
    assert_eq!(
        db.row_versions().await,
        before,
        "something was half-written"
    );
    let adjustments: i64 = db
        .scalar("SELECT count(*) FROM reconciler.adjustments")
        .await;
    assert_eq!(adjustments, 0);
    let (status, error) = db.only_run().await;
    assert_eq!(status, "failed");
    let error = error.unwrap_or_default();
    assert!(error.contains("statement timeout"), "{error}");

    db.exec("ALTER POLICY synqall_reconciler_read ON public.calls USING (true)")
        .await;
    let out = common::run_bin(&["--reconcile-now"], &[("DATABASE_URL", url.as_str())], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let wrong: i64 = db
        .scalar("SELECT count(*) FROM public.organizations WHERE used_minutes <> 5")
        .await;
    assert_eq!(wrong, 0);
}
