//! Steps 4 and 6 of a pass, whatever found the disagreements (a sweep or an incremental
//! comparison): what is reported that is not a correction (unknown statuses, unowned usage
//! rows, ledger mismatches, quota), and which disagreements are drift (or, in a calendar month,
//! the month-boundary reset).

use chrono::{DateTime, Utc};
use tracing::{info, warn};
use uuid::Uuid;

use super::{Client, Pass};
use crate::db::{DbError, QueryContext};
use crate::reconcile::guard;
use crate::reconcile::mismatch::{self, Change, LedgerMismatch};
use crate::reconcile::queries::{self, PassQueries};
use crate::reconcile::report;
use crate::reconcile::usage::{self, OrgUsage, UsageScan};
use crate::telemetry::LineBudget;

impl Pass<'_> {
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

    /// Step 6, ledger mismatches: the changes the comparison found against the recorded state
    /// are applied (not in a dry run) and logged, only what really changed (docs/design.md,
    /// "Ledger mismatches"). Returns (appeared, resolved) as applied.
    pub(super) async fn apply_mismatches(
        &mut self,
        client: &impl tokio_postgres::GenericClient,
        changes: &[LedgerMismatch],
        budget: &mut LineBudget,
    ) -> Result<(i64, i64), DbError> {
        let run_id = self.report.run_id;
        let applied = if self.options.dry_run {
            changes.to_vec()
        } else {
            mismatch::apply(client, changes, run_id, self.lock.fence()).await?
        };
        let mut counts = (0, 0);
        for change in &applied {
            match change.change {
                Change::Appeared => counts.0 += 1,
                Change::Resolved => counts.1 += 1,
                Change::Changed => {}
            }
            if budget.allow() {
                change.log(run_id);
            }
        }
        Ok(counts)
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
        // An incremental pass measures against the latest sweep's totals: what it saw is only
        // the organizations in the change log.
        self.report.mass_correction = guard::evaluate(
            &drifted,
            source,
            scan.guard_orgs.unwrap_or(scan.orgs_checked),
            scan.guard_billed_minutes.unwrap_or(scan.billed_minutes),
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
        let mut budget = self.budget("bad durations");
        for (org_id, bad) in usage::bad_values(&***client, queries, drifted, period_start).await? {
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
