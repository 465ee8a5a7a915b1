//! The ways a sweep reads the ledgers (`reconcile::access`): each through the covering index
//! `doctor` names (an index-only scan, when it exists and VACUUM marked its table) or its
//! table. Same hostile data in four databases, read through both indexes, both tables, or one
//! of each: the summary line says which read ran, the plan is the one that read steers to,
//! and counters, journal, mismatches and warnings are the same.

mod common;

use common::{connect, outcome, TestDb};
use synqall_reconciler::config::Settings;
use synqall_reconciler::db::schema;
use synqall_reconciler::reconcile::access::{self, SweepRead};
use synqall_reconciler::reconcile::queries::PassQueries;

/// 30 organizations with drifted, NULL and right counters; completed calls, calls of unknown
/// statuses (counted apart, named), NULL and negative durations, usage rows with NaN, huge,
/// negative and fractional values, a usage row without organization, an orphaned call.
const HOSTILE_SQL: &str = "
  SELECT setseed(0.5);
  INSERT INTO public.organizations (id, name, used_minutes)
    SELECT md5('org' || i)::uuid, 'org ' || lpad(i::text, 2, '0'),
           CASE WHEN i % 7 = 0 THEN NULL WHEN i % 3 = 0 THEN 1 ELSE 0 END
      FROM generate_series(1, 30) i;
  INSERT INTO auth.users (id) SELECT md5('user' || i)::uuid FROM generate_series(1, 30) i;
  INSERT INTO public.user_organizations (user_id, organization_id, created_at)
    SELECT md5('user' || i)::uuid, md5('org' || i)::uuid, now() - interval '30 days'
      FROM generate_series(1, 30) i;
  INSERT INTO public.calls (user_id, organization_id, status, duration_minutes, created_at)
    SELECT md5('user' || (1 + g % 30))::uuid, md5('org' || (1 + g % 30))::uuid,
           (ARRAY['completed', 'completed', 'completed', 'failed', 'Completed', ' completed'])
             [1 + (g % 6)],
           CASE WHEN g % 11 = 0 THEN NULL WHEN g % 13 = 0 THEN -4 ELSE 1 + g % 9 END,
           now() - interval '1 day'
      FROM generate_series(1, 600) g;
  INSERT INTO public.calls (user_id, organization_id, status, duration_minutes)
    VALUES (md5('user1')::uuid, NULL, 'completed', 6);
  INSERT INTO public.usage_metrics (organization_id, metric_type, metric_value)
    SELECT c.organization_id, 'minutes_transcribed', c.duration_minutes
      FROM public.calls c
     WHERE c.status = 'completed' AND c.organization_id IS NOT NULL AND c.duration_minutes > 0;
  INSERT INTO public.usage_metrics (organization_id, metric_type, metric_value)
    VALUES (md5('org4')::uuid, 'minutes_transcribed', 'NaN'),
           (md5('org5')::uuid, 'minutes_transcribed', 1e20),
           (md5('org6')::uuid, 'minutes_transcribed', -5),
           (md5('org8')::uuid, 'minutes_transcribed', 2.5),
           (NULL, 'minutes_transcribed', 9);";

const COVERING_INDEXES_SQL: &str = "
  CREATE INDEX calls_organization_usage_idx ON public.calls (organization_id)
    INCLUDE (status, duration_minutes, created_at);
  CREATE INDEX usage_metrics_organization_usage_idx ON public.usage_metrics (organization_id)
    INCLUDE (metric_type, metric_value, created_at);";

/// VACUUM (and ANALYZE) `what` once this session's own writes are in the statistics: the
/// sweep reads both (`reconcile::access`), and a count flushed after the VACUUM would undo it.
async fn vacuum(db: &TestDb, what: &str) {
    // A finished run's backends flush their statistics as they exit, which can be after the
    // process is gone: wait for them, or a count of rows they changed lands after the VACUUM.
    for _ in 0..100 {
        let others: i64 = db
            .scalar(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .await;
        if others == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    db.exec("SELECT pg_stat_force_next_flush()").await;
    db.exec("SELECT 1").await;
    db.exec(&format!("VACUUM ANALYZE {what}")).await;
}

/// The lines of a run at any of `levels` (" WARN ", " CRITICAL "), without timestamps and run
/// ids, sorted.
fn lines_at(run: &common::Run, levels: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> = run
        .stderr
        .lines()
        .filter(|l| levels.iter().any(|level| l.contains(level)))
        .map(|l| {
            let l = l.split_once(' ').map_or(l, |(_, rest)| rest);
            l.split(" run_id=").next().unwrap_or(l).to_string()
        })
        .collect();
    lines.sort();
    lines
}

/// The plan of the sweep's comparison as the next sweep would read `db` (its read chosen and
/// its transaction opened as the pass does).
async fn sweep_plan(db: &TestDb) -> (String, String) {
    let client = connect(&db.url).await;
    let settings = Settings::load_from(None, std::iter::empty::<(String, String)>())
        .expect("default settings");
    let app = schema::inspect(&client).await.expect("inspect the schema");
    let queries = PassQueries::new(&app, &settings.usage);
    let read = SweepRead::choose(&access::inspect(&client).await.expect("inspect the indexes"));
    client
        .batch_execute(&read.begin(settings.database.sweep_work_mem_mb))
        .await
        .expect("begin the sweep's read");
    let explain = format!(
        "EXPLAIN {}",
        queries.sweep_comparison(read.shapes(), read.metric_sum())
    );
    let period: Option<chrono::DateTime<chrono::Utc>> = None;
    let plan: Vec<String> = client
        .query(&explain, &[&period])
        .await
        .expect("explain the comparison")
        .iter()
        .map(|r| r.get(0))
        .collect();
    client.batch_execute("ROLLBACK").await.expect("rollback");
    (read.as_str().to_string(), plan.join("\n"))
}

/// How the plan reads `table` under `alias` (the comparison's main read: `calls c`,
/// `usage_metrics m`): "index" (an index-only scan of its covering index) or "table" (a
/// sequential scan, parallel or not). Exactly one of the two. Other aliases of the table (the
/// `usage_metrics x` of the exact re-sum of an organization whose raw sum is not a usable
/// number, see [`fallback_read`]) are not the ledger's read and are left out.
fn read_of(plan: &str, table: &str, alias: &str) -> &'static str {
    // Plan lines go on with "  (cost=...)" after the alias.
    let scanned = format!(" on {table} {alias} ");
    let ours = |l: &&str| l.contains(&scanned);
    let index = plan.lines().filter(ours).any(|l| {
        l.contains(&format!(
            "Index Only Scan using {table}_organization_usage_idx"
        ))
    });
    let seq = plan.lines().filter(ours).any(|l| l.contains("Seq Scan on"));
    match (index, seq) {
        (true, false) => "index",
        (false, true) => "table",
        _ => panic!("{table} {alias} read neither or both ways:\n{plan}"),
    }
}

/// The plan lines of the exact re-sum of usage_metrics (`usage_metrics x`): it runs once per
/// organization whose raw sum is NaN, infinite or beyond bigint, so it must go by index, never
/// a scan of the whole table.
fn fallback_read(plan: &str) -> Vec<&str> {
    plan.lines()
        .filter(|l| l.contains(" on usage_metrics x "))
        .collect()
}

#[tokio::test]
async fn each_way_of_reading_the_ledgers_finds_and_repairs_the_same() {
    // (sweep_read, how calls is read, how usage_metrics is read, rows rewritten after VACUUM)
    let reads = [
        ("tables", "table", "table", None),
        ("indexes", "index", "index", None),
        (
            "calls_index",
            "index",
            "table",
            Some("public.usage_metrics"),
        ),
        (
            "usage_metrics_index",
            "table",
            "index",
            Some("public.calls"),
        ),
    ];
    let mut outcomes = Vec::new();
    for (expected, calls, usage, rewritten) in reads {
        let db = TestDb::migrated().await;
        db.exec(HOSTILE_SQL).await;
        if expected != "tables" {
            db.exec(COVERING_INDEXES_SQL).await;
        }
        // VACUUM marks the pages all-visible (and updates pg_class): the index read serves.
        vacuum(&db, "").await;
        if let Some(table) = rewritten {
            // Every row rewritten, values unchanged: its pages lost their all-visible mark.
            let column = if table == "public.calls" {
                "duration_minutes"
            } else {
                "metric_value"
            };
            db.exec(&format!("UPDATE {table} SET {column} = {column}"))
                .await;
            db.exec("SELECT pg_stat_force_next_flush()").await;
            db.exec("SELECT 1").await;
        }
        let (read, plan) = sweep_plan(&db).await;
        assert_eq!(read, expected);
        assert_eq!(
            (
                read_of(&plan, "calls", "c"),
                read_of(&plan, "usage_metrics", "m")
            ),
            (calls, usage),
            "{expected}:\n{plan}"
        );
        // With the covering index, usage values are summed raw and an organization whose raw
        // sum is not a usable number is summed again through that index; without it, exactly.
        let fallback = fallback_read(&plan);
        if expected == "tables" {
            assert!(fallback.is_empty(), "{expected}:\n{plan}");
        } else {
            assert!(
                !fallback.is_empty() && fallback.iter().all(|l| !l.contains("Seq Scan")),
                "{expected}: the exact re-sum of usage_metrics must read by index:\n{plan}"
            );
        }

        let run = db.run(&["--reconcile-now"], &[]).await;
        assert_eq!(run.code(), 0, "{}", run.stderr);
        let finished = run.grep("reconcile pass finished");
        assert_eq!(finished.len(), 1, "{}", run.stderr);
        assert!(
            finished[0]
                .split_whitespace()
                .any(|field| field == format!("sweep_read={expected}")),
            "{}",
            finished[0]
        );
        let said = run.grep("sweep reads ");
        assert_eq!(said.len(), 1, "{}", run.stderr);
        let why = match expected {
            "tables" => {
                "public.calls has no covering index; public.usage_metrics has no covering index"
            }
            "indexes" => "",
            "calls_index" => "public.usage_metrics is 0% all-visible (VACUUM it to read the index)",
            _ => "public.calls is 0% all-visible (VACUUM it to read the index)",
        };
        let line = match expected {
            "tables" => "sweep reads the ledgers' tables",
            "indexes" => "sweep reads the ledgers through their covering indexes",
            _ => "sweep reads one ledger through its covering index and the other's table",
        };
        assert!(
            said[0].contains(line)
                && if why.is_empty() {
                    !said[0].contains("why=")
                } else {
                    said[0].contains(&format!("why=\"{why}\""))
                },
            "{expected}: {}",
            said[0]
        );
        outcomes.push((
            expected,
            outcome(&db.url).await,
            lines_at(&run, &[" WARN "]),
        ));
    }

    let (_, left, warned) = &outcomes[0];
    assert!(
        left.iter().any(|l| l.starts_with("adjustment ")),
        "the data has drift to repair: {left:?}"
    );
    assert!(left.iter().any(|l| l.starts_with("mismatch ")), "{left:?}");
    for (read, other_left, other_warned) in &outcomes[1..] {
        assert_eq!(other_left, left, "{read}");
        assert_eq!(other_warned, warned, "{read}");
    }
    for status in [
        "status=\"Completed\" calls=100",
        "status=\" completed\" calls=100",
    ] {
        assert!(
            warned.iter().any(|l| l.contains(status)),
            "{status} named: {warned:?}"
        );
    }
    assert!(
        warned
            .iter()
            .any(|l| l.contains("usage_metrics rows without organization_id")),
        "{warned:?}"
    );
}

#[tokio::test]
async fn a_table_vacuum_has_not_marked_is_read_whole_and_doctor_says_why() {
    let db = TestDb::migrated().await;
    db.exec(HOSTILE_SQL).await;
    db.exec(COVERING_INDEXES_SQL).await;
    vacuum(&db, "public.usage_metrics").await;
    // calls never vacuumed: no page is all-visible, an index-only scan would read the table.
    // usage_metrics still reads its index.
    let run = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let line = run.grep("sweep reads one ledger through its covering index and the other's table");
    assert_eq!(line.len(), 1, "{}", run.stderr);
    assert!(
        line[0].contains("read=usage_metrics_index")
            && line[0].contains("public.calls is 0% all-visible (VACUUM it to read the index)"),
        "{}",
        line[0]
    );
    let doctor = db.run(&["doctor"], &[]).await;
    assert!(
        doctor.stdout.lines().any(|l| l.contains("covering index")
            && l.contains(
                "sweeps read the index of public.usage_metrics and the other ledger's table: \
                 public.calls is 0% all-visible"
            )),
        "{}",
        doctor.stdout
    );
    // The sweep's own writes (the orphan it attributed) are changes since too.
    vacuum(&db, "public.calls").await;
    let run = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert_eq!(
        run.grep("sweep reads the ledgers through their covering indexes")
            .len(),
        1,
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn rows_changed_since_vacuum_send_the_sweep_to_that_table_until_the_next_vacuum() {
    let db = TestDb::migrated().await;
    db.exec(HOSTILE_SQL).await;
    db.exec(COVERING_INDEXES_SQL).await;
    vacuum(&db, "").await;
    let read = |run: &common::Run| {
        assert_eq!(run.code(), 0, "{}", run.stderr);
        run.grep("sweep reads ").join("\n")
    };
    let run = db.run(&["--reconcile-now"], &[]).await;
    assert!(
        read(&run).contains("through their covering indexes"),
        "{}",
        run.stderr
    );
    // The call that sweep attributed left its page unmarked: VACUUM it, calls reads its index.
    vacuum(&db, "public.calls").await;
    // Every usage row rewritten: the pages lost their all-visible mark, and pg_class does not
    // know yet (it is VACUUM's count); the statistics of rows changed since do.
    db.exec("UPDATE public.usage_metrics SET metric_value = metric_value")
        .await;
    db.exec("SELECT pg_stat_force_next_flush()").await;
    db.exec("SELECT 1").await;
    let run = db.run(&["--reconcile-now"], &[]).await;
    let line = read(&run);
    assert!(
        line.contains("sweep reads one ledger through its covering index and the other's table")
            && line.contains("read=calls_index")
            && line.contains("public.usage_metrics is 0% all-visible"),
        "{}",
        run.stderr
    );
    vacuum(&db, "").await;
    let run = db.run(&["--reconcile-now"], &[]).await;
    assert!(
        read(&run).contains("through their covering indexes"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn both_reads_find_the_same_with_usage_metrics_as_truth_and_a_calendar_month() {
    let (tables, indexes) = (TestDb::migrated().await, TestDb::migrated().await);
    for db in [&tables, &indexes] {
        db.exec(HOSTILE_SQL).await;
        // Some of last month's calls and usage rows: the period filter must leave them out.
        db.exec(
            "INSERT INTO public.calls (user_id, organization_id, status, duration_minutes, created_at)
               SELECT md5('user' || i)::uuid, md5('org' || i)::uuid, 'completed', 50,
                      date_trunc('month', now()) - interval '3 days'
                 FROM generate_series(1, 30) i;
             INSERT INTO public.usage_metrics (organization_id, metric_type, metric_value, created_at)
               SELECT md5('org' || i)::uuid, 'minutes_transcribed', 40,
                      date_trunc('month', now()) - interval '3 days'
                 FROM generate_series(1, 30) i;",
        )
        .await;
    }
    indexes.exec(COVERING_INDEXES_SQL).await;
    for db in [&tables, &indexes] {
        vacuum(db, "").await;
    }
    for env in [
        [
            ("SYNQALL_RECONCILER__USAGE__SOURCE", "usage_metrics"),
            ("SYNQALL_RECONCILER__USAGE__PERIOD", "all_time"),
        ],
        [
            ("SYNQALL_RECONCILER__USAGE__SOURCE", "calls"),
            ("SYNQALL_RECONCILER__USAGE__PERIOD", "calendar_month"),
        ],
        [
            ("SYNQALL_RECONCILER__USAGE__SOURCE", "usage_metrics"),
            ("SYNQALL_RECONCILER__USAGE__PERIOD", "calendar_month"),
        ],
    ] {
        let args = ["--reconcile-now", "--dry-run"];
        let (by_tables, by_indexes) = (
            tables.run(&args, &env).await,
            indexes.run(&args, &env).await,
        );
        assert!(
            by_indexes.stderr.contains("sweep_read=indexes")
                && by_tables.stderr.contains("sweep_read=tables"),
            "{env:?}: {}\n{}",
            by_indexes.stderr,
            by_tables.stderr
        );
        let found = lines_at(&by_indexes, &[" WARN ", " CRITICAL "]);
        assert!(
            found
                .iter()
                .any(|l| l.contains("CRITICAL used_minutes drift")),
            "{env:?}: the data has drift: {found:?}"
        );
        assert_eq!(
            found,
            lines_at(&by_tables, &[" WARN ", " CRITICAL "]),
            "{env:?}"
        );
        assert_eq!(by_indexes.code(), by_tables.code(), "{env:?}");
    }
}
