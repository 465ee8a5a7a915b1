//! The daemon as a process: scheduled repairs, two instances on one database, SIGTERM during a
//! long pass, the systemd notify protocol, SIGHUP, and a full pass as the least-privilege role.

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{connect, Daemon, TestDb};
use uuid::Uuid;

/// An organization with one completed 10-minute call and the given counter.
async fn org_with_usage(db: &TestDb, name: &str, used: Option<i32>) -> Uuid {
    let org = db.org(name, used).await;
    let user = db.user().await;
    db.member(user, org, 30).await;
    db.completed_call(user, org, 10).await;
    org
}

fn run_id_of(line: &str) -> String {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("run_id="))
        .unwrap_or_else(|| panic!("no run_id in {line}"))
        .to_string()
}

#[tokio::test]
async fn daemon_repairs_planted_drift_on_a_tick_and_new_drift_within_two_ticks() {
    let db = TestDb::migrated().await;
    let first = org_with_usage(&db, "First", Some(1)).await;
    let second = org_with_usage(&db, "Second", Some(10)).await;
    let mut daemon = Daemon::start(
        &db.url,
        &[("SYNQALL_RECONCILER__SCHEDULE__RUN_ON_START", "false")],
    );
    daemon.wait_for("daemon started", 1, 10).await;
    daemon.wait_for(&format!("org_id={first}"), 1, 10).await;
    assert_eq!(db.used_minutes(first).await, Some(10));
    assert!(
        !daemon.grep("reconcile pass started").is_empty(),
        "repaired by a scheduled pass"
    );

    // New drift while it runs.
    let started_before = daemon.grep("reconcile pass started").len();
    db.exec(&format!(
        "UPDATE public.organizations SET used_minutes = 0 WHERE id = '{second}'"
    ))
    .await;
    let line = daemon.wait_for(&format!("org_id={second}"), 1, 10).await;
    assert!(line[0].contains("action=repaired"), "{}", line[0]);
    assert_eq!(db.used_minutes(second).await, Some(10));
    // The repairing pass is the one running when the drift was planted or one of the next two.
    let started: Vec<String> = daemon
        .grep("reconcile pass started")
        .iter()
        .map(|l| run_id_of(l))
        .collect();
    let window =
        &started[started_before.saturating_sub(1)..(started_before + 2).min(started.len())];
    assert!(
        window.contains(&run_id_of(&line[0])),
        "repaired by {} but the passes after planting were {window:?}",
        run_id_of(&line[0])
    );

    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(15).await, Some(0));
    assert_eq!(daemon.grep("daemon stopping").len(), 1);
}

#[tokio::test]
async fn two_daemons_never_overlap_and_the_survivor_takes_over_from_a_killed_holder() {
    let db = TestDb::migrated().await;
    let busy = org_with_usage(&db, "Busy", Some(0)).await;
    // Keep one counter moving so that every pass sees drift, waits to settle and holds the lock
    // for a while: the two daemons really contend.
    let bumper_url = db.url.clone();
    let bumper = tokio::spawn(async move {
        let client = connect(&bumper_url).await;
        loop {
            client
                .execute(
                    "UPDATE public.organizations SET used_minutes = used_minutes + 1 WHERE id = $1",
                    &[&busy],
                )
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let settle = [("SYNQALL_RECONCILER__USAGE__SETTLE_SECONDS", "1")];
    let mut a = Daemon::start(&db.url, &settle);
    a.wait_for("waiting for drift to settle", 1, 10).await;
    let mut b = Daemon::start(&db.url, &settle);
    b.wait_for("advisory lock is held", 1, 10).await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Kill the holder while it holds the lock (in its settle wait).
    let settles = a.grep("waiting for drift to settle").len();
    a.wait_for("waiting for drift to settle", settles + 1, 15)
        .await;
    a.signal(libc::SIGKILL);
    assert_eq!(a.wait(10).await, None, "killed by SIGKILL");
    bumper.abort();

    // The survivor takes over at its next tick and repairs the counter.
    let finished_before = b.grep("reconcile pass finished").len();
    b.wait_for("reconcile pass finished", finished_before + 2, 20)
        .await;
    b.wait_for(&format!("org_id={busy}"), 1, 20).await;
    let repaired = b
        .grep(&format!("org_id={busy}"))
        .iter()
        .any(|l| l.contains("action=repaired"));
    assert!(repaired, "{}", b.lines().join("\n"));
    assert_eq!(db.used_minutes(busy).await, Some(10));
    b.signal(libc::SIGTERM);
    assert_eq!(b.wait(15).await, Some(0));

    // Never two passes at once: closed runs do not overlap, and the killed one was closed.
    let runs = db
        .client
        .query(
            "SELECT started_at, finished_at, status FROM reconciler.runs ORDER BY started_at",
            &[],
        )
        .await
        .unwrap();
    assert!(
        runs.len() >= 4,
        "expected several passes, got {}",
        runs.len()
    );
    let intervals: Vec<(
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
        String,
    )> = runs
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get::<_, String>(2)))
        .collect();
    for pair in intervals.windows(2) {
        if pair[0].2 == "ok" {
            assert!(
                pair[0].1 <= pair[1].0,
                "overlapping passes: {:?} and {:?}",
                pair[0],
                pair[1]
            );
        }
    }
    let abandoned: i64 = db
        .scalar("SELECT count(*) FROM reconciler.runs WHERE status = 'failed' AND error LIKE 'abandoned%'")
        .await;
    assert_eq!(
        abandoned, 1,
        "the killed daemon's run was closed by the survivor"
    );
    // A pass skipped for the lock writes no run row: there is one row per pass that started.
    let started = a.grep("reconcile pass started").len() + b.grep("reconcile pass started").len();
    assert_eq!(
        runs.len(),
        started,
        "run rows vs passes started (skipped passes write none)"
    );
}

#[tokio::test]
async fn sigterm_during_a_long_pass_exits_0_with_journal_and_counters_consistent() {
    let db = TestDb::migrated().await;
    db.exec(
        "INSERT INTO public.organizations (name, used_minutes)
           SELECT 'org ' || i, 0 FROM generate_series(1, 2000) i;
         INSERT INTO public.calls (user_id, organization_id, status, duration_minutes)
           SELECT gen_random_uuid(), id, 'completed', 5 FROM public.organizations;
         -- Every repair batch takes 50 ms more: 200 batches make a pass of 10+ seconds.
         CREATE FUNCTION public.slow_down() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_sleep(0.05); RETURN NULL; END $$;
         CREATE TRIGGER slow_down AFTER INSERT ON reconciler.adjustments
           FOR EACH STATEMENT EXECUTE FUNCTION public.slow_down();",
    )
    .await;
    let mut daemon = Daemon::start(
        &db.url,
        &[
            ("SYNQALL_RECONCILER__USAGE__BATCH_SIZE", "10"),
            ("SYNQALL_RECONCILER__SHUTDOWN__TIMEOUT_SECONDS", "1"),
        ],
    );
    daemon.wait_for("CRITICAL used_minutes drift", 20, 30).await;
    let signalled = std::time::Instant::now();
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(15).await, Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "took {:?} to stop",
        signalled.elapsed()
    );
    daemon.wait_for("cancelled by shutdown", 1, 1).await;

    // Every counter is either untouched with no journal row, or repaired with exactly one
    // journal row that says so.
    let inconsistent: i64 = db
        .scalar(
            "SELECT count(*) FROM public.organizations o
               LEFT JOIN reconciler.adjustments a ON a.organization_id = o.id
              WHERE NOT ((a.id IS NULL AND o.used_minutes = 0)
                      OR (a.old_used_minutes = 0 AND a.new_used_minutes = 5 AND o.used_minutes = 5))",
        )
        .await;
    assert_eq!(inconsistent, 0);
    let repaired: i64 = db
        .scalar("SELECT count(*) FROM reconciler.adjustments")
        .await;
    assert!(
        repaired > 0 && repaired < 2000,
        "stopped part-way: {repaired} repaired"
    );
    let duplicate: i64 = db
        .scalar("SELECT count(*) FROM (SELECT organization_id FROM reconciler.adjustments GROUP BY 1 HAVING count(*) > 1) d")
        .await;
    assert_eq!(duplicate, 0);
    let status: String = db.scalar("SELECT status FROM reconciler.runs").await;
    assert_eq!(status, "cancelled");
    assert_eq!(db.advisory_locks().await, 0, "advisory lock still held");
}

/// A unix datagram socket standing in for systemd's NOTIFY_SOCKET.
struct NotifySocket {
    path: std::path::PathBuf,
    messages: Arc<Mutex<Vec<(std::time::Instant, String)>>>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                for line in text.lines() {
                    sink.lock()
                        .unwrap()
                        .push((std::time::Instant::now(), line.to_string()));
                }
            }
        });
        Self {
            path,
            messages,
            _dir: dir,
        }
    }

    fn count(&self, prefix: &str, since: Option<std::time::Instant>) -> usize {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, m)| m.starts_with(prefix) && since.is_none_or(|s| *t >= s))
            .count()
    }

    async fn wait_for(&self, prefix: &str) {
        for _ in 0..200 {
            if self.count(prefix, None) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no {prefix} received; got {:?}",
            self.messages.lock().unwrap()
        );
    }
}

#[tokio::test]
async fn systemd_gets_ready_status_watchdog_and_stopping_and_no_pings_when_wedged() {
    let db = TestDb::migrated().await;
    org_with_usage(&db, "Watched", Some(0)).await;
    let notify = NotifySocket::bind();
    let socket = notify.path.display().to_string();
    let mut daemon = Daemon::start(
        &db.url,
        &[
            ("NOTIFY_SOCKET", socket.as_str()),
            ("WATCHDOG_USEC", "1000000"),
            // A wedge must not end by itself during the test.
            ("SYNQALL_RECONCILER__DATABASE__LOCK_TIMEOUT_SECONDS", "60"),
            (
                "SYNQALL_RECONCILER__DATABASE__STATEMENT_TIMEOUT_SECONDS",
                "60",
            ),
        ],
    );
    notify.wait_for("READY=1").await;
    notify.wait_for("STATUS=last pass").await;
    notify.wait_for("WATCHDOG=1").await;

    // Wedge the next pass: it blocks on a table lock and makes no progress.
    let wedge = connect(&db.url).await;
    wedge
        .batch_execute("BEGIN; LOCK TABLE public.organizations IN ACCESS EXCLUSIVE MODE;")
        .await
        .unwrap();
    let started = daemon.grep("reconcile pass started").len();
    daemon
        .wait_for("reconcile pass started", started + 1, 10)
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let quiet_from = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        notify.count("WATCHDOG=1", Some(quiet_from)),
        0,
        "pings continued while the pass was wedged"
    );
    daemon
        .wait_for("withholding the systemd watchdog ping", 1, 1)
        .await;

    // Unwedged, it pings again.
    wedge.batch_execute("ROLLBACK").await.unwrap();
    let resumed_from = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        notify.count("WATCHDOG=1", Some(resumed_from)) > 0,
        "pings did not resume"
    );

    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(15).await, Some(0));
    notify.wait_for("STOPPING=1").await;
}

#[tokio::test]
async fn sighup_says_the_config_is_not_reloaded_and_keeps_running() {
    let db = TestDb::migrated().await;
    let mut daemon = Daemon::start(&db.url, &[]);
    daemon.wait_for("reconcile pass finished", 1, 10).await;
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("nothing was reloaded", 1, 5).await;
    let finished = daemon.grep("reconcile pass finished").len();
    daemon
        .wait_for("reconcile pass finished", finished + 1, 10)
        .await;
    daemon.signal(libc::SIGINT);
    assert_eq!(daemon.wait(15).await, Some(0));
}

#[tokio::test]
async fn daemon_runs_a_full_pass_as_the_least_privilege_role_which_can_write_nothing_else() {
    let db = TestDb::migrated().await;
    let drifted = org_with_usage(&db, "Drifted", None).await;
    let user = db.user().await;
    db.member(user, drifted, 10).await;
    let orphan = db.call(user, None, "completed", Some(7), 1).await;
    let url = db.reconciler_login().await;

    let mut daemon = Daemon::start(&url, &[]);
    let finished = daemon.wait_for("reconcile pass finished", 1, 15).await;
    assert!(
        finished[0].contains("repaired=1 orphans_fixed=1"),
        "{}",
        finished[0]
    );
    assert!(
        daemon.grep("ERROR").is_empty(),
        "{}",
        daemon.lines().join("\n")
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(15).await, Some(0));
    assert_eq!(db.used_minutes(drifted).await, Some(17));
    assert_eq!(db.call_org(orphan).await, Some(drifted));

    let as_reconciler = connect(&url).await;
    for forbidden in [
        "UPDATE public.organizations SET name = 'x'",
        "UPDATE public.organizations SET max_minutes_monthly = 0",
        "UPDATE public.calls SET duration_minutes = 0",
        "UPDATE public.calls SET status = 'failed'",
        "DELETE FROM public.calls",
        "INSERT INTO public.organizations (name) VALUES ('x')",
        "UPDATE public.usage_metrics SET metric_value = 0",
        "UPDATE reconciler.adjustments SET new_used_minutes = 0",
        "DELETE FROM reconciler.adjustments",
        "DELETE FROM reconciler.call_repairs",
        "SELECT email FROM auth.users",
        "SELECT public.increment_used_minutes(id, 1) FROM public.organizations",
    ] {
        let err = as_reconciler
            .batch_execute(forbidden)
            .await
            .expect_err(forbidden);
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{forbidden}: {err}"
        );
    }
}

#[tokio::test]
async fn metrics_endpoint_reports_passes_drift_and_last_success() {
    let db = TestDb::migrated().await;
    // A password in the URL (the test cluster ignores it) that must not reach the endpoint.
    let secret = "metrics-must-not-show-this-pw";
    let url = db.url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{secret}@"),
        1,
    );
    org_with_usage(&db, "Drifted", Some(1)).await;
    org_with_usage(&db, "Also drifted", None).await;
    // A free port: bind, read it, release.
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let mut daemon = Daemon::start(&url, &[("SYNQALL_RECONCILER__METRICS__LISTEN", &addr)]);
    daemon.wait_for("metrics endpoint listening", 1, 10).await;
    daemon.wait_for("reconcile pass finished", 2, 15).await;

    let (status, _) = common::http_get(&addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let body = common::metrics_once(
        &addr,
        "synqall_reconciler_passes_total{outcome=\"ok\"}",
        2.0,
        5,
    )
    .await;
    assert!(
        common::sample(&body, "synqall_reconciler_passes_total{outcome=\"ok\"}") >= 2.0,
        "{body}"
    );
    assert_eq!(
        common::sample(&body, "synqall_reconciler_passes_total{outcome=\"failed\"}"),
        0.0
    );
    assert_eq!(
        common::sample(&body, "synqall_reconciler_drift_found_total"),
        2.0,
        "{body}"
    );
    assert_eq!(
        common::sample(&body, "synqall_reconciler_drift_repaired_total"),
        2.0,
        "{body}"
    );
    let last_success = common::sample(&body, "synqall_reconciler_last_success_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - last_success).abs() < 30.0, "{last_success} vs {now}");
    assert!(common::sample(&body, "synqall_reconciler_last_pass_duration_seconds") >= 0.0);
    assert!(!body.contains(secret), "no secret in metrics: {body}");
    assert!(
        !body.contains(&db.name),
        "no database name in metrics: {body}"
    );

    let (not_found, _) = common::http_get(&addr, "/").await;
    assert_eq!(not_found, "HTTP/1.1 404 Not Found");

    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(15).await, Some(0));
}

#[tokio::test]
async fn metrics_port_already_taken_fails_the_start_with_a_clear_error() {
    let db = TestDb::migrated().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut daemon = Daemon::start(&db.url, &[("SYNQALL_RECONCILER__METRICS__LISTEN", &addr)]);
    assert_eq!(daemon.wait(15).await, Some(1));
    let lines = daemon.grep("Failed to listen on metrics.listen");
    assert_eq!(lines.len(), 1, "{:?}", daemon.lines());
    assert!(daemon.grep("daemon started").is_empty());
}

#[tokio::test]
async fn every_daemon_line_is_json_with_log_format_json() {
    let db = TestDb::migrated().await;
    let org = org_with_usage(&db, "Drifted", Some(3)).await;
    let mut daemon = Daemon::start(&db.url, &[("SYNQALL_RECONCILER_LOG_FORMAT", "json")]);
    daemon.wait_for("reconcile pass finished", 2, 15).await;
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(15).await, Some(0));
    let events: Vec<serde_json::Value> = daemon
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let drift = events
        .iter()
        .find(|e| e["message"] == "used_minutes drift")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(drift["level"], "CRITICAL");
    assert_eq!(drift["org_id"], org.to_string());
    assert_eq!(
        (drift["stored"].as_i64(), drift["expected"].as_i64()),
        (Some(3), Some(10))
    );
    assert!(drift["run_id"].is_string());
    for message in ["daemon started", "daemon stopping"] {
        assert!(events.iter().any(|e| e["message"] == message), "{message}");
    }
}
