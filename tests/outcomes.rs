//! Honest outcomes: a pass that leaves drift unrepaired is `partial` everywhere (journal, exit
//! code, status, metrics); one bad row affects only itself; a panic inside a pass still closes
//! its run; "stalled" is computed from the journal, so it fires across restarts and on a
//! standby.

mod common;

use std::time::Duration;

use common::{run_bin, Daemon, TestDb};
use uuid::Uuid;

/// `n` organizations with a counter of 0 and one 10-minute call each.
async fn drifted(db: &TestDb, n: usize) -> Vec<Uuid> {
    let mut orgs = Vec::new();
    for i in 0..n {
        let org = db.org(&format!("Org {i}"), Some(0)).await;
        let user = db.user().await;
        db.member(user, org, 30).await;
        db.completed_call(user, org, 10).await;
        orgs.push(org);
    }
    orgs
}

/// A trigger that refuses every update of one organization.
async fn refuse_updates_of(db: &TestDb, org: Uuid) {
    db.exec(&format!(
        "CREATE FUNCTION public.frozen_org() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'organization % is frozen by policy', OLD.id; END $$;
         CREATE TRIGGER frozen_org BEFORE UPDATE ON public.organizations
           FOR EACH ROW WHEN (OLD.id = '{org}') EXECUTE FUNCTION public.frozen_org();"
    ))
    .await;
}

#[tokio::test]
async fn one_refused_row_fails_alone_and_the_pass_is_partial_everywhere() {
    let db = TestDb::migrated().await;
    let orgs = drifted(&db, 4).await;
    refuse_updates_of(&db, orgs[1]).await;

    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 2, "{}", out.stderr);
    for (i, org) in orgs.iter().enumerate() {
        let expected = if i == 1 { Some(0) } else { Some(10) };
        assert_eq!(db.used_minutes(*org).await, expected, "org {i}");
    }
    let failed = out.grep(&format!("org_id={}", orgs[1]));
    assert!(
        failed
            .iter()
            .any(|l| l.contains("CRITICAL used_minutes drift") && l.contains("action=failed")),
        "{}",
        out.stderr
    );
    assert!(
        failed
            .iter()
            .any(|l| l.contains("ERROR Failed to update organization")
                && l.contains("frozen by policy")),
        "{}",
        out.stderr
    );
    let row = db
        .client
        .query_one("SELECT status, repaired, failed FROM reconciler.runs", &[])
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, i32>(1),
            row.get::<_, i32>(2)
        ),
        ("partial".to_string(), 3, 1)
    );
    let status = db.run(&["status", "--json"], &[]).await;
    let value: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(value["runs"][0]["status"], "partial", "{value}");
    assert!(
        value["last_success_at"].is_null(),
        "a partial pass is no success: {value}"
    );
}

#[tokio::test]
async fn a_daemon_counts_a_partial_pass_as_partial_in_its_metrics_and_the_alert_fires() {
    let db = TestDb::migrated().await;
    let orgs = drifted(&db, 2).await;
    refuse_updates_of(&db, orgs[0]).await;
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let mut daemon = Daemon::start(&db.url, &[("SYNQALL_RECONCILER__METRICS__LISTEN", &addr)]);
    daemon.wait_for("reconcile pass finished", 2, 15).await;
    let first = common::metrics_once(
        &addr,
        "synqall_reconciler_passes_total{outcome=\"partial\"}",
        2.0,
        5,
    )
    .await;
    let partial = common::sample(
        &first,
        "synqall_reconciler_passes_total{outcome=\"partial\"}",
    );
    assert!(partial >= 2.0, "{first}");
    assert_eq!(
        common::sample(&first, "synqall_reconciler_passes_total{outcome=\"ok\"}"),
        0.0
    );
    assert!(
        common::sample(
            &first,
            "synqall_reconciler_repairs_total{outcome=\"failed\"}"
        ) >= 2.0
    );
    assert_eq!(
        common::sample(&first, "synqall_reconciler_drift_unrepaired"),
        1.0,
        "{first}"
    );
    daemon.wait_for("reconcile pass finished", 4, 15).await;
    let second = common::http_get(&addr, "/metrics").await.1;
    // Fed to the shipped rules as two scrapes a minute apart: the partial alert fires.
    assert!(common::promtool::fires(
        &[&first, &second],
        "SynqallReconcilerPartial",
        5
    ));
    assert!(!common::promtool::fires(
        &[&first, &second],
        "SynqallReconcilerStalled",
        5
    ));
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(15).await, Some(0));
}

#[tokio::test]
async fn a_panic_inside_a_pass_closes_its_run_as_failed_with_an_error_line() {
    let db = TestDb::migrated().await;
    drifted(&db, 1).await;
    let out = db
        .run(
            &["--reconcile-now"],
            &[("SYNQALL_RECONCILER_TEST_FAULT", "repair")],
        )
        .await;
    assert_eq!(out.code(), 1, "{}", out.stderr);
    let failed = out.grep("ERROR reconcile pass failed");
    assert_eq!(failed.len(), 1, "{}", out.stderr);
    assert!(failed[0].contains("the pass panicked"), "{}", failed[0]);
    assert!(
        !out.stderr.lines().any(|l| l.starts_with("thread ")),
        "the panic is a log line, not raw stderr: {}",
        out.stderr
    );
    let (status, error) = db.only_run().await;
    assert_eq!(status, "failed");
    assert!(error.unwrap_or_default().contains("panicked"));
}

#[tokio::test]
async fn the_stall_alert_comes_from_the_journal_and_survives_a_crash_loop() {
    let db = TestDb::migrated().await;
    drifted(&db, 1).await;
    let env = [
        ("SYNQALL_RECONCILER_TEST_FAULT", "repair"),
        ("SYNQALL_RECONCILER__ALERT__STALLED_AFTER_SECONDS", "3"),
    ];
    let mut first = Daemon::start(&db.url, &env);
    first
        .wait_for("CRITICAL reconciler stalled since", 1, 20)
        .await;
    let failed: i64 = db
        .scalar("SELECT count(*) FROM reconciler.runs WHERE status = 'failed'")
        .await;
    assert!(
        failed >= 2,
        "every panicking pass is a failed run ({failed})"
    );
    first.signal(libc::SIGKILL);
    first.wait(10).await;

    // A restart does not reset the clock: the journal still has no success.
    let started = std::time::Instant::now();
    let mut second = Daemon::start(&db.url, &env);
    let line = second
        .wait_for("CRITICAL reconciler stalled since", 1, 10)
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stall reported {:?} after the restart",
        started.elapsed()
    );
    assert!(line[0].contains("last_error="), "{}", line[0]);
    second.signal(libc::SIGTERM);
    assert_eq!(second.wait(15).await, Some(0));
}

#[tokio::test]
async fn a_standby_reports_a_stall_of_the_instance_holding_the_lock() {
    let db = TestDb::migrated().await;
    drifted(&db, 1).await;
    let pass = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(pass.code(), 0, "{}", pass.stderr);
    // The active instance hangs with the lock: nothing succeeds any more.
    let _holder = db.hold_reconciler_lock().await;
    let mut standby = Daemon::start(
        &db.url,
        &[("SYNQALL_RECONCILER__ALERT__STALLED_AFTER_SECONDS", "3")],
    );
    standby.wait_for("advisory lock is held", 1, 10).await;
    standby
        .wait_for("CRITICAL reconciler stalled since", 1, 15)
        .await;
    standby.signal(libc::SIGTERM);
    assert_eq!(standby.wait(15).await, Some(0));
    // The last success is still the one-shot pass.
    let out = run_bin(&["status"], &[("DATABASE_URL", db.url.as_str())], &[]).await;
    assert!(
        out.stdout.starts_with("last successful pass: 20"),
        "{}",
        out.stdout
    );
}
