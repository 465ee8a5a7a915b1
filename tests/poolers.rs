//! Poolers, tried for real (the Debian pgbouncer): in transaction mode, on any port, the
//! session advisory lock means nothing, so every command that takes it refuses (exit 78) and
//! doctor FAILs; in session mode everything works, and the session settings sent with SET are
//! in effect (pgbouncer refuses the startup parameter `options`).

mod common;

use common::pgbouncer::PgBouncer;
use common::{cluster, run_bin, Daemon, TestDb};

/// A migrated database with one drifted organization, and a pgbouncer in `mode` in front.
async fn behind_pgbouncer(mode: &str) -> (TestDb, PgBouncer, String) {
    let db = TestDb::migrated().await;
    let org = db.org("Behind a pooler", Some(0)).await;
    let user = db.user().await;
    db.member(user, org, 30).await;
    db.completed_call(user, org, 10).await;
    let bouncer = PgBouncer::start(cluster(), mode);
    let url = bouncer.url(cluster(), &db.name);
    (db, bouncer, url)
}

#[tokio::test]
async fn transaction_pooling_is_refused_on_any_port_with_exit_78() {
    let (db, bouncer, url) = behind_pgbouncer("transaction").await;
    assert_ne!(bouncer.port, 6543, "not the port the URL check knows");
    let env = [("DATABASE_URL", url.as_str())];

    let before = db.row_versions().await;
    for args in [
        &["--reconcile-now"][..],
        &["revert", "00000000-0000-0000-0000-000000000000"][..],
    ] {
        let out = run_bin(args, &env, &[]).await;
        assert_eq!(out.code(), 78, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("transaction pooler"), "{}", out.stderr);
        assert!(out.stderr.contains("session mode"), "{}", out.stderr);
    }
    assert_eq!(db.row_versions().await, before, "nothing written");
    let runs: i64 = db.scalar("SELECT count(*) FROM reconciler.runs").await;
    assert_eq!(runs, 0);
    let locks = db.advisory_locks().await;
    assert_eq!(
        locks, 0,
        "no advisory lock left behind on a pooled server session"
    );

    let mut daemon = Daemon::start(&url, &[]);
    assert_eq!(
        daemon.wait(30).await,
        Some(78),
        "{}",
        daemon.lines().join("\n")
    );

    let doctor = run_bin(&["doctor"], &env, &[]).await;
    let line = doctor
        .stdout
        .lines()
        .find(|l| l.contains("connection"))
        .unwrap_or_else(|| panic!("{}{}", doctor.stdout, doctor.stderr));
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(line.contains("transaction pooler"), "{line}");
}

#[tokio::test]
async fn session_pooling_works_and_the_session_settings_are_in_effect() {
    use synqall_reconciler::config::{Secret, Settings};
    use synqall_reconciler::db::{Database, DatabaseTarget};

    let (_db, _bouncer, url) = behind_pgbouncer("session").await;
    let env = [("DATABASE_URL", url.as_str())];
    let out = run_bin(&["--reconcile-now"], &env, &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(out.grep("repaired=1").len() == 1, "{}", out.stderr);
    let doctor = run_bin(&["doctor"], &env, &[]).await;
    let line = doctor
        .stdout
        .lines()
        .find(|l| l.contains("connection"))
        .unwrap_or_else(|| panic!("{}", doctor.stdout));
    assert!(line.starts_with("OK"), "{line}");

    // What the server says the library's sessions carry, through pgbouncer.
    let settings = Settings::load_from(
        Some(std::path::Path::new(common::empty_config_file())),
        [
            (
                "SYNQALL_RECONCILER__DATABASE__STATEMENT_TIMEOUT_SECONDS".to_string(),
                "17".to_string(),
            ),
            (
                "SYNQALL_RECONCILER__DATABASE__LOCK_TIMEOUT_SECONDS".to_string(),
                "4".to_string(),
            ),
        ],
    )
    .unwrap();
    let target = DatabaseTarget::parse("test", Secret::new(url.clone())).unwrap();
    let database = Database::new(&target, &settings).unwrap();
    let client = database.client().await.unwrap();
    for (setting, expected) in [
        ("statement_timeout", "17s"),
        ("lock_timeout", "4s"),
        ("idle_in_transaction_session_timeout", "2min"),
        ("tcp_keepalives_idle", "15"),
        ("tcp_user_timeout", "30000"),
    ] {
        let shown: String = client
            .simple_query(&format!("SHOW {setting}"))
            .await
            .unwrap()
            .into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap();
        assert_eq!(shown, expected, "{setting}");
    }
    let mut daemon = Daemon::start(&url, &[]);
    daemon.wait_for("reconcile pass finished", 2, 20).await;
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(15).await, Some(0));
}
