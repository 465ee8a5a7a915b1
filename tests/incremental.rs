//! Incremental passes (V8): the triggers log what each statement changed, an incremental pass
//! looks only at those organizations and repairs what a full pass would; what the triggers
//! cannot see (disabled triggers, TRUNCATE) the sweep finds and repairs; an
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
        out.grep("change tracking ready").len(),
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

/// The log rows the next pass consumes (consumed rows stay until their partition is emptied).
async fn log_rows(db: &TestDb) -> i64 {
    db.scalar("SELECT count(*) FROM reconciler.pending_changes")
        .await
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
    // nothing billed logs nothing; a counter move logs how far it moved.
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
    let moved: Vec<Option<String>> = db
        .column("SELECT counter_delta::text FROM reconciler.changes ORDER BY counter_delta")
        .await;
    assert_eq!(
        moved,
        vec![
            Some("0".to_string()),
            Some("0".to_string()),
            Some("1".to_string())
        ],
        "ledger rows move no counter; the counter went from 0 to 1"
    );
    // A counter set to NULL is a marker: "look at it".
    db.exec(&format!(
        "UPDATE public.organizations SET used_minutes = NULL WHERE id = '{org}'"
    ))
    .await;
    let markers: i64 = db
        .scalar(&format!(
            "SELECT count(*) FROM reconciler.changes
              WHERE organization_id = '{org}' AND counter_delta IS NULL"
        ))
        .await;
    assert_eq!(markers, 1);
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

    // The repairs themselves moved counters, to values confirmed under the row lock: not
    // logged, so the next pass has nothing to look at.
    let left: Vec<String> = db.column("SELECT format('%s %s %s', organization_id, counter_delta, calls_ceil) FROM reconciler.pending_changes").await;
    assert_eq!(log_rows(&db).await, 0, "{left:?}");
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(summary_field(&out, "orgs_checked"), "0", "{}", out.stderr);
    // Anyone else's session saying it is repairing is logged all the same.
    db.exec(
        "CREATE ROLE app_writer LOGIN PASSWORD 'pw';
         GRANT USAGE ON SCHEMA public TO app_writer;
         GRANT UPDATE (used_minutes), SELECT ON public.organizations TO app_writer;
         CREATE POLICY app_writer_all ON public.organizations TO app_writer
           USING (true) WITH CHECK (true);",
    )
    .await;
    let host = db.url.split_once('@').expect("user@host in the URL").1;
    let app = common::connect(&format!("postgres://app_writer:pw@{host}")).await;
    app.batch_execute(&format!(
        "SET synqall_reconciler.repairing = 'on';
         UPDATE public.organizations SET used_minutes = 5 WHERE id = '{}';",
        orgs[3].0
    ))
    .await
    .unwrap();
    assert_eq!(
        log_rows(&db).await,
        1,
        "a forged setting hid a counter move"
    );
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(summary_field(&out, "repaired"), "1", "{}", out.stderr);

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
async fn what_the_triggers_cannot_see_the_sweep_finds_and_repairs() {
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

    // The sweep sees it and repairs it: every organization is in sync again.
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(db.used_minutes(org).await, Some(30));
    assert_eq!(summary_field(&out, "repaired"), "1", "{}", out.stderr);
    // From then on a lost increment is found incrementally again.
    db.call(user, Some(org), "completed", Some(1), 0).await;
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(summary_field(&out, "kind"), "incremental");
    assert_eq!(db.used_minutes(org).await, Some(31), "{}", out.stderr);
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(summary_field(&out, "drifted"), "0", "{}", out.stderr);
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
    // The sweep recorded what the TRUNCATE did (usage_metrics are gone: two mismatches) and
    // settled the marker.
    assert_eq!(
        summary_field(&out, "ledger_mismatches"),
        "2",
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

#[tokio::test]
async fn a_change_still_in_flight_is_neither_lost_nor_waited_for() {
    let db = TestDb::migrated().await;
    let orgs = tracked(&db, 2).await;
    let (busy, user) = orgs[0];
    let (other, other_user) = orgs[1];
    // The app, mid-transaction: a completed call inserted (its increment lost), not committed:
    // its log row is not in the pass's snapshot.
    let app = call_in_flight(&db, user, busy, 4).await;
    db.call(other_user, Some(other), "completed", Some(2), 0)
        .await;
    let started = std::time::Instant::now();
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the pass waited for the app's transaction"
    );
    assert_eq!(summary_field(&out, "kind"), "incremental");
    assert_eq!(db.used_minutes(other).await, Some(12), "{}", out.stderr);
    assert_eq!(db.used_minutes(busy).await, Some(10));
    // Committed after the pass's snapshot: the next pass sees it.
    app.batch_execute("COMMIT").await.unwrap();
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(summary_field(&out, "repaired"), "1", "{}", out.stderr);
    assert_eq!(db.used_minutes(busy).await, Some(14));
}

#[tokio::test]
async fn an_incremental_pass_names_the_bad_values_of_what_it_repairs_as_a_sweep_does() {
    let db = TestDb::migrated().await;
    let orgs = tracked(&db, 3).await;
    let (org, user) = orgs[1];
    // Bad values the ledgers leave out, then a completed call whose increment was lost.
    db.exec(&format!(
        "INSERT INTO public.calls (user_id, organization_id, status, duration_minutes) VALUES
           ('{user}', '{org}', 'completed', NULL), ('{user}', '{org}', 'completed', -3),
           ('{user}', '{org}', 'completed', 5);
         INSERT INTO public.usage_metrics (organization_id, metric_type, metric_value) VALUES
           ('{org}', 'minutes_transcribed', 'NaN'), ('{org}', 'minutes_transcribed', 5);"
    ))
    .await;
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(summary_field(&out, "kind"), "incremental");
    assert_eq!(db.used_minutes(org).await, Some(15));
    // Counted by the candidates' exact re-read itself: no second read of their ledgers.
    let bad = out.grep(&format!("counted as 0 org_id={org}"));
    assert_eq!(bad.len(), 1, "{}", out.stderr);
    for count in [
        "null_durations=1",
        "negative_durations=1",
        "invalid_durations=0",
        "invalid_metric_values=1",
    ] {
        assert!(bad[0].contains(count), "{count}: {}", bad[0]);
    }
    assert_eq!(
        out.grep("counted as 0").len(),
        1,
        "only the repaired organization: {}",
        out.stderr
    );
}

#[tokio::test]
async fn an_increment_after_a_bulk_update_in_the_same_session_stays_fast() {
    let db = TestDb::migrated().await;
    // A bulk UPDATE first (a monthly reset): the trigger's statement is planned for 100k rows,
    // above jit_above_cost, and PL/pgSQL keeps that plan for the session.
    db.client
        .batch_execute(
            "INSERT INTO public.organizations (name, used_minutes)
               SELECT 'bulk ' || i, 0 FROM generate_series(1, 100000) i;
             SET jit = on;
             UPDATE public.organizations SET used_minutes = 1",
        )
        .await
        .unwrap();
    let org: Uuid = db
        .scalar("SELECT id FROM public.organizations ORDER BY name LIMIT 1")
        .await;
    let started = std::time::Instant::now();
    for _ in 0..10 {
        db.client
            .execute("SELECT public.increment_used_minutes($1, 1)", &[&org])
            .await
            .unwrap();
    }
    let elapsed = started.elapsed();
    assert_eq!(db.used_minutes(org).await, Some(11));
    // Before V9 each single-row increment JIT-compiled the kept plan again: ~100 ms each
    // (1 s and more for these ten); without that, a few milliseconds in all.
    assert!(
        elapsed < std::time::Duration::from_millis(600),
        "10 increments took {elapsed:?}: the trigger's kept plan is JIT-compiled at every call"
    );
}

/// The app mid-transaction: a completed call inserted (its increment lost), not committed;
/// `COMMIT` on the returned connection ends it.
async fn call_in_flight(
    db: &TestDb,
    user: Uuid,
    org: Uuid,
    minutes: i32,
) -> tokio_postgres::Client {
    let app = common::connect(&db.url).await;
    app.batch_execute(&format!(
        "BEGIN;
         INSERT INTO public.calls (user_id, organization_id, status, duration_minutes)
           VALUES ('{user}', '{org}', 'completed', {minutes});"
    ))
    .await
    .unwrap();
    app
}

/// Run the binary with `args`, held at pause point `point` (src/fault.rs) while `meanwhile`
/// runs, then let go.
async fn run_paused(
    db: &TestDb,
    args: &[&str],
    point: &str,
    meanwhile: impl std::future::Future<Output = ()>,
) -> common::Run {
    let dir = tempfile::tempdir().unwrap();
    let fault = format!("pause:{point}:{}", dir.path().display());
    let app = async {
        let paused = dir.path().join("paused");
        for _ in 0..1500 {
            if paused.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(paused.exists(), "the pass never reached the pause {point}");
        meanwhile.await;
        std::fs::write(dir.path().join("resume"), "").unwrap();
    };
    let env = [("SYNQALL_RECONCILER_TEST_FAULT", fault.as_str())];
    let (out, ()) = tokio::join!(db.run(args, &env), app);
    out
}

/// Rows in each partition of the log: (reconciler.changes_0, reconciler.changes_1).
async fn stored_rows(db: &TestDb) -> (i64, i64) {
    (
        db.scalar("SELECT count(*) FROM reconciler.changes_0").await,
        db.scalar("SELECT count(*) FROM reconciler.changes_1").await,
    )
}

#[tokio::test]
async fn the_log_is_consumed_by_snapshot_and_emptied_a_partition_at_a_time() {
    let db = TestDb::migrated().await;
    let orgs = tracked(&db, 2).await;
    let (org, user) = orgs[0];
    // The sweep consumed what the set-up logged (in partition 0) and emptied partition 1, now
    // the active one: consumed rows stay until their partition's turn, nothing is pending.
    assert_eq!(log_rows(&db).await, 0);
    let (first, second) = stored_rows(&db).await;
    assert!(first > 0, "the set-up's rows, consumed, still stored");
    assert_eq!(second, 0);
    let active: i64 = db
        .scalar("SELECT last_value FROM reconciler.change_generation")
        .await;
    assert_eq!(active, 1);

    // A completed call and its metric, the increment lost: logged in partition 1.
    db.call(user, Some(org), "completed", Some(5), 0).await;
    db.metric(org, 5).await;
    assert_eq!(stored_rows(&db).await, (first, 2));
    assert_eq!(log_rows(&db).await, 2);
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(summary_field(&out, "repaired"), "1", "{}", out.stderr);
    assert_eq!(db.used_minutes(org).await, Some(15));
    // Partition 0 emptied by TRUNCATE and active again; partition 1's rows consumed.
    assert_eq!(stored_rows(&db).await, (0, 2));
    assert_eq!(log_rows(&db).await, 0);
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(summary_field(&out, "orgs_checked"), "0", "{}", out.stderr);
    assert_eq!(stored_rows(&db).await, (0, 0));

    // The pass empties the idle partition (now 0) under its ACCESS EXCLUSIVE lock: the app's
    // inserts go to the active one and do not wait on it (lock_timeout would fail them).
    let holder = common::connect(&db.url).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE reconciler.changes_0 IN ACCESS EXCLUSIVE MODE;")
        .await
        .unwrap();
    let app = common::connect(&db.url).await;
    app.batch_execute(&format!(
        "SET lock_timeout = '1s';
         INSERT INTO public.calls (user_id, organization_id, status, duration_minutes)
           VALUES ('{user}', '{org}', 'completed', 2);
         INSERT INTO public.usage_metrics (organization_id, metric_type, metric_value)
           VALUES ('{org}', 'minutes_transcribed', 2);
         SELECT public.increment_used_minutes('{org}', 2);"
    ))
    .await
    .expect("the app's writes waited on the idle partition's lock");
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(stored_rows(&db).await, (0, 3));
}

#[tokio::test]
async fn a_writer_still_in_the_idle_partition_postpones_its_emptying_and_loses_nothing() {
    let db = TestDb::migrated().await;
    let orgs = tracked(&db, 2).await;
    let (busy, user) = orgs[0];
    // The app, mid-transaction: a completed call logged in the active partition (1), its
    // increment lost, not committed.
    let app = call_in_flight(&db, user, busy, 4).await;
    // The first pass empties partition 0 and makes it the active one.
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    // The second would empty partition 1, where the app's transaction still writes: it
    // consumes what its snapshot sees and leaves the partition for a later pass, at once.
    let started = std::time::Instant::now();
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let busy_lines = out.grep("the consumed change-log partition is in use");
    assert_eq!(busy_lines.len(), 1, "{}", out.stderr);
    assert!(
        busy_lines[0].contains("partition=reconciler.changes_1"),
        "{}",
        busy_lines[0]
    );
    assert_eq!(db.used_minutes(busy).await, Some(10));
    // Committed after both snapshots: pending, then consumed and repaired by the next pass,
    // which also empties partition 1.
    app.batch_execute("COMMIT").await.unwrap();
    assert_eq!(log_rows(&db).await, 1);
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(summary_field(&out, "repaired"), "1", "{}", out.stderr);
    assert_eq!(db.used_minutes(busy).await, Some(14));
    assert_eq!(out.grep("partition is in use").len(), 0, "{}", out.stderr);
    assert_eq!(stored_rows(&db).await.1, 0);
    assert_eq!(log_rows(&db).await, 0);
}

#[tokio::test]
async fn a_change_committed_between_the_comparison_and_the_reread_hides_no_drift() {
    let db = TestDb::migrated().await;
    let orgs = tracked(&db, 2).await;
    let (org, user) = orgs[0];
    // A doubled increment: the counter is 3 ahead of its calls.
    db.exec(&format!("SELECT public.increment_used_minutes('{org}', 3)"))
        .await;
    // The pass is held between its comparison of the log and its exact re-read of the
    // candidates; meanwhile the app commits a 3-minute call, its increment still to come. Read
    // after that commit, the counter (13) would equal the calls (13): "in sync", while the
    // log's next rows (the call, then its increment) agree with each other and would never
    // make the organization a candidate again. Read in the comparison's snapshot, it is 3
    // ahead.
    let out = run_paused(&db, INCREMENTAL, "compared", async {
        db.call(user, Some(org), "completed", Some(3), 0).await;
    })
    .await;
    // Drift found (stored 13, expected 10), not repaired over the app's new call: the
    // confirmation under the row lock sees it (lost race; exit 2, drift left).
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert_eq!(out.grep("action=lost_race").len(), 1, "{}", out.stderr);
    assert_eq!(db.used_minutes(org).await, Some(13), "{}", out.stderr);
    // The app's increment lands: the counter is 3 ahead again, and the next pass repairs it.
    db.exec(&format!("SELECT public.increment_used_minutes('{org}', 3)"))
        .await;
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(db.used_minutes(org).await, Some(13), "{}", out.stderr);
    assert_eq!(summary_field(&out, "repaired"), "1", "{}", out.stderr);
}

#[tokio::test]
async fn a_sweep_consumes_exactly_what_its_comparison_saw() {
    let db = TestDb::migrated().await;
    let orgs = tracked(&db, 2).await;
    let (org, user) = orgs[0];
    // A doubled increment (the counter 3 ahead), then a sweep; just before it compares, the
    // app commits a 3-minute call, its increment still to come. The sweep sees the counter
    // equal to the calls (13): in sync, at that moment. Had it consumed the log before its
    // comparison, the call's row would stay pending with the increment's after it, the two
    // agreeing, and no incremental pass would look at the organization again.
    db.exec(&format!("SELECT public.increment_used_minutes('{org}', 3)"))
        .await;
    let out = run_paused(&db, &["--reconcile-now"], "sweep", async {
        db.call(user, Some(org), "completed", Some(3), 0).await;
    })
    .await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(db.used_minutes(org).await, Some(13));
    // The call's row was seen by the comparison, so consumed: only the increment is pending.
    db.exec(&format!("SELECT public.increment_used_minutes('{org}', 3)"))
        .await;
    assert_eq!(log_rows(&db).await, 1);
    let out = db.run(INCREMENTAL, &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(summary_field(&out, "repaired"), "1", "{}", out.stderr);
    assert_eq!(db.used_minutes(org).await, Some(13));
}
