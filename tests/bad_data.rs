//! Bad data never breaks a pass: each kind gets a clear log line and everything else is still
//! repaired. (NULL, negative and numeric durations are covered in reconcile_now.rs.)

mod common;

use common::TestDb;

#[tokio::test]
async fn counters_near_int_max_are_summed_in_64_bits_and_overflowing_writes_refused() {
    let db = TestDb::migrated().await;
    let user = db.user().await;
    // Its true total does not fit used_minutes (integer).
    let huge = db.org("Huge", Some(2_147_483_600)).await;
    db.call(user, Some(huge), "completed", Some(2_147_483_600), 1)
        .await;
    db.call(user, Some(huge), "completed", Some(100), 1).await;
    // Near the limit but correct: no drift, no overflow in the sum.
    let near = db.org("Near", Some(2_147_483_647)).await;
    db.call(user, Some(near), "completed", Some(2_147_483_600), 1)
        .await;
    db.call(user, Some(near), "completed", Some(47), 1).await;
    let normal = db.org("Normal", Some(0)).await;
    db.call(user, Some(normal), "completed", Some(5), 1).await;

    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 2, "drift left unrepaired: {}", out.stderr);
    let failed = out.grep("ERROR Failed to update organization");
    assert_eq!(failed.len(), 1, "{}", out.stderr);
    assert!(
        failed[0].contains(&format!("org_id={huge}")),
        "{}",
        failed[0]
    );
    assert!(
        failed[0].contains("2147483700 does not fit"),
        "{}",
        failed[0]
    );
    let critical = out.grep(&format!("org_id={huge}"));
    assert!(
        critical
            .iter()
            .any(|l| l.contains("expected=2147483700 delta=100") && l.contains("action=refused")),
        "{}",
        out.stderr
    );
    assert_eq!(db.used_minutes(huge).await, Some(2_147_483_600));
    assert_eq!(db.used_minutes(near).await, Some(2_147_483_647));
    assert_eq!(db.used_minutes(normal).await, Some(5));
    assert!(
        !out.grep("CRITICAL")
            .iter()
            .any(|l| l.contains(&near.to_string())),
        "an org at the limit but correct is not drift: {}",
        out.stderr
    );
}

#[tokio::test]
async fn calls_of_deleted_users_count_for_their_org_and_orphans_of_them_are_reported() {
    let db = TestDb::migrated().await;
    let org = db.org("Kept", Some(0)).await;
    let gone = db.user().await;
    db.member(gone, org, 10).await;
    let counted = db.call(gone, Some(org), "completed", Some(9), 2).await;
    let orphan = db.call(gone, None, "completed", Some(4), 2).await;
    db.exec(&format!("DELETE FROM auth.users WHERE id = '{gone}'"))
        .await; // memberships cascade

    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(db.used_minutes(org).await, Some(9));
    assert_eq!(db.call_org(counted).await, Some(org));
    assert_eq!(db.call_org(orphan).await, None);
    let unowned = out.grep("orphaned call without membership");
    assert_eq!(unowned.len(), 1, "{}", out.stderr);
    assert!(unowned[0].contains(&format!("user_id={gone}")));
}

#[tokio::test]
async fn hostile_org_names_stay_on_one_line_each() {
    let db = TestDb::migrated().await;
    let user = db.user().await;
    let names = [
        "Quote \"Inc\" ' Ltd",
        "Two\nLines\r\nand a tab\t",
        "Ünïcødé 東京 🚀",
        "key=value org_id=forged",
        "back\\slash",
    ];
    for name in names {
        let org = db.org(name, Some(0)).await;
        db.call(user, Some(org), "completed", Some(3), 1).await;
    }
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let lines = out.grep("CRITICAL used_minutes drift");
    assert_eq!(
        lines.len(),
        names.len(),
        "one line per org:\n{}",
        out.stderr
    );
    for expected in [
        r#"org_name="Quote \"Inc\" ' Ltd""#,
        r#"org_name="Two\nLines\r\nand a tab\t""#,
        r#"org_name="Ünïcødé 東京 🚀""#,
        r#"org_name="key=value org_id=forged""#,
        r#"org_name="back\\slash""#,
    ] {
        assert!(
            lines.iter().any(|l| l.contains(expected)),
            "{expected} not found in:\n{}",
            lines.join("\n")
        );
    }
    // The forged org_id inside a name does not precede the real one.
    let forged = lines.iter().find(|l| l.contains("forged")).unwrap();
    assert!(forged.find("org_id=").unwrap() < forged.find("forged").unwrap());
}

#[tokio::test]
async fn usage_metrics_without_an_organization_are_ignored_and_reported() {
    let db = TestDb::migrated().await;
    let org = db.org("Org", Some(0)).await;
    let user = db.user().await;
    db.completed_call(user, org, 6).await;
    db.exec(
        "INSERT INTO public.usage_metrics (organization_id, metric_type, metric_value)
         VALUES (NULL, 'minutes_transcribed', 50), (NULL, 'minutes_transcribed', 1)",
    )
    .await;
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(db.used_minutes(org).await, Some(6));
    assert_eq!(
        out.grep("usage_metrics rows without organization_id ignored minutes=51")
            .len(),
        1,
        "{}",
        out.stderr
    );
    assert!(out.grep("ledger mismatch").is_empty(), "{}", out.stderr);
}

#[tokio::test]
async fn a_row_locked_by_a_long_transaction_is_skipped_with_a_warning_and_the_rest_fixed() {
    let db = TestDb::migrated().await;
    let user = db.user().await;
    let locked = db.org("Locked", Some(0)).await;
    db.call(user, Some(locked), "completed", Some(8), 1).await;
    let free = db.org("Free", Some(0)).await;
    db.call(user, Some(free), "completed", Some(9), 1).await;
    let holder = common::connect(&db.url).await;
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM public.organizations WHERE id = '{locked}' FOR UPDATE;"
        ))
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the pass waited on the lock"
    );
    assert_eq!(out.code(), 2, "{}", out.stderr);
    let warn = out.grep("WARN organization row locked");
    assert_eq!(warn.len(), 1, "{}", out.stderr);
    assert!(warn[0].contains(&format!("org_id={locked}")));
    assert_eq!(db.used_minutes(free).await, Some(9));
    assert_eq!(db.used_minutes(locked).await, Some(0));

    holder.batch_execute("ROLLBACK").await.unwrap();
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(db.used_minutes(locked).await, Some(8));
}

#[tokio::test]
async fn counters_of_any_integer_type_and_null_names_never_panic() {
    for counter_type in ["bigint", "smallint", "numeric"] {
        let db = TestDb::migrated().await;
        db.exec(&format!(
            "ALTER TABLE public.organizations ALTER COLUMN used_minutes TYPE {counter_type};
             ALTER TABLE public.organizations ALTER COLUMN name DROP NOT NULL;"
        ))
        .await;
        let user = db.user().await;
        let nameless = db.org("placeholder", Some(1)).await;
        db.exec(&format!(
            "UPDATE public.organizations SET name = NULL WHERE id = '{nameless}'"
        ))
        .await;
        db.call(user, Some(nameless), "completed", Some(25), 1)
            .await;
        let named = db.org("Named", Some(0)).await;
        db.call(user, Some(named), "completed", Some(7), 1).await;

        let out = db.run(&["--reconcile-now"], &[]).await;
        assert_eq!(out.code(), 0, "{counter_type}: {}", out.stderr);
        let line = out.grep(&format!("org_id={nameless}"));
        assert!(
            line.iter()
                .any(|l| l.contains("CRITICAL used_minutes drift") && l.contains(" org_name=NULL ")),
            "{counter_type}: {}",
            out.stderr
        );
        let counters: Vec<String> = db
            .column(
                "SELECT o.used_minutes::text FROM public.organizations o ORDER BY o.used_minutes",
            )
            .await;
        assert_eq!(counters, ["7", "25"], "{counter_type}");
    }
}

#[tokio::test]
async fn a_bigint_counter_beyond_integer_is_repaired_and_a_smallint_one_refused() {
    let db = TestDb::migrated().await;
    db.exec(
        "ALTER TABLE public.organizations ALTER COLUMN used_minutes TYPE bigint;
         ALTER TABLE public.calls ALTER COLUMN duration_minutes TYPE bigint;",
    )
    .await;
    let user = db.user().await;
    let big = db.org("Big", Some(0)).await;
    db.exec(&format!(
        "INSERT INTO public.calls (user_id, organization_id, status, duration_minutes)
         VALUES ('{user}', '{big}', 'completed', 5000000000)"
    ))
    .await;
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let stored: i64 = db
        .scalar(&format!(
            "SELECT used_minutes FROM public.organizations WHERE id = '{big}'"
        ))
        .await;
    assert_eq!(stored, 5_000_000_000);

    let small = TestDb::migrated().await;
    small
        .exec("ALTER TABLE public.organizations ALTER COLUMN used_minutes TYPE smallint")
        .await;
    let user = small.user().await;
    let org = small.org("Small", Some(0)).await;
    small
        .call(user, Some(org), "completed", Some(40_000), 1)
        .await;
    let out = small.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.grep("ERROR Failed to update organization")
            .iter()
            .any(|l| l.contains("does not fit used_minutes (smallint)")),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn nan_infinite_and_huge_values_count_zero_are_named_and_fail_nobody_else() {
    let db = TestDb::migrated().await;
    db.exec(
        "ALTER TABLE public.calls ALTER COLUMN duration_minutes TYPE numeric;
         ALTER TABLE public.organizations ALTER COLUMN used_minutes TYPE numeric;",
    )
    .await;
    let user = db.user().await;
    let poisoned = db.org("Poisoned", Some(0)).await;
    let healthy = db.org("Healthy", Some(0)).await;
    let fraction = db.org("Fraction", None).await;
    db.exec(&format!(
        "INSERT INTO public.calls (user_id, organization_id, status, duration_minutes) VALUES
           ('{user}', '{poisoned}', 'completed', 'NaN'),
           ('{user}', '{poisoned}', 'completed', 'Infinity'),
           ('{user}', '{poisoned}', 'completed', '-Infinity'),
           ('{user}', '{poisoned}', 'completed', 1e20),
           ('{user}', '{poisoned}', 'completed', 4),
           ('{user}', '{healthy}', 'completed', 6),
           ('{user}', '{fraction}', 'completed', 3);
         INSERT INTO public.usage_metrics (organization_id, metric_type, metric_value) VALUES
           ('{poisoned}', 'minutes_transcribed', 'NaN'),
           ('{healthy}', 'minutes_transcribed', 'Infinity'),
           ('{healthy}', 'minutes_transcribed', 6);
         UPDATE public.organizations SET used_minutes = 10.5 WHERE id = '{fraction}';"
    ))
    .await;
    for source in ["calls", "usage_metrics"] {
        let out = db
            .run(
                &["--reconcile-now", "--dry-run"],
                &[("SYNQALL_RECONCILER__USAGE__SOURCE", source)],
            )
            .await;
        assert_eq!(out.code(), 2, "{source}: {}", out.stderr);
        assert!(out.grep("panicked").is_empty(), "{}", out.stderr);
    }
    let out = db.run(&["--reconcile-now"], &[]).await;
    // The fraction cannot be compared-and-set: refused, reported; the rest repaired.
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert_eq!(db.used_minutes_text(poisoned).await.as_deref(), Some("4"));
    assert_eq!(db.used_minutes_text(healthy).await.as_deref(), Some("6"));
    assert_eq!(
        db.used_minutes_text(fraction).await.as_deref(),
        Some("10.5")
    );
    let bad = out.grep(&format!("counted as 0 org_id={poisoned}"));
    assert_eq!(bad.len(), 1, "{}", out.stderr);
    assert!(
        bad[0].contains("invalid_durations=3") && bad[0].contains("negative_durations=1"),
        "{}",
        bad[0]
    );
    assert!(bad[0].contains("invalid_metric_values=1"), "{}", bad[0]);
    assert!(
        out.grep(&format!("org_id={fraction}"))
            .iter()
            .any(|l| l.contains("action=refused") && l.contains("no whole number")),
        "{}",
        out.stderr
    );
    let doctor = db.run(&["doctor"], &[]).await;
    let durations = doctor
        .stdout
        .lines()
        .find(|l| l.contains("call durations"))
        .unwrap_or_else(|| panic!("{}", doctor.stdout));
    assert!(
        durations.contains("3 not a usable number") && durations.contains("2 minutes_transcribed"),
        "{durations}"
    );
}
