//! The steps of one pass, in the order of docs/design.md ("One pass"): [`Pass::run`] reads
//! top to bottom as that list, each step a method of its own; [`Pass::finish`] is the one exit,
//! whatever happened: it closes the run row, logs the summary or the failure, and hands back
//! the outcome.
//!
//! The steps live beside this file, one file per stage: `orphan_steps` (step 3),
//! `sweep_steps` and `incremental_steps` (step 4, by kind of pass), `usage_steps` (what is
//! common to both: drift, quota and the reports of step 6), `repair_steps` (step 5).

mod incremental_steps;
mod orphan_steps;
mod repair_steps;
mod replica_steps;
mod sweep_steps;
mod usage_steps;

use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::{info, warn};
use uuid::Uuid;

use super::control::PassControl;
use super::journal::{self, RunStatus};
use super::outcome::{PassError, PassKind, PassOptions, PassOutcome};
use super::queries::PassQueries;
use super::report::{self, PassReport};
use super::tracking;
use super::usage;
use super::visibility;
use crate::config::Settings;
use crate::db::lock::{self, AdvisoryLock, Fence};
use crate::db::{migrations, schema, Database, DbError, QueryContext};
use crate::telemetry::{self, LineBudget};

/// How often a long pass says where it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

type Client = deadpool_postgres::Object;

/// State of one pass in progress.
pub struct Pass<'a> {
    settings: &'a Settings,
    control: &'a PassControl,
    lock: &'a AdvisoryLock,
    options: PassOptions,
    /// A `reconciler.runs` row was opened and must be closed, whatever happens next.
    run_open: bool,
    /// The backend of the pass's pooled connection, to cancel its statement past the deadline.
    backend_pid: Option<i32>,
    /// An incremental pass's markers that keep its candidates in the log until they are
    /// settled (taken out again by `mark_unrepaired`).
    insurance: Vec<String>,
    /// The organizations this pass repaired (the rest of its drift gets a marker).
    repaired_ids: std::collections::HashSet<Uuid>,
    report: PassReport,
}

impl<'a> Pass<'a> {
    pub fn new(
        settings: &'a Settings,
        control: &'a PassControl,
        lock: &'a AdvisoryLock,
        run_id: Uuid,
        options: PassOptions,
    ) -> Self {
        Self {
            settings,
            control,
            lock,
            options,
            run_open: false,
            backend_pid: None,
            insurance: Vec::new(),
            repaired_ids: std::collections::HashSet::new(),
            report: PassReport {
                run_id,
                dry_run: options.dry_run,
                kind: options.kind,
                ..PassReport::default()
            },
        }
    }

    /// Steps 2–6, after the lock.
    pub async fn run(&mut self, db: &Database) -> Result<(), PassError> {
        let mut client = db.client().await?;
        let pid: i32 = client
            .query_one("SELECT pg_catalog.pg_backend_pid()", &[])
            .await
            .context("identify the pass's session")?
            .get(0);
        self.backend_pid = Some(pid);
        self.lock.record_pass(pid, self.report.run_id).await;
        let queries = self.prepare(&client).await?;
        let tracking = tracking::state(&**client).await?;
        self.choose_kind(&client, &tracking).await?;
        self.open_run(&client).await?;
        self.see_before_write(&client).await?;
        self.control.progress.bump();
        let orphans_started = Instant::now();
        self.orphaned_calls(&client, &queries).await?;
        self.control.progress.bump();
        self.report.orphans_ms = telemetry::millis(orphans_started.elapsed());
        if self.stop_requested() {
            return Ok(());
        }
        let period_start = usage::period_start(self.settings.usage.period, Utc::now());
        let scan = match self.report.kind {
            PassKind::Sweep => {
                self.sweep(db, &mut client, &queries, &tracking, period_start)
                    .await?
            }
            PassKind::Incremental => {
                self.incremental(&mut client, &queries, &tracking, period_start)
                    .await?
            }
        };
        self.report_disagreements(&scan);
        let drifted = self
            .classify_drift(&client, &queries, scan, period_start)
            .await?;
        self.repair(&mut client, &queries, &drifted, period_start)
            .await?;
        self.mark_unrepaired(&client, &drifted).await?;
        Ok(())
    }

    /// The one exit of a pass: close the run row (as `ok` or `cancelled`, or as `failed` with
    /// the error) and log the summary or the failure. A failure to close the row is itself a
    /// failure of the pass, logged like any other.
    pub async fn finish(
        self,
        db: &Database,
        result: Result<(), PassError>,
        started: Instant,
    ) -> Result<PassOutcome, PassError> {
        let fence = self.lock.fence();
        let Self {
            lock,
            run_open,
            mut report,
            ..
        } = self;
        report.duration = started.elapsed();
        let result = match result {
            // A fenced write says the lock is not ours; the lock's own connection says why:
            // lost with its connection (nobody took over) or really taken over.
            Err(PassError::Db(DbError::Fenced)) => Err(fenced_reason(lock).await),
            other => other,
        };
        let result = match result {
            Ok(()) if run_open => close_run(db, &report, RunStatus::of(&report), None, fence)
                .await
                .map_err(PassError::from),
            other => other,
        };
        match result {
            Ok(()) => {
                report::log_summary(&report);
                Ok(PassOutcome::Completed(report))
            }
            Err(e) => {
                let message = e.log(report.run_id);
                if run_open {
                    // Best effort: the failure may be the connection itself.
                    let _ = close_run(db, &report, RunStatus::Failed, Some(&message), fence).await;
                }
                Err(e)
            }
        }
    }

    /// Past the deadline: cancel whatever the pass's session is running (from a connection of
    /// its own: the pool may be exhausted), so the server stops working for nobody.
    pub async fn cancel_statement(&self, db: &Database) {
        let Some(pid) = self.backend_pid else {
            return;
        };
        warn!(
            backend_pid = pid,
            run_id = %self.report.run_id,
            "reconcile pass past its deadline: cancelling its statement"
        );
        let cancel = async {
            let conn = db.dedicated().await?;
            conn.client
                .query("SELECT pg_catalog.pg_cancel_backend($1)", &[&pid])
                .await
                .context("cancel the pass's statement")
        };
        let _ = tokio::time::timeout(lock::CHECK_TIMEOUT, cancel).await;
    }

    /// Step 2: migrations applied, every column present; the SQL for this schema.
    async fn prepare(&self, client: &Client) -> Result<PassQueries, DbError> {
        migrations::ensure_current(&***client).await?;
        let app_schema = schema::inspect(&***client).await?;
        Ok(PassQueries::new(&app_schema, &self.settings.usage))
    }

    /// Step 2: the run row (not in a dry run) and the start line.
    async fn open_run(&mut self, client: &Client) -> Result<(), DbError> {
        let usage = &self.settings.usage;
        let (run_id, mode, kind) = (self.report.run_id, self.options.mode, self.report.kind);
        if !self.options.dry_run {
            let fence = self.lock.fence();
            journal::open_run(
                &***client,
                run_id,
                (mode, kind),
                usage.period,
                usage.source,
                fence,
            )
            .await?;
            self.run_open = true;
        }
        info!(
            %run_id,
            mode = mode.as_str(),
            kind = kind.as_str(),
            dry_run = self.options.dry_run,
            period = usage.period.as_str(),
            source = usage.source.as_str(),
            "reconcile pass started"
        );
        Ok(())
    }

    /// Step 2: the login sees every row it reasons about and may write what it writes, or the
    /// pass refuses before writing anything (docs/design.md, "See before you write").
    async fn see_before_write(&self, client: &Client) -> Result<(), PassError> {
        let blind = visibility::check(&***client, self.settings.usage.source).await?;
        if blind.is_empty() {
            return Ok(());
        }
        for b in &blind {
            tracing::error!(
                table = b.table.as_str(),
                role = b.role.as_str(),
                problem = b.what.as_str(),
                fix = b.fix.as_str(),
                run_id = %self.report.run_id,
                "refusing to write: the login cannot see what the pass reasons about"
            );
        }
        Err(PassError::Blind(blind))
    }

    /// Shutdown asked the pass to stop: checked only at safe points (between batches).
    fn stop_requested(&mut self) -> bool {
        if self.control.cancel.is_cancelled() && !self.report.cancelled {
            self.report.cancelled = true;
            warn!(
                run_id = %self.report.run_id,
                "reconcile pass cancelled by shutdown; committed batches stay whole and journalled"
            );
        }
        self.report.cancelled
    }

    fn budget(&self, kind: &'static str) -> LineBudget {
        LineBudget::new(kind, self.settings.alert.max_critical_lines_per_pass)
    }
}

/// Close the run row on a pooled connection.
async fn close_run(
    db: &Database,
    report: &PassReport,
    status: RunStatus,
    error: Option<&str>,
    fence: Fence,
) -> Result<(), DbError> {
    let client = db.client().await?;
    journal::close_run(&**client, report, status, error, fence).await
}

/// Why a write was fenced: the lock's connection lost or unresponsive, else really taken over.
async fn fenced_reason(lock: &AdvisoryLock) -> PassError {
    match lock.ensure_held().await {
        Err(lost) => PassError::Db(lost),
        Ok(()) => PassError::Db(DbError::Fenced),
    }
}
