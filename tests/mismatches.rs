//! Ledger mismatches as state: logged when they appear, change or resolve, not every pass; the
//! current count in `status`, the runs and the metrics; a dry run logs what would change and
//! writes no state.

mod common;

use common::{Daemon, TestDb};
use uuid::Uuid;

const MISMATCH: &str = "ledger mismatch between calls and usage_metrics";

/// Three organizations whose ledgers disagree (counters right by the calls ledger), one in sync.
async fn mismatched(db: &TestDb) -> Vec<Uuid> {
    let mut orgs = Vec::new();
    for i in 0..3 {
        let org = db.org(&format!("Mismatch {i}"), Some(10)).await;
        let user = db.user().await;
        db.member(user, org, 30).await;
        db.call(user, Some(org), "completed", Some(10), 1).await;
        db.metric(org, 10 + i + 1).await;
        orgs.push(org);
    }
    let fine = db.org("In sync", Some(5)).await;
    let user = db.user().await;
    db.member(user, fine, 30).await;
    db.completed_call(user, fine, 5).await;
    orgs
}

#[tokio::test]
async fn nine_daemon_passes_over_an_unchanged_database_log_each_mismatch_once() {
    let db = TestDb::migrated().await;
    let orgs = mismatched(&db).await;
    let mut daemon = Daemon::start(&db.url, &[]);
    daemon.wait_for("reconcile pass finished", 9, 30).await;
    let lines = daemon.grep(MISMATCH);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for org in &orgs {
        let of_org: Vec<_> = lines
            .iter()
            .filter(|l| l.contains(&org.to_string()))
            .collect();
        assert_eq!(of_org.len(), 1, "{lines:#?}");
        assert!(of_org[0].contains(" WARN "), "{}", of_org[0]);
        assert!(of_org[0].contains("change=appeared"), "{}", of_org[0]);
    }
    // Every pass still counts them.
    for summary in daemon.grep("reconcile pass finished") {
        assert!(summary.contains("ledger_mismatches=3"), "{summary}");
    }

    // One changes (another usage row), one resolves (its ledgers agree again): one line each.
    db.metric(orgs[0], 1).await;
    db.exec(&format!(
        "DELETE FROM public.usage_metrics WHERE organization_id = '{}'",
        orgs[1]
    ))
    .await;
    db.metric(orgs[1], 10).await;
    let passes = daemon.grep("reconcile pass finished").len();
    daemon
        .wait_for("reconcile pass finished", passes + 3, 30)
        .await;
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(15).await, Some(0));

    let changed: Vec<_> = daemon
        .grep(MISMATCH)
        .into_iter()
        .filter(|l| l.contains("change=changed"))
        .collect();
    assert_eq!(changed.len(), 1, "{changed:#?}");
    assert!(changed[0].contains(&orgs[0].to_string()), "{}", changed[0]);
    assert!(
        changed[0].contains("calls_minutes=10 metrics_minutes=12"),
        "{}",
        changed[0]
    );
    let resolved = daemon.grep("ledger mismatch resolved");
    assert_eq!(resolved.len(), 1, "{resolved:#?}");
    assert!(resolved[0].contains(" INFO "), "{}", resolved[0]);
    assert!(
        resolved[0].contains(&orgs[1].to_string()),
        "{}",
        resolved[0]
    );
    assert_eq!(
        daemon.grep(MISMATCH).len(),
        4,
        "nothing else was logged again"
    );

    // The state: two open, in the table, the last run and status.
    let open: i64 = db
        .scalar("SELECT count(*) FROM reconciler.ledger_mismatches")
        .await;
    assert_eq!(open, 2);
    let out = db.run(&["status", "--json", "--limit", "1"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status["ledger_mismatches"], 2, "{status}");
    assert_eq!(status["runs"][0]["ledger_mismatches"], 2, "{status}");
    let out = db.run(&["status"], &[]).await;
    assert!(
        out.stdout.contains("ledger mismatches: 2 organizations"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn a_dry_run_logs_what_would_change_and_writes_no_state() {
    let db = TestDb::migrated().await;
    mismatched(&db).await;
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.grep(MISMATCH).len(), 3, "{}", out.stderr);
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.grep(MISMATCH).len(), 0, "{}", out.stderr);

    db.exec("DELETE FROM reconciler.ledger_mismatches").await;
    let out = db.run(&["--reconcile-now", "--dry-run"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let lines = out.grep(MISMATCH);
    assert_eq!(lines.len(), 3, "{}", out.stderr);
    assert!(
        lines.iter().all(|l| l.contains("change=appeared")),
        "{lines:#?}"
    );
    let kept: i64 = db
        .scalar("SELECT count(*) FROM reconciler.ledger_mismatches")
        .await;
    assert_eq!(kept, 0, "a dry run writes nothing");
    // doctor sees them too, without writing.
    let out = db.run(&["doctor"], &[]).await;
    assert!(
        out.stdout
            .contains("3 organization(s) where completed calls and minutes_transcribed differ"),
        "{}",
        out.stdout
    );
    let kept: i64 = db
        .scalar("SELECT count(*) FROM reconciler.ledger_mismatches")
        .await;
    assert_eq!(kept, 0);
}

#[tokio::test]
async fn thousands_of_mismatches_are_kept_exactly_across_sync_batches() {
    // More mismatches than one sync statement takes (5000): the id ranges of the batches must
    // cover every row, boundaries included.
    let db = TestDb::migrated().await;
    let user = db.user().await;
    db.exec(&format!(
        "CREATE TEMP TABLE o AS
           WITH ins AS (
             INSERT INTO public.organizations (name, used_minutes)
             SELECT 'Bulk ' || g, 10 FROM generate_series(1, 12000) g RETURNING id)
           SELECT id FROM ins;
         INSERT INTO public.calls (user_id, organization_id, status, duration_minutes)
           SELECT '{user}', id, 'completed', 10 FROM o;
         INSERT INTO public.usage_metrics (organization_id, metric_type, metric_value)
           SELECT id, 'minutes_transcribed', 11 FROM o;"
    ))
    .await;
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let open: i64 = db
        .scalar("SELECT count(*) FROM reconciler.ledger_mismatches")
        .await;
    assert_eq!(open, 12000);
    // Lines are capped per pass, with one summary for the rest.
    assert_eq!(out.grep(MISMATCH).len(), 200, "{}", out.stderr);

    // Every third resolves; the rest stay, unlogged.
    db.exec(
        "UPDATE public.usage_metrics SET metric_value = 10
          WHERE (('x' || substr(md5(organization_id::text), 1, 8))::bit(32)::int % 3) = 0",
    )
    .await;
    let resolved_now: i64 = db
        .scalar(
            "SELECT count(*) FROM public.usage_metrics m
              JOIN reconciler.ledger_mismatches lm ON lm.organization_id = m.organization_id
             WHERE m.metric_value = 10",
        )
        .await;
    assert!(resolved_now > 3000, "{resolved_now}");
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(out.grep(MISMATCH).is_empty(), "{}", out.stderr);
    assert_eq!(
        out.grep("ledger mismatch resolved").len(),
        200,
        "{}",
        out.stderr
    );
    let open: i64 = db
        .scalar("SELECT count(*) FROM reconciler.ledger_mismatches")
        .await;
    assert_eq!(open, 12000 - resolved_now);
    let wrong: i64 = db
        .scalar(
            "SELECT count(*) FROM reconciler.ledger_mismatches lm
              JOIN public.usage_metrics m ON m.organization_id = lm.organization_id
             WHERE m.metric_value = 10",
        )
        .await;
    assert_eq!(wrong, 0, "a resolved mismatch was kept");
}
