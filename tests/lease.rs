//! One writer, even when the network lies: a holder frozen inside a repair batch (SIGSTOP, as a
//! long stall, a VM pause or a partition look from the database) blocks the app for seconds,
//! not minutes; the standby takes over once the lease expires; the resumed zombie writes
//! nothing. And a lock backend that stops answering fails the pass within its deadline, with
//! the stall alert, until it is back.

mod common;

use std::time::{Duration, Instant};

use common::{connect, Daemon, TestDb};
use tokio_postgres::Client;
use uuid::Uuid;

/// `n` organizations with a counter of 0 and one completed 10-minute call each (and a user).
async fn drifted(db: &TestDb, n: usize) -> Vec<(Uuid, Uuid)> {
    let mut orgs = Vec::new();
    for i in 0..n {
        let org = db.org(&format!("Org {i}"), Some(0)).await;
        let user = db.user().await;
        db.member(user, org, 30).await;
        db.completed_call(user, org, 10).await;
        orgs.push((org, user));
    }
    orgs
}

/// The pid of a reconciler backend in this database doing `wait_event`, polled for `secs`.
async fn reconciler_backend_waiting(client: &Client, db: &str, wait_event: &str, secs: u64) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let row = client
            .query_opt(
                "SELECT pid FROM pg_stat_activity
                  WHERE datname = $1 AND application_name = 'synqall-reconciler'
                    AND wait_event = $2 LIMIT 1",
                &[&db, &wait_event],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return row.get(0);
        }
        assert!(
            Instant::now() < deadline,
            "no reconciler backend waiting on {wait_event}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: signalling a process by pid; the test owns (or may signal, as root) it.
    unsafe {
        libc::kill(pid, signal);
    }
}

fn run_id_of(line: &str) -> Uuid {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("run_id="))
        .unwrap_or_else(|| panic!("no run_id in {line}"))
        .parse()
        .unwrap()
}

const PAIR: &[(&str, &str)] = &[
    ("SYNQALL_RECONCILER__LOCK__LEASE_SECONDS", "3"),
    (
        "SYNQALL_RECONCILER__DATABASE__REPAIR_IDLE_TIMEOUT_SECONDS",
        "2",
    ),
    ("SYNQALL_RECONCILER__USAGE__BATCH_SIZE", "100"),
];

#[tokio::test]
async fn a_frozen_holder_blocks_the_app_for_seconds_and_a_resumed_zombie_writes_nothing() {
    let db = TestDb::migrated().await;
    let orgs = drifted(&db, 20).await;
    // Each repair statement takes 3 s: time to freeze the holder inside its batch.
    db.exec(
        "CREATE FUNCTION public.slow_journal() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$;
         CREATE TRIGGER slow_journal AFTER INSERT ON reconciler.adjustments
           FOR EACH STATEMENT EXECUTE FUNCTION public.slow_journal();",
    )
    .await;
    let observer = connect(&db.url).await;
    let mut a = Daemon::start(&db.url, PAIR);
    let started = a.wait_for("reconcile pass started", 1, 15).await;
    let zombie_run = run_id_of(&started[0]);
    reconciler_backend_waiting(&observer, &db.name, "PgSleep", 20).await;
    a.signal(libc::SIGSTOP);
    let frozen_at = Instant::now();

    // The app completes a call of a locked organization and increments: it waits for the
    // frozen transaction's row lock only until the server ends that transaction.
    let (org, user) = orgs[0];
    db.completed_call(user, org, 10).await;
    let app = connect(&db.url).await;
    app.batch_execute("SET statement_timeout = '20s'")
        .await
        .unwrap();
    let asked = Instant::now();
    app.execute("SELECT public.increment_used_minutes($1, 10)", &[&org])
        .await
        .expect("the app's increment completes");
    let waited = asked.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "the increment waited {waited:?}"
    );

    // The standby takes over once the lease has expired, and repairs.
    let mut b = Daemon::start(&db.url, PAIR);
    let takeover = b
        .wait_for(
            "taking over the advisory lock from a holder whose lease expired",
            1,
            20,
        )
        .await;
    assert!(
        frozen_at.elapsed() < Duration::from_secs(3 + 1 + 10),
        "took over after {:?}",
        frozen_at.elapsed()
    );
    assert!(
        takeover[0].contains("holder_host=") && takeover[0].contains("holder_pid="),
        "{}",
        takeover[0]
    );
    b.wait_for("took over the advisory lock", 1, 10).await;
    let mut repaired = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while repaired < orgs.len() {
        assert!(Instant::now() < deadline, "{}", b.lines().join("\n"));
        repaired = db
            .scalar::<i64>(
                "SELECT count(*) FROM public.organizations o
                  WHERE o.used_minutes = (SELECT sum(duration_minutes) FROM public.calls c
                                           WHERE c.organization_id = o.id)",
            )
            .await as usize;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The zombie resumes: none of its writes lands.
    a.signal(libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(4)).await;
    for daemon in [&mut a, &mut b] {
        daemon.signal(libc::SIGTERM);
        assert_eq!(daemon.wait(20).await, Some(0));
    }
    let zombie_rows: i64 = db
        .client
        .query_one(
            "SELECT (SELECT count(*) FROM reconciler.adjustments WHERE run_id = $1)
                  + (SELECT count(*) FROM reconciler.call_repairs WHERE run_id = $1)",
            &[&zombie_run],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        zombie_rows, 0,
        "the paused instance's run wrote journal rows"
    );
    let twice: i64 = db
        .scalar(
            "SELECT count(*) FROM (SELECT organization_id FROM reconciler.adjustments
                                    WHERE reason = 'drift' GROUP BY 1 HAVING count(*) > 1) d",
        )
        .await;
    assert_eq!(twice, 0, "an organization was repaired twice");
    let wrong: i64 = db
        .scalar(
            "SELECT count(*) FROM public.organizations o
              WHERE o.used_minutes IS DISTINCT FROM
                    (SELECT sum(duration_minutes) FROM public.calls c WHERE c.organization_id = o.id)",
        )
        .await;
    assert_eq!(wrong, 0, "every counter equals the truth");
    assert_eq!(db.used_minutes(org).await, Some(20));
}

#[tokio::test]
async fn a_lock_backend_that_stops_answering_fails_the_pass_within_its_deadline() {
    let db = TestDb::migrated().await;
    drifted(&db, 1).await;
    let observer = connect(&db.url).await;
    let mut daemon = Daemon::start(
        &db.url,
        &[
            ("SYNQALL_RECONCILER__LOCK__LEASE_SECONDS", "3"),
            ("SYNQALL_RECONCILER__USAGE__SETTLE_SECONDS", "8"),
            ("SYNQALL_RECONCILER__ALERT__STALLED_AFTER_SECONDS", "3"),
            ("SYNQALL_RECONCILER__DATABASE__PASS_TIMEOUT_SECONDS", "30"),
        ],
    );
    daemon.wait_for("waiting for drift to settle", 1, 15).await;
    // The lock's backend freezes (its server process is stopped).
    let lock_backend: i32 = observer
        .query_one(
            "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)
              WHERE l.locktype = 'advisory' AND l.granted AND a.datname = $1",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    signal(lock_backend, libc::SIGSTOP);
    let frozen_at = Instant::now();
    let failed = daemon.wait_for("ERROR reconcile pass failed", 1, 40).await;
    assert!(
        frozen_at.elapsed() < Duration::from_secs(30),
        "failed only after {:?}",
        frozen_at.elapsed()
    );
    assert!(failed[0].contains("stopped answering"), "{}", failed[0]);
    daemon
        .wait_for("CRITICAL reconciler stalled since", 1, 20)
        .await;
    // Back: its session ends (its client is gone), the lock is free, a pass succeeds.
    signal(lock_backend, libc::SIGCONT);
    daemon.wait_for("reconciler recovered", 1, 40).await;
    let ok: i64 = db
        .scalar("SELECT count(*) FROM reconciler.runs WHERE status = 'ok'")
        .await;
    assert!(ok >= 1);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(20).await, Some(0));
}

#[tokio::test]
async fn every_write_is_fenced_on_the_lock_a_zombie_writes_nothing() {
    use synqall_reconciler::config::{Period, Secret, Settings, Source};
    use synqall_reconciler::db::lock::AdvisoryLock;
    use synqall_reconciler::db::{Database, DatabaseTarget, DbError};
    use synqall_reconciler::reconcile::orphans::{self, Attribution, Rule};
    use synqall_reconciler::reconcile::{journal, PassKind, RunMode};

    let db = TestDb::migrated().await;
    let org = db.org("Owner", Some(0)).await;
    let user = db.user().await;
    db.member(user, org, 30).await;
    let call = db.call(user, None, "completed", Some(5), 1).await;

    let settings = Settings::load_from(
        Some(std::path::Path::new(common::empty_config_file())),
        std::iter::empty::<(String, String)>(),
    )
    .unwrap();
    let target = DatabaseTarget::parse("test", Secret::new(db.url.clone())).unwrap();
    let database = Database::new(&target, &settings).unwrap();
    let lock = AdvisoryLock::try_acquire(&database, settings.lock.key, settings.lease())
        .await
        .unwrap()
        .expect("the lock is free");
    let fence = lock.fence();
    // Another instance ends this one's lock session and takes the lock: this one is a zombie
    // that does not know it yet.
    let other = connect(&db.url).await;
    other
        .execute("SELECT pg_terminate_backend($1)", &[&fence.pid])
        .await
        .unwrap();
    other
        .execute("SELECT pg_advisory_lock($1)", &[&settings.lock.key])
        .await
        .unwrap();

    let client = database.client().await.unwrap();
    let attribution = Attribution {
        call_id: call,
        org_id: org,
        rule: Rule::OnlyMembership,
    };
    let result = orphans::attribute(&**client, Uuid::new_v4(), &[attribution], fence).await;
    assert!(matches!(result, Err(DbError::Fenced)), "{result:?}");
    assert_eq!(db.call_org(call).await, None, "the fenced statement wrote");
    let opened = journal::open_run(
        &**client,
        Uuid::new_v4(),
        (RunMode::Once, PassKind::Sweep),
        Period::AllTime,
        Source::Calls,
        fence,
    )
    .await;
    assert!(matches!(opened, Err(DbError::Fenced)), "{opened:?}");
    let runs: i64 = db.scalar("SELECT count(*) FROM reconciler.runs").await;
    assert_eq!(runs, 0);
    drop(lock);
}
