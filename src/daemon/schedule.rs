//! The scheduler job that turns each tick of `schedule.cron` (already parsed and validated by
//! the configuration, [`CronSchedule`]) into a request for a pass.
//!
//! tokio-cron-scheduler spawns each tick and forgets it: it neither prevents overlapping runs
//! nor waits for them at shutdown. So a tick here runs nothing itself; it only asks the loop
//! for a pass, and is dropped (with an INFO line) when a pass is already running. It also reads
//! the wall clock: if that clock is set back, its next tick can be an hour away. The loop
//! therefore keeps its own monotonic guard ([`super::ticker`],
//! [`CronSchedule::overdue_after`]).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tracing::info;

use super::ticker::request_pass;
use crate::config::CronSchedule;

/// Start the scheduler; each tick sends a request on `ticks` unless `pass_running`.
///
/// # Errors
/// The scheduler could not be created or started.
pub async fn start(
    schedule: &CronSchedule,
    ticks: mpsc::Sender<()>,
    pass_running: Arc<AtomicBool>,
) -> Result<JobScheduler, JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;
    let job = Job::new_async(schedule.expression(), move |_id, _scheduler| {
        let ticks = ticks.clone();
        let pass_running = pass_running.clone();
        Box::pin(async move {
            if !request_pass(&ticks, &pass_running) {
                info!("schedule tick skipped: a pass is running or about to start");
            }
        })
    })?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    Ok(scheduler)
}
