//! The sweep on a real streaming replica (`pg_basebackup -R` of the test's own cluster, a hot
//! standby on the same machine): the comparison runs there and the primary only re-reads and
//! repairs the candidates, with the same journal and counters as a sweep without a replica; a
//! replica that is behind, is not a standby, or is unreachable is skipped with a WARN and the
//! sweep reads the primary.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{cluster_with, connect, outcome, run_bin};
use synqall_reconciler::fixture::{create_standin_database, execute_sql};
use synqall_reconciler::local_pg::{ClusterOptions, LocalCluster};

const REPLICA_URL: &str = "SYNQALL_RECONCILER__DATABASE__REPLICA_URL";
const CATCH_UP: &str = "SYNQALL_RECONCILER__DATABASE__REPLICA_CATCH_UP_SECONDS";

/// 40 organizations with 10 minutes of completed calls each: every fourth counter lost
/// minutes, every fifth usage_metrics ledger is short (a ledger mismatch), two calls orphaned
/// with one possible owner.
const DRIFT_SQL: &str = "
  INSERT INTO public.organizations (name, used_minutes)
    SELECT 'org ' || lpad(i::text, 2, '0'), CASE WHEN i % 4 = 0 THEN 3 ELSE 10 END
      FROM generate_series(1, 40) i;
  INSERT INTO auth.users (id) SELECT gen_random_uuid() FROM public.organizations;
  INSERT INTO public.user_organizations (user_id, organization_id, created_at)
    SELECT u.id, o.id, now() - interval '30 days'
      FROM (SELECT id, row_number() OVER (ORDER BY id) n FROM auth.users) u
      JOIN (SELECT id, row_number() OVER (ORDER BY name) n FROM public.organizations) o
        USING (n);
  INSERT INTO public.calls (user_id, organization_id, status, duration_minutes, created_at)
    SELECT m.user_id, m.organization_id, 'completed', 5, now() - interval '1 day'
      FROM public.user_organizations m, generate_series(1, 2);
  UPDATE public.calls SET organization_id = NULL
   WHERE id IN (SELECT id FROM public.calls ORDER BY id LIMIT 2);
  INSERT INTO public.usage_metrics (organization_id, metric_type, metric_value)
    SELECT o.id, 'minutes_transcribed', CASE WHEN o.name::text ~ '(05|10|15|20|25|30|35|40)$'
                                             THEN 7 ELSE 10 END
      FROM public.organizations o;";

/// A primary of the test's own with databases `app` and `twin` (the same drift in both), and
/// a hot standby of it that has replayed them.
async fn primary_and_standby() -> (Arc<LocalCluster>, LocalCluster, String, String) {
    let (primary, app) = cluster_with(ClusterOptions::default(), "app").await;
    let primary = Arc::new(primary);
    let twin = create_standin_database(&primary, "twin")
        .await
        .expect("create the twin database");
    for url in [&app, &twin] {
        let out = run_bin(&["migrate"], &[("DATABASE_URL", url.as_str())], &[]).await;
        assert_eq!(out.code(), 0, "{}", out.stderr);
        execute_sql(url, DRIFT_SQL).await.expect("seed the drift");
    }
    // pg_basebackup and the standby's start-up block: off the runtime's threads.
    let from = primary.clone();
    let standby = tokio::task::spawn_blocking(move || from.start_standby())
        .await
        .expect("standby start-up task")
        .unwrap_or_else(|e| panic!("cannot start a streaming standby: {e}"));
    wait_replayed(&primary, &standby, "app").await;
    (primary, standby, app, twin)
}

/// Until the standby has replayed everything the primary wrote so far.
async fn wait_replayed(primary: &LocalCluster, standby: &LocalCluster, db: &str) {
    let done = synqall_reconciler::fixture::wait_replayed(
        &primary.url(db),
        &standby.url(db),
        Duration::from_secs(30),
    )
    .await
    .expect("ask the primary and the standby for their WAL positions");
    assert!(
        done,
        "the standby did not replay the primary's writes in 30 s"
    );
}

/// The binary with `args` against the database at `url` (and `env`).
async fn reconcile(url: &str, args: &[&str], env: &[(&str, &str)]) -> common::Run {
    run_bin(args, &[("DATABASE_URL", url)], env).await
}

/// How often the standby's own statistics saw `public.calls` read.
async fn calls_reads(standby: &LocalCluster, db: &str) -> i64 {
    connect(&standby.url(db))
        .await
        .query_one(
            "SELECT (coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::bigint
               FROM pg_stat_user_tables WHERE relid = 'public.calls'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_sweep_compares_on_the_replica_and_repairs_on_the_primary_as_without_it() {
    let (primary, standby, app, twin) = primary_and_standby().await;
    let replica_url = standby.url("app");
    let reads_before = calls_reads(&standby, "app").await;

    let out = reconcile(
        app.as_str(),
        &["--reconcile-now"],
        &[(REPLICA_URL, replica_url.as_str())],
    )
    .await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(
        out.grep("sweep compares on the replica").len(),
        1,
        "{}",
        out.stderr
    );
    assert!(
        out.grep("sweep reads the primary").is_empty(),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(&primary.password().to_string()),
        "a password was logged"
    );
    assert!(
        calls_reads(&standby, "app").await > reads_before,
        "the standby never read public.calls"
    );
    assert_eq!(out.grep("CRITICAL").len(), 10, "{}", out.stderr);

    let twin_out = reconcile(twin.as_str(), &["--reconcile-now"], &[]).await;
    assert_eq!(twin_out.code(), 0, "{}", twin_out.stderr);
    let with_replica = outcome(&app).await;
    assert_eq!(with_replica, outcome(&twin).await);
    assert!(
        with_replica.contains(&"counter org 04=10".to_string()),
        "{with_replica:?}"
    );
    assert!(
        with_replica.contains(&"adjustment org 04 3->10 drift".to_string()),
        "{with_replica:?}"
    );
    assert!(
        with_replica.contains(&"mismatch org 05 10/7".to_string()),
        "{with_replica:?}"
    );

    // A second sweep on the replica (after it replayed the first's repairs) changes nothing.
    wait_replayed(&primary, &standby, "app").await;
    let again = reconcile(
        app.as_str(),
        &["--reconcile-now"],
        &[(REPLICA_URL, replica_url.as_str())],
    )
    .await;
    assert_eq!(again.code(), 0, "{}", again.stderr);
    assert!(again.grep("CRITICAL").is_empty(), "{}", again.stderr);
    assert!(
        again.grep("WARN ledger mismatch").is_empty(),
        "{}",
        again.stderr
    );
    assert_eq!(outcome(&app).await, with_replica);
}

#[tokio::test]
async fn a_replica_that_is_behind_is_skipped_and_the_sweep_reads_the_primary() {
    let (_primary, standby, app, twin) = primary_and_standby().await;
    let replica_url = standby.url("app");
    // Replay paused: the standby cannot see the pass's own start.
    connect(&replica_url)
        .await
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    let out = reconcile(
        app.as_str(),
        &["--reconcile-now"],
        &[(REPLICA_URL, replica_url.as_str()), (CATCH_UP, "2")],
    )
    .await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let skipped = out.grep("sweep reads the primary");
    assert_eq!(skipped.len(), 1, "{}", out.stderr);
    assert!(skipped[0].contains("replication lag"), "{}", skipped[0]);
    assert!(
        skipped[0].starts_with(|c: char| c.is_ascii_digit()),
        "{}",
        skipped[0]
    );
    assert!(skipped[0].contains(" WARN "), "{}", skipped[0]);
    let twin_out = reconcile(twin.as_str(), &["--reconcile-now"], &[]).await;
    assert_eq!(twin_out.code(), 0, "{}", twin_out.stderr);
    assert_eq!(outcome(&app).await, outcome(&twin).await);
}

#[tokio::test]
async fn a_replica_url_that_is_no_standby_of_this_database_is_skipped() {
    let (primary, standby, app, _twin) = primary_and_standby().await;
    for (replica_url, reason) in [
        // The primary itself: not in recovery.
        (primary.url("app"), "not a hot standby"),
        // A standby, but of the other database (its own tracking identity).
        (standby.url("twin"), "not a copy of this database"),
        // Nothing listens there.
        (
            format!("postgres://postgres:x@127.0.0.1:{}/app", closed_port()),
            "connect",
        ),
    ] {
        let out = reconcile(
            app.as_str(),
            &["--reconcile-now", "--dry-run"],
            &[(REPLICA_URL, replica_url.as_str())],
        )
        .await;
        // A dry run that finds drift exits 2.
        assert_eq!(out.code(), 2, "{replica_url}: {}", out.stderr);
        let skipped = out.grep("sweep reads the primary");
        assert_eq!(skipped.len(), 1, "{replica_url}: {}", out.stderr);
        assert!(skipped[0].contains(reason), "{reason}: {}", skipped[0]);
        assert!(out.grep("CRITICAL").len() >= 10, "{}", out.stderr);
    }
}

/// A loopback port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
