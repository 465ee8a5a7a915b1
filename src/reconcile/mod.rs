//! One reconcile pass (DESIGN.md §4), the single entry point [`run_once`] shared by the daemon,
//! `--reconcile-now`, `demo` and the tests.
//!
//! Order of work: take the advisory lock (or skip), check migrations and schema, open the run
//! row, attribute orphaned calls, compare counters with the ledgers (with a calendar-month
//! period also: over-quota warnings, and counters never reset at the month boundary marked as
//! period resets rather than drift), wait for drift to settle, confirm and repair in batches
//! (re-checking the lock before each), close the run row, log the summary.
//!
//! Modules: [`orphans`], [`usage`], [`journal`], [`report`], [`queries`].

pub mod control;
pub mod journal;
pub mod orphans;
pub mod queries;
pub mod report;
pub mod usage;

use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tracing::{info, warn};
use uuid::Uuid;

use self::control::PassControl;
use self::journal::RunStatus;
use self::orphans::{Attribution, Decision};
use self::queries::PassQueries;
use self::report::{Correction, LineBudget, OrNull};
use self::usage::{OrgUsage, RepairAction, RepairContext};
use crate::config::Settings;
use crate::db::lock::AdvisoryLock;
use crate::db::{migrations, schema, Database, DbError, QueryContext};
use crate::telemetry::error_chain;

/// How often a long pass says where it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

fn elapsed_ms(since: Instant) -> u64 {
    crate::telemetry::millis(since.elapsed())
}

/// Who started the pass; recorded in `reconciler.runs.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    Daemon,
    Once,
    Demo,
}

impl RunMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daemon => "daemon",
            Self::Once => "once",
            Self::Demo => "demo",
        }
    }
}

/// How to run one pass.
#[derive(Debug, Clone, Copy)]
pub struct PassOptions {
    pub mode: RunMode,
    /// Report only: no run row, no attribution, no repair, no settle wait.
    pub dry_run: bool,
}

/// The result of a pass that did not fail.
// One value per pass: its size does not matter, and boxing would only add noise at every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum PassOutcome {
    /// Another instance holds the advisory lock; nothing was done or written.
    LockHeld,
    Completed(PassReport),
}

/// What one pass found and did.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    pub run_id: Uuid,
    pub dry_run: bool,
    pub orgs_checked: i64,
    pub drifted: u64,
    pub repaired: u64,
    pub would_repair: u64,
    pub lost_race: u64,
    pub refused: u64,
    pub failed: u64,
    pub ledger_mismatches: u64,
    /// Counters reset at the month boundary (calendar_month), and in a dry run those that would be.
    pub period_resets: u64,
    pub would_reset: u64,
    /// Organizations over `max_minutes_monthly` (calendar_month).
    pub over_quota: u64,
    /// Attributed (or, in a dry run, attributable) orphaned calls.
    pub orphans_fixed: u64,
    pub orphans_ambiguous: u64,
    pub orphans_no_membership: u64,
    /// `None` when `auth.users` is absent or unreadable.
    pub orphaned_users: Option<i64>,
    /// Completed calls with NULL / negative durations in drifted organizations (counted 0).
    pub null_durations: i64,
    pub negative_durations: i64,
    pub duration: Duration,
    pub corrections: Vec<Correction>,
    /// Stopped early by shutdown; what was committed is whole and journalled.
    pub cancelled: bool,
    /// Time spent on orphaned calls and users, on the usage comparison, and on repairs.
    pub orphans_ms: u64,
    pub scan_ms: u64,
    pub repair_ms: u64,
}

impl PassReport {
    /// Orphaned calls left alone (ambiguous or without membership).
    pub fn orphans_left(&self) -> u64 {
        self.orphans_ambiguous + self.orphans_no_membership
    }

    /// Some counter is still wrong after this pass (exit 2 for `--reconcile-now`).
    pub fn drift_left(&self) -> bool {
        self.would_repair + self.lost_race + self.refused + self.failed > 0
    }
}

/// Run one pass.
///
/// # Errors
/// Connection loss, an unmigrated database, a missing column, a failed statement, or loss of
/// the advisory lock. Batches committed before the failure stay committed and journalled.
pub async fn run_once(
    db: &Database,
    settings: &Settings,
    options: PassOptions,
    control: &PassControl,
) -> Result<PassOutcome, DbError> {
    let started = Instant::now();
    control.progress.bump();
    let run_id = Uuid::new_v4();
    let lock = match AdvisoryLock::try_acquire(db, settings.lock.key).await {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            info!(
                lock_key = settings.lock.key,
                "reconcile pass skipped: the advisory lock is held by another instance"
            );
            return Ok(PassOutcome::LockHeld);
        }
        Err(e) => {
            log_failure(run_id, &e);
            return Err(e);
        }
    };
    let mut pass = Pass {
        settings,
        control,
        lock: &lock,
        run_open: false,
        report: PassReport {
            run_id,
            dry_run: options.dry_run,
            ..PassReport::default()
        },
    };
    let result = pass.run(db, options).await;
    let run_open = pass.run_open;
    let mut report = pass.report;
    report.duration = started.elapsed();
    let outcome = match result {
        Ok(()) => {
            if run_open {
                let status = if report.cancelled {
                    RunStatus::Cancelled
                } else {
                    RunStatus::Ok
                };
                let client = db.client().await?;
                journal::close_run(&**client, &report, status, None).await?;
            }
            report::log_summary(&report);
            Ok(PassOutcome::Completed(report))
        }
        Err(e) => {
            let message = log_failure(run_id, &e);
            if run_open {
                // Best effort: the failure may be the connection itself.
                if let Ok(client) = db.client().await {
                    let _ =
                        journal::close_run(&**client, &report, RunStatus::Failed, Some(&message))
                            .await;
                }
            }
            Err(e)
        }
    };
    lock.release().await;
    outcome
}

/// The one `ERROR reconcile pass failed` line; returns the message for the run row.
fn log_failure(run_id: Uuid, error: &DbError) -> String {
    let message = error_chain(error);
    tracing::error!(%run_id, error = message.as_str(), "reconcile pass failed");
    message
}

/// State of one pass in progress.
struct Pass<'a> {
    settings: &'a Settings,
    control: &'a PassControl,
    lock: &'a AdvisoryLock,
    /// A `reconciler.runs` row was opened and must be closed, whatever happens next.
    run_open: bool,
    report: PassReport,
}

impl Pass<'_> {
    /// The pass after the lock.
    async fn run(&mut self, db: &Database, options: PassOptions) -> Result<(), DbError> {
        let mut client = db.client().await?;
        migrations::ensure_current(&**client).await?;
        let app_schema = schema::inspect(&**client).await?;
        let usage_settings = &self.settings.usage;
        let queries = PassQueries::new(&app_schema, usage_settings);
        let run_id = self.report.run_id;
        if !options.dry_run {
            journal::open_run(
                &**client,
                run_id,
                options.mode,
                usage_settings.period,
                usage_settings.source,
            )
            .await?;
            self.run_open = true;
        }
        info!(
            %run_id,
            mode = options.mode.as_str(),
            dry_run = options.dry_run,
            period = usage_settings.period.as_str(),
            source = usage_settings.source.as_str(),
            "reconcile pass started"
        );
        self.control.progress.bump();
        let orphans_started = Instant::now();
        self.orphaned_calls(&client, &queries, options.dry_run)
            .await?;
        self.control.progress.bump();
        self.orphaned_users(&client).await?;
        self.report.orphans_ms = elapsed_ms(orphans_started);
        if !self.stop_requested() {
            self.usage(&mut client, &queries, options.dry_run).await?;
        }
        Ok(())
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

    /// Wait out the settle time in short slices (progress stays visible); false if cancelled.
    async fn settle(&mut self, total: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + total;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return true;
            }
            let slice = (deadline - now).min(Duration::from_secs(1));
            tokio::select! {
                () = tokio::time::sleep(slice) => self.control.progress.bump(),
                () = self.control.cancel.cancelled() => return !self.stop_requested(),
            }
        }
    }

    fn budget(&self, kind: &'static str) -> LineBudget {
        LineBudget::new(kind, self.settings.alert.max_critical_lines_per_pass)
    }

    /// Step 3: attribute what can be attributed, report the rest.
    async fn orphaned_calls(
        &mut self,
        client: &deadpool_postgres::Object,
        queries: &PassQueries,
        dry_run: bool,
    ) -> Result<(), DbError> {
        let run_id = self.report.run_id;
        let orphans = orphans::find(&***client, queries).await?;
        let mut warn_budget = self.budget("orphaned call");
        let mut info_budget = self.budget("orphaned call attributed");
        let mut to_attribute = Vec::new();
        for call in &orphans {
            match orphans::decide(call, self.settings.orphans.ambiguous) {
                Decision::Attribute { org_id, rule } => to_attribute.push(Attribution {
                    call_id: call.call_id,
                    org_id,
                    rule,
                }),
                Decision::Ambiguous { candidates } => {
                    self.report.orphans_ambiguous += 1;
                    if warn_budget.allow() {
                        let candidate_orgs = candidates
                            .iter()
                            .map(Uuid::to_string)
                            .collect::<Vec<_>>()
                            .join(",");
                        warn!(
                            call_id = %call.call_id,
                            user_id = %OrNull(call.user_id),
                            candidate_orgs = candidate_orgs.as_str(),
                            %run_id,
                            "orphaned call ambiguous"
                        );
                    }
                }
                Decision::NoMembership => {
                    self.report.orphans_no_membership += 1;
                    if warn_budget.allow() {
                        warn!(
                            call_id = %call.call_id,
                            user_id = %OrNull(call.user_id),
                            %run_id,
                            "orphaned call without membership"
                        );
                    }
                }
            }
        }
        for batch in to_attribute.chunks(self.settings.usage.batch_size) {
            if self.stop_requested() {
                break;
            }
            let attributed = if dry_run {
                batch.iter().map(|a| a.call_id).collect()
            } else {
                self.lock.ensure_held().await?;
                orphans::attribute(&***client, run_id, batch).await?
            };
            self.control.progress.bump();
            self.report.orphans_fixed += attributed.len() as u64;
            for a in batch.iter().filter(|a| attributed.contains(&a.call_id)) {
                if info_budget.allow() {
                    info!(
                        call_id = %a.call_id,
                        org_id = %a.org_id,
                        rule = a.rule.as_str(),
                        action = if dry_run { "would_attribute" } else { "attributed" },
                        %run_id,
                        "orphaned call attributed"
                    );
                }
            }
        }
        warn_budget.finish(run_id, false);
        info_budget.finish(run_id, false);
        Ok(())
    }

    /// The seed's "orphaned users" check: counted only; skipped where auth.users is not there.
    async fn orphaned_users(&mut self, client: &deadpool_postgres::Object) -> Result<(), DbError> {
        match client.query_one(queries::ORPHANED_USERS, &[]).await {
            Ok(row) => {
                let n: i64 = row.get(0);
                self.report.orphaned_users = Some(n);
                if n > 0 {
                    info!(orphaned_users = n, run_id = %self.report.run_id, "users without any organization");
                }
                Ok(())
            }
            Err(e)
                if [
                    SqlState::UNDEFINED_TABLE,
                    SqlState::INVALID_SCHEMA_NAME,
                    SqlState::INSUFFICIENT_PRIVILEGE,
                ]
                .iter()
                .any(|c| e.code() == Some(c)) =>
            {
                info!(reason = %e, "orphaned users check skipped: auth.users is absent or unreadable");
                Ok(())
            }
            Err(e) => Err(e).context("count orphaned users"),
        }
    }

    /// Steps 4–5: compare, settle, confirm and repair.
    async fn usage(
        &mut self,
        client: &mut deadpool_postgres::Object,
        queries: &PassQueries,
        dry_run: bool,
    ) -> Result<(), DbError> {
        let run_id = self.report.run_id;
        // Copy the reference out of self: the settle wait below needs `&mut self`.
        let all_settings: &Settings = self.settings;
        let settings = &all_settings.usage;
        let period_start = usage::period_start(settings.period, chrono::Utc::now());
        let scan_started = Instant::now();
        let scan = {
            // One statement does the whole comparison; say it is still running.
            let scan = usage::scan(&***client, queries, period_start);
            tokio::pin!(scan);
            let mut progress = tokio::time::interval_at(
                tokio::time::Instant::now() + PROGRESS_EVERY,
                PROGRESS_EVERY,
            );
            loop {
                tokio::select! {
                    result = &mut scan => break result?,
                    _ = progress.tick() => info!(
                        %run_id,
                        elapsed_s = scan_started.elapsed().as_secs(),
                        "reconcile pass progress: comparing used_minutes with the ledgers"
                    ),
                }
            }
        };
        self.report.scan_ms = elapsed_ms(scan_started);
        self.control.progress.bump();
        self.report.orgs_checked = scan.orgs_checked;
        if scan.unowned_metric_minutes > 0 {
            warn!(
                minutes = scan.unowned_metric_minutes,
                %run_id,
                "usage_metrics rows without organization_id ignored"
            );
        }
        let mut mismatch_budget = self.budget("ledger mismatch");
        for org in scan.disagreeing.iter().filter(|o| o.ledgers_disagree()) {
            self.report.ledger_mismatches += 1;
            if mismatch_budget.allow() {
                report::log_ledger_mismatch(run_id, org);
            }
        }
        mismatch_budget.finish(run_id, false);
        let mut quota_budget = self.budget("over quota");
        for org in scan
            .disagreeing
            .iter()
            .filter(|o| o.is_over_quota(settings.source))
        {
            self.report.over_quota += 1;
            if quota_budget.allow() {
                report::log_over_quota(run_id, org, settings.source);
            }
        }
        quota_budget.finish(run_id, false);

        let mut drifted_orgs: Vec<OrgUsage> = scan
            .disagreeing
            .into_iter()
            .filter(|o| o.is_drifted(settings.source))
            .collect();
        if let Some(start) = period_start {
            self.period_rollover(client, queries, start, &mut drifted_orgs)
                .await?;
        }
        let drifted: Vec<&OrgUsage> = drifted_orgs.iter().collect();
        let real_drift: Vec<&OrgUsage> = drifted
            .iter()
            .copied()
            .filter(|o| !o.is_period_reset())
            .collect();
        self.report.drifted = real_drift.len() as u64;
        self.report_bad_durations(client, &real_drift, period_start)
            .await?;
        let mut budgets = RepairBudgets {
            critical: self.budget("used_minutes drift"),
            resets: self.budget("period reset"),
        };
        if dry_run {
            for org in &drifted {
                self.record(&mut budgets, org, &RepairAction::WouldRepair);
            }
            budgets.finish(run_id);
            return Ok(());
        }
        if !drifted.is_empty() && settings.settle_seconds > 0 {
            info!(
                drifted = drifted.len(),
                settle_seconds = settings.settle_seconds,
                %run_id,
                "waiting for drift to settle before repairing"
            );
            if !self
                .settle(Duration::from_secs(settings.settle_seconds))
                .await
            {
                return Ok(());
            }
        }
        let ctx = RepairContext {
            queries,
            run_id,
            source: settings.source,
            period: settings.period,
            period_start,
        };
        let repair_started = Instant::now();
        let mut last_progress = Instant::now();
        for batch in drifted.chunks(settings.batch_size) {
            if self.stop_requested() {
                break;
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                info!(
                    %run_id,
                    drifted = drifted.len(),
                    repaired = self.report.repaired,
                    lost_race = self.report.lost_race,
                    failed = self.report.failed,
                    "reconcile pass progress: repairing"
                );
            }
            self.lock.ensure_held().await?;
            let result = usage::repair_batch(client, &ctx, batch).await;
            self.control.progress.bump();
            match result {
                Ok(actions) => {
                    for (org_id, action) in actions {
                        let org = batch
                            .iter()
                            .find(|o| o.org_id == org_id)
                            .expect("actions are for the batch's organizations");
                        self.record(&mut budgets, org, &action);
                    }
                }
                Err(e) if is_connection_loss(&e) => return Err(e),
                Err(e) => {
                    // A statement failed (e.g. lock_timeout): this batch is rolled back whole;
                    // say so per organization and go on with the next batch.
                    let message = error_chain(&e);
                    for org in batch {
                        self.report.failed += 1;
                        report::log_update_failed(run_id, org.org_id, &message);
                    }
                }
            }
        }
        budgets.finish(run_id);
        self.report.repair_ms = elapsed_ms(repair_started);
        Ok(())
    }

    /// Calendar month: say when this is the first pass of a new month, and mark the drifted
    /// counters that hold the previous month plus this month (never reset at the boundary):
    /// their correction is the period reset, logged at INFO, not a drift.
    async fn period_rollover(
        &mut self,
        client: &deadpool_postgres::Object,
        queries: &PassQueries,
        period_start: chrono::DateTime<chrono::Utc>,
        drifted: &mut [OrgUsage],
    ) -> Result<(), DbError> {
        let run_id = self.report.run_id;
        let history = client
            .query_one(queries::PERIOD_HISTORY, &[&period_start])
            .await
            .context("read the passes of earlier periods")?;
        let last_before: Option<chrono::DateTime<chrono::Utc>> = history.get(0);
        let any_since: bool = history.get(1);
        if let (Some(last_before), false) = (last_before, any_since) {
            info!(
                period_start = %period_start.to_rfc3339(),
                previous_period_start = %usage::previous_period_start(period_start).to_rfc3339(),
                last_pass_before = %last_before.to_rfc3339(),
                %run_id,
                "billing period rolled over: counters now cover the new calendar month"
            );
        }
        let source = self.settings.usage.source;
        let ids: Vec<Uuid> = drifted.iter().map(|o| o.org_id).collect();
        let previous =
            usage::previous_period_totals(&***client, queries, &ids, period_start).await?;
        for org in drifted.iter_mut() {
            if let Some(&minutes) = previous.get(&org.org_id) {
                let never_reset = org.stored.map(i64::from) == Some(minutes + org.expected(source));
                if minutes > 0 && never_reset {
                    org.previous_period_minutes = Some(minutes);
                }
            }
        }
        Ok(())
    }

    /// Name the bad durations (counted as 0) of drifted organizations: where bad data can
    /// explain a drift, the operator should see it next to the CRITICAL line.
    async fn report_bad_durations(
        &mut self,
        client: &deadpool_postgres::Object,
        drifted: &[&OrgUsage],
        period_start: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(), DbError> {
        let ids: Vec<Uuid> = drifted.iter().map(|o| o.org_id).collect();
        let mut budget = self.budget("bad durations");
        for (org_id, nulls, negatives) in
            usage::bad_durations(&***client, &ids, period_start).await?
        {
            self.report.null_durations += nulls;
            self.report.negative_durations += negatives;
            if budget.allow() {
                warn!(
                    %org_id,
                    null_durations = nulls,
                    negative_durations = negatives,
                    run_id = %self.report.run_id,
                    "completed calls with NULL or negative duration_minutes counted as 0"
                );
            }
        }
        budget.finish(self.report.run_id, false);
        Ok(())
    }

    /// Count an action and log its line (within the budgets): CRITICAL for a drift, INFO for
    /// a period reset.
    fn record(&mut self, budgets: &mut RepairBudgets, org: &OrgUsage, action: &RepairAction) {
        let source = self.settings.usage.source;
        let reset = org.is_period_reset();
        match action {
            RepairAction::Repaired { .. } if reset => self.report.period_resets += 1,
            RepairAction::Repaired { .. } => self.report.repaired += 1,
            RepairAction::WouldRepair if reset => self.report.would_reset += 1,
            RepairAction::WouldRepair => self.report.would_repair += 1,
            RepairAction::LostRace { reason } => {
                self.report.lost_race += 1;
                if *reason == usage::ROW_BUSY {
                    warn!(
                        org_id = %org.org_id,
                        run_id = %self.report.run_id,
                        "organization row locked by another transaction; left for the next pass"
                    );
                }
            }
            RepairAction::Refused { reason } => {
                self.report.refused += 1;
                report::log_update_failed(self.report.run_id, org.org_id, reason);
            }
        }
        self.report.corrections.push(Correction {
            org_name: org.name.clone(),
            stored: org.stored,
            expected: org.expected(source),
            action: if reset {
                "period reset"
            } else {
                action.label()
            },
        });
        if reset {
            if budgets.resets.allow() {
                report::log_period_reset(self.report.run_id, org, source, action);
            }
        } else if budgets.critical.allow() {
            report::log_drift(self.report.run_id, org, source, action);
        }
    }
}

/// Line caps for the repair step: CRITICAL drift lines and INFO period-reset lines.
struct RepairBudgets {
    critical: LineBudget,
    resets: LineBudget,
}

impl RepairBudgets {
    fn finish(&self, run_id: Uuid) {
        self.critical.finish(run_id, true);
        self.resets.finish(run_id, false);
    }
}

/// The connection is gone: continuing would fail every batch the same way.
fn is_connection_loss(e: &DbError) -> bool {
    match e {
        DbError::Query { source, .. } => source.is_closed() || source.code().is_none(),
        _ => true,
    }
}
