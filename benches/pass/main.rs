//! Pass benchmark: what a reconcile pass costs against what PostgreSQL needs to read the two
//! ledgers once, measured in the same run on the same throwaway cluster.
//!
//! `cargo bench --bench pass` runs the default sizes (100k organizations / 10M calls, 1M / 5M);
//! `cargo bench --bench pass -- --orgs 20000 --calls-per-org 50` runs one. For each size it
//! generates a seeded Supabase-like database (with the covering indexes `doctor` names), then
//! measures, median of `--repeat` interleaved rounds, caches warm:
//! - **floor**: the two bare aggregates (sum of completed calls per org, sum of
//!   minutes_transcribed per org), every row fetched by a client, so both sums are computed;
//! - **seed step 6**: the incident's backfill UPDATE (in a rolled-back transaction);
//! - **sweep**: `synqall-reconciler --reconcile-now` as a process (start-up included), clean,
//!   and with `--drift` of the organizations' counters set wrong;
//! - **incremental pass**: `--reconcile-now --incremental` after `--active` of organizations
//!   completed three calls each through the app's path, `--lost` of them losing an increment;
//! - **sweep, ledgers disagree**: `--mismatch` of organizations' two ledgers disagree (the
//!   sweep that records them, then the steady state);
//! - **sweep on a replica**: a `pg_basebackup -R` standby of the cluster; the primary's
//!   buffers with and without `database.replica_url`;
//! - **app cost**: a call INSERT and an `increment_used_minutes`, one statement each, with the
//!   change tracking's triggers and without.
//!
//! `BENCH_HOLD=1` loads each size's database, prints its URL and waits for SIGINT instead of
//! measuring: experiments by hand on the very data the bench measures.
//!
//! Each with wall time, buffers touched in the database (`pg_stat_database`), WAL bytes, rows
//! written to organizations and calls (`pg_stat_user_tables`), and our process's peak RSS
//! (`wait4`).

mod data;
mod measure;
mod scenarios;

use std::time::Instant;

use synqall_reconciler::fixture::execute_sql;
use synqall_reconciler::local_pg::{ClusterOptions, LocalCluster};
use synqall_reconciler::reconcile::access::{self, SweepRead};

use data::Size;
use measure::{connect, human_bytes, measure_pass, measure_sql, median, Cost};

#[derive(Debug, Clone)]
struct Args {
    sizes: Vec<Size>,
    drift: f64,
    active: f64,
    lost: f64,
    mismatch: f64,
    orphans: f64,
    repeat: usize,
    seed: f64,
}

fn parse_args() -> Args {
    let mut args = Args {
        sizes: Vec::new(),
        drift: 0.01,
        active: 0.01,
        lost: 0.02,
        mismatch: 0.6,
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
            "--active" => args.active = value().parse().expect("--active FRACTION"),
            "--lost" => args.lost = value().parse().expect("--lost FRACTION"),
            "--mismatch" => args.mismatch = value().parse().expect("--mismatch FRACTION"),
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
                orgs: 100_000,
                calls_per_org: 100,
            },
            Size {
                orgs: 1_000_000,
                calls_per_org: 5,
            },
        ],
        _ => panic!("give both --orgs and --calls-per-org, or neither"),
    };
    args
}

/// One table row: a step's cost against the floor's, measured in the same run.
fn report(size: Size, name: &str, cost: Cost, floor: Cost) {
    let dash = || "—".to_string();
    let is_pass = cost.peak_rss_kib > 0;
    println!(
        "| {} orgs / {} calls | {name} | {:.3} s | {:.3}× | {} | {:.3}× | {} | {:.3}× | {} | {} | {} |",
        size.orgs,
        size.calls(),
        cost.wall.as_secs_f64(),
        cost.wall.as_secs_f64() / floor.wall.as_secs_f64(),
        cost.buffers,
        cost.buffers as f64 / floor.buffers.max(1) as f64,
        cost.statement_buffers,
        cost.statement_buffers as f64 / floor.statement_buffers.max(1) as f64,
        human_bytes(cost.wal_bytes),
        if is_pass {
            cost.rows_written.to_string()
        } else {
            dash()
        },
        if is_pass {
            format!("{:.1} MiB", cost.peak_rss_kib as f64 / 1024.0)
        } else {
            dash()
        }
    );
}

async fn floor(client: &tokio_postgres::Client) -> Cost {
    let calls = measure_sql(client, data::CALLS_FLOOR).await;
    let metrics = measure_sql(client, data::METRICS_FLOOR).await;
    Cost {
        wall: calls.wall + metrics.wall,
        buffers: calls.buffers + metrics.buffers,
        statement_buffers: calls.statement_buffers + metrics.statement_buffers,
        wal_bytes: calls.wal_bytes + metrics.wal_bytes,
        ..Cost::default()
    }
}

const SWEEP: &[&str] = &["--reconcile-now"];
const INCREMENTAL: &[&str] = &["--reconcile-now", "--incremental"];

async fn bench_size(cluster: &LocalCluster, size: Size, args: &Args) {
    let db = format!("bench_{}_{}", size.orgs, size.calls_per_org);
    let generated = Instant::now();
    let (url, client) = data::load(cluster, &db, size, args.orphans, args.seed).await;
    eprintln!(
        "# {} orgs, {} calls: generated in {:.0?}",
        size.orgs,
        size.calls(),
        generated.elapsed()
    );
    if std::env::var_os("BENCH_HOLD").is_some() {
        // For experiments (psql, EXPLAIN, a pass by hand) on exactly the data measured here.
        eprintln!("# holding {url} until SIGINT (Ctrl-C); nothing measured");
        tokio::signal::ctrl_c().await.expect("wait for SIGINT");
        return;
    }
    // Warm the caches, then measure.
    floor(&client).await;
    measure_pass(&client, &url, SWEEP, &[]).await;

    let (mut floors, mut seed, mut clean, mut drift, mut incremental) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut index_floors = Vec::new();
    let mut lost_total = 0;
    for round in 0..args.repeat {
        floors.push(floor(&client).await);
        index_floors.push(measure_sql(&client, &data::index_floor()).await);
        seed.push(measure_sql(&client, &data::seed_step_6()).await);
        // The rolled-back backfill and the previous round left dead rows in organizations;
        // autovacuum (off here) would have removed them before the next pass.
        client
            .batch_execute("VACUUM public.organizations")
            .await
            .unwrap();
        measure::reset_top(&client).await;
        clean.push(measure_pass(&client, &url, SWEEP, &[]).await);
        measure::print_top(&client, "clean sweep").await;
        let planted = scenarios::plant_drift(&client, args.drift, &format!("drift {round}")).await;
        drift.push(measure_pass(&client, &url, SWEEP, &[]).await);
        assert_eq!(
            scenarios::wrong_among(&client, &planted).await,
            0,
            "the sweep left drift"
        );
        let (active, lost) = scenarios::activity(&client, args.active, args.lost, round).await;
        lost_total += lost;
        measure::reset_top(&client).await;
        incremental.push(measure_pass(&client, &url, INCREMENTAL, &[]).await);
        measure::print_top(&client, "incremental pass").await;
        assert_eq!(
            scenarios::wrong_among(&client, &active).await,
            0,
            "the incremental pass left a lost increment"
        );
    }
    let floor_cost = median(floors.clone());
    let row = |name: &str, cost: Cost| report(size, name, cost, floor_cost);
    row("floor (two bare aggregates)", floor_cost);
    row(
        "the floor's sums through the covering indexes",
        median(index_floors),
    );
    row("seed step 6 (backfill UPDATE)", median(seed));
    row("sweep, clean", median(clean));
    let drifted = ((size.orgs as f64) * args.drift).ceil() as i64;
    row(&format!("sweep, {drifted} counters wrong"), median(drift));
    let active = ((size.orgs as f64) * args.active).ceil() as i64;
    row(
        &format!(
            "incremental pass, {active} orgs active, {} increments lost (all repaired)",
            lost_total / args.repeat as i64
        ),
        median(incremental),
    );

    disagreeing_ledgers(&client, &url, size, args).await;
    on_a_replica(cluster, &client, &url, &db, size, args).await;
    app_cost(&client, size, args).await;
    drop(client);
    execute_sql(&cluster.url("postgres"), &format!("DROP DATABASE {db}"))
        .await
        .unwrap();
}

/// `--mismatch` of organizations' ledgers disagree: the sweep that records them, then sweeps
/// that find them unchanged (rows streamed, state in reconciler.ledger_mismatches): right
/// after the usage rows were rewritten (their pages lost the all-visible mark, so a sweep
/// reads that table and calls' covering index), after one call of each of those
/// organizations was rewritten too (it reads both tables), and once VACUUM marked them again
/// (it reads both covering indexes). Each row names the read the sweep chose.
async fn disagreeing_ledgers(client: &tokio_postgres::Client, url: &str, size: Size, args: &Args) {
    let changed = scenarios::disagreeing_ledgers(client, args.mismatch).await;
    let recording_read = sweep_read(client).await;
    let recording = measure_pass(client, url, SWEEP, &[]).await;
    let mut index_floors = Vec::new();
    // Each phase's sweeps against the floors interleaved with them, on the same data: a
    // rewritten table costs the floor's scan too (dead versions, hint bits).
    let mut phases: Vec<(&str, &str, Vec<Cost>, Vec<Cost>)> = Vec::new();
    for phase in [
        "usage rows just rewritten",
        "calls rewritten too",
        "after VACUUM",
    ] {
        match phase {
            "calls rewritten too" => {
                scenarios::rewrite_calls(client, args.mismatch).await;
            }
            "after VACUUM" => client.batch_execute("VACUUM ANALYZE").await.unwrap(),
            _ => {}
        }
        let read = sweep_read(client).await;
        let (mut floors, mut sweeps) = (Vec::new(), Vec::new());
        for _ in 0..args.repeat {
            floors.push(floor(client).await);
            if phase == "after VACUUM" {
                index_floors.push(measure_sql(client, &data::index_floor()).await);
            }
            sweeps.push(measure_pass(client, url, SWEEP, &[]).await);
        }
        phases.push((phase, read, floors, sweeps));
    }
    // The recording sweep ran before any phase: against the first phase's floors.
    let first_floor = median(phases[0].2.clone());
    report(size, "floor, ledgers disagree", first_floor, first_floor);
    report(
        size,
        &format!("sweep recording {changed} new ledger mismatches (sweep_read={recording_read})"),
        recording,
        first_floor,
    );
    for (phase, read, floors, sweeps) in phases {
        let floor_cost = median(floors);
        if phase != "usage rows just rewritten" {
            report(
                size,
                &format!("floor, ledgers disagree, {phase}"),
                floor_cost,
                floor_cost,
            );
        }
        if phase == "after VACUUM" {
            report(
                size,
                "the floor's sums through the covering indexes",
                median(index_floors.clone()),
                floor_cost,
            );
        }
        report(
            size,
            &format!("sweep, {changed} ledger mismatches unchanged, {phase} (sweep_read={read})"),
            median(sweeps),
            floor_cost,
        );
    }
}

/// The read the next sweep chooses (`reconcile::access`), as its summary line names it.
async fn sweep_read(client: &tokio_postgres::Client) -> &'static str {
    // The bench's own writes must be in the statistics the choice reads.
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    let indexes = access::inspect(client).await.expect("inspect the ledgers");
    SweepRead::choose(&indexes).as_str()
}

/// The sweep with `database.replica_url` on a streaming standby: the primary's buffers with
/// and without it, each after a tenth of `--drift` of counters were set wrong (all repaired:
/// what a nightly sweep finds after a day of incremental passes is rarer still).
async fn on_a_replica(
    cluster: &LocalCluster,
    client: &tokio_postgres::Client,
    url: &str,
    db: &str,
    size: Size,
    args: &Args,
) {
    let started = Instant::now();
    let standby = cluster.start_standby().expect("start a streaming standby");
    let replica_url = standby.url(db);
    let replica = connect(&replica_url).await;
    scenarios::wait_replayed(url, &replica_url).await;
    eprintln!("# standby ready in {:.0?}", started.elapsed());
    let env = [(
        "SYNQALL_RECONCILER__DATABASE__REPLICA_URL",
        replica_url.as_str(),
    )];
    let (mut without, mut with, mut on_replica) = (Vec::new(), Vec::new(), Vec::new());
    let (mut clean_without, mut clean_with) = (Vec::new(), Vec::new());
    for round in 0..args.repeat {
        // What a nightly sweep finds after a day of incremental passes: nothing.
        clean_without.push(measure_pass(client, url, SWEEP, &[]).await);
        scenarios::wait_replayed(url, &replica_url).await;
        clean_with.push(measure_pass(client, url, SWEEP, &env).await);
        let planted =
            scenarios::plant_drift(client, args.drift / 10.0, &format!("primary {round}")).await;
        without.push(measure_pass(client, url, SWEEP, &[]).await);
        assert_eq!(scenarios::wrong_among(client, &planted).await, 0);
        let planted =
            scenarios::plant_drift(client, args.drift / 10.0, &format!("replica {round}")).await;
        scenarios::wait_replayed(url, &replica_url).await;
        let replica_before = measure::Counters::read(&replica).await;
        measure::reset_top(client).await;
        let cost = measure_pass(client, url, SWEEP, &env).await;
        measure::print_top(client, "sweep with replica_url, on the primary").await;
        on_replica.push(Cost {
            wall: cost.wall,
            ..replica_before.since(&replica).await
        });
        assert_eq!(scenarios::wrong_among(client, &planted).await, 0);
        with.push(cost);
    }
    let clean_without = median(clean_without);
    report(
        size,
        "sweep, clean, no replica (primary)",
        clean_without,
        clean_without,
    );
    report(
        size,
        "sweep, clean, replica_url (primary)",
        median(clean_with),
        clean_without,
    );
    let without = median(without);
    let with = median(with);
    let row = |name: &str, cost: Cost| report(size, name, cost, without);
    let drifted = ((size.orgs as f64) * args.drift / 10.0).ceil() as i64;
    row(
        &format!("sweep, {drifted} counters wrong, no replica (primary)"),
        without,
    );
    row(
        &format!("sweep, {drifted} counters wrong, replica_url (primary)"),
        with,
    );
    let replica_side = median(on_replica);
    println!(
        "| {} orgs / {} calls | the same, on the replica | — | — | {} | {:.3}× | {} | {:.3}× | — | — | — |",
        size.orgs,
        size.calls(),
        replica_side.buffers,
        replica_side.buffers as f64 / without.buffers.max(1) as f64,
        replica_side.statement_buffers,
        replica_side.statement_buffers as f64 / without.statement_buffers.max(1) as f64
    );
    drop(replica);
    drop(standby);
}

/// What the change tracking costs the app: a completed call INSERT and an increment, one
/// statement each, with the two triggers they fire and without (interleaved rounds).
async fn app_cost(client: &tokio_postgres::Client, size: Size, args: &Args) {
    const N: usize = 2_000;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..args.repeat {
        with.push(scenarios::app_latency(client, N).await);
        scenarios::tracking_triggers(client, false).await;
        without.push(scenarios::app_latency(client, N).await);
        scenarios::tracking_triggers(client, true).await;
    }
    type Pair = (scenarios::Latency, scenarios::Latency);
    type Field = (&'static str, fn(&Pair) -> f64);
    let mid = |v: &[Pair], pick: fn(&Pair) -> f64| {
        let mut xs: Vec<f64> = v.iter().map(pick).collect();
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    let fields: [Field; 4] = [
        ("call INSERT p50", |l| l.0.p50_us),
        ("call INSERT mean", |l| l.0.mean_us),
        ("increment_used_minutes p50", |l| l.1.p50_us),
        ("increment_used_minutes mean", |l| l.1.mean_us),
    ];
    for (what, field) in fields {
        let (a, b) = (mid(&with, field), mid(&without, field));
        println!(
            "| {} orgs / {} calls | app: {what} | with triggers {a:.0} µs | without {b:.0} µs | {:+.0} µs ({:+.0}%) |",
            size.orgs,
            size.calls(),
            a - b,
            (a - b) / b * 100.0
        );
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
            // Buffers per statement, beside pg_stat_database's per-backend totals.
            ("shared_preload_libraries", "pg_stat_statements"),
            ("pg_stat_statements.track", "all"),
            ("pg_stat_statements.max", "10000"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..ClusterOptions::default()
    };
    let mut options = options;
    if std::env::var_os("BENCH_EXPLAIN").is_some() {
        // Every statement's plan, with buffers, in the server log (printed at the end).
        for (k, v) in [
            ("session_preload_libraries", "auto_explain"),
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_analyze", "on"),
            ("auto_explain.log_buffers", "on"),
        ] {
            options.settings.push((k.to_string(), v.to_string()));
        }
    }
    let started = Instant::now();
    let cluster = LocalCluster::start_with(options).expect("start the benchmark cluster");

    runtime.block_on(async {
        println!(
            "| size | what | wall | × floor | buffers (all) | × floor | buffers (statements) | × floor | WAL | rows written (orgs, calls) | peak RSS |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for size in &args.sizes {
            bench_size(&cluster, *size, &args).await;
        }
    });
    if let Some(to) = std::env::var_os("BENCH_EXPLAIN") {
        std::fs::copy(cluster.root().join("postgres.log"), &to).expect("copy the server log");
        eprintln!(
            "# the server log, with every plan: {}",
            to.to_string_lossy()
        );
    }
    eprintln!("# total {:.0?}", started.elapsed());
}
