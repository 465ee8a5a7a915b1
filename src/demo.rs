//! `demo`: a throwaway local PostgreSQL with a Supabase stand-in schema and sample data full of
//! the incident's damage, one pass, a report, and everything removed again, even on Ctrl-C.
//!
//! The stand-in SQL here is also what the test harness loads, so the tests and the demo run
//! against the same schema.

use std::time::Instant;

use tokio::signal::unix::{signal, SignalKind};
use tokio_postgres::NoTls;

use crate::config::{DatabaseTarget, Secret, Settings};
use crate::db::Database;
use crate::local_pg::LocalCluster;
use crate::reconcile::{self, PassOptions, PassOutcome, RunMode};
use crate::{Error, Exit};

/// Supabase's API roles (cluster-wide, idempotent).
pub const SUPABASE_ROLES_SQL: &str = include_str!("../sql/fixture/supabase_roles.sql");
/// The Supabase stand-in: auth schema, the four application tables, RLS, default grants.
pub const SUPABASE_STANDIN_SQL: &str = include_str!("../sql/fixture/supabase_standin.sql");
/// The incident's one-off fix, verbatim: the production state before the first `migrate`.
pub const SEED_FIX_SQL: &str = include_str!("../sql/fixture/seed_fix.sql");
/// Sample data with planted drift and orphans.
pub const DEMO_DATA_SQL: &str = include_str!("../sql/fixture/demo_data.sql");

const DEMO_DATABASE: &str = "synqall_demo";

/// Connect once and run `sql`.
///
/// # Errors
/// Connection or statement failure.
pub async fn execute_sql(url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let task = tokio::spawn(connection);
    let result = client.batch_execute(sql).await;
    drop(client);
    let _ = task.await;
    result
}

/// Create database `name` on a throwaway cluster with the Supabase stand-in loaded (the API
/// roles, cluster-wide, are created first if missing); returns its URL. Not for concurrent use
/// on one cluster: two role creations can race.
///
/// # Errors
/// Connection or statement failure.
pub async fn create_standin_database(
    cluster: &LocalCluster,
    name: &str,
) -> Result<String, tokio_postgres::Error> {
    let admin = cluster.url("postgres");
    execute_sql(&admin, SUPABASE_ROLES_SQL).await?;
    execute_sql(&admin, &format!("CREATE DATABASE {name}")).await?;
    let url = cluster.url(name);
    execute_sql(&url, SUPABASE_STANDIN_SQL).await?;
    Ok(url)
}

/// Run the demo and print its report.
///
/// # Errors
/// No local PostgreSQL binaries (naming the package), or a failure along the way; the cluster is
/// removed in every case.
pub async fn run(mut settings: Settings) -> Result<Exit, Error> {
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| Error::Other(e.to_string()))?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| Error::Other(e.to_string()))?;
    println!("Starting a throwaway PostgreSQL cluster…");
    let cluster = tokio::select! {
        started = tokio::task::spawn_blocking(LocalCluster::start) => {
            started.map_err(|e| Error::Other(e.to_string()))??
        }
        _ = interrupt.recv() => return Err(Error::Interrupted),
        _ = terminate.recv() => return Err(Error::Interrupted),
    };
    // No app is writing in the demo: nothing to wait for before repairing.
    settings.usage.settle_seconds = 0;
    let result = tokio::select! {
        r = demo_pass(&cluster, &settings) => r,
        _ = interrupt.recv() => Err(Error::Interrupted),
        _ = terminate.recv() => Err(Error::Interrupted),
    };
    println!("Removing the throwaway cluster…");
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .map_err(|e| Error::Other(e.to_string()))?;
    result
}

async fn demo_pass(cluster: &LocalCluster, settings: &Settings) -> Result<Exit, Error> {
    let setup = |e: tokio_postgres::Error| Error::Other(format!("demo setup failed: {e}"));
    println!("Loading a Supabase stand-in as production has it (seed fix applied by hand)…");
    let url = create_standin_database(cluster, DEMO_DATABASE)
        .await
        .map_err(setup)?;
    for sql in [SEED_FIX_SQL, DEMO_DATA_SQL] {
        execute_sql(&url, sql).await.map_err(setup)?;
    }
    let target = DatabaseTarget::parse("demo", Secret::new(url.clone()))?;
    println!("Applying migrations…");
    for applied in crate::migrate(settings, &target).await? {
        println!("  applied V{}__{}", applied.version, applied.name);
    }
    let db = Database::new(&target, settings)?;
    let before = count_wrong_counters(&db).await?;
    println!(
        "Before: {before} of 300 organizations have a used_minutes that differs from their completed calls.\n"
    );
    println!("Running one reconcile pass (log lines on stderr)…\n");
    let started = Instant::now();
    let options = PassOptions {
        mode: RunMode::Demo,
        dry_run: false,
    };
    let report = match reconcile::run_once(&db, settings, options, &Default::default()).await? {
        PassOutcome::Completed(report) => report,
        PassOutcome::LockHeld => return Ok(Exit::LockHeld),
    };
    println!("\n{report}");
    let after = count_wrong_counters(&db).await?;
    let client = db.client().await?;
    let journal = client
        .query_one(
            "SELECT (SELECT count(*) FROM reconciler.adjustments),
                    (SELECT count(*) FROM reconciler.call_repairs)",
            &[],
        )
        .await
        .map_err(|e| Error::Other(format!("reading the journal failed: {e}")))?;
    println!(
        "After: {after} organizations still differ. Journal: {} adjustments, {} call repairs \
         (pass took {} ms).",
        journal.get::<_, i64>(0),
        journal.get::<_, i64>(1),
        started.elapsed().as_millis()
    );
    println!("\nThe incident's checklist after the pass (`synqall-reconciler doctor`):\n");
    print!("{}", crate::doctor::doctor(&db, settings, &target).await?);
    Ok(if after == 0 {
        Exit::Ok
    } else {
        Exit::DriftLeft
    })
}

/// The seed's verification query, reduced to a count of counters that do not match.
async fn count_wrong_counters(db: &Database) -> Result<i64, Error> {
    let client = db.client().await?;
    let row = client
        .query_one(
            "SELECT count(*) FROM public.organizations o
              WHERE o.used_minutes IS DISTINCT FROM
                    (SELECT COALESCE(sum(c.duration_minutes), 0) FROM public.calls c
                      WHERE c.organization_id = o.id AND c.status = 'completed')",
            &[],
        )
        .await
        .map_err(|e| Error::Other(format!("counting drifted counters failed: {e}")))?;
    Ok(row.get(0))
}
