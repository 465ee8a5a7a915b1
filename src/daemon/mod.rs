//! The daemon (DESIGN.md §8): passes on the cron schedule until shutdown, one at a time, with
//! systemd notifications and stall alerts. Each pass is the same [`reconcile::run_once`] that
//! `--reconcile-now` runs; this module only decides when, and what happens around it.
//!
//! - [`schedule`]: cron parsing and the scheduler job that requests passes.
//! - [`notify`]: READY / STATUS / STOPPING / progress-based WATCHDOG.
//! - [`shutdown`]: SIGTERM / SIGINT / SIGHUP.
//! - [`health`]: the "stalled" alert.
//! - [`metrics`]: the optional Prometheus endpoint.
//! - [`ticker`]: when the idle loop wakes (ticks, overdue passes, heartbeats).
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};

use self::health::Health;
use self::metrics::Metrics;
use self::notify::Notifier;
use self::schedule::Schedule;
use self::ticker::{Ticker, Wake};
use crate::config::{ConfigError, DatabaseTarget, Settings};
use crate::db::{Database, DbError};
use crate::reconcile::control::{PassControl, Progress};
use crate::reconcile::{self, PassOptions, PassOutcome, RunMode};
use crate::telemetry::error_chain;
use crate::Error;

/// After the shutdown timeout has cancelled a pass, how long it may take to reach a safe point
/// before it is dropped (its open transaction, if any, is then rolled back by the server).
const CANCEL_GRACE: Duration = Duration::from_secs(10);
/// How often the idle loop proves it is alive and checks for a stall.
const IDLE_HEARTBEAT: Duration = Duration::from_secs(1);

/// Why a pass starts.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Start,
    Tick,
    Overdue,
}

/// Run passes on the schedule until `shutdown` completes.
///
/// # Errors
/// A schedule that cannot be started, or a bad `schedule.cron` (already rejected by config
/// validation, so only if validation was bypassed).
pub async fn run(
    settings: Settings,
    target: DatabaseTarget,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let schedule = Schedule::parse(&settings.schedule.cron).map_err(|message| ConfigError {
        key: Some("schedule.cron".into()),
        message,
    })?;
    let db = Database::new(&target, &settings)?;
    let metrics = Arc::new(Metrics::default());
    let metrics_server = match settings.metrics.listen_addr() {
        Some(addr) => {
            let listener = metrics::bind(addr).await.map_err(|e| {
                Error::Other(format!("Failed to listen on metrics.listen = {addr}: {e}"))
            })?;
            Some(tokio::spawn(metrics::serve(listener, metrics.clone())))
        }
        None => None,
    };
    let (tick_tx, ticks) = mpsc::channel::<()>(1);
    let pass_running = Arc::new(AtomicBool::new(false));
    let mut scheduler = schedule
        .start(tick_tx, pass_running.clone())
        .await
        .map_err(|e| Error::Other(format!("Failed to start the scheduler: {e}")))?;

    let progress = Progress::default();
    progress.bump();
    let watchdog_interval = Notifier::watchdog_interval();
    let watchdog =
        watchdog_interval.map(|interval| Notifier::spawn_watchdog(interval, progress.clone()));
    if let Some(interval) = watchdog_interval {
        if interval <= settings.statement_timeout() {
            warn!(
                watchdog_ms = crate::telemetry::millis(interval),
                statement_timeout_seconds = settings.database.statement_timeout_seconds,
                "WatchdogSec is not longer than database.statement_timeout_seconds: a long but \
                 healthy statement can get the service restarted"
            );
        }
    }
    let next = schedule
        .next_tick()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    info!(
        cron = schedule.expression(),
        next_tick = next.as_str(),
        run_on_start = settings.schedule.run_on_start,
        database = db.target(),
        "daemon started"
    );
    Notifier::ready(&format!("waiting; next pass {next}"));

    let mut health = Health::new(Duration::from_secs(settings.alert.stalled_after_seconds));
    let mut ticker = Ticker::new(ticks, schedule.overdue_after(), IDLE_HEARTBEAT);
    tokio::pin!(shutdown);
    let mut pending = settings.schedule.run_on_start.then_some(Trigger::Start);

    loop {
        let trigger = match pending.take() {
            Some(trigger) => trigger,
            None => match ticker.wait(&mut shutdown).await {
                Wake::Shutdown => break,
                Wake::Tick => Trigger::Tick,
                Wake::Overdue => Trigger::Overdue,
                Wake::Heartbeat => {
                    progress.bump();
                    health.check();
                    continue;
                }
            },
        };
        if let Trigger::Overdue = trigger {
            warn!(
                overdue_after_seconds = schedule.overdue_after().as_secs(),
                "no schedule tick for too long (was the wall clock set back?); running a pass now"
            );
        }
        ticker.pass_started();
        pass_running.store(true, Ordering::SeqCst);
        let control = PassControl {
            cancel: Default::default(),
            progress: progress.clone(),
        };
        let options = PassOptions {
            mode: RunMode::Daemon,
            dry_run: false,
        };
        let pass_started = Instant::now();
        let pass = reconcile::run_once(&db, &settings, options, &control);
        tokio::pin!(pass);
        let mut stopping = false;
        let result = tokio::select! {
            result = &mut pass => Some(result),
            () = &mut shutdown => {
                stopping = true;
                finish_or_cancel(pass.as_mut(), &control, &settings).await
            }
        };
        pass_running.store(false, Ordering::SeqCst);
        ticker.pass_finished();
        if let Some(result) = result {
            metrics.record(&result, pass_started.elapsed());
            record(result, &mut health);
        }
        if stopping {
            break;
        }
    }

    Notifier::stopping();
    info!("daemon stopping");
    let _ = scheduler.shutdown().await;
    if let Some(task) = watchdog {
        task.abort();
    }
    if let Some(task) = metrics_server {
        task.abort();
    }
    Ok(())
}

/// Shutdown arrived during a pass: let it finish within the timeout, then cancel it and give it
/// a short grace to reach a safe point. `None` if it had to be dropped.
async fn finish_or_cancel<F>(
    mut pass: std::pin::Pin<&mut F>,
    control: &PassControl,
    settings: &Settings,
) -> Option<Result<PassOutcome, DbError>>
where
    F: Future<Output = Result<PassOutcome, DbError>>,
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
fn record(result: Result<PassOutcome, DbError>, health: &mut Health) {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let status = match result {
        Ok(PassOutcome::Completed(report)) => {
            health.record_success();
            format!(
                "last pass {now}: {} orgs, {} drifted, {} repaired, {} orphans fixed{}",
                report.orgs_checked,
                report.drifted,
                report.repaired,
                report.orphans_fixed,
                if report.cancelled { " (cancelled)" } else { "" }
            )
        }
        Ok(PassOutcome::LockHeld) => {
            health.record_success();
            format!("standby {now}: another instance holds the lock")
        }
        Err(e) => {
            let message = error_chain(&e);
            health.record_failure(&message);
            health.check();
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
