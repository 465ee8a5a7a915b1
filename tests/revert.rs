//! `revert RUN_ID` end to end: exact restoration of counters and attributions, compare-and-set
//! against later changes, the journal of the revert, idempotence, and bad run ids.

mod common;

use common::TestDb;
use uuid::Uuid;

/// Rows in the reconciler's journal tables together.
async fn journal_rows(db: &TestDb) -> i64 {
    db.scalar(
        "SELECT (SELECT count(*) FROM reconciler.adjustments)
              + (SELECT count(*) FROM reconciler.call_repairs)
              + (SELECT count(*) FROM reconciler.runs)",
    )
    .await
}

struct Fixture {
    db: TestDb,
    /// 10 stored, 30 from its calls, plus 9 from an orphan the pass attributes.
    lost: Uuid,
    /// NULL stored, 7 from its calls.
    null_counter: Uuid,
    /// 5 stored, 12 from its calls; the app increments it after the pass.
    later_changed: Uuid,
    /// Right all along: the pass does not touch it.
    clean: Uuid,
    orphan: Uuid,
}

async fn fixture() -> Fixture {
    let db = TestDb::migrated().await;
    let lost = db.org("Lost", Some(10)).await;
    let null_counter = db.org("Null", None).await;
    let later_changed = db.org("Changed later", Some(5)).await;
    let clean = db.org("Clean", Some(4)).await;
    let u_lost = db.user().await;
    db.member(u_lost, lost, 100).await;
    db.completed_call(u_lost, lost, 10).await;
    db.completed_call(u_lost, lost, 20).await;
    let orphan = db.call(u_lost, None, "completed", Some(9), 1).await;
    let u_null = db.user().await;
    db.member(u_null, null_counter, 100).await;
    db.completed_call(u_null, null_counter, 7).await;
    let u_later = db.user().await;
    db.member(u_later, later_changed, 100).await;
    db.completed_call(u_later, later_changed, 12).await;
    let u_clean = db.user().await;
    db.member(u_clean, clean, 100).await;
    db.completed_call(u_clean, clean, 4).await;
    Fixture {
        db,
        lost,
        null_counter,
        later_changed,
        clean,
        orphan,
    }
}

#[tokio::test]
async fn revert_restores_exactly_what_the_run_changed_skips_later_changes_and_is_idempotent() {
    let f = fixture().await;
    let db = &f.db;
    let pass = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(pass.code(), 0, "{}", pass.stderr);
    let run_id = pass.run_id();
    assert_eq!(db.used_minutes(f.lost).await, Some(39));
    assert_eq!(db.used_minutes(f.null_counter).await, Some(7));
    assert_eq!(db.used_minutes(f.later_changed).await, Some(12));
    assert_eq!(db.call_org(f.orphan).await, Some(f.lost));

    // The app adds 3 minutes to one repaired counter after the pass.
    db.exec(&format!(
        "UPDATE public.organizations SET used_minutes = used_minutes + 3 WHERE id = '{}'",
        f.later_changed
    ))
    .await;

    // As the least-privilege login the daemon runs under: its grants must cover a revert.
    let login = db.reconciler_login().await;
    let revert = common::run_bin(
        &["revert", &run_id.to_string()],
        &[("DATABASE_URL", &login)],
        &[],
    )
    .await;
    assert_eq!(
        revert.code(),
        2,
        "something was skipped: exit 2\n{}{}",
        revert.stdout,
        revert.stderr
    );
    assert_eq!(db.used_minutes(f.lost).await, Some(10), "{}", revert.stdout);
    assert_eq!(
        db.used_minutes(f.null_counter).await,
        None,
        "{}",
        revert.stdout
    );
    assert_eq!(
        db.used_minutes(f.later_changed).await,
        Some(15),
        "left alone"
    );
    assert_eq!(db.used_minutes(f.clean).await, Some(4));
    assert_eq!(
        db.call_org(f.orphan).await,
        None,
        "attribution restored to NULL"
    );
    assert!(
        revert
            .stdout
            .contains("Restored 2 counter(s) and 1 attribution(s); skipped 1"),
        "{}",
        revert.stdout
    );
    let skipped = revert
        .stdout
        .lines()
        .find(|l| l.contains("skipped org"))
        .unwrap_or_else(|| panic!("{}", revert.stdout));
    assert!(skipped.contains(&f.later_changed.to_string()), "{skipped}");
    assert!(skipped.contains("now 15, the run wrote 12"), "{skipped}");
    assert_eq!(
        revert.grep("WARN revert skipped").len(),
        1,
        "{}",
        revert.stderr
    );
    assert_eq!(
        revert.grep("INFO revert restored used_minutes").len(),
        2,
        "{}",
        revert.stderr
    );

    // Journalled: a run of its own that names the reverted run, one row per restore.
    let (mode, reverted, status, repaired, orphans_fixed, lost_race): (
        String,
        Uuid,
        String,
        i32,
        i32,
        i32,
    ) = {
        let row = db
            .client
            .query_one(
                "SELECT mode, reverted_run_id, status, repaired, orphans_fixed, lost_race
                   FROM reconciler.runs WHERE reverted_run_id IS NOT NULL",
                &[],
            )
            .await
            .unwrap();
        (
            row.get(0),
            row.get(1),
            row.get(2),
            row.get(3),
            row.get(4),
            row.get(5),
        )
    };
    assert_eq!(
        (mode.as_str(), reverted, status.as_str()),
        ("revert", run_id, "ok")
    );
    assert_eq!((repaired, orphans_fixed, lost_race), (2, 1, 1));
    let journal: Vec<(Uuid, Option<i32>, Option<i32>)> = db
        .client
        .query(
            "SELECT organization_id, old_used_minutes::int, new_used_minutes::int
               FROM reconciler.adjustments
              WHERE reason = 'revert' ORDER BY new_used_minutes NULLS FIRST",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        journal,
        [
            (f.null_counter, Some(7), None),
            (f.lost, Some(39), Some(10))
        ]
    );
    let call_journal: (Uuid, Option<Uuid>, Option<Uuid>) = {
        let r = db
            .client
            .query_one(
                "SELECT call_id, old_organization_id, new_organization_id FROM reconciler.call_repairs
                  WHERE rule = 'revert'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(call_journal, (f.orphan, Some(f.lost), None));

    // status shows the revert as a run of its own, naming the run it undid.
    let status = db.run(&["status"], &[]).await;
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.contains(" revert ") && l.contains(&format!("ok (reverted {run_id})"))),
        "{}",
        status.stdout
    );

    // Second revert: nothing changes, nothing is written.
    let before = db.row_versions().await;
    let journal_rows = journal_rows(db).await;
    let again = db.run(&["revert", &run_id.to_string()], &[]).await;
    assert_eq!(
        again.code(),
        2,
        "the changed counter is still skipped\n{}",
        again.stdout
    );
    assert!(
        again.stdout.contains("nothing to restore"),
        "{}",
        again.stdout
    );
    assert!(
        again.stdout.contains("already reverted 3"),
        "{}",
        again.stdout
    );
    assert_eq!(
        db.row_versions().await,
        before,
        "second revert wrote to organizations/calls"
    );
    assert_eq!(
        self::journal_rows(db).await,
        journal_rows,
        "second revert journalled something"
    );
}

#[tokio::test]
async fn a_counter_corrected_again_by_a_later_run_is_not_undone() {
    let f = fixture().await;
    let db = &f.db;
    let first = db.run(&["--reconcile-now"], &[]).await;
    let first_id = first.run_id();
    // A lost increment after the first pass; the second pass corrects the same counter again.
    let user = db.user().await;
    db.member(user, f.lost, 10).await;
    db.call(user, Some(f.lost), "completed", Some(6), 0).await;
    let second = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(second.code(), 0, "{}", second.stderr);
    assert_eq!(db.used_minutes(f.lost).await, Some(45));

    let revert = db.run(&["revert", &first_id.to_string()], &[]).await;
    assert_eq!(revert.code(), 2, "{}", revert.stdout);
    assert_eq!(
        db.used_minutes(f.lost).await,
        Some(45),
        "the later correction stands"
    );
    assert!(
        revert.stdout.contains(&format!(
            "corrected again by the later run {}",
            second.run_id()
        )),
        "{}",
        revert.stdout
    );
    assert_eq!(
        db.used_minutes(f.null_counter).await,
        None,
        "{}",
        revert.stdout
    );
}

#[tokio::test]
async fn a_clean_revert_exits_0_and_unknown_or_malformed_ids_are_refused() {
    let f = fixture().await;
    let db = &f.db;
    let pass = db.run(&["--reconcile-now"], &[]).await;
    let run_id = pass.run_id();
    let revert = db.run(&["revert", &run_id.to_string()], &[]).await;
    assert_eq!(revert.code(), 0, "{}{}", revert.stdout, revert.stderr);
    assert_eq!(db.used_minutes(f.lost).await, Some(10));

    let unknown = Uuid::new_v4();
    let out = db.run(&["revert", &unknown.to_string()], &[]).await;
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("no run {unknown}")),
        "{}",
        out.stderr
    );

    let revert_run: Uuid = db
        .scalar("SELECT id FROM reconciler.runs WHERE mode = 'revert'")
        .await;
    let out = db.run(&["revert", &revert_run.to_string()], &[]).await;
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("is itself a revert"), "{}", out.stderr);

    let out = db.run(&["revert", "not-a-uuid"], &[]).await;
    assert_eq!(out.code(), 64, "usage error\n{}", out.stderr);
}

#[tokio::test]
async fn revert_waits_for_no_pass_it_exits_75_while_the_lock_is_held() {
    let f = fixture().await;
    let db = &f.db;
    let pass = db.run(&["--reconcile-now"], &[]).await;
    let run_id = pass.run_id();
    let _holder = db.hold_reconciler_lock().await;
    let before = db.row_versions().await;
    let out = db.run(&["revert", &run_id.to_string()], &[]).await;
    assert_eq!(out.code(), 75, "{}", out.stderr);
    assert_eq!(db.row_versions().await, before);
}

#[tokio::test]
async fn a_revert_that_fails_half_way_restores_nothing() {
    let f = fixture().await;
    let db = &f.db;
    let pass = db.run(&["--reconcile-now"], &[]).await;
    let run_id = pass.run_id();
    // The last write of a revert (its call journal row) fails: the counters it already
    // restored in the same transaction must come back too.
    db.exec(
        "CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'journal unavailable'; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON reconciler.call_repairs
           FOR EACH ROW WHEN (NEW.rule = 'revert') EXECUTE FUNCTION public.refuse();",
    )
    .await;
    let before = db.row_versions().await;
    let journal = journal_rows(db).await;
    let out = db.run(&["revert", &run_id.to_string()], &[]).await;
    assert_eq!(out.code(), 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("journal unavailable"), "{}", out.stderr);
    assert_eq!(
        db.row_versions().await,
        before,
        "something was half-restored"
    );
    assert_eq!(journal_rows(db).await, journal);
    assert_eq!(db.used_minutes(f.lost).await, Some(39));
    assert_eq!(db.call_org(f.orphan).await, Some(f.lost));

    // With the journal back, the same revert goes through.
    db.exec("DROP TRIGGER refuse ON reconciler.call_repairs")
        .await;
    let again = db.run(&["revert", &run_id.to_string()], &[]).await;
    assert_eq!(again.code(), 0, "{}{}", again.stdout, again.stderr);
    assert_eq!(db.used_minutes(f.lost).await, Some(10));
}

#[tokio::test]
async fn revert_lines_past_the_cap_end_in_one_summary_line() {
    let f = fixture().await;
    let db = &f.db;
    let pass = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(pass.code(), 0, "{}", pass.stderr);
    let run_id = pass.run_id().to_string();
    // Two restored counters are changed after the run: two skip lines.
    db.exec(&format!(
        "UPDATE public.organizations SET used_minutes = used_minutes + 1
          WHERE id IN ('{}', '{}')",
        f.later_changed, f.null_counter
    ))
    .await;
    let cap = [(
        "SYNQALL_RECONCILER__ALERT__MAX_CRITICAL_LINES_PER_PASS",
        "1",
    )];
    let out = db.run(&["revert", &run_id], &cap).await;
    assert_eq!(out.code(), 2, "{}", out.stderr);
    // Restored: one counter and one attribution, one line shown, one suppressed.
    assert_eq!(out.grep("INFO revert restored").len(), 1, "{}", out.stderr);
    assert_eq!(out.grep("WARN revert skipped").len(), 1, "{}", out.stderr);
    let summaries = out.grep("log lines suppressed");
    assert_eq!(summaries.len(), 2, "{}", out.stderr);
    assert!(
        summaries
            .iter()
            .any(|l| l.contains("kind=\"revert restored\"") && l.contains("suppressed=1")),
        "{}",
        out.stderr
    );
    assert!(
        summaries
            .iter()
            .any(|l| l.contains("kind=\"revert skipped\"") && l.contains("suppressed=1")),
        "{}",
        out.stderr
    );
}
