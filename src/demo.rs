//! `demo`: a throwaway local PostgreSQL with the Supabase stand-in ([`crate::fixture`]) and
//! sample data full of the incident's damage, one pass, a report, and everything removed again,
//! even on Ctrl-C.

use std::time::Instant;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Secret, Settings};
use crate::db::{Database, DatabaseTarget};
use crate::fixture::{create_standin_database, execute_sql, DEMO_DATA_SQL, SEED_FIX_SQL};
use crate::local_pg::LocalCluster;
use crate::reconcile::{self, PassOptions, PassOutcome, RunMode};
use crate::{Error, Exit};

const DEMO_DATABASE: &str = "synqall_demo";

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
    let organizations = count_organizations(&db).await?;
    println!(
        "Before: {before} of {organizations} organizations have a used_minutes that differs from their completed calls.\n"
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

/// How many organizations the sample data has.
async fn count_organizations(db: &Database) -> Result<i64, Error> {
    let client = db.client().await?;
    let row = client
        .query_one("SELECT count(*) FROM public.organizations", &[])
        .await
        .map_err(|e| Error::Other(format!("counting organizations failed: {e}")))?;
    Ok(row.get(0))
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
