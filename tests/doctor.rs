//! `doctor` against real databases: the seed-only state FAILs on the function, a migrated and
//! reconciled one has no FAIL, every FAIL names its fix, and doctor writes nothing.

mod common;

use common::{Run, TestDb};

/// The check lines of a doctor report with the given verdict, as `(name and detail, fix)`.
fn lines_with(out: &Run, verdict: &str) -> Vec<(String, Option<String>)> {
    let lines: Vec<&str> = out.stdout.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with(&format!("{verdict} ")))
        .map(|(i, l)| {
            let fix = lines
                .get(i + 1)
                .and_then(|next| next.trim_start().strip_prefix("fix: "))
                .map(str::to_string);
            (l.to_string(), fix)
        })
        .collect()
}

/// A few organizations, users and calls, with drift, an orphan and a user without organization.
async fn with_activity(db: &TestDb) {
    let acme = db.org("Acme", Some(3)).await;
    let beta = db.org("Beta", Some(0)).await;
    let u = db.user().await;
    db.member(u, acme, 30).await;
    db.completed_call(u, acme, 10).await;
    db.call(u, None, "completed", Some(4), 1).await;
    let v = db.user().await;
    db.member(v, beta, 30).await;
    db.completed_call(v, beta, 6).await;
    db.user().await; // no organization
}

#[tokio::test]
async fn seed_only_database_fails_on_the_function_and_is_clean_after_migrate_and_a_pass() {
    let db = TestDb::seeded().await;
    with_activity(&db).await;
    let before = db.row_versions().await;
    let out = db.run(&["doctor"], &[]).await;
    assert_eq!(out.code(), 2, "{}{}", out.stdout, out.stderr);
    // The function's input probes ran in rolled-back transactions: no row version changed.
    assert_eq!(
        db.row_versions().await,
        before,
        "doctor wrote to the application tables"
    );

    let fails = lines_with(&out, "FAIL");
    let function = fails
        .iter()
        .find(|(l, _)| l.contains("increment_used_minutes"))
        .unwrap_or_else(|| panic!("no FAIL for the function:\n{}", out.stdout));
    for problem in [
        "without a fixed search_path",
        "PUBLIC may execute",
        "anon may execute",
        "accepts minutes_to_add = -5",
        "accepts an unknown org_id without error",
    ] {
        assert!(
            function.0.contains(problem),
            "{problem} missing: {}",
            function.0
        );
    }
    assert!(
        function
            .1
            .as_deref()
            .unwrap_or("")
            .contains("synqall-reconciler migrate"),
        "{function:?}"
    );
    assert!(
        fails
            .iter()
            .any(|(l, _)| l.contains("migrations") && l.contains("pending")),
        "{}",
        out.stdout
    );
    for (line, fix) in &fails {
        assert!(
            fix.as_ref().is_some_and(|f| !f.is_empty()),
            "FAIL without a fix: {line}"
        );
    }
    let warns = lines_with(&out, "WARN");
    let index = warns
        .iter()
        .find(|(l, _)| l.contains("used_minutes index"))
        .unwrap_or_else(|| panic!("the seed's index is not reported:\n{}", out.stdout));
    assert!(
        index.1.as_deref()
            == Some("DROP INDEX CONCURRENTLY public.idx_organizations_used_minutes;"),
        "{index:?}"
    );
    let migrate = db.run(&["migrate"], &[]).await;
    assert_eq!(migrate.code(), 0, "{}", migrate.stderr);
    let pass = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(pass.code(), 0, "{}", pass.stderr);

    let after = db.run(&["doctor"], &[]).await;
    assert_eq!(after.code(), 0, "{}{}", after.stdout, after.stderr);
    assert!(lines_with(&after, "FAIL").is_empty(), "{}", after.stdout);
    for ok in [
        "increment_used_minutes",
        "migrations",
        "counters in sync",
        "journal privileges",
        "last successful pass",
        "connection",
    ] {
        assert!(
            lines_with(&after, "OK").iter().any(|(l, _)| l.contains(ok)),
            "{ok} not OK:\n{}",
            after.stdout
        );
    }
    // Still worth a look, not a failure: the user without organization.
    assert!(
        lines_with(&after, "WARN")
            .iter()
            .any(|(l, _)| l.contains("orphaned users") && l.contains("1 user(s)")),
        "{}",
        after.stdout
    );
    assert!(after.stdout.contains("0 FAIL"), "{}", after.stdout);
}

#[tokio::test]
async fn drift_and_orphans_are_warnings_with_numbers_and_json_parses() {
    let db = TestDb::migrated().await;
    with_activity(&db).await;
    let before = db.row_versions().await;
    let out = db.run(&["doctor", "--json"], &[]).await;
    assert_eq!(
        out.code(),
        0,
        "drift, orphans, no pass yet: WARNs only\n{}",
        out.stdout
    );
    assert_eq!(db.row_versions().await, before);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("doctor --json");
    let checks = report["checks"].as_array().expect("checks");
    let find = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check: {report}"))
    };
    let sync = find("counters in sync");
    assert_eq!(sync["verdict"], "WARN", "{sync}");
    let detail = sync["detail"].as_str().unwrap();
    assert!(detail.starts_with("2 of 2 organizations drift"), "{detail}");
    assert!(
        detail.contains("\"Acme\" stored=3 expected=10 delta=7"),
        "{detail}"
    );
    // The numbers are fields too, for scripts.
    assert_eq!(sync["facts"]["drifted"], 2, "{sync}");
    assert_eq!(sync["facts"]["orgs_checked"], 2, "{sync}");
    assert!(
        sync["facts"]["minutes_missing"].as_i64().unwrap() >= 7,
        "{sync}"
    );
    assert_eq!(report["summary"]["fail"], 0, "{report}");
    assert_eq!(
        report["summary"]["warn"].as_u64().unwrap() as usize,
        checks.iter().filter(|c| c["verdict"] == "WARN").count()
    );
    let orphans = find("orphaned calls");
    assert_eq!(orphans["verdict"], "WARN");
    assert_eq!(orphans["facts"]["orphaned_completed"], 1, "{orphans}");
    assert!(orphans["detail"]
        .as_str()
        .unwrap()
        .starts_with("1 completed and 0 other"));
    assert_eq!(find("last successful pass")["verdict"], "WARN");
    assert_eq!(find("increment_used_minutes")["verdict"], "OK");
    let failed: Vec<&serde_json::Value> =
        checks.iter().filter(|c| c["verdict"] == "FAIL").collect();
    assert!(failed.is_empty(), "{failed:?}");
}

#[tokio::test]
async fn a_stalled_reconciler_an_exposed_journal_and_a_missing_index_are_reported() {
    let db = TestDb::migrated().await;
    with_activity(&db).await;
    let pass = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(pass.code(), 0, "{}", pass.stderr);
    // The last success was two hours ago; someone granted anon the journal; the index on
    // calls(organization_id) is gone.
    db.exec(
        "UPDATE reconciler.runs SET started_at = now() - interval '2 hours',
                                    finished_at = now() - interval '2 hours';
         GRANT USAGE ON SCHEMA reconciler TO anon;
         GRANT SELECT ON reconciler.adjustments TO anon;",
    )
    .await;
    let indexes: Vec<String> = db
        .column(
            "SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_attribute a
                ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
             WHERE i.indrelid = 'public.calls'::regclass AND a.attname = 'organization_id'",
        )
        .await;
    for index in indexes {
        db.exec(&format!("DROP INDEX {index}")).await;
    }
    let out = db.run(&["doctor"], &[]).await;
    assert_eq!(out.code(), 2, "{}", out.stdout);
    let fails = lines_with(&out, "FAIL");
    let stalled = fails
        .iter()
        .find(|(l, _)| l.contains("last successful pass"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(
        stalled
            .0
            .contains("older than alert.stalled_after_seconds = 1800"),
        "{stalled:?}"
    );
    assert!(stalled
        .1
        .as_deref()
        .unwrap()
        .contains("journalctl -u synqall-reconciler"));
    let exposed = fails
        .iter()
        .find(|(l, _)| l.contains("journal privileges"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(
        exposed.0.contains("anon can reach the reconciler schema"),
        "{exposed:?}"
    );
    let index = lines_with(&out, "WARN")
        .into_iter()
        .find(|(l, _)| l.starts_with("WARN  indexes"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert_eq!(
        index.1.as_deref(),
        Some("CREATE INDEX CONCURRENTLY IF NOT EXISTS calls_organization_id_idx ON public.calls (organization_id);")
    );
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_not_a_report() {
    let out = common::run_bin(
        &["doctor"],
        &[("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")],
        &[("SYNQALL_RECONCILER__DATABASE__CONNECT_TIMEOUT_SECONDS", "2")],
    )
    .await;
    assert_eq!(out.code(), 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("Failed to connect"), "{}", out.stderr);
}

#[tokio::test]
async fn the_least_privilege_login_can_run_doctor() {
    let db = TestDb::migrated().await;
    with_activity(&db).await;
    let login = db.reconciler_login().await;
    let env = [("DATABASE_URL", login.as_str())];
    let pass = common::run_bin(&["--reconcile-now"], &env, &[]).await;
    assert_eq!(pass.code(), 0, "{}", pass.stderr);
    let out = common::run_bin(&["doctor"], &env, &[]).await;
    assert_eq!(out.code(), 0, "{}{}", out.stdout, out.stderr);
    let function = lines_with(&out, "OK")
        .into_iter()
        .find(|(l, _)| l.contains("increment_used_minutes"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(
        function.0.contains("input checks not probed"),
        "{function:?}"
    );
    assert!(!out.stdout.contains("not checked"), "{}", out.stdout);
}

#[tokio::test]
async fn a_check_that_cannot_run_says_why_not_just_db_error() {
    let db = TestDb::migrated().await;
    with_activity(&db).await;
    db.exec("REVOKE SELECT ON reconciler.auth_user_ids FROM synqall_reconciler")
        .await;
    let login = db.reconciler_login().await;
    let env = [("DATABASE_URL", login.as_str())];
    let out = common::run_bin(&["doctor"], &env, &[]).await;
    let users = out
        .stdout
        .lines()
        .find(|l| l.contains("orphaned users"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(
        users.contains("permission denied for view auth_user_ids"),
        "{users}"
    );
    let pass = common::run_bin(&["--reconcile-now"], &env, &[]).await;
    let skipped = pass.grep("orphaned users check skipped");
    assert_eq!(skipped.len(), 1, "{}", pass.stderr);
    assert!(
        skipped[0].contains("permission denied for view auth_user_ids"),
        "{}",
        skipped[0]
    );
    for output in [&out.stdout, &pass.stderr] {
        assert!(!output.contains("db error"), "{output}");
    }
}

/// The doctor line of check `name`.
fn check_line(out: &Run, name: &str) -> String {
    out.stdout
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(name)))
        .unwrap_or_else(|| panic!("no {name} check:\n{}", out.stdout))
        .to_string()
}

#[tokio::test]
async fn whoever_may_write_the_ledgers_is_named_anon_fails_authenticated_warns() {
    let db = TestDb::migrated().await;
    with_activity(&db).await;
    let out = db.run(&["doctor"], &[]).await;
    assert!(
        check_line(&out, "ledger writers").starts_with("OK"),
        "{}",
        out.stdout
    );

    // The app lets members insert calls only into their own organizations: still OK.
    db.exec(
        "CREATE POLICY members_insert_calls ON public.calls FOR INSERT TO authenticated
           WITH CHECK (organization_id IN (SELECT uo.organization_id FROM public.user_organizations uo
                                            WHERE uo.user_id = auth.uid()));",
    )
    .await;
    let out = db.run(&["doctor"], &[]).await;
    assert!(
        check_line(&out, "ledger writers").starts_with("OK"),
        "{}",
        out.stdout
    );

    // Any organization_id at all: a member can bill someone else.
    db.exec(
        "CREATE POLICY own_calls_update ON public.calls FOR UPDATE TO authenticated
           USING (user_id = auth.uid()) WITH CHECK (user_id = auth.uid());",
    )
    .await;
    let out = db.run(&["doctor"], &[]).await;
    let line = check_line(&out, "ledger writers");
    assert!(line.starts_with("WARN"), "{line}");
    assert!(
        line.contains("UPDATE public.calls (policies own_calls_update)"),
        "{line}"
    );
    assert_eq!(out.code(), 0, "a WARN is not a FAIL");

    // anon writing usage rows is a FAIL.
    db.exec(
        "CREATE POLICY anyone_inserts_usage ON public.usage_metrics FOR INSERT TO anon
           WITH CHECK (true);",
    )
    .await;
    let out = db.run(&["doctor"], &[]).await;
    let line = check_line(&out, "ledger writers");
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(line.contains("INSERT public.usage_metrics"), "{line}");
    assert_eq!(out.code(), 2);
}

/// The sweep's comparison reads completed calls only; the calls of other statuses are counted
/// apart: of every organization when the planner's statistics of calls.status show such a
/// status, else of the drifted organizations. A status written since the last ANALYZE in an
/// organization that does not drift goes unnamed until ANALYZE samples it (the blind spot).
#[tokio::test]
async fn a_sweep_counts_unknown_statuses_where_statistics_or_drift_show_them() {
    const SECOND_READ: &str = "sweep read calls a second time";
    const WARNING: &str = "WARN calls with a status not in usage.known_statuses";
    let db = TestDb::migrated().await;
    let (billed, quiet) = (
        db.org("Billed", Some(13)).await,
        db.org("Quiet", Some(0)).await,
    );
    let user = db.user().await;
    db.member(user, billed, 30).await;
    db.call(user, Some(billed), "completed", Some(10), 1).await;
    db.call(user, Some(billed), "failed", Some(3), 1).await;
    db.exec("ANALYZE public.calls").await;
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(out.grep(SECOND_READ).is_empty(), "{}", out.stderr);
    assert!(out.grep(WARNING).is_empty(), "{}", out.stderr);
    assert_eq!(db.used_minutes(billed).await, Some(10));

    // Since the ANALYZE: a call of an unknown status the app billed (its organization drifts:
    // named), and one it did not (no drift: the blind spot).
    db.call(user, Some(billed), "Completed", Some(5), 1).await;
    db.exec(&format!(
        "UPDATE public.organizations SET used_minutes = 15 WHERE id = '{billed}'"
    ))
    .await;
    db.call(user, Some(quiet), " completed", Some(2), 1).await;
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(out.grep(SECOND_READ).is_empty(), "{}", out.stderr);
    let lines = out.grep(WARNING);
    assert!(
        lines.len() == 1 && lines[0].contains("status=\"Completed\" calls=1"),
        "{}",
        out.stderr
    );
    assert_eq!(
        db.used_minutes(billed).await,
        Some(10),
        "never counted as minutes"
    );

    // Once ANALYZE has sampled them, every sweep counts and names both.
    db.exec("ANALYZE public.calls").await;
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let second = out.grep(SECOND_READ);
    assert!(
        second.len() == 1 && second[0].contains("unknown_status_calls=2"),
        "{}",
        out.stderr
    );
    let lines = out.grep(WARNING);
    assert!(
        lines.len() == 2
            && lines
                .iter()
                .any(|l| l.contains("status=\"Completed\" calls=1"))
            && lines
                .iter()
                .any(|l| l.contains("status=\" completed\" calls=1")),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn calls_of_unknown_statuses_are_named_by_the_pass_and_by_doctor() {
    let db = TestDb::migrated().await;
    let org = db.org("Mixed case", Some(10)).await;
    let user = db.user().await;
    db.member(user, org, 30).await;
    db.call(user, Some(org), "completed", Some(10), 1).await;
    for status in ["Completed", "Completed", " completed"] {
        db.call(user, Some(org), status, Some(5), 1).await;
    }
    for _ in 0..2 {
        let out = db.run(&["--reconcile-now"], &[]).await;
        assert_eq!(out.code(), 0, "{}", out.stderr);
        let lines = out.grep("WARN calls with a status not in usage.known_statuses");
        assert_eq!(
            lines.len(),
            2,
            "one line per status, each pass: {}",
            out.stderr
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("status=\"Completed\" calls=2")),
            "{}",
            out.stderr
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("status=\" completed\" calls=1")),
            "{}",
            out.stderr
        );
    }
    let out = db.run(&["doctor"], &[]).await;
    let line = check_line(&out, "call statuses");
    assert!(line.starts_with("WARN"), "{line}");
    assert!(
        line.contains("\"Completed\": 2") && line.contains("\" completed\": 1"),
        "{line}"
    );
}

#[tokio::test]
async fn a_reconciler_role_that_can_log_in_fails_with_the_command_that_fixes_it() {
    // Roles are cluster-wide: a cluster of its own, so no other test sees the change.
    let (_cluster, url) = common::cluster_with(Default::default(), "own").await;
    let env = [("DATABASE_URL", url.as_str())];
    assert_eq!(common::run_bin(&["migrate"], &env, &[]).await.code(), 0);
    synqall_reconciler::fixture::execute_sql(&url, "ALTER ROLE synqall_reconciler LOGIN")
        .await
        .unwrap();
    let out = common::run_bin(&["doctor"], &env, &[]).await;
    let (line, fix) = lines_with(&out, "FAIL")
        .into_iter()
        .find(|(l, _)| l.contains("journal privileges"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(line.contains("synqall_reconciler can log in"), "{line}");
    assert!(
        fix.unwrap_or_default()
            .starts_with("ALTER ROLE synqall_reconciler NOLOGIN;"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn silent_change_tracking_triggers_and_the_covering_index_are_named() {
    let db = TestDb::migrated().await;
    with_activity(&db).await;
    let out = db.run(&["doctor"], &[]).await;
    let tracking = lines_with(&out, "WARN")
        .into_iter()
        .find(|(l, _)| l.starts_with("WARN  change tracking"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(tracking.0.contains("not ready yet"), "{tracking:?}");
    let pass = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(pass.code(), 0, "{}", pass.stderr);
    let out = db.run(&["doctor"], &[]).await;
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("OK    change tracking")
                && l.contains("11 triggers firing, ready")),
        "{}",
        out.stdout
    );
    // A bulk load with a trigger switched off (and forgotten), and the session-replication
    // kind: both leave incremental passes blind.
    db.exec(
        "ALTER TABLE public.calls DISABLE TRIGGER synqall_reconciler_insert;
         ALTER TABLE public.usage_metrics ENABLE REPLICA TRIGGER synqall_reconciler_update;",
    )
    .await;
    let out = db.run(&["doctor"], &[]).await;
    let tracking = lines_with(&out, "WARN")
        .into_iter()
        .find(|(l, _)| l.starts_with("WARN  change tracking"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(
        tracking.0.contains("2 of 11 triggers missing or disabled (calls.synqall_reconciler_insert, usage_metrics.synqall_reconciler_update)"),
        "{tracking:?}"
    );
    assert!(tracking.1.unwrap().contains("ENABLE TRIGGER"));
    // Small table: the covering index is advice; created, it is named as present.
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("OK    covering index") && l.contains("not needed yet")),
        "{}",
        out.stdout
    );
    db.exec(
        "CREATE INDEX calls_organization_usage_idx ON public.calls (organization_id)
           INCLUDE (status, duration_minutes, created_at);
         CREATE INDEX usage_metrics_organization_usage_idx ON public.usage_metrics
           (organization_id) INCLUDE (metric_type, metric_value, created_at);",
    )
    .await;
    let out = db.run(&["doctor", "--json"], &[]).await;
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let index = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "covering index")
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert_eq!(index["verdict"], "OK", "{index}");
    assert!(index["detail"]
        .as_str()
        .unwrap()
        .contains("read only the index"));
}
