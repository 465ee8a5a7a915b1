//! The two ways a sweep reads the ledgers (`reconcile::access`): through the covering indexes
//! `doctor` names (index-only scans, when both exist and VACUUM marked the tables) or the
//! tables. Same hostile data in two databases, one with the indexes: the summary line says
//! which read ran, and counters, journal, mismatches and warnings are the same.

mod common;

use common::{outcome, TestDb};

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

#[tokio::test]
async fn the_sweep_through_the_covering_indexes_finds_and_repairs_what_the_table_read_does() {
    let (tables, indexes) = (TestDb::migrated().await, TestDb::migrated().await);
    for db in [&tables, &indexes] {
        db.exec(HOSTILE_SQL).await;
    }
    indexes.exec(COVERING_INDEXES_SQL).await;
    // VACUUM marks the pages all-visible (and updates pg_class): the index read serves.
    for db in [&tables, &indexes] {
        vacuum(db, "").await;
    }

    let by_tables = tables.run(&["--reconcile-now"], &[]).await;
    let by_indexes = indexes.run(&["--reconcile-now"], &[]).await;
    for (run, read) in [(&by_tables, "tables"), (&by_indexes, "indexes")] {
        assert_eq!(run.code(), 0, "{}", run.stderr);
        let finished = run.grep("reconcile pass finished");
        assert_eq!(finished.len(), 1, "{}", run.stderr);
        assert!(
            finished[0].contains(&format!("sweep_read={read}")),
            "{}",
            finished[0]
        );
    }
    assert_eq!(
        by_tables.grep("sweep reads the ledgers' tables").len(),
        1,
        "{}",
        by_tables.stderr
    );
    assert!(
        by_tables
            .stderr
            .contains("public.calls has no covering index"),
        "{}",
        by_tables.stderr
    );
    assert_eq!(
        by_indexes
            .grep("sweep reads the ledgers through their covering indexes")
            .len(),
        1,
        "{}",
        by_indexes.stderr
    );

    let left = outcome(&indexes.url).await;
    assert_eq!(left, outcome(&tables.url).await);
    assert!(
        left.iter().any(|l| l.starts_with("adjustment ")),
        "the data has drift to repair: {left:?}"
    );
    assert!(left.iter().any(|l| l.starts_with("mismatch ")), "{left:?}");
    let warned = lines_at(&by_indexes, &[" WARN "]);
    assert_eq!(warned, lines_at(&by_tables, &[" WARN "]));
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
    let run = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let line = run.grep("sweep reads the ledgers' tables");
    assert_eq!(line.len(), 1, "{}", run.stderr);
    assert!(
        line[0].contains("public.calls is 0% all-visible (VACUUM it to read the index)"),
        "{}",
        line[0]
    );
    let doctor = db.run(&["doctor"], &[]).await;
    assert!(
        doctor.stdout.lines().any(|l| l.contains("covering index")
            && l.contains("sweeps read the tables: public.calls is 0% all-visible")),
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
async fn rows_changed_since_vacuum_send_the_sweep_to_the_tables_until_the_next_vacuum() {
    let db = TestDb::migrated().await;
    db.exec(HOSTILE_SQL).await;
    db.exec(COVERING_INDEXES_SQL).await;
    vacuum(&db, "").await;
    let read = |run: &common::Run| {
        assert_eq!(run.code(), 0, "{}", run.stderr);
        run.grep("sweep reads the ledgers").join("\n")
    };
    let run = db.run(&["--reconcile-now"], &[]).await;
    assert!(
        read(&run).contains("through their covering indexes"),
        "{}",
        run.stderr
    );
    // Every usage row rewritten: the pages lost their all-visible mark, and pg_class does not
    // know yet (it is VACUUM's count); the statistics of rows changed since do.
    db.exec("UPDATE public.usage_metrics SET metric_value = metric_value")
        .await;
    db.exec("SELECT pg_stat_force_next_flush()").await;
    db.exec("SELECT 1").await;
    let run = db.run(&["--reconcile-now"], &[]).await;
    let line = read(&run);
    assert!(
        line.contains("sweep reads the ledgers' tables")
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
