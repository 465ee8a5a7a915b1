//! `demo`: a throwaway local PostgreSQL with the Supabase stand-in ([`crate::fixture`]) and
//! sample data full of the incident's damage, one pass, a report, and everything removed again,
//! even on Ctrl-C.

use std::time::Instant;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Secret, Settings};
use crate::db::{migrations, Database, DatabaseTarget, DbError, QueryContext};
use crate::fixture::{create_standin_database, execute_sql, DEMO_DATA_SQL, SEED_FIX_SQL};
use crate::local_pg::{LocalCluster, LocalPgError};
use crate::reconcile::{self, PassKind, PassOptions, PassOutcome, RunMode};

const DEMO_DATABASE: &str = "synqall_demo";
const DEMO_COUNTS: &str = include_str!("../sql/fixture/demo_counts.sql");

/// How the demo ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoOutcome {
    /// Every planted drift was repaired.
    AllRepaired,
    /// Some counter still differs from its completed calls.
    DriftLeft,
    /// Something else held the advisory lock (cannot happen on a fresh cluster; reported anyway).
    LockHeld,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    LocalPg(#[from] LocalPgError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Pass(#[from] crate::reconcile::PassError),
    #[error("demo setup failed: {0}")]
    Setup(#[from] tokio_postgres::Error),
    #[error("demo failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("demo failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("interrupted")]
    Interrupted,
}

/// Run the demo and print its report.
///
/// # Errors
/// No local PostgreSQL binaries (naming the package), or a failure along the way; the cluster is
/// removed in every case.
pub async fn run(mut settings: Settings) -> Result<DemoOutcome, DemoError> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    println!("Starting a throwaway PostgreSQL cluster…");
    let cluster = tokio::select! {
        started = tokio::task::spawn_blocking(LocalCluster::start) => started??,
        _ = interrupt.recv() => return Err(DemoError::Interrupted),
        _ = terminate.recv() => return Err(DemoError::Interrupted),
    };
    // No app is writing in the demo: nothing to wait for before repairing.
    settings.usage.settle_seconds = 0;
    let result = tokio::select! {
        r = demo_pass(&cluster, &settings) => r,
        _ = interrupt.recv() => Err(DemoError::Interrupted),
        _ = terminate.recv() => Err(DemoError::Interrupted),
    };
    println!("Removing the throwaway cluster…");
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    result
}

async fn demo_pass(cluster: &LocalCluster, settings: &Settings) -> Result<DemoOutcome, DemoError> {
    println!("Loading a Supabase stand-in as production has it (seed fix applied by hand)…");
    let url = create_standin_database(cluster, DEMO_DATABASE).await?;
    for sql in [SEED_FIX_SQL, DEMO_DATA_SQL] {
        execute_sql(&url, sql).await?;
    }
    let target =
        DatabaseTarget::parse("demo", Secret::new(url.clone())).map_err(DbError::Config)?;
    let db = Database::new(&target, settings)?;
    println!("Applying migrations…");
    for applied in migrations::migrate(&db).await? {
        println!("  applied V{}__{}", applied.version, applied.name);
    }
    let before = counts(&db).await?;
    println!(
        "Before: {} of {} organizations have a used_minutes that differs from their completed calls.\n",
        before.wrong_counters, before.organizations
    );
    println!("Running one reconcile pass (log lines on stderr)…\n");
    let started = Instant::now();
    let options = PassOptions {
        mode: RunMode::Demo,
        kind: PassKind::Sweep,
        dry_run: false,
        allow_mass_correction: false,
    };
    let report = match reconcile::run_once(&db, settings, options, &Default::default()).await? {
        PassOutcome::Completed(report) => report,
        PassOutcome::LockHeld => return Ok(DemoOutcome::LockHeld),
    };
    println!("\n{report}");
    let after = counts(&db).await?;
    println!(
        "After: {} organizations still differ. Journal: {} adjustments, {} call repairs \
         (pass took {} ms).",
        after.wrong_counters,
        after.adjustments,
        after.call_repairs,
        started.elapsed().as_millis()
    );
    println!("\nThe incident's checklist after the pass (`synqall-reconciler doctor`):\n");
    print!("{}", crate::doctor::doctor(&db, settings, &target).await?);
    Ok(if after.wrong_counters == 0 {
        DemoOutcome::AllRepaired
    } else {
        DemoOutcome::DriftLeft
    })
}

/// The numbers the demo prints before and after its pass.
struct Counts {
    organizations: i64,
    wrong_counters: i64,
    adjustments: i64,
    call_repairs: i64,
}

async fn counts(db: &Database) -> Result<Counts, DbError> {
    let client = db.client().await?;
    let row = client
        .query_one(DEMO_COUNTS, &[])
        .await
        .context("count the demo's organizations, drift and journal")?;
    Ok(Counts {
        organizations: row.get("organizations"),
        wrong_counters: row.get("wrong_counters"),
        adjustments: row.get("adjustments"),
        call_repairs: row.get("call_repairs"),
    })
}
