//! `usage.period = calendar_month`: the first pass of a new month resets counters that still
//! hold last month's usage at INFO (no CRITICAL), a real drift in the new month is still
//! CRITICAL, and organizations over `max_minutes_monthly` get a WARN line.

mod common;

use common::TestDb;
use uuid::Uuid;

const MONTHLY: &[(&str, &str)] = &[("SYNQALL_RECONCILER__USAGE__PERIOD", "calendar_month")];

/// Start of the current calendar month (UTC), as SQL.
const THIS_MONTH: &str = "(date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')";

/// A completed call and its usage_metrics row at `at` (an SQL timestamptz expression).
async fn used(db: &TestDb, org: Uuid, minutes: i32, at: &str) {
    let user = db.user().await;
    db.member(user, org, 400).await;
    db.exec(&format!(
        "INSERT INTO public.calls (user_id, organization_id, status, duration_minutes, created_at)
         VALUES ('{user}', '{org}', 'completed', {minutes}, {at});
         INSERT INTO public.usage_metrics (organization_id, metric_type, metric_value, created_at)
         VALUES ('{org}', 'minutes_transcribed', {minutes}, {at});"
    ))
    .await;
}

async fn last_month(db: &TestDb, org: Uuid, minutes: i32) {
    used(
        db,
        org,
        minutes,
        &format!("{THIS_MONTH} - interval '10 days'"),
    )
    .await;
}

async fn this_month(db: &TestDb, org: Uuid, minutes: i32) {
    used(db, org, minutes, THIS_MONTH).await;
}

async fn org_with_quota(db: &TestDb, name: &str, stored: i32, quota: i32) -> Uuid {
    let org = db.org(name, Some(stored)).await;
    db.exec(&format!(
        "UPDATE public.organizations SET max_minutes_monthly = {quota} WHERE id = '{org}'"
    ))
    .await;
    org
}

#[tokio::test]
async fn month_rollover_is_info_not_critical_and_over_quota_orgs_are_warned() {
    let db = TestDb::migrated().await;
    // A successful monthly pass last month: this pass is the first of the new month.
    db.exec(&format!(
        "INSERT INTO reconciler.runs (id, mode, version, host, period, source, status, started_at, finished_at)
         VALUES (gen_random_uuid(), 'daemon', '0.1.0', 'box', 'calendar_month', 'calls', 'ok',
                 {THIS_MONTH} - interval '1 day', {THIS_MONTH} - interval '1 day')"
    ))
    .await;
    // The app never resets: 40 last month + 7 this month.
    let rolled = db.org("Rolled over", Some(47)).await;
    last_month(&db, rolled, 15).await;
    last_month(&db, rolled, 25).await;
    this_month(&db, rolled, 7).await;
    // Nothing yet this month.
    let quiet = db.org("Quiet this month", Some(30)).await;
    last_month(&db, quiet, 30).await;
    // The app reset it itself: right already.
    let app_reset = db.org("Reset by the app", Some(5)).await;
    last_month(&db, app_reset, 20).await;
    this_month(&db, app_reset, 5).await;
    // Not reset, and an increment of 4 lost this month: that is drift.
    let lossy = db.org("Lost an increment", Some(15)).await;
    last_month(&db, lossy, 10).await;
    this_month(&db, lossy, 9).await;
    // Over quota this month (right counters); and one over only last month.
    let over = org_with_quota(&db, "Over quota", 12, 10).await;
    this_month(&db, over, 12).await;
    let over_too = org_with_quota(&db, "Over quota too", 6, 5).await;
    this_month(&db, over_too, 6).await;
    let was_over = org_with_quota(&db, "Over last month only", 2, 10).await;
    last_month(&db, was_over, 50).await;
    this_month(&db, was_over, 2).await;
    // was_over: stored 2 = this month already (reset by the app).

    let out = db.run(&["--reconcile-now"], MONTHLY).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);

    assert_eq!(db.used_minutes(rolled).await, Some(7));
    assert_eq!(db.used_minutes(quiet).await, Some(0));
    assert_eq!(db.used_minutes(app_reset).await, Some(5));
    assert_eq!(db.used_minutes(lossy).await, Some(9));
    assert_eq!(db.used_minutes(over).await, Some(12));

    let critical = out.grep("CRITICAL");
    assert_eq!(
        critical.len(),
        1,
        "only the real drift is CRITICAL:\n{}",
        out.stderr
    );
    assert!(
        critical[0].contains(&format!("org_id={lossy}")),
        "{}",
        critical[0]
    );
    assert!(
        critical[0].contains("stored=15 expected=9"),
        "{}",
        critical[0]
    );

    let rolled_over = out.grep("INFO billing period rolled over");
    assert_eq!(rolled_over.len(), 1, "{}", out.stderr);
    let resets = out.grep("INFO billing period rollover: used_minutes reset");
    assert_eq!(resets.len(), 2, "{}", out.stderr);
    let rolled_line = resets
        .iter()
        .find(|l| l.contains(&format!("org_id={rolled}")))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    for field in [
        "stored=47",
        "expected=7",
        "previous_period_minutes=40",
        "action=reset",
    ] {
        assert!(
            rolled_line.contains(field),
            "{field} missing: {rolled_line}"
        );
    }

    let quota = out.grep("WARN organization over its monthly quota");
    assert_eq!(quota.len(), 2, "{}", out.stderr);
    let over_line = quota
        .iter()
        .find(|l| l.contains(&format!("org_id={over}")))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    for field in ["used=12", "max_minutes_monthly=10", "over_by=2"] {
        assert!(over_line.contains(field), "{field} missing: {over_line}");
    }
    assert!(quota
        .iter()
        .any(|l| l.contains(&format!("org_id={over_too}"))));

    let summary = out.grep("INFO reconcile pass finished");
    for field in ["drifted=1", "repaired=1", "period_resets=2", "over_quota=2"] {
        assert!(
            summary[0].contains(field),
            "{field} missing: {}",
            summary[0]
        );
    }
    let reasons: Vec<(String, i64)> = db
        .client
        .query(
            "SELECT reason, count(*) FROM reconciler.adjustments GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        reasons,
        [("drift".to_string(), 1), ("period_rollover".to_string(), 2)]
    );
    let (drifted, resets_counted): (i32, i32) = {
        let r = db
            .client
            .query_one(
                "SELECT drifted, period_resets FROM reconciler.runs WHERE mode = 'once'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((drifted, resets_counted), (1, 2));

    // The next pass of the month: no rollover line, nothing reset, nothing written; the
    // over-quota warnings repeat (once per pass).
    let before = db.row_versions().await;
    let again = db.run(&["--reconcile-now"], MONTHLY).await;
    assert_eq!(again.code(), 0, "{}", again.stderr);
    assert!(again.grep("billing period").is_empty(), "{}", again.stderr);
    assert!(again.grep("CRITICAL").is_empty(), "{}", again.stderr);
    assert_eq!(again.grep("over its monthly quota").len(), 2);
    assert_eq!(db.row_versions().await, before);
}

#[tokio::test]
async fn over_quota_lines_are_capped_per_pass_and_absent_for_all_time() {
    let db = TestDb::migrated().await;
    for i in 0..5 {
        let org = org_with_quota(&db, &format!("Org {i}"), 3, 2).await;
        this_month(&db, org, 3).await;
    }
    let capped = db
        .run(
            &["--reconcile-now"],
            &[
                MONTHLY[0],
                (
                    "SYNQALL_RECONCILER__ALERT__MAX_CRITICAL_LINES_PER_PASS",
                    "2",
                ),
            ],
        )
        .await;
    assert_eq!(capped.code(), 0, "{}", capped.stderr);
    assert_eq!(
        capped.grep("over its monthly quota").len(),
        2,
        "{}",
        capped.stderr
    );
    let suppressed = capped.grep("log lines suppressed");
    assert_eq!(suppressed.len(), 1, "{}", capped.stderr);
    assert!(
        suppressed[0].contains("kind=\"over quota\" suppressed=3"),
        "{}",
        suppressed[0]
    );
    assert!(capped.grep("INFO reconcile pass finished")[0].contains("over_quota=5"));

    // A quota is monthly: with the default all_time period there is nothing to compare.
    let all_time = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(all_time.code(), 0, "{}", all_time.stderr);
    assert!(
        all_time.grep("over its monthly quota").is_empty(),
        "{}",
        all_time.stderr
    );
}
