//! The steps of one pass, in the order of docs/design.md ("One pass"): [`Pass::run`] reads
//! top to bottom as that list, each step a method of its own; [`Pass::finish`] is the one exit,
//! whatever happened: it closes the run row, logs the summary or the failure, and hands back
//! the outcome.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use tracing::{info, warn};
use uuid::Uuid;

use super::control::PassControl;
use super::journal::{self, RunStatus};
use super::orphans::{self, Attribution, Decision};
use super::queries::{self, PassQueries};
use super::repair::{self, RepairAction, RepairContext};
use super::report::{self, Correction, PassReport};
use super::usage::{self, OrgUsage, UsageScan};
use super::{PassOptions, PassOutcome};
use crate::config::Settings;
use crate::db::lock::AdvisoryLock;
use crate::db::{migrations, schema, Database, DbError, QueryContext};
use crate::telemetry::{self, error_chain, LineBudget, OrNull};

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
            report: PassReport {
                run_id,
                dry_run: options.dry_run,
                ..PassReport::default()
            },
        }
    }

    /// Steps 2–6, after the lock.
    pub async fn run(&mut self, db: &Database) -> Result<(), DbError> {
        let mut client = db.client().await?;
        let queries = self.prepare(&client).await?;
        self.open_run(&client).await?;
        self.control.progress.bump();
        let orphans_started = Instant::now();
        self.orphaned_calls(&client, &queries).await?;
        self.control.progress.bump();
        self.orphaned_users(&client).await?;
        self.report.orphans_ms = telemetry::millis(orphans_started.elapsed());
        if self.stop_requested() {
            return Ok(());
        }
        let period_start = usage::period_start(self.settings.usage.period, Utc::now());
        let scan = self.scan(&client, &queries, period_start).await?;
        self.report_disagreements(&scan);
        let drifted = self
            .classify_drift(&client, &queries, scan, period_start)
            .await?;
        self.repair(&mut client, &queries, &drifted, period_start)
            .await
    }

    /// The one exit of a pass: close the run row (as `ok` or `cancelled`, or as `failed` with
    /// the error) and log the summary or the failure. A failure to close the row is itself a
    /// failure of the pass, logged like any other.
    pub async fn finish(
        self,
        db: &Database,
        result: Result<(), DbError>,
        started: Instant,
    ) -> Result<PassOutcome, DbError> {
        let Self {
            run_open,
            mut report,
            ..
        } = self;
        report.duration = started.elapsed();
        let result = match result {
            Ok(()) if run_open => {
                let status = if report.cancelled {
                    RunStatus::Cancelled
                } else {
                    RunStatus::Ok
                };
                close_run(db, &report, status, None).await
            }
            other => other,
        };
        match result {
            Ok(()) => {
                report::log_summary(&report);
                Ok(PassOutcome::Completed(report))
            }
            Err(e) => {
                let message = report::log_failure(report.run_id, &e);
                if run_open {
                    // Best effort: the failure may be the connection itself.
                    let _ = close_run(db, &report, RunStatus::Failed, Some(&message)).await;
                }
                Err(e)
            }
        }
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
        let (run_id, mode) = (self.report.run_id, self.options.mode);
        if !self.options.dry_run {
            journal::open_run(&***client, run_id, mode, usage.period, usage.source).await?;
            self.run_open = true;
        }
        info!(
            %run_id,
            mode = mode.as_str(),
            dry_run = self.options.dry_run,
            period = usage.period.as_str(),
            source = usage.source.as_str(),
            "reconcile pass started"
        );
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

    fn budget(&self, kind: &'static str) -> LineBudget {
        LineBudget::new(kind, self.settings.alert.max_critical_lines_per_pass)
    }

    /// Step 3: attribute what can be attributed, report the rest.
    async fn orphaned_calls(
        &mut self,
        client: &Client,
        queries: &PassQueries,
    ) -> Result<(), DbError> {
        let run_id = self.report.run_id;
        let orphans = orphans::find(&***client, queries).await?;
        let mut warn_budget = self.budget("orphaned call");
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
                        report::log_ambiguous_orphan(run_id, call, &candidates);
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
        warn_budget.finish(run_id, false);
        self.attribute(client, &to_attribute).await
    }

    /// Step 3: attribute in batches, each one statement with its journal rows.
    async fn attribute(
        &mut self,
        client: &Client,
        to_attribute: &[Attribution],
    ) -> Result<(), DbError> {
        let (run_id, dry_run) = (self.report.run_id, self.options.dry_run);
        let mut info_budget = self.budget("orphaned call attributed");
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
                    report::log_attribution(run_id, a, dry_run);
                }
            }
        }
        info_budget.finish(run_id, false);
        Ok(())
    }

    /// The seed's "orphaned users" check: counted only; skipped where auth.users is not there.
    async fn orphaned_users(&mut self, client: &Client) -> Result<(), DbError> {
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
                info!(
                    reason = error_chain(&e).as_str(),
                    "orphaned users check skipped: auth.users is absent or unreadable"
                );
                Ok(())
            }
            Err(e) => Err(e).context("count orphaned users"),
        }
    }

    /// Step 4: the one statement that compares every counter with both ledgers, with a progress
    /// line every few seconds while it runs.
    async fn scan(
        &mut self,
        client: &Client,
        queries: &PassQueries,
        period_start: Option<DateTime<Utc>>,
    ) -> Result<UsageScan, DbError> {
        let run_id = self.report.run_id;
        let scan_started = Instant::now();
        let scan = usage::scan(&***client, queries, period_start);
        tokio::pin!(scan);
        let mut progress =
            tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        let scan = loop {
            tokio::select! {
                result = &mut scan => break result?,
                _ = progress.tick() => info!(
                    %run_id,
                    elapsed_s = scan_started.elapsed().as_secs(),
                    "reconcile pass progress: comparing used_minutes with the ledgers"
                ),
            }
        };
        self.report.scan_ms = telemetry::millis(scan_started.elapsed());
        self.control.progress.bump();
        self.report.orgs_checked = scan.orgs_checked;
        Ok(scan)
    }

    /// Step 6 (reports that are not corrections): unowned usage rows, ledger mismatches,
    /// organizations over their quota.
    fn report_disagreements(&mut self, scan: &UsageScan) {
        let run_id = self.report.run_id;
        let source = self.settings.usage.source;
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
        for org in scan.disagreeing.iter().filter(|o| o.is_over_quota(source)) {
            self.report.over_quota += 1;
            if quota_budget.allow() {
                report::log_over_quota(run_id, org, source);
            }
        }
        quota_budget.finish(run_id, false);
    }

    /// Step 4: which disagreeing organizations drifted; with a calendar month, which of those
    /// are the month-boundary reset instead; bad durations named beside real drift.
    async fn classify_drift(
        &mut self,
        client: &Client,
        queries: &PassQueries,
        scan: UsageScan,
        period_start: Option<DateTime<Utc>>,
    ) -> Result<Vec<OrgUsage>, DbError> {
        let source = self.settings.usage.source;
        let mut drifted: Vec<OrgUsage> = scan
            .disagreeing
            .into_iter()
            .filter(|o| o.is_drifted(source))
            .collect();
        if let Some(start) = period_start {
            self.period_rollover(client, queries, start, &mut drifted)
                .await?;
        }
        let real_drift: Vec<&OrgUsage> = drifted.iter().filter(|o| !o.is_period_reset()).collect();
        self.report.drifted = real_drift.len() as u64;
        self.report_bad_durations(client, &real_drift, period_start)
            .await?;
        Ok(drifted)
    }

    /// Step 5: settle, then confirm and repair batch by batch (a dry run only reports).
    async fn repair(
        &mut self,
        client: &mut Client,
        queries: &PassQueries,
        drifted: &[OrgUsage],
        period_start: Option<DateTime<Utc>>,
    ) -> Result<(), DbError> {
        let run_id = self.report.run_id;
        let usage = &self.settings.usage;
        let mut budgets = RepairBudgets {
            critical: self.budget("used_minutes drift"),
            resets: self.budget("period reset"),
        };
        if self.options.dry_run {
            for org in drifted {
                self.record(&mut budgets, org, &RepairAction::WouldRepair);
            }
            budgets.finish(run_id);
            return Ok(());
        }
        if !drifted.is_empty() && usage.settle_seconds > 0 {
            info!(
                drifted = drifted.len(),
                settle_seconds = usage.settle_seconds,
                %run_id,
                "waiting for drift to settle before repairing"
            );
            if !self.settle(Duration::from_secs(usage.settle_seconds)).await {
                return Ok(());
            }
        }
        let ctx = RepairContext {
            queries,
            run_id,
            source: usage.source,
            period: usage.period,
            period_start,
        };
        let repair_started = Instant::now();
        let result = self
            .repair_batches(client, &ctx, drifted, &mut budgets)
            .await;
        budgets.finish(run_id);
        self.report.repair_ms = telemetry::millis(repair_started.elapsed());
        result
    }

    /// Step 5: wait out the settle time in short slices (progress stays visible); false if
    /// cancelled.
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

    /// Step 5: one transaction per batch, the lock re-checked before each. A batch whose
    /// statement fails is rolled back whole and reported per organization; the next batch
    /// still runs unless the connection itself is gone.
    async fn repair_batches(
        &mut self,
        client: &mut Client,
        ctx: &RepairContext<'_>,
        drifted: &[OrgUsage],
        budgets: &mut RepairBudgets,
    ) -> Result<(), DbError> {
        let run_id = self.report.run_id;
        let mut last_progress = Instant::now();
        let batches: Vec<&OrgUsage> = drifted.iter().collect();
        for batch in batches.chunks(self.settings.usage.batch_size) {
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
            let result = repair::repair_batch(client, ctx, batch).await;
            self.control.progress.bump();
            match result {
                Ok(actions) => {
                    for (org_id, action) in actions {
                        let org = batch
                            .iter()
                            .find(|o| o.org_id == org_id)
                            .expect("actions are for the batch's organizations");
                        self.record(budgets, org, &action);
                    }
                }
                Err(e) if e.is_connection_loss() => return Err(e),
                Err(e) => {
                    let message = error_chain(&e);
                    for org in batch {
                        self.report.failed += 1;
                        report::log_update_failed(run_id, org.org_id, &message);
                    }
                }
            }
        }
        Ok(())
    }

    /// Calendar month: say when this is the first pass of a new month, and mark the drifted
    /// counters that hold the previous month plus this month (never reset at the boundary):
    /// their correction is the period reset, logged at INFO, not a drift.
    async fn period_rollover(
        &mut self,
        client: &Client,
        queries: &PassQueries,
        period_start: DateTime<Utc>,
        drifted: &mut [OrgUsage],
    ) -> Result<(), DbError> {
        let run_id = self.report.run_id;
        let history = client
            .query_one(queries::PERIOD_HISTORY, &[&period_start])
            .await
            .context("read the passes of earlier periods")?;
        let last_before: Option<DateTime<Utc>> = history.get(0);
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
        client: &Client,
        drifted: &[&OrgUsage],
        period_start: Option<DateTime<Utc>>,
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
        let (run_id, source) = (self.report.run_id, self.settings.usage.source);
        let reset = org.is_period_reset();
        match action {
            RepairAction::Repaired { .. } if reset => self.report.period_resets += 1,
            RepairAction::Repaired { .. } => self.report.repaired += 1,
            RepairAction::WouldRepair if reset => self.report.would_reset += 1,
            RepairAction::WouldRepair => self.report.would_repair += 1,
            RepairAction::LostRace { reason } => {
                self.report.lost_race += 1;
                if *reason == repair::ROW_BUSY {
                    warn!(
                        org_id = %org.org_id,
                        %run_id,
                        "organization row locked by another transaction; left for the next pass"
                    );
                }
            }
            RepairAction::Refused { reason } => {
                self.report.refused += 1;
                report::log_update_failed(run_id, org.org_id, reason);
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
                report::log_period_reset(run_id, org, source, action);
            }
        } else if budgets.critical.allow() {
            report::log_drift(run_id, org, source, action);
        }
    }
}

/// Close the run row on a pooled connection.
async fn close_run(
    db: &Database,
    report: &PassReport,
    status: RunStatus,
    error: Option<&str>,
) -> Result<(), DbError> {
    let client = db.client().await?;
    journal::close_run(&**client, report, status, error).await
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
