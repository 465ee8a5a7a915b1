//! Incremental passes (V8): the triggers log what each statement changed, an incremental pass
//! looks only at those organizations and repairs what a full pass would; what the triggers
//! cannot see (disabled triggers, TRUNCATE) the sweep finds and the tracking is rebuilt; an
//! incremental pass that cannot trust the tracking runs as a sweep.

mod common;

use common::{Daemon, TestDb};
use uuid::Uuid;

const INCREMENTAL: &[&str] = &["--reconcile-now", "--incremental"];

/// `n` organizations in sync (counter = completed calls = usage_metrics), then one sweep to
/// build the tracking.
async fn tracked(db: &TestDb, n: usize) -> Vec<(Uuid, Uuid)> {
    let mut orgs = Vec::new();
    for i in 0..n {
        let org = db.org(&format!("Org {i}"), Some(10)).await;
        let user = db.user().await;
        db.member(user, org, 30).await;
        db.completed_call(user, org, 10).await;
        orgs.push((org, user));
    }
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(
        out.grep("change tracking built").len(),
        1,
        "the first sweep builds the tracking: {}",
        out.stderr
    );
    orgs
}

fn summary_field(out: &common::Run, field: &str) -> String {
    let line = out.grep("reconcile pass finished");
    let line = line
        .first()
        .unwrap_or_else(|| panic!("no summary: {}", out.stderr));
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{field}=")))
        .unwrap_or_else(|| panic!("no {field} in {line}"))
        .to_string()
}

async fn log_rows(db: &TestDb) -> i64 {
    db.scalar("SELECT count(*) FROM reconciler.changes").await
}

#[tokio::test]
async fn the_triggers_log_what_each_statement_changed_per_organization() {
    let db = TestDb::migrated().await;
    let org = db.org("Logged", Some(0)).await;
    let other = db.org("Other", Some(0)).await;
    let user = db.user().await;
    db.exec("DELETE FROM reconciler.changes").await;
    // One statement, three calls of two organizations (one pending): two rows, pending ignored.
    db.exec(&format!(
        "INSERT INTO public.calls (user_id, organization_id, status, duration_minutes) VALUES
           ('{user}', '{org}', 'completed', 4), ('{user}', '{org}', 'completed', 6),
           ('{user}', '{other}', 'completed', 3), ('{user}', '{other}', 'pending', 50)"
    ))
    .await;
    let rows: Vec<(Uuid, String)> = db
        .client
        .query(
            "SELECT organization_id, calls_ceil::text FROM reconciler.changes c ORDER BY c.calls_ceil",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        vec![(other, "3".to_string()), (org, "10".to_string())]
    );
    // An update that moves minutes between organizations logs both sides; one that changes
    // nothing billed logs nothing; a counter move logs a marker.
    db.exec("DELETE FROM reconciler.changes").await;
    db.exec(&format!(
        "UPDATE public.calls SET organization_id = '{other}' WHERE organization_id = '{org}'
            AND duration_minutes = 4;
         UPDATE public.calls SET user_id = user_id;
         UPDATE public.organizations SET used_minutes = 1 WHERE id = '{org}';"
    ))
    .await;
    let rows: Vec<(Option<Uuid>, String)> = db
        .client
        .query(
            "SELECT organization_id, calls_ceil::text FROM reconciler.changes ORDER BY 2, 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut expected = vec![
        (Some(org), "-4".to_string()),
        (Some(org), "0".to_string()),
        (Some(other), "4".to_string()),
    ];
    expected.sort();
    let mut rows_sorted = rows.clone();
    rows_sorted.sort();
    assert_eq!(rows_sorted, expected, "{rows:?}");
}

#[tokio::test]
async fn an_incremental_pass_repairs_what_changed_and_looks_at_nothing_else() {
    let db = TestDb::migrated().await;
    let orgs = tracked(&db, 5).await;
    // Nothing changed: nothing to look at.
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(summary_field(&out, "kind"), "incremental");
    assert_eq!(summary_field(&out, "orgs_checked"), "0");

    // A lost increment (a completed call, no counter bump), an old call edited, a counter
    // edited by hand: three organizations changed, each repaired by the incremental pass.
    let (lost, user) = orgs[0];
    db.call(user, Some(lost), "completed", Some(7), 0).await;
    db.exec(&format!(
        "UPDATE public.calls SET duration_minutes = 12 WHERE organization_id = '{}';
         UPDATE public.organizations SET used_minutes = 99 WHERE id = '{}';",
        orgs[1].0, orgs[2].0
    ))
    .await;
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(summary_field(&out, "kind"), "incremental");
    assert_eq!(summary_field(&out, "orgs_checked"), "3", "{}", out.stderr);
    assert_eq!(summary_field(&out, "repaired"), "3", "{}", out.stderr);
    assert_eq!(db.used_minutes(lost).await, Some(17));
    assert_eq!(db.used_minutes(orgs[1].0).await, Some(12));
    assert_eq!(db.used_minutes(orgs[2].0).await, Some(10));
    assert_eq!(out.grep("CRITICAL used_minutes drift").len(), 3);

    // The repairs themselves moved counters: the next pass looks at them once, finds them
    // right, and then the log is empty.
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(summary_field(&out, "drifted"), "0", "{}", out.stderr);
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(summary_field(&out, "orgs_checked"), "0", "{}", out.stderr);
    assert_eq!(log_rows(&db).await, 0);

    // status says which kind each run was.
    let out = db.run(&["status", "--json"], &[]).await;
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let kinds: Vec<&str> = status["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.last(), Some(&"sweep"), "{kinds:?}");
    assert!(
        kinds[..kinds.len() - 1].iter().all(|k| *k == "incremental"),
        "{kinds:?}"
    );
    let table = db.run(&["status"], &[]).await;
    assert!(table.stdout.contains(" incremental "), "{}", table.stdout);
}

#[tokio::test]
async fn an_incremental_pass_runs_as_a_sweep_until_the_tracking_is_built() {
    let db = TestDb::migrated().await;
    let org = db.org("Early", Some(0)).await;
    let user = db.user().await;
    db.completed_call(user, org, 5).await;
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let escalated = out.grep("incremental pass runs as a sweep");
    assert_eq!(escalated.len(), 1, "{}", out.stderr);
    assert!(escalated[0].contains("not built yet"), "{}", escalated[0]);
    assert_eq!(summary_field(&out, "kind"), "sweep");
    assert_eq!(db.used_minutes(org).await, Some(5));
}

#[tokio::test]
async fn what_the_triggers_cannot_see_the_sweep_finds_and_the_tracking_is_rebuilt() {
    let db = TestDb::migrated().await;
    let orgs = tracked(&db, 3).await;
    // A bulk load with the triggers off: the log never hears of it.
    let (org, user) = orgs[0];
    db.exec("ALTER TABLE public.calls DISABLE TRIGGER synqall_reconciler_insert")
        .await;
    db.call(user, Some(org), "completed", Some(20), 0).await;
    db.exec("ALTER TABLE public.calls ENABLE TRIGGER synqall_reconciler_insert")
        .await;
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(
        summary_field(&out, "orgs_checked"),
        "0",
        "blind: {}",
        out.stderr
    );
    assert_eq!(db.used_minutes(org).await, Some(10));

    // The sweep sees it, repairs it, and rebuilds that organization's tracking.
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(db.used_minutes(org).await, Some(30));
    let rebuilt = out.grep("change tracking disagreed with the ledgers");
    assert_eq!(rebuilt.len(), 1, "{}", out.stderr);
    assert!(rebuilt[0].contains("organizations=1"), "{}", rebuilt[0]);
    // From then on the tracking agrees: a lost increment is found incrementally again.
    db.call(user, Some(org), "completed", Some(1), 0).await;
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(summary_field(&out, "kind"), "incremental");
    assert_eq!(db.used_minutes(org).await, Some(31), "{}", out.stderr);
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert!(
        out.grep("change tracking disagreed").is_empty(),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_truncate_makes_the_next_incremental_pass_a_sweep() {
    let db = TestDb::migrated().await;
    let orgs = tracked(&db, 2).await;
    db.exec("TRUNCATE public.usage_metrics").await;
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let escalated = out.grep("incremental pass runs as a sweep");
    assert!(escalated[0].contains("TRUNCATE"), "{}", out.stderr);
    assert_eq!(summary_field(&out, "kind"), "sweep");
    // The sweep rebuilt the totals (usage_metrics are gone) and settled the marker.
    assert_eq!(
        out.grep("change tracking disagreed").len(),
        1,
        "{}",
        out.stderr
    );
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(summary_field(&out, "kind"), "incremental", "{}", out.stderr);
    assert_eq!(db.used_minutes(orgs[0].0).await, Some(10));
}

#[tokio::test]
async fn an_incremental_dry_run_writes_nothing_and_keeps_the_log() {
    let db = TestDb::migrated().await;
    let orgs = tracked(&db, 2).await;
    db.call(orgs[0].1, Some(orgs[0].0), "completed", Some(3), 0)
        .await;
    let before = log_rows(&db).await;
    assert!(before > 0);
    let out = db
        .run(&["--reconcile-now", "--incremental", "--dry-run"], &[])
        .await;
    assert_eq!(out.code(), 2, "drift left: {}", out.stderr);
    assert_eq!(summary_field(&out, "orgs_checked"), "1");
    assert_eq!(log_rows(&db).await, before, "the log is untouched");
    assert_eq!(db.used_minutes(orgs[0].0).await, Some(10));
}

#[tokio::test]
async fn the_daemon_runs_incremental_passes_and_sweeps_on_their_own_schedules() {
    let db = TestDb::migrated().await;
    let orgs = tracked(&db, 2).await;
    let mut daemon = Daemon::start(
        &db.url,
        &[
            ("SYNQALL_RECONCILER__SCHEDULE__CRON", "* * * * * *"),
            (
                "SYNQALL_RECONCILER__SCHEDULE__FULL_SWEEP_CRON",
                "*/4 * * * * *",
            ),
        ],
    );
    daemon.wait_for("reconcile pass finished", 6, 30).await;
    db.call(orgs[1].1, Some(orgs[1].0), "completed", Some(5), 0)
        .await;
    daemon.wait_for("action=repaired", 1, 15).await;
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(15).await, Some(0));
    assert_eq!(db.used_minutes(orgs[1].0).await, Some(15));
    let finished = daemon.grep("reconcile pass finished");
    let sweeps = finished.iter().filter(|l| l.contains("kind=sweep")).count();
    let incremental = finished
        .iter()
        .filter(|l| l.contains("kind=incremental"))
        .count();
    assert!(
        sweeps >= 1 && incremental >= 3,
        "{sweeps} sweeps, {incremental} incremental"
    );
}
