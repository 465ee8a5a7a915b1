//! synqall-reconciler keeps SynqAll's billing counter `organizations.used_minutes` honest: it
//! recomputes what every organization used from completed calls (cross-checked against
//! `usage_metrics`), repairs drifted counters, attributes orphaned calls, journals every
//! correction and logs a greppable `CRITICAL … used_minutes drift …` line for each drift.
//! `docs/design.md` says what a pass guarantees and why, and which module owns which rule; the
//! README is the manual.
//!
//! # Layout
//! Layers, each importing only from the layers below it (never sideways into a sibling's
//! internals, never up):
//!
//! 1. Bottom, depending on nothing else in the crate but each other's types:
//!    - [`config`]: layered, validated settings (the parsed schedule included); secrets that
//!      never print.
//!    - [`cli`]: command-line arguments.
//!    - [`telemetry`]: the log line formats people grep, line budgets, [`telemetry::OrNull`].
//!    - [`local_pg`]: a throwaway local PostgreSQL cluster for `demo`, the tests and the bench.
//!    - [`fault`]: fault injection points for the tests (debug builds only).
//! 2. [`db`]: where to connect (target, TLS), pool, advisory lock, schema checks, migrations.
//!    [`fixture`]: the Supabase stand-in the demo, the tests and the bench load.
//! 3. [`reconcile`]: one pass, [`reconcile::run_once`], and its steps (orphans, usage, repair,
//!    journal, report).
//! 4. Commands built on the pass and the journal: [`daemon`] (the scheduled service), [`status`],
//!    [`doctor`], [`revert`], [`demo`].
//! 5. This file (the entry points `main.rs` calls; tests call them too), then `main.rs`.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod db;
pub mod demo;
pub mod doctor;
pub mod fault;
pub mod fixture;
pub mod local_pg;
pub mod reconcile;
pub mod revert;
pub mod status;
pub mod telemetry;

use tracing::info;

use crate::cli::{Cli, Command};
use crate::config::{ConfigError, Settings};
use crate::daemon::DaemonError;
use crate::db::{migrations, Database, DatabaseTarget, DbError};
use crate::reconcile::control::PassControl;
use crate::reconcile::{PassError, PassKind, PassOptions, PassOutcome, RunMode};

/// How the process ends; the numbers are the documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done (repairs included).
    Ok = 0,
    /// Error: database unreachable, not migrated, a failed pass.
    Error = 1,
    /// Drift left unrepaired (dry run, lost races, refused or failed updates); `doctor` found a
    /// FAIL; `revert` skipped something that changed after the run.
    DriftLeft = 2,
    /// Bad command line: unknown flag, malformed run id (EX_USAGE).
    Usage = 64,
    /// Another instance holds the advisory lock (EX_TEMPFAIL).
    LockHeld = 75,
    /// Bad configuration (EX_CONFIG).
    Config = 78,
}

/// Failures of an entry point.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Pass(PassError),
    #[error(transparent)]
    Daemon(DaemonError),
    #[error(transparent)]
    Revert(revert::RevertError),
    #[error(transparent)]
    Demo(#[from] demo::DemoError),
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The exit code this failure maps to.
    pub fn exit(&self) -> Exit {
        match self {
            Self::Config(_) => Exit::Config,
            Self::Db(e) if e.is_configuration() => Exit::Config,
            _ => Exit::Error,
        }
    }
}

impl From<PassError> for Error {
    /// A pass's database failures map like any other's.
    fn from(e: PassError) -> Self {
        match e {
            PassError::Db(db) => Self::Db(db),
            other => Self::Pass(other),
        }
    }
}

impl From<DaemonError> for Error {
    /// The daemon's database failures map like any other's (a bad CA file is exit 78).
    fn from(e: DaemonError) -> Self {
        match e {
            DaemonError::Db(db) => Self::Db(db),
            other => Self::Daemon(other),
        }
    }
}

impl From<revert::RevertError> for Error {
    /// A database failure during a revert is a database failure like any other (same exit
    /// code mapping); only the revert's own refusals stay [`Error::Revert`].
    fn from(e: revert::RevertError) -> Self {
        match e {
            revert::RevertError::Db(db) => Self::Db(db),
            other => Self::Revert(other),
        }
    }
}

/// Run what the command line asks for with already-loaded settings.
///
/// # Errors
/// See [`Error`]; [`Error::exit`] gives the exit code.
pub async fn run(cli: &Cli, settings: Settings) -> Result<Exit, Error> {
    if let Some(Command::Demo) = cli.command {
        return Ok(match demo::run(settings).await? {
            demo::DemoOutcome::AllRepaired => Exit::Ok,
            demo::DemoOutcome::DriftLeft => Exit::DriftLeft,
            demo::DemoOutcome::LockHeld => Exit::LockHeld,
        });
    }
    // Every other command talks to the configured database.
    let target = db::target::resolve(&settings, cli.database_url.as_ref())?;
    match (&cli.command, cli.reconcile_now) {
        (Some(Command::Demo), _) => unreachable!("handled above"),
        (Some(Command::Migrate), _) => {
            log_effective_config(&settings, &target);
            let applied = deadline(&settings, "migrate", migrate(&settings, &target)).await??;
            for applied in applied {
                println!("applied V{}__{}", applied.version, applied.name);
                for notice in &applied.notices {
                    println!("  {notice}");
                }
            }
            Ok(Exit::Ok)
        }
        (
            Some(Command::Status {
                json,
                limit,
                max_age,
            }),
            _,
        ) => status_command(&settings, &target, *json, *limit, *max_age).await,
        (Some(Command::Doctor { json }), _) => {
            let db = Database::new(&target, &settings)?;
            let report =
                deadline(&settings, "doctor", doctor::doctor(&db, &settings, &target)).await??;
            print_report(&report, *json)?;
            Ok(if report.failed() {
                Exit::DriftLeft
            } else {
                Exit::Ok
            })
        }
        (Some(Command::Revert { run_id }), _) => revert_command(&settings, &target, *run_id).await,
        (None, true) => {
            log_effective_config(&settings, &target);
            let options = PassOptions {
                mode: RunMode::Once,
                kind: if cli.incremental {
                    PassKind::Incremental
                } else {
                    PassKind::Sweep
                },
                dry_run: cli.dry_run,
                allow_mass_correction: cli.allow_mass_correction,
            };
            reconcile_now(&settings, &target, options).await
        }
        (Some(Command::Run) | None, _) => {
            log_effective_config(&settings, &target);
            let shutdown = shutdown_token()?;
            daemon::run(settings, target, shutdown.cancelled_owned()).await?;
            Ok(Exit::Ok)
        }
    }
}

/// `status`: the report, and with `--max-age` exit 2 when the last success is older (a check
/// for cron and probes; no success at all is stale too).
async fn status_command(
    settings: &Settings,
    target: &DatabaseTarget,
    json: bool,
    limit: i64,
    max_age: Option<u64>,
) -> Result<Exit, Error> {
    let db = Database::new(target, settings)?;
    let report = deadline(settings, "status", status::status(&db, limit)).await??;
    print_report(&report, json)?;
    let stale = max_age.is_some_and(|max| {
        report
            .seconds_since_last_success
            .is_none_or(|age| age > i64::try_from(max).unwrap_or(i64::MAX))
    });
    Ok(if stale { Exit::DriftLeft } else { Exit::Ok })
}

/// `revert RUN_ID`: exit 2 when something was skipped because it changed after the run.
async fn revert_command(
    settings: &Settings,
    target: &DatabaseTarget,
    run_id: uuid::Uuid,
) -> Result<Exit, Error> {
    let db = Database::new(target, settings)?;
    match deadline(settings, "revert", revert::revert(&db, settings, run_id)).await?? {
        revert::RevertOutcome::LockHeld => Ok(Exit::LockHeld),
        revert::RevertOutcome::Done(report) => {
            print!("{report}");
            Ok(if report.anything_skipped() {
                Exit::DriftLeft
            } else {
                Exit::Ok
            })
        }
    }
}

/// A command's client-side deadline (`database.pass_timeout_seconds`): a server that stops
/// answering ends the command with an error, never a hang.
async fn deadline<T>(
    settings: &Settings,
    what: &'static str,
    command: impl std::future::Future<Output = T>,
) -> Result<T, Error> {
    let limit = std::time::Duration::from_secs(settings.database.pass_timeout_seconds);
    tokio::time::timeout(limit, command).await.map_err(|_| {
        Error::Db(DbError::Timeout {
            what,
            seconds: limit.as_secs(),
        })
    })
}

/// Cancelled on SIGTERM/SIGINT ([`daemon::shutdown::listen`]).
fn shutdown_token() -> Result<tokio_util::sync::CancellationToken, Error> {
    daemon::shutdown::listen()
        .map_err(|e| Error::Other(format!("Failed to install signal handlers: {e}")))
}

/// A command's report on stdout: its table, or JSON with `--json`.
fn print_report<R>(report: &R, json: bool) -> Result<(), Error>
where
    R: serde::Serialize + std::fmt::Display,
{
    if json {
        let text = serde_json::to_string_pretty(report)
            .map_err(|e| Error::Other(format!("Failed to encode the report as JSON: {e}")))?;
        println!("{text}");
    } else {
        print!("{report}");
    }
    Ok(())
}

/// Apply pending migrations; returns what was applied (empty when current).
///
/// # Errors
/// Connection failure or a failing migration (rolled back).
pub async fn migrate(
    settings: &Settings,
    target: &DatabaseTarget,
) -> Result<Vec<migrations::Applied>, Error> {
    let db = Database::new(target, settings)?;
    Ok(migrations::migrate(&db).await?)
}

/// One pass now (`--reconcile-now`), mapped to an exit code.
///
/// # Errors
/// A failed pass.
pub async fn reconcile_now(
    settings: &Settings,
    target: &DatabaseTarget,
    options: PassOptions,
) -> Result<Exit, Error> {
    let db = Database::new(target, settings)?;
    // SIGTERM/SIGINT stop the pass at its next safe point instead of killing it mid-batch.
    let control = PassControl {
        cancel: shutdown_token()?,
        ..PassControl::default()
    };
    match reconcile::run_once(&db, settings, options, &control).await? {
        PassOutcome::LockHeld => Ok(Exit::LockHeld),
        PassOutcome::Completed(report) => {
            println!("{report}");
            Ok(if report.cancelled {
                Exit::Error
            } else if report.drift_left() {
                Exit::DriftLeft
            } else {
                Exit::Ok
            })
        }
    }
}

/// The startup line with the configuration in effect; the URL shows no password.
fn log_effective_config(settings: &Settings, target: &DatabaseTarget) {
    info!(
        version = env!("CARGO_PKG_VERSION"),
        database = target.describe().as_str(),
        period = settings.usage.period.as_str(),
        source = settings.usage.source.as_str(),
        rounding = settings.usage.rounding.as_str(),
        settle_seconds = settings.usage.settle_seconds,
        batch_size = settings.usage.batch_size,
        orphans_ambiguous = settings.orphans.ambiguous.as_str(),
        cron = settings.schedule.cron.expression(),
        full_sweep_cron = settings.schedule.full_sweep_cron.expression(),
        replica = target
            .replica()
            .map(|r| r.describe())
            .as_deref()
            .unwrap_or("none"),
        lock_key = settings.lock.key,
        "effective configuration"
    );
}
