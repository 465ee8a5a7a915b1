//! Pass benchmark: what a reconcile pass costs against what PostgreSQL needs to read the two
//! ledgers once, measured in the same run on the same throwaway cluster.
//!
//! `cargo bench --bench pass` runs the default sizes; `cargo bench --bench pass -- --orgs 20000
//! --calls-per-org 50` runs one. For each size it generates a seeded Supabase-like database,
//! then measures (median of `--repeat` runs, caches warm):
//! - **floor**: the two bare aggregates (sum of completed calls per org, sum of
//!   minutes_transcribed per org), fetched by a client;
//! - **seed step 6**: the incident's backfill UPDATE (in a rolled-back transaction);
//! - **clean pass**: `synqall-reconciler --reconcile-now` as a process (start-up included) on a
//!   database with no drift;
//! - **drift pass**: the same with `--drift` of the organizations drifted.
//!
//! Each with wall time, WAL bytes (`pg_current_wal_lsn` before/after), rows written to
//! organizations and calls (`pg_stat_user_tables`), and our process's peak RSS (`wait4`).

use std::process::Command;
use std::time::{Duration, Instant};

use synqall_reconciler::fixture::{create_standin_database, execute_sql};
use synqall_reconciler::local_pg::{ClusterOptions, LocalCluster};
use tokio_postgres::{Client, NoTls};

const BIN: &str = env!("CARGO_BIN_EXE_synqall-reconciler");

/// An empty config file: the benchmark must not pick up /etc/synqall-reconciler/config.toml.
fn empty_config() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join("synqall-bench-empty.toml");
        std::fs::write(&path, "").expect("write an empty config");
        path.display().to_string()
    })
}

#[derive(Debug, Clone, Copy)]
struct Size {
    orgs: i64,
    calls_per_org: i64,
}

#[derive(Debug, Clone)]
struct Args {
    sizes: Vec<Size>,
    drift: f64,
    orphans: f64,
    repeat: usize,
    seed: f64,
}

fn parse_args() -> Args {
    let mut args = Args {
        sizes: Vec::new(),
        drift: 0.01,
        orphans: 0.001,
        repeat: 3,
        seed: 0.42,
    };
    let mut orgs = None;
    let mut calls_per_org = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--orgs" => orgs = Some(value().parse().expect("--orgs N")),
            "--calls-per-org" => calls_per_org = Some(value().parse().expect("--calls-per-org N")),
            "--drift" => args.drift = value().parse().expect("--drift FRACTION"),
            "--orphans" => args.orphans = value().parse().expect("--orphans FRACTION"),
            "--repeat" => args.repeat = value().parse().expect("--repeat N"),
            "--seed" => args.seed = value().parse().expect("--seed 0..1"),
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    args.sizes = match (orgs, calls_per_org) {
        (Some(orgs), Some(calls_per_org)) => vec![Size {
            orgs,
            calls_per_org,
        }],
        (None, None) => vec![
            Size {
                orgs: 10_000,
                calls_per_org: 100,
            },
            Size {
                orgs: 20_000,
                calls_per_org: 50,
            },
            Size {
                orgs: 100_000,
                calls_per_org: 100,
            },
        ],
        _ => panic!("give both --orgs and --calls-per-org, or neither"),
    };
    args
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// The Supabase-like data: users with one membership each, calls (90% completed, durations
/// 1–30 min), one minutes_transcribed row per completed call, correct counters, and a few
/// orphaned calls that the setup pass attributes.
fn generate_sql(size: Size, orphans: f64, seed: f64) -> String {
    let Size {
        orgs,
        calls_per_org,
    } = size;
    let calls = orgs * calls_per_org;
    let users = orgs * 2;
    // Loading is made fast the way a restore is: no foreign-key triggers, indexes built once
    // after the data is in (the same indexes the stand-in schema has).
    format!(
        "SELECT setseed({seed});
         SET session_replication_role = replica;
         ALTER TABLE public.calls DROP CONSTRAINT calls_pkey;
         DROP INDEX public.calls_organization_id_idx, public.calls_user_id_idx;
         ALTER TABLE public.usage_metrics DROP CONSTRAINT usage_metrics_pkey;
         DROP INDEX public.usage_metrics_organization_id_idx;
         INSERT INTO public.organizations (id, name, used_minutes)
           SELECT md5('org' || i)::uuid, 'Org ' || i, 0 FROM generate_series(1, {orgs}) i;
         INSERT INTO auth.users (id) SELECT md5('user' || i)::uuid FROM generate_series(1, {users}) i;
         INSERT INTO public.user_organizations (user_id, organization_id, created_at)
           SELECT md5('user' || i)::uuid, md5('org' || (1 + i % {orgs}))::uuid, now() - interval '400 days'
             FROM generate_series(1, {users}) i;
         INSERT INTO public.calls (id, user_id, organization_id, status, duration_minutes, created_at)
           SELECT gen_random_uuid(), u.ids[1 + g % {users}],
                  CASE WHEN random() < {orphans} THEN NULL ELSE o.ids[1 + (1 + g % {users}) % {orgs}] END,
                  CASE WHEN random() < 0.9 THEN 'completed' ELSE 'failed' END,
                  1 + (random() * 29)::int,
                  now() - random() * interval '300 days'
             FROM (SELECT array_agg(md5('user' || i)::uuid ORDER BY i) AS ids
                     FROM generate_series(1, {users}) i) u,
                  (SELECT array_agg(md5('org' || i)::uuid ORDER BY i) AS ids
                     FROM generate_series(1, {orgs}) i) o,
                  generate_series(1, {calls}) g;
         INSERT INTO public.usage_metrics (organization_id, user_id, metric_type, metric_value, created_at)
           SELECT organization_id, user_id, 'minutes_transcribed', duration_minutes, created_at
             FROM public.calls WHERE status = 'completed' AND organization_id IS NOT NULL;
         ALTER TABLE public.calls ADD PRIMARY KEY (id);
         CREATE INDEX calls_organization_id_idx ON public.calls (organization_id);
         CREATE INDEX calls_user_id_idx ON public.calls (user_id);
         ALTER TABLE public.usage_metrics ADD PRIMARY KEY (id);
         CREATE INDEX usage_metrics_organization_id_idx ON public.usage_metrics (organization_id);
         RESET session_replication_role;"
    )
}

/// What one measured run cost.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    wall: Duration,
    wal_bytes: i64,
    rows_written: i64,
    peak_rss_kib: i64,
}

async fn wal_lsn(client: &Client) -> String {
    client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0)
}

async fn wal_since(client: &Client, lsn: &str) -> i64 {
    client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::text::pg_lsn)::bigint",
            &[&lsn],
        )
        .await
        .unwrap()
        .get(0)
}

/// Rows inserted, updated or deleted in organizations and calls so far (flushed stats).
async fn rows_written(client: &Client) -> i64 {
    // Our own backend's counts (the drift we plant) are flushed when it next goes idle.
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    client
        .query_one(
            "SELECT COALESCE(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint
               FROM pg_stat_user_tables WHERE schemaname = 'public' AND relname IN ('organizations', 'calls')",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

fn median(mut costs: Vec<Cost>) -> Cost {
    costs.sort_by_key(|c| c.wall);
    costs[costs.len() / 2]
}

/// Run SQL from a client, timing it and the WAL it wrote.
async fn measure_sql(client: &Client, sql: &str) -> Cost {
    let lsn = wal_lsn(client).await;
    let started = Instant::now();
    client.batch_execute(sql).await.expect("measured SQL");
    let wall = started.elapsed();
    Cost {
        wall,
        wal_bytes: wal_since(client, &lsn).await,
        ..Cost::default()
    }
}

/// Run the reconciler as a process; wall time includes its start-up.
// The child is reaped by `wait4` (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
async fn measure_pass(client: &Client, url: &str) -> Cost {
    let lsn = wal_lsn(client).await;
    let rows_before = rows_written(client).await;
    let started = Instant::now();
    let child = Command::new(BIN)
        .arg("--reconcile-now")
        .env_clear()
        .env("DATABASE_URL", url)
        .env("SYNQALL_RECONCILER_CONFIG", empty_config())
        .env("SYNQALL_RECONCILER__USAGE__SETTLE_SECONDS", "0")
        .env("SYNQALL_RECONCILER__LOG__LEVEL", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start synqall-reconciler");
    let (status, peak_rss_kib) = wait_with_rusage(child.id() as i32);
    let wall = started.elapsed();
    assert!(
        status == 0 || status == 2,
        "synqall-reconciler exited with {status}"
    );
    // Backends flush their statistics when they exit; give the last one a moment.
    tokio::time::sleep(Duration::from_millis(700)).await;
    Cost {
        wall,
        wal_bytes: wal_since(client, &lsn).await,
        rows_written: rows_written(client).await - rows_before,
        peak_rss_kib,
    }
}

/// `wait4` for the exit code and the peak resident set size (KiB).
fn wait_with_rusage(pid: i32) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4 failed");
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

const CALLS_FLOOR: &str = "SELECT organization_id, sum(duration_minutes) FROM public.calls
                            WHERE status = 'completed' GROUP BY organization_id";
const METRICS_FLOOR: &str = "SELECT organization_id, sum(metric_value) FROM public.usage_metrics
                              WHERE metric_type = 'minutes_transcribed' GROUP BY organization_id";
/// The incident's step 6, cut verbatim from the shipped copy of its SQL, rolled back so the
/// data stays clean.
fn seed_step_6() -> String {
    let sql = synqall_reconciler::fixture::SEED_FIX_SQL;
    let start = sql.find("-- 6.").expect("step 6 in seed_fix.sql");
    let end = sql.find("-- 7.").expect("step 7 in seed_fix.sql");
    format!("BEGIN;\n{}\nROLLBACK;", &sql[start..end])
}

async fn bench_size(cluster: &LocalCluster, size: Size, args: &Args) {
    let db = format!("bench_{}_{}", size.orgs, size.calls_per_org);
    let admin = cluster.url("postgres");
    let generated = Instant::now();
    let url = create_standin_database(cluster, &db).await.unwrap();
    let setup = Command::new(BIN)
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .env("SYNQALL_RECONCILER_CONFIG", empty_config())
        .output()
        .unwrap();
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let client = connect(&url).await;
    // Loading is not what is measured: no fsync while it runs (reloadable settings), then
    // durable again and a checkpoint before any measurement.
    // One statement per call: ALTER SYSTEM refuses to run in a multi-statement batch.
    for sql in [
        "ALTER SYSTEM SET fsync = off",
        "ALTER SYSTEM SET full_page_writes = off",
        "SELECT pg_reload_conf()",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    client
        .batch_execute(&generate_sql(size, args.orphans, args.seed))
        .await
        .expect("generate data");
    // Correct counters, then one pass to attribute the orphans: from here on, clean.
    client
        .batch_execute(
            "UPDATE public.organizations o SET used_minutes = t.total
               FROM (SELECT organization_id, sum(duration_minutes)::int AS total FROM public.calls
                      WHERE status = 'completed' GROUP BY 1) t
              WHERE t.organization_id = o.id",
        )
        .await
        .unwrap();
    measure_pass(&client, &url).await;
    // The app writes a usage row for a call once it knows the organization: add the rows of
    // the calls just attributed, so both ledgers agree and a clean pass returns no row at all.
    client
        .batch_execute(
            "INSERT INTO public.usage_metrics (organization_id, user_id, metric_type, metric_value, created_at)
             SELECT c.organization_id, c.user_id, 'minutes_transcribed', c.duration_minutes, c.created_at
               FROM public.calls c JOIN reconciler.call_repairs r ON r.call_id = c.id
              WHERE c.status = 'completed'",
        )
        .await
        .unwrap();
    client.batch_execute("VACUUM ANALYZE").await.unwrap();
    for sql in [
        "ALTER SYSTEM RESET fsync",
        "ALTER SYSTEM RESET full_page_writes",
        "SELECT pg_reload_conf()",
        "CHECKPOINT",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    eprintln!(
        "# {} orgs, {} calls: generated in {:.0?}",
        size.orgs,
        size.orgs * size.calls_per_org,
        generated.elapsed()
    );

    // Warm the caches, then measure.
    client.batch_execute(CALLS_FLOOR).await.unwrap();
    client.batch_execute(METRICS_FLOOR).await.unwrap();
    measure_pass(&client, &url).await;

    let mut floor = Vec::new();
    let mut seed = Vec::new();
    let mut clean = Vec::new();
    let mut drift = Vec::new();
    let drifted = ((size.orgs as f64) * args.drift).round() as i64;
    for _ in 0..args.repeat {
        let calls = measure_sql(&client, CALLS_FLOOR).await;
        let metrics = measure_sql(&client, METRICS_FLOOR).await;
        floor.push(Cost {
            wall: calls.wall + metrics.wall,
            wal_bytes: calls.wal_bytes + metrics.wal_bytes,
            ..Cost::default()
        });
        seed.push(measure_sql(&client, &seed_step_6()).await);
        // The rolled-back backfill and the previous drift left dead rows in organizations;
        // autovacuum (off here) would have removed them before the next pass.
        client
            .batch_execute("VACUUM public.organizations")
            .await
            .unwrap();
        clean.push(measure_pass(&client, &url).await);
        client
            .batch_execute(&format!(
                "UPDATE public.organizations SET used_minutes = used_minutes + 7
                  WHERE id IN (SELECT id FROM public.organizations ORDER BY md5(id::text || random()::text) LIMIT {drifted})"
            ))
            .await
            .unwrap();
        drift.push(measure_pass(&client, &url).await);
        let wrong: i64 = client
            .query_one(
                "SELECT count(*) FROM public.organizations o WHERE used_minutes IS DISTINCT FROM
                   (SELECT COALESCE(sum(duration_minutes), 0) FROM public.calls c
                     WHERE c.organization_id = o.id AND c.status = 'completed')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(wrong, 0, "the drift pass left drift");
    }
    let floor = median(floor);
    let report = |name: &str, cost: Cost| {
        println!(
            "| {} orgs / {} calls | {name} | {:.2} s | {:.2}× | {} | {} | {} |",
            size.orgs,
            size.orgs * size.calls_per_org,
            cost.wall.as_secs_f64(),
            cost.wall.as_secs_f64() / floor.wall.as_secs_f64(),
            human_bytes(cost.wal_bytes),
            if name.starts_with("floor") || name.starts_with("seed") {
                "—".to_string()
            } else {
                cost.rows_written.to_string()
            },
            if cost.peak_rss_kib > 0 {
                format!("{:.1} MiB", cost.peak_rss_kib as f64 / 1024.0)
            } else {
                "—".to_string()
            }
        );
    };
    report("floor (two bare aggregates)", floor);
    report("seed step 6 (backfill UPDATE)", median(seed));
    report("clean pass (process)", median(clean));
    report(&format!("pass, {drifted} orgs drifted"), median(drift));
    drop(client);
    execute_sql(&admin, &format!("DROP DATABASE {db}"))
        .await
        .unwrap();
}

fn human_bytes(bytes: i64) -> String {
    if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = ClusterOptions {
        // Durable settings: WAL and timings as a production server would have them.
        unsafe_fast: false,
        settings: [
            ("shared_buffers", "2GB"),
            ("work_mem", "64MB"),
            ("maintenance_work_mem", "512MB"),
            ("max_wal_size", "8GB"),
            ("checkpoint_timeout", "1h"),
            // Nothing but the measured work writes WAL.
            ("autovacuum", "off"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..ClusterOptions::default()
    };
    let started = Instant::now();
    let cluster = LocalCluster::start_with(options).expect("start the benchmark cluster");
    runtime.block_on(async {
        println!("| size | what | wall | × floor | WAL | rows written (orgs, calls) | peak RSS |");
        println!("|---|---|---|---|---|---|---|");
        for size in &args.sizes {
            bench_size(&cluster, *size, &args).await;
        }
    });
    eprintln!("# total {:.0?}", started.elapsed());
}
