//! Step 4 of an incremental pass (docs/design.md, "Cost follows activity"): compare only the
//! organizations in the change log, from the log alone, then re-read the candidates
//! exactly from the ledgers; and the rules that turn an incremental pass into a sweep when
//! the tracking cannot be trusted.

use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::info;
use uuid::Uuid;

use super::{Client, Pass};
use crate::config::Period;
use crate::db::{DbError, QueryContext};
use crate::reconcile::mismatch::LedgerMismatch;
use crate::reconcile::outcome::PassKind;
use crate::reconcile::queries::{self, PassQueries};
use crate::reconcile::scan::{self, ScanArgs};
use crate::reconcile::tracking::{self, TrackingState};
use crate::reconcile::usage::{self, OrgUsage, UsageScan};
use crate::telemetry;

impl Pass<'_> {
    /// Before the run row: an incremental pass becomes a sweep when the tracking cannot answer
    /// (not built yet; a TRUNCATE logged; the first pass of a calendar month, when every
    /// counter resets; no sweep totals for the guard yet).
    pub(super) async fn choose_kind(
        &mut self,
        client: &Client,
        tracking: &TrackingState,
    ) -> Result<(), DbError> {
        if self.report.kind != PassKind::Incremental {
            return Ok(());
        }
        let reason = if !tracking.initialized {
            Some("the change tracking is not built yet (this sweep builds it)")
        } else if tracking.sweep_orgs.is_none() {
            Some("no sweep has recorded its totals yet")
        } else if !tracking::unknown_markers(&***client).await?.is_empty() {
            Some("a TRUNCATE was logged: which organizations changed is unknown")
        } else if self.first_pass_of_the_month(client).await? {
            Some("the first pass of a calendar month: every counter resets")
        } else {
            None
        };
        if let Some(reason) = reason {
            info!(reason, run_id = %self.report.run_id, "incremental pass runs as a sweep");
            self.report.kind = PassKind::Sweep;
        }
        Ok(())
    }

    /// No pass ran in this calendar month yet (all_time: never).
    async fn first_pass_of_the_month(&self, client: &Client) -> Result<bool, DbError> {
        if self.settings.usage.period != Period::CalendarMonth {
            return Ok(false);
        }
        let Some(start) = usage::period_start(Period::CalendarMonth, Utc::now()) else {
            return Ok(false);
        };
        let history = client
            .query_one(queries::PERIOD_HISTORY, &[&start])
            .await
            .context("read the passes of this period")?;
        Ok(!history.get::<_, bool>(1))
    }

    /// Step 4 of an incremental pass; returns the candidates, re-read exactly.
    pub(super) async fn incremental(
        &mut self,
        client: &mut Client,
        queries: &PassQueries,
        tracking: &TrackingState,
        period_start: Option<DateTime<Utc>>,
    ) -> Result<UsageScan, DbError> {
        let (run_id, fence) = (self.report.run_id, self.lock.fence());
        let started = Instant::now();
        // The consumption writes: a lost lock connection is said as such, not only as a fence.
        self.lock.ensure_held().await?;
        let consuming = tracking::Consuming::begin(client, self.options.dry_run).await?;
        let found = consuming.compare(queries, period_start).await?;
        crate::fault::pause("compared").await;
        let candidates: Vec<Uuid> = found.disagreeing.iter().map(|o| o.org_id).collect();
        self.report.candidates = candidates.len() as u64;
        let (mut scan, changes) = self
            .reread(consuming.reader(), queries, &candidates, period_start)
            .await?;
        let (consumed, drain) = consuming.commit(&found, &candidates, fence).await?;
        tracking::switch(client, drain).await?;
        self.report.log_rows_folded = consumed.folded;
        self.insurance = consumed.insurance;
        let mut budget = self.budget("ledger mismatch");
        let (appeared, resolved) = self
            .apply_mismatches(&***client, &changes, &mut budget)
            .await?;
        budget.finish(run_id, false);
        let open = tracking.last_mismatches.unwrap_or(0) + appeared - resolved;
        self.report.ledger_mismatches = u64::try_from(open).unwrap_or(0);
        scan.orgs_checked = found.orgs_checked;
        self.report.orgs_checked = scan.orgs_checked;
        scan.guard_orgs = tracking.sweep_orgs;
        scan.guard_billed_minutes = tracking.sweep_billed_minutes;
        self.report.scan_ms = telemetry::millis(started.elapsed());
        self.control.progress.bump();
        Ok(scan)
    }

    /// The candidates, exactly from the ledgers (with their fingerprints for the repair), and
    /// their ledger-mismatch changes: what the log (or a replica) says is only a reason to look.
    pub(super) async fn reread(
        &self,
        client: &impl tokio_postgres::GenericClient,
        queries: &PassQueries,
        candidates: &[Uuid],
        period_start: Option<DateTime<Utc>>,
    ) -> Result<(UsageScan, Vec<LedgerMismatch>), DbError> {
        if candidates.is_empty() {
            return Ok((UsageScan::default(), Vec::new()));
        }
        let args = ScanArgs {
            period_start,
            known_statuses: &self.settings.usage.known_statuses,
            orgs: Some(candidates),
        };
        scan::collect(client, queries, &args).await
    }

    /// After the repairs: the drift the pass left (settling, lost races, failures) gets a
    /// marker, so the next incremental pass looks again; then the pass's insurance markers go.
    pub(super) async fn mark_unrepaired(
        &mut self,
        client: &Client,
        drifted: &[OrgUsage],
    ) -> Result<(), DbError> {
        if self.options.dry_run {
            return Ok(());
        }
        let fence = self.lock.fence();
        let ids: Vec<Uuid> = drifted
            .iter()
            .map(|o| o.org_id)
            .filter(|id| !self.repaired_ids.contains(id))
            .collect();
        tracking::mark(&***client, &ids, fence).await?;
        let insurance = std::mem::take(&mut self.insurance);
        tracking::unmark(&***client, &insurance, fence).await
    }
}
