//! No mass correction without a person: a truth ledger that was emptied makes every counter
//! look too high; the pass writes nothing, says so on a CRITICAL line and records the run as
//! `refused` until `--reconcile-now --allow-mass-correction`. An incident cleanup passes.

mod common;

use common::{Daemon, TestDb};

/// 20 organizations of 100 billed minutes each, counters right; then `calls` is emptied.
async fn emptied_ledger() -> TestDb {
    let db = TestDb::migrated().await;
    db.exec(
        "INSERT INTO public.organizations (name, used_minutes)
           SELECT 'org ' || i, 100 FROM generate_series(1, 20) i;
         INSERT INTO public.calls (user_id, organization_id, status, duration_minutes)
           SELECT gen_random_uuid(), id, 'completed', 100 FROM public.organizations;",
    )
    .await;
    let clean = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(clean.code(), 0, "{}", clean.stderr);
    assert!(clean.grep("CRITICAL").is_empty(), "{}", clean.stderr);
    db.exec("TRUNCATE public.calls").await;
    db
}

async fn billed(db: &TestDb) -> i64 {
    db.scalar("SELECT sum(used_minutes)::bigint FROM public.organizations")
        .await
}

#[tokio::test]
async fn the_daemon_refuses_to_zero_every_counter_and_a_person_can_allow_it() {
    let db = emptied_ledger().await;
    let before = db.row_versions().await;

    let mut daemon = Daemon::start(&db.url, &[]);
    let refused = daemon
        .wait_for("CRITICAL mass correction refused", 1, 15)
        .await;
    assert!(
        refused[0].contains(
            "would lower 20 of 20 organizations and remove 2000 of 2000 billed minutes (100%)"
        ),
        "{}",
        refused[0]
    );
    assert!(
        refused[0].contains("--allow-mass-correction"),
        "{}",
        refused[0]
    );
    daemon.wait_for("reconcile pass finished", 1, 10).await;
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(15).await, Some(0));
    assert_eq!(db.row_versions().await, before, "nothing written");
    assert_eq!(billed(&db).await, 2000);
    let statuses: Vec<String> = db
        .column("SELECT status FROM reconciler.runs WHERE mode = 'daemon'")
        .await;
    assert!(!statuses.is_empty());
    assert!(statuses.iter().all(|s| s == "refused"), "{statuses:?}");
    // Every drift still has its CRITICAL line, marked as held.
    assert!(daemon
        .grep("CRITICAL used_minutes drift")
        .iter()
        .all(|l| l.contains("action=refused") && l.contains("mass correction")));

    // One-shot: refused too (exit 2); the dry run says what a real pass would do.
    let once = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(once.code(), 2, "{}", once.stderr);
    assert_eq!(once.grep("CRITICAL mass correction refused").len(), 1);
    assert!(
        once.stdout.contains("MASS CORRECTION REFUSED"),
        "{}",
        once.stdout
    );
    let dry = db.run(&["--reconcile-now", "--dry-run"], &[]).await;
    assert_eq!(dry.code(), 2, "{}", dry.stderr);
    assert_eq!(dry.grep("would refuse to write").len(), 1, "{}", dry.stderr);
    assert_eq!(billed(&db).await, 2000);

    // A person allows it once.
    let allowed = db
        .run(&["--reconcile-now", "--allow-mass-correction"], &[])
        .await;
    assert_eq!(allowed.code(), 0, "{}", allowed.stderr);
    assert_eq!(allowed.grep("mass correction allowed").len(), 1);
    assert_eq!(billed(&db).await, 0);
    let last: String = db
        .scalar("SELECT status FROM reconciler.runs ORDER BY started_at DESC LIMIT 1")
        .await;
    assert_eq!(last, "ok");
}

#[tokio::test]
async fn allow_mass_correction_needs_reconcile_now_and_excludes_dry_run() {
    let db = TestDb::migrated().await;
    for args in [
        &["--allow-mass-correction"][..],
        &["--reconcile-now", "--dry-run", "--allow-mass-correction"][..],
    ] {
        let out = db.run(args, &[]).await;
        assert_eq!(out.code(), 64, "{args:?}: {}", out.stderr);
    }
}

#[tokio::test]
async fn thresholds_are_config_keys() {
    let db = emptied_ledger().await;
    // Loosened on purpose: the same correction goes through.
    let out = db
        .run(
            &["--reconcile-now"],
            &[
                ("SYNQALL_RECONCILER__GUARD__MAX_LOWERED_SHARE", "1"),
                ("SYNQALL_RECONCILER__GUARD__MAX_REMOVED_SHARE", "1"),
            ],
        )
        .await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(billed(&db).await, 0);
    let bad = db
        .run(
            &["--reconcile-now"],
            &[("SYNQALL_RECONCILER__GUARD__MAX_LOWERED_SHARE", "1.5")],
        )
        .await;
    assert_eq!(bad.code(), 78, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("guard.max_lowered_share"),
        "{}",
        bad.stderr
    );
}
