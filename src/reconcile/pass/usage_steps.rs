//! Step 4 of a pass: the comparison of every counter with both ledgers, what it reports that
//! is not a correction (unowned usage rows, ledger mismatches, quota), and which disagreements
//! are drift (or, in a calendar month, the month-boundary reset).

use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::{info, warn};
use uuid::Uuid;

use super::{Client, Pass, PROGRESS_EVERY};
use crate::db::{DbError, QueryContext};
use crate::reconcile::guard;
use crate::reconcile::mismatch::{self, LedgerMismatch};
use crate::reconcile::queries::{self, PassQueries};
use crate::reconcile::report;
use crate::reconcile::usage::{self, OrgUsage, UsageScan};
use crate::telemetry;

impl Pass<'_> {
    /// Step 4: the one statement that compares every counter with both ledgers, with a progress
    /// line every few seconds while it runs.
    pub(super) async fn scan(
        &mut self,
        client: &Client,
        queries: &PassQueries,
        period_start: Option<DateTime<Utc>>,
    ) -> Result<UsageScan, DbError> {
        let run_id = self.report.run_id;
        let scan_started = Instant::now();
        let known = &self.settings.usage.known_statuses;
        let scan = usage::scan(&***client, queries, period_start, known);
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

    /// Step 6 (reports that are not corrections): unknown call statuses, unowned usage rows,
    /// organizations over their quota. (Ledger mismatches: [`Pass::ledger_mismatches`].)
    pub(super) fn report_disagreements(&mut self, scan: &UsageScan) {
        let run_id = self.report.run_id;
        let source = self.settings.usage.source;
        let mut status_budget = self.budget("unknown call status");
        for (status, calls) in &scan.unknown_statuses {
            self.report.unknown_status_calls += calls;
            if status_budget.allow() {
                report::log_unknown_status(run_id, status.as_deref(), *calls);
            }
        }
        status_budget.finish(run_id, false);
        if scan.unowned_metric_minutes > 0 {
            warn!(
                minutes = scan.unowned_metric_minutes,
                %run_id,
                "usage_metrics rows without organization_id ignored"
            );
        }
        let mut quota_budget = self.budget("over quota");
        for org in scan.disagreeing.iter().filter(|o| o.is_over_quota(source)) {
            self.report.over_quota += 1;
            if quota_budget.allow() {
                report::log_over_quota(run_id, org, source);
            }
        }
        quota_budget.finish(run_id, false);
    }

    /// Step 6, ledger mismatches: kept as state, so only what appeared, changed or resolved
    /// since the last pass is logged; a dry run writes nothing and lists every current one.
    pub(super) async fn ledger_mismatches(
        &mut self,
        client: &Client,
        scan: &UsageScan,
    ) -> Result<(), DbError> {
        let run_id = self.report.run_id;
        let current: Vec<&OrgUsage> = scan
            .disagreeing
            .iter()
            .filter(|o| o.ledgers_disagree())
            .collect();
        self.report.ledger_mismatches = current.len() as u64;
        let to_log = if self.options.dry_run {
            current.iter().map(|o| LedgerMismatch::current(o)).collect()
        } else {
            mismatch::sync(&***client, &current, run_id, self.lock.fence()).await?
        };
        let mut budget = self.budget("ledger mismatch");
        for mismatch in &to_log {
            if budget.allow() {
                mismatch.log(run_id);
            }
        }
        budget.finish(run_id, false);
        Ok(())
    }

    /// Step 4: which disagreeing organizations drifted; with a calendar month, which of those
    /// are the month-boundary reset instead; bad durations named beside real drift.
    pub(super) async fn classify_drift(
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
        self.report_bad_values(client, queries, &real_drift, period_start)
            .await?;
        self.report.mass_correction = guard::evaluate(
            &drifted,
            source,
            scan.orgs_checked,
            scan.billed_minutes,
            &self.settings.guard,
        );
        Ok(drifted)
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
                let never_reset = org.stored == Some(minutes.saturating_add(org.expected(source)));
                if minutes > 0 && never_reset {
                    org.previous_period_minutes = Some(minutes);
                }
            }
        }
        Ok(())
    }

    /// Name the bad values (durations counted as 0, metric values left out) of drifted
    /// organizations: where bad data can explain a drift, the operator should see it next to
    /// the CRITICAL line.
    async fn report_bad_values(
        &mut self,
        client: &Client,
        queries: &PassQueries,
        drifted: &[&OrgUsage],
        period_start: Option<DateTime<Utc>>,
    ) -> Result<(), DbError> {
        let ids: Vec<Uuid> = drifted.iter().map(|o| o.org_id).collect();
        let mut budget = self.budget("bad durations");
        for (org_id, bad) in usage::bad_values(&***client, queries, &ids, period_start).await? {
            self.report.null_durations += bad.null_durations;
            self.report.negative_durations += bad.negative_durations;
            self.report.invalid_durations += bad.invalid_durations;
            self.report.invalid_metric_values += bad.invalid_metric_values;
            if budget.allow() {
                report::log_bad_values(self.report.run_id, org_id, &bad);
            }
        }
        budget.finish(self.report.run_id, false);
        Ok(())
    }
}
