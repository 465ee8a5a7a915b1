//! See before you write: a pass whose login cannot see a ledger (row-level security without a
//! policy for it, or a policy that hides rows), or cannot write a counter, refuses before
//! writing anything, names the table and the fix, and `doctor` FAILs the same way.

mod common;

use common::{run_bin, Run, TestDb};
use uuid::Uuid;

/// Two drifted organizations with calls, and the least-privilege login's URL.
async fn drifted_db() -> (TestDb, String, Vec<Uuid>) {
    let db = TestDb::migrated().await;
    let mut orgs = Vec::new();
    for (name, stored) in [("Acme", 3), ("Beta", 0)] {
        let org = db.org(name, Some(stored)).await;
        let user = db.user().await;
        db.member(user, org, 30).await;
        db.completed_call(user, org, 10).await;
        orgs.push(org);
    }
    let login = db.reconciler_login().await;
    (db, login, orgs)
}

async fn as_login(login: &str, args: &[&str]) -> Run {
    run_bin(args, &[("DATABASE_URL", login)], &[]).await
}

/// The pass refused: exit 1, the table named in an ERROR line, no counter or call written,
/// and its run row failed with the reason.
async fn assert_refused(db: &TestDb, out: &Run, table: &str, before: &[(Uuid, String)]) {
    assert_eq!(out.code(), 1, "{}", out.stderr);
    let refusals = out.grep("ERROR refusing to write");
    assert!(
        refusals
            .iter()
            .any(|l| l.contains(&format!("table={table}"))),
        "{}",
        out.stderr
    );
    assert!(
        refusals.iter().all(|l| l.contains(" fix=\"")),
        "{}",
        out.stderr
    );
    assert_eq!(
        &db.row_versions().await,
        before,
        "the refused pass wrote rows"
    );
    let adjustments: i64 = db
        .scalar("SELECT count(*) FROM reconciler.adjustments")
        .await;
    assert_eq!(adjustments, 0);
    let (status, error) = db.only_run().await;
    assert_eq!(status, "failed");
    assert!(error.unwrap_or_default().contains(table));
}

/// `doctor` FAILs the visibility check naming `table`.
async fn assert_doctor_fails(url: &str, table: &str) {
    let out = run_bin(&["doctor"], &[("DATABASE_URL", url)], &[]).await;
    assert_eq!(out.code(), 2, "{}{}", out.stdout, out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("rows visible to the pass"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(line.contains(table), "{line}");
}

#[tokio::test]
async fn a_calls_ledger_hidden_by_row_level_security_is_refused_not_zeroed() {
    let (db, login, orgs) = drifted_db().await;
    db.exec("DROP POLICY synqall_reconciler_read ON public.calls")
        .await;
    let before = db.row_versions().await;
    let out = as_login(&login, &["--reconcile-now"]).await;
    assert_refused(&db, &out, "public.calls", &before).await;
    assert_eq!(db.used_minutes(orgs[0]).await, Some(3), "not set to 0");
    assert!(out.grep("CRITICAL").is_empty(), "{}", out.stderr);
    // doctor, as the owner (judging the daemon's role) and as the login.
    assert_doctor_fails(&db.url, "public.calls").await;
    assert_doctor_fails(&login, "public.calls").await;
}

#[tokio::test]
async fn hidden_organizations_are_refused_not_reported_clean() {
    let (db, login, _) = drifted_db().await;
    db.exec("DROP POLICY synqall_reconciler_read ON public.organizations")
        .await;
    let before = db.row_versions().await;
    let out = as_login(&login, &["--reconcile-now"]).await;
    assert_refused(&db, &out, "public.organizations", &before).await;
    assert!(out.grep("orgs_checked=0").is_empty(), "{}", out.stderr);
    assert_doctor_fails(&db.url, "public.organizations").await;
    assert_doctor_fails(&login, "public.organizations").await;
}

#[tokio::test]
async fn a_policy_that_hides_most_rows_is_caught_by_the_row_count() {
    let (db, login, _) = drifted_db().await;
    // 300 more calls, and a read policy that lets the login see only some of them.
    db.exec(
        "INSERT INTO public.calls (user_id, organization_id, status, duration_minutes)
           SELECT gen_random_uuid(), (SELECT id FROM public.organizations LIMIT 1), 'failed', 1
             FROM generate_series(1, 300);
         ANALYZE public.calls;
         DROP POLICY synqall_reconciler_read ON public.calls;
         CREATE POLICY synqall_reconciler_read ON public.calls FOR SELECT TO synqall_reconciler
           USING (status = 'completed');",
    )
    .await;
    let before = db.row_versions().await;
    let out = as_login(&login, &["--reconcile-now"]).await;
    assert_refused(&db, &out, "public.calls", &before).await;
    assert!(
        out.grep("ERROR refusing to write")
            .iter()
            .any(|l| l.contains("sees 2 of about 302 rows")),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn counters_the_login_may_not_update_are_refused_before_any_write() {
    let (db, login, _) = drifted_db().await;
    db.exec("DROP POLICY synqall_reconciler_write ON public.organizations")
        .await;
    let before = db.row_versions().await;
    let out = as_login(&login, &["--reconcile-now"]).await;
    assert_refused(&db, &out, "public.organizations", &before).await;
    assert!(
        out.grep("ERROR refusing to write")
            .iter()
            .any(|l| l.contains("silently change nothing")),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn with_every_policy_in_place_the_login_repairs_and_doctor_is_satisfied() {
    let (db, login, orgs) = drifted_db().await;
    let out = as_login(&login, &["--reconcile-now"]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(db.used_minutes(orgs[0]).await, Some(10));
    let doctor = run_bin(&["doctor"], &[("DATABASE_URL", db.url.as_str())], &[]).await;
    let line = doctor
        .stdout
        .lines()
        .find(|l| l.contains("rows visible to the pass"))
        .unwrap_or_else(|| panic!("{}", doctor.stdout));
    assert!(line.starts_with("OK"), "{line}");
    assert!(line.contains("synqall_reconciler"), "{line}");
}
