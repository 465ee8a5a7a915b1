//! The scheduler jobs that turn each tick of `schedule.cron` (incremental passes) and of
//! `schedule.full_sweep_cron` (sweeps), already parsed and validated by the configuration
//! ([`CronSchedule`]), into requests for a pass.
//!
//! A sweep tick is never lost: it raises a flag that the loop reads when it starts its next
//! pass (at once when idle, else right after the running pass).
//!
//! tokio-cron-scheduler spawns each tick and forgets it: it neither prevents overlapping runs
//! nor waits for them at shutdown. So a tick here runs nothing itself; it only asks the loop
//! for a pass, and is dropped (with an INFO line) when a pass is already running. It also reads
//! the wall clock: if that clock is set back, its next tick can be an hour away. The loop
//! therefore keeps its own monotonic guard ([`super::ticker`],
//! [`CronSchedule::overdue_after`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tracing::info;

use super::ticker::request_pass;
use crate::config::CronSchedule;

/// Start the scheduler: each `schedule` tick sends a request on `ticks` unless
/// `pass_running`; each `sweeps` tick also sets `sweep_due`.
///
/// # Errors
/// The scheduler could not be created or started.
pub async fn start(
    schedule: &CronSchedule,
    sweeps: &CronSchedule,
    ticks: mpsc::Sender<()>,
    sweep_due: Arc<AtomicBool>,
    pass_running: Arc<AtomicBool>,
) -> Result<JobScheduler, JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;
    let incremental = {
        let (ticks, pass_running) = (ticks.clone(), pass_running.clone());
        Job::new_async(schedule.expression(), move |_id, _scheduler| {
            let ticks = ticks.clone();
            let pass_running = pass_running.clone();
            Box::pin(async move {
                if !request_pass(&ticks, &pass_running) {
                    info!("schedule tick skipped: a pass is running or about to start");
                }
            })
        })?
    };
    let sweep = Job::new_async(sweeps.expression(), move |_id, _scheduler| {
        let ticks = ticks.clone();
        let (sweep_due, pass_running) = (sweep_due.clone(), pass_running.clone());
        Box::pin(async move {
            sweep_due.store(true, Ordering::SeqCst);
            if !request_pass(&ticks, &pass_running) {
                info!("sweep due: it runs after the pass in progress");
            }
        })
    })?;
    scheduler.add(incremental).await?;
    scheduler.add(sweep).await?;
    scheduler.start().await?;
    Ok(scheduler)
}
