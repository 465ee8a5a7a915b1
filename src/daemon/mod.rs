//! The daemon (docs/design.md, "The daemon"): passes on the cron schedule until shutdown, one
//! at a time, with systemd notifications and stall alerts. Each pass is the same
//! [`reconcile::run_once`] that `--reconcile-now` runs; this module only decides when, and what
//! happens around it.
//!
//! - [`schedule`]: the scheduler job that requests passes.
//! - [`ticker`]: when the idle loop wakes (ticks, overdue passes, heartbeats).
//! - [`notify`]: READY / STATUS / STOPPING / progress-based WATCHDOG.
//! - [`shutdown`]: SIGTERM / SIGINT / SIGHUP.
//! - [`health`]: the "stalled" alert, from the journal.
//! - [`metrics`]: the optional Prometheus endpoint.
//!
//! Shutdown: scheduling stops at once; a running pass gets `shutdown.timeout_seconds` to finish,
//! then is cancelled at its next safe point (between batches, or in the settle wait) and closes
//! its run as `cancelled`; the advisory lock is released when the pass ends.

pub mod health;
pub mod metrics;
pub mod notify;
pub mod schedule;
pub mod shutdown;
pub mod ticker;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::JobScheduler;
use tracing::{info, warn};

use self::health::Health;
use self::metrics::Metrics;
use self::notify::Notifier;
use self::ticker::{Ticker, Wake};
use crate::config::Settings;
use crate::db::{self, Database, DatabaseTarget, DbError};
use crate::reconcile::control::{PassControl, Progress};
use crate::reconcile::journal::RunStatus;
use crate::reconcile::{self, PassError, PassKind, PassOptions, PassOutcome, RunMode};
use crate::telemetry::error_chain;

/// After the shutdown timeout has cancelled a pass, how long it may take to reach a safe point
/// before it is dropped (its open transaction, if any, is then rolled back by the server).
const CANCEL_GRACE: Duration = Duration::from_secs(10);
/// How often the idle loop proves it is alive and checks for a stall.
const IDLE_HEARTBEAT: Duration = Duration::from_secs(1);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("Failed to listen on metrics.listen = {addr}: {source}")]
    MetricsListen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to start the scheduler: {0}")]
    Scheduler(#[from] tokio_cron_scheduler::JobSchedulerError),
}

/// Why a pass starts.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Start,
    Tick,
    Overdue,
}

/// What runs beside the loop, stopped when it ends.
struct Services {
    scheduler: JobScheduler,
    watchdog: Option<JoinHandle<()>>,
    metrics_server: Option<JoinHandle<()>>,
    health_monitor: JoinHandle<()>,
}

impl Services {
    async fn stop(mut self) {
        let _ = self.scheduler.shutdown().await;
        self.health_monitor.abort();
        for task in [self.watchdog, self.metrics_server].into_iter().flatten() {
            task.abort();
        }
    }
}

/// How often the stall monitor re-reads the journal: often enough to alert within a few
/// seconds of the threshold, rarely enough to cost nothing.
fn health_interval(stalled_after: Duration) -> Duration {
    (stalled_after / 3).clamp(Duration::from_secs(1), Duration::from_secs(15))
}

/// Run passes on the schedule until `shutdown` completes.
///
/// # Errors
/// The metrics address cannot be bound, the scheduler cannot start, or the pool cannot be
/// built (an unusable `database.ca_file`).
pub async fn run(
    settings: Settings,
    target: DatabaseTarget,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let db = Database::new(&target, &settings)?;
    let (tick_tx, ticks) = mpsc::channel::<()>(1);
    let pass_running = Arc::new(AtomicBool::new(false));
    let sweep_due = Arc::new(AtomicBool::new(false));
    let progress = Progress::default();
    progress.bump();
    let stalled_after = Duration::from_secs(settings.alert.stalled_after_seconds);
    let health = Health::new(stalled_after);
    let metrics = Arc::new(Metrics::new(health.clone()));
    let mut services = start_services(
        &settings,
        &metrics,
        tick_tx,
        (&sweep_due, &pass_running),
        &progress,
    )
    .await?;
    services.health_monitor = health.spawn_monitor(db.clone(), health_interval(stalled_after));
    let schedule = &settings.schedule.cron;
    let next = schedule
        .next_tick()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    info!(
        cron = schedule.expression(),
        full_sweep_cron = settings.schedule.full_sweep_cron.expression(),
        next_tick = next.as_str(),
        run_on_start = settings.schedule.run_on_start,
        database = db.target(),
        "daemon started"
    );
    // A transaction pooler in the way is configuration: refuse now, not at every pass. A
    // database that cannot be reached yet is the passes' business (they retry).
    match db::pinning::check_target(&db).await {
        Err(e) if e.is_configuration() => return Err(DaemonError::Db(e)),
        Err(e) => warn!(
            error = error_chain(&e).as_str(),
            "could not check the connection at start-up; the passes will retry"
        ),
        Ok(()) => {}
    }
    Notifier::ready(&format!("waiting; next pass {next}"));

    let mut ticker = Ticker::new(ticks, schedule.overdue_after(), IDLE_HEARTBEAT);
    let mut daemon = Loop {
        settings: &settings,
        db: &db,
        metrics: &metrics,
        progress,
        pass_running,
        sweep_due,
        health,
    };
    tokio::pin!(shutdown);
    let result = daemon.run(&mut ticker, &mut shutdown).await;

    Notifier::stopping();
    info!("daemon stopping");
    services.stop().await;
    result
}

/// The metrics endpoint (bound before READY, so a taken port fails the start), the watchdog
/// and the scheduler.
async fn start_services(
    settings: &Settings,
    metrics: &Arc<Metrics>,
    tick_tx: mpsc::Sender<()>,
    (sweep_due, pass_running): (&Arc<AtomicBool>, &Arc<AtomicBool>),
    progress: &Progress,
) -> Result<Services, DaemonError> {
    let metrics_server = match settings.metrics.listen {
        Some(addr) => {
            let listener = metrics::bind(addr)
                .await
                .map_err(|source| DaemonError::MetricsListen { addr, source })?;
            Some(tokio::spawn(metrics::serve(listener, metrics.clone())))
        }
        None => None,
    };
    let schedules = &settings.schedule;
    let scheduler = schedule::start(
        &schedules.cron,
        &schedules.full_sweep_cron,
        tick_tx,
        sweep_due.clone(),
        pass_running.clone(),
    )
    .await?;
    let watchdog_interval = Notifier::watchdog_interval();
    if let Some(interval) = watchdog_interval.filter(|i| *i <= settings.statement_timeout()) {
        warn!(
            watchdog_ms = crate::telemetry::millis(interval),
            statement_timeout_seconds = settings.database.statement_timeout_seconds,
            "WatchdogSec is not longer than database.statement_timeout_seconds: a long but \
             healthy statement can get the service restarted"
        );
    }
    let watchdog =
        watchdog_interval.map(|interval| Notifier::spawn_watchdog(interval, progress.clone()));
    Ok(Services {
        scheduler,
        watchdog,
        metrics_server,
        health_monitor: tokio::spawn(async {}),
    })
}

/// The daemon loop's state.
struct Loop<'a> {
    settings: &'a Settings,
    db: &'a Database,
    metrics: &'a Metrics,
    progress: Progress,
    pass_running: Arc<AtomicBool>,
    /// A sweep tick arrived: the next pass is a sweep.
    sweep_due: Arc<AtomicBool>,
    health: Health,
}

impl Loop<'_> {
    /// Wake, run a pass when asked, until shutdown (which a running pass survives for up to
    /// `shutdown.timeout_seconds`).
    async fn run<F: Future<Output = ()>>(
        &mut self,
        ticker: &mut Ticker,
        shutdown: &mut Pin<&mut F>,
    ) -> Result<(), DaemonError> {
        let mut pending = self
            .settings
            .schedule
            .run_on_start
            .then_some(Trigger::Start);
        loop {
            let trigger = match pending.take() {
                Some(trigger) => trigger,
                None => match ticker.wait(shutdown).await {
                    Wake::Shutdown => return Ok(()),
                    Wake::Tick => Trigger::Tick,
                    Wake::Overdue => Trigger::Overdue,
                    // A sweep whose tick came during a pass runs as soon as the loop is idle.
                    Wake::Heartbeat if self.sweep_due.load(Ordering::SeqCst) => Trigger::Tick,
                    Wake::Heartbeat => {
                        self.progress.bump();
                        continue;
                    }
                },
            };
            if let Trigger::Overdue = trigger {
                warn!(
                    overdue_after_seconds = self.settings.schedule.cron.overdue_after().as_secs(),
                    "no schedule tick for too long (was the wall clock set back?); running a pass now"
                );
            }
            ticker.pass_started();
            self.pass_running.store(true, Ordering::SeqCst);
            let stopping = self.one_pass(shutdown).await;
            self.pass_running.store(false, Ordering::SeqCst);
            ticker.pass_finished();
            if stopping? {
                return Ok(());
            }
        }
    }

    /// One pass; true when shutdown arrived during it. A configuration problem found by the
    /// pass (a transaction pooler in the way) ends the daemon: retrying cannot fix it.
    async fn one_pass<F: Future<Output = ()>>(
        &mut self,
        shutdown: &mut Pin<&mut F>,
    ) -> Result<bool, DaemonError> {
        let control = PassControl {
            cancel: Default::default(),
            progress: self.progress.clone(),
        };
        let kind = if self.sweep_due.swap(false, Ordering::SeqCst) {
            PassKind::Sweep
        } else {
            PassKind::Incremental
        };
        let options = PassOptions {
            mode: RunMode::Daemon,
            kind,
            dry_run: false,
            allow_mass_correction: false,
        };
        let pass_started = Instant::now();
        let pass = reconcile::run_once(self.db, self.settings, options, &control);
        tokio::pin!(pass);
        let mut stopping = false;
        let result = tokio::select! {
            result = &mut pass => Some(result),
            () = shutdown.as_mut() => {
                stopping = true;
                finish_or_cancel(pass.as_mut(), &control, self.settings).await
            }
        };
        if let Some(result) = result {
            self.metrics.record(&result, pass_started.elapsed());
            match result {
                Err(PassError::Db(e)) if e.is_configuration() => return Err(DaemonError::Db(e)),
                other => record(other, &self.health, self.db).await,
            }
        }
        Ok(stopping)
    }
}

/// Shutdown arrived during a pass: let it finish within the timeout, then cancel it and give it
/// a short grace to reach a safe point. `None` if it had to be dropped.
async fn finish_or_cancel<F>(
    mut pass: Pin<&mut F>,
    control: &PassControl,
    settings: &Settings,
) -> Option<Result<PassOutcome, PassError>>
where
    F: Future<Output = Result<PassOutcome, PassError>>,
{
    let timeout = Duration::from_secs(settings.shutdown.timeout_seconds);
    info!(
        timeout_seconds = timeout.as_secs(),
        "waiting for the running pass to finish before stopping"
    );
    if let Ok(result) = tokio::time::timeout(timeout, pass.as_mut()).await {
        return Some(result);
    }
    control.cancel.cancel();
    warn!("shutdown timeout reached: cancelling the running pass at its next safe point");
    match tokio::time::timeout(CANCEL_GRACE, pass.as_mut()).await {
        Ok(result) => Some(result),
        Err(_) => {
            warn!("the running pass did not stop in time; abandoning it (its open transaction rolls back)");
            None
        }
    }
}

/// Feed a pass's outcome to the stall tracker and the systemd status line.
async fn record(result: Result<PassOutcome, PassError>, health: &Health, db: &Database) {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let status = match result {
        Ok(PassOutcome::Completed(report)) => {
            // The pass's own run row is the news: read it back.
            health.refresh(db).await;
            format!(
                "last pass {now} {}: {} orgs, {} drifted, {} repaired, {} orphans fixed",
                RunStatus::of(&report).as_str(),
                report.orgs_checked,
                report.drifted,
                report.repaired,
                report.orphans_fixed,
            )
        }
        Ok(PassOutcome::LockHeld) => format!("standby {now}: another instance holds the lock"),
        Err(e) => {
            let message = error_chain(&e);
            health.note_error(message.clone());
            format!("last pass {now} FAILED: {message}")
        }
    };
    let status = if health.is_stalled() {
        format!("STALLED; {status}")
    } else {
        status
    };
    Notifier::status(&status);
}
