//! `--reconcile-now` end to end against a real cluster: repairs, attributions, journal, log
//! lines, exit codes, dry run, and a second pass that writes nothing.

mod common;

use common::damaged::damaged_db;
use common::TestDb;
use uuid::Uuid;

/// Organizations whose counter differs from the sum of their completed calls.
async fn wrong_counters(db: &TestDb) -> i64 {
    db.scalar(
        "SELECT count(*) FROM public.organizations o
          WHERE o.used_minutes IS DISTINCT FROM
                (SELECT COALESCE(sum(c.duration_minutes), 0) FROM public.calls c
                  WHERE c.organization_id = o.id AND c.status = 'completed')",
    )
    .await
}

#[tokio::test]
async fn one_pass_repairs_every_counter_and_attributes_what_it_can() {
    let (db, d) = damaged_db().await;
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);

    assert_eq!(wrong_counters(&db).await, 0, "{}", out.stderr);
    assert_eq!(db.used_minutes(d.lost).await, Some(39)); // 10 + 20 + orphan 9
    assert_eq!(db.used_minutes(d.doubled).await, Some(19)); // 15 + orphan 4
    assert_eq!(db.used_minutes(d.null_counter).await, Some(9)); // 7 + 2
    assert_eq!(db.used_minutes(d.zeroed).await, Some(12));
    assert_eq!(db.used_minutes(d.clean).await, Some(5));
    assert_eq!(db.used_minutes(d.pending_only).await, Some(0));

    assert_eq!(db.call_org(d.only_membership_call).await, Some(d.lost));
    assert_eq!(db.call_org(d.at_call_time_call).await, Some(d.doubled));
    assert_eq!(db.call_org(d.ambiguous_call).await, None);
    assert_eq!(db.call_org(d.no_membership_call).await, None);
    assert_eq!(db.call_org(d.attributed_call).await, Some(d.null_counter));

    let ambiguous = out.grep("WARN orphaned call ambiguous");
    assert_eq!(ambiguous.len(), 1, "{}", out.stderr);
    assert!(ambiguous[0].contains(&format!("call_id={}", d.ambiguous_call)));
    assert!(
        ambiguous[0].contains(&d.zeroed.to_string()) && ambiguous[0].contains(&d.clean.to_string())
    );
    let unowned = out.grep("orphaned call without membership");
    assert_eq!(unowned.len(), 1, "{}", out.stderr);
    assert!(unowned[0].contains(&format!("call_id={}", d.no_membership_call)));

    let summary = out.grep("INFO reconcile pass finished");
    assert_eq!(summary.len(), 1, "{}", out.stderr);
    for field in [
        "orgs_checked=6",
        "drifted=4",
        "repaired=4",
        "orphans_fixed=2",
        "orphans_left=2",
    ] {
        assert!(
            summary[0].contains(field),
            "{field} missing in {}",
            summary[0]
        );
    }
    assert!(out.stdout.contains("Reconcile pass"), "{}", out.stdout);
}

#[tokio::test]
async fn every_drifted_org_has_a_critical_line_the_seed_greps_find() {
    let (db, d) = damaged_db().await;
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);

    // The seed's monitoring commands: grep "used_minutes" and grep -E "CRITICAL|Failed to update organization".
    let used_minutes_lines = out.grep("used_minutes");
    let critical_lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("CRITICAL") || l.contains("Failed to update organization"))
        .collect();
    assert_eq!(critical_lines.len(), 4, "{}", out.stderr);
    for org in d.drifted() {
        let line = critical_lines
            .iter()
            .find(|l| l.contains(&format!("org_id={org}")))
            .unwrap_or_else(|| panic!("no CRITICAL line for {org}:\n{}", out.stderr));
        assert!(used_minutes_lines.contains(line));
        assert!(
            line.contains("CRITICAL used_minutes drift org_id="),
            "{line}"
        );
        assert!(line.contains("action=repaired"), "{line}");
        for key in [
            " org_name=\"",
            " stored=",
            " expected=",
            " delta=",
            " calls_minutes=",
            " metrics_minutes=",
            " run_id=",
        ] {
            assert!(line.contains(key), "{key} missing in {line}");
        }
    }
    let null_line = critical_lines
        .iter()
        .find(|l| l.contains(&d.null_counter.to_string()))
        .unwrap();
    assert!(
        null_line.contains("stored=NULL expected=9 delta=9"),
        "{null_line}"
    );
    let quoted = critical_lines
        .iter()
        .find(|l| l.contains(&d.doubled.to_string()))
        .unwrap();
    assert!(
        quoted
            .contains(r#"org_name="Doubled \"retry\" increments" stored=30 expected=19 delta=-11"#),
        "{quoted}"
    );
}

#[tokio::test]
async fn second_pass_on_a_clean_database_writes_nothing() {
    let (db, _) = damaged_db().await;
    let first = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(first.code(), 0, "{}", first.stderr);
    let before = db.row_versions().await;

    let second = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(second.code(), 0, "{}", second.stderr);
    assert_eq!(db.row_versions().await, before, "a clean pass wrote rows");
    assert!(second.grep("CRITICAL").is_empty(), "{}", second.stderr);
    assert!(
        second.grep("drifted=0 repaired=0 orphans_fixed=0").len() == 1,
        "{}",
        second.stderr
    );
    let adjustments: i64 = db
        .scalar("SELECT count(*) FROM reconciler.adjustments")
        .await;
    assert_eq!(adjustments, 4);
}

#[tokio::test]
async fn journal_rows_match_each_repair_and_attribution() {
    let (db, d) = damaged_db().await;
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let run_id: Uuid = db
        .scalar("SELECT id FROM reconciler.runs WHERE status = 'ok'")
        .await;
    assert!(out.stderr.contains(&format!("run_id={run_id}")));

    let rows = db
        .client
        .query(
            "SELECT a.organization_id, a.old_used_minutes::int, a.new_used_minutes::int,
                    a.calls_minutes, a.metrics_minutes, a.run_id, o.used_minutes, a.period, a.reason
               FROM reconciler.adjustments a JOIN public.organizations o ON o.id = a.organization_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    let expect = [
        (d.lost, Some(10), 39, 30),
        (d.doubled, Some(30), 19, 15),
        (d.null_counter, None, 9, 7),
        (d.zeroed, Some(0), 12, 12),
    ];
    for (org, old, new, metrics) in expect {
        let row = rows
            .iter()
            .find(|r| r.get::<_, Uuid>(0) == org)
            .unwrap_or_else(|| panic!("no adjustments row for {org}"));
        assert_eq!(row.get::<_, Option<i32>>(1), old, "old value of {org}");
        assert_eq!(row.get::<_, i32>(2), new, "new value of {org}");
        assert_eq!(
            row.get::<_, i64>(3),
            i64::from(new),
            "calls ledger of {org}"
        );
        assert_eq!(row.get::<_, i64>(4), metrics, "metrics ledger of {org}");
        assert_eq!(row.get::<_, Uuid>(5), run_id);
        assert_eq!(
            row.get::<_, Option<i32>>(6),
            Some(new),
            "counter equals the journal"
        );
        assert_eq!(row.get::<_, &str>(7), "all_time");
        assert_eq!(row.get::<_, &str>(8), "drift");
    }

    let repairs = db
        .client
        .query(
            "SELECT call_id, new_organization_id, rule, old_organization_id FROM reconciler.call_repairs",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(repairs.len(), 2);
    for (call, org, rule) in [
        (d.only_membership_call, d.lost, "only_membership"),
        (d.at_call_time_call, d.doubled, "membership_at_call_time"),
    ] {
        let row = repairs
            .iter()
            .find(|r| r.get::<_, Uuid>(0) == call)
            .expect("call_repairs row");
        assert_eq!(row.get::<_, Uuid>(1), org);
        assert_eq!(row.get::<_, &str>(2), rule);
        assert_eq!(row.get::<_, Option<Uuid>>(3), None);
    }

    let run = db
        .client
        .query_one(
            "SELECT mode, orgs_checked, drifted, repaired, orphans_fixed, orphans_left, finished_at IS NOT NULL
               FROM reconciler.runs",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(run.get::<_, &str>(0), "once");
    assert_eq!(
        (
            run.get::<_, i32>(1),
            run.get::<_, i32>(2),
            run.get::<_, i32>(3),
            run.get::<_, i32>(4),
            run.get::<_, i32>(5)
        ),
        (6, 4, 4, 2, 2)
    );
    assert!(run.get::<_, bool>(6));
}

#[tokio::test]
async fn repair_and_journal_commit_together_or_not_at_all() {
    let (db, d) = damaged_db().await;
    // Make every journal insert fail: the counter updates in the same statement must roll back.
    db.exec(
        "CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'journal is read-only'; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON reconciler.adjustments
           FOR EACH ROW EXECUTE FUNCTION public.refuse();",
    )
    .await;
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 2, "drift left unrepaired: {}", out.stderr);
    assert_eq!(db.used_minutes(d.lost).await, Some(10));
    assert_eq!(db.used_minutes(d.null_counter).await, None);
    let failed = out.grep("ERROR Failed to update organization");
    assert_eq!(failed.len(), 4, "{}", out.stderr);
    assert!(failed.iter().all(|l| l.contains("journal is read-only")));
    // Every drifted organization is named with the outcome, and the pass is not `ok`.
    let critical = out.grep("CRITICAL used_minutes drift");
    assert_eq!(critical.len(), 4, "{}", out.stderr);
    assert!(critical.iter().all(|l| l.contains("action=failed")));
    let status: String = db.scalar("SELECT status FROM reconciler.runs").await;
    assert_eq!(status, "partial");
}

#[tokio::test]
async fn dry_run_reports_drift_writes_nothing_and_exits_2() {
    let (db, d) = damaged_db().await;
    let before = db.row_versions().await;
    let out = db.run(&["--reconcile-now", "--dry-run"], &[]).await;
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert_eq!(db.row_versions().await, before, "dry run wrote rows");
    for table in ["runs", "adjustments", "call_repairs"] {
        let n: i64 = db
            .scalar(&format!("SELECT count(*) FROM reconciler.{table}"))
            .await;
        assert_eq!(n, 0, "dry run wrote reconciler.{table}");
    }
    let would = out.grep("action=would_repair");
    assert_eq!(would.len(), 4, "{}", out.stderr);
    assert!(would.iter().any(|l| l.contains(&d.lost.to_string())));
    assert!(out.stdout.contains("dry run"), "{}", out.stdout);
}

#[tokio::test]
async fn lock_held_by_another_session_exits_75_and_writes_nothing() {
    let (db, _) = damaged_db().await;
    let _holder = db.hold_reconciler_lock().await;
    let before = db.row_versions().await;
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 75, "{}", out.stderr);
    assert_eq!(db.row_versions().await, before);
    let runs: i64 = db.scalar("SELECT count(*) FROM reconciler.runs").await;
    assert_eq!(runs, 0);
    assert_eq!(out.grep("advisory lock is held").len(), 1, "{}", out.stderr);
}

#[tokio::test]
async fn drift_still_moving_after_the_settle_time_is_left_for_the_next_pass() {
    let db = TestDb::migrated().await;
    let org = db.org("In flight", Some(10)).await;
    let user = db.user().await;
    db.member(user, org, 30).await;
    db.completed_call(user, org, 10).await;
    // The app completed this call; its increment is "a moment away".
    db.completed_call(user, org, 5).await;

    let url = db.url.clone();
    let pass = tokio::spawn(async move {
        common::run_bin(
            &["--reconcile-now"],
            &[("DATABASE_URL", url.as_str())],
            &[("SYNQALL_RECONCILER__USAGE__SETTLE_SECONDS", "3")],
        )
        .await
    });
    // The increment lands during the settle window, as the app's would.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    db.exec(&format!("SELECT public.increment_used_minutes('{org}', 5)"))
        .await;
    let out = pass.await.unwrap();
    assert_eq!(out.code(), 2, "{}", out.stderr);
    let line = out.grep("CRITICAL used_minutes drift");
    assert_eq!(line.len(), 1, "{}", out.stderr);
    assert!(line[0].contains("action=lost_race"), "{}", line[0]);
    assert_eq!(
        db.used_minutes(org).await,
        Some(15),
        "the app's increment stands"
    );
    let adjustments: i64 = db
        .scalar("SELECT count(*) FROM reconciler.adjustments")
        .await;
    assert_eq!(adjustments, 0);

    let next = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(next.code(), 0, "{}", next.stderr);
    assert!(
        next.grep("CRITICAL").is_empty(),
        "nothing left to repair: {}",
        next.stderr
    );
}

#[tokio::test]
async fn calendar_month_counts_only_this_months_calls() {
    let db = TestDb::migrated().await;
    let org = db.org("Monthly", Some(100)).await;
    let user = db.user().await;
    db.member(user, org, 400).await;
    db.exec(&format!(
        "INSERT INTO public.calls (user_id, organization_id, status, duration_minutes, created_at) VALUES
           ('{user}', '{org}', 'completed', 40, date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '1 second'),
           ('{user}', '{org}', 'completed', 7, date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 second');"
    ))
    .await;
    let out = db
        .run(
            &["--reconcile-now"],
            &[("SYNQALL_RECONCILER__USAGE__PERIOD", "calendar_month")],
        )
        .await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(db.used_minutes(org).await, Some(7));
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(db.used_minutes(org).await, Some(47), "all_time counts both");
}

#[tokio::test]
async fn usage_metrics_source_and_ledger_mismatch_warning() {
    let db = TestDb::migrated().await;
    let org = db.org("Metrics truth", Some(0)).await;
    let user = db.user().await;
    db.member(user, org, 10).await;
    db.call(user, Some(org), "completed", Some(10), 1).await;
    db.metric(org, 12).await;
    let out = db
        .run(
            &["--reconcile-now"],
            &[("SYNQALL_RECONCILER__USAGE__SOURCE", "usage_metrics")],
        )
        .await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(db.used_minutes(org).await, Some(12));
    let mismatch = out.grep("WARN ledger mismatch");
    assert_eq!(mismatch.len(), 1, "{}", out.stderr);
    assert!(mismatch[0].contains("calls_minutes=10 metrics_minutes=12"));
}

#[tokio::test]
async fn numeric_durations_are_rounded_per_call_and_bad_ones_count_zero() {
    let db = TestDb::migrated().await;
    db.exec("ALTER TABLE public.calls ALTER COLUMN duration_minutes TYPE numeric")
        .await;
    let org = db.org("Fractions", Some(0)).await;
    let user = db.user().await;
    db.member(user, org, 10).await;
    db.exec(&format!(
        "INSERT INTO public.calls (user_id, organization_id, status, duration_minutes) VALUES
           ('{user}', '{org}', 'completed', 1.2), ('{user}', '{org}', 'completed', 2.5),
           ('{user}', '{org}', 'completed', NULL), ('{user}', '{org}', 'completed', -4);"
    ))
    .await;
    for (rounding, expected) in [("floor", 3), ("round", 4), ("ceil", 5)] {
        let out = db
            .run(
                &["--reconcile-now"],
                &[("SYNQALL_RECONCILER__USAGE__ROUNDING", rounding)],
            )
            .await;
        assert_eq!(out.code(), 0, "{}", out.stderr);
        assert_eq!(db.used_minutes(org).await, Some(expected), "{rounding}");
        // The drifted organization's bad rows are named next to its CRITICAL line.
        let bad = out
            .grep("completed calls with NULL, negative or unusable duration_minutes counted as 0");
        assert_eq!(bad.len(), 1, "{}", out.stderr);
        assert!(
            bad[0].contains(&format!(
                "org_id={org} null_durations=1 negative_durations=1"
            )),
            "{}",
            bad[0]
        );
    }
}

#[tokio::test]
async fn a_run_row_that_cannot_be_closed_fails_the_pass_with_an_error_line() {
    let (db, _) = damaged_db().await;
    // Closing the run as `ok` is refused; closing it as `failed` still works.
    db.exec(
        "CREATE FUNCTION public.refuse_ok() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN
                IF NEW.status = 'ok' THEN RAISE EXCEPTION 'runs may not be closed as ok'; END IF;
                RETURN NEW;
              END $$;
         CREATE TRIGGER refuse_ok BEFORE UPDATE ON reconciler.runs
           FOR EACH ROW EXECUTE FUNCTION public.refuse_ok();",
    )
    .await;
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 1, "{}", out.stderr);
    let failed = out.grep("ERROR reconcile pass failed");
    assert_eq!(failed.len(), 1, "{}", out.stderr);
    assert!(
        failed[0].contains("runs may not be closed as ok"),
        "{}",
        failed[0]
    );
    let (status, error) = db.only_run().await;
    assert_eq!(status, "failed", "the run row is closed, not left running");
    assert!(
        error.unwrap_or_default().contains("closed as ok"),
        "the run row says why"
    );
    assert_eq!(db.advisory_locks().await, 0, "advisory lock released");
}
