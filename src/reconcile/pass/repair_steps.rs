//! Step 5 of a pass: wait for drift to settle, then confirm and repair it batch by batch
//! (docs/design.md, "Confirm before writing"), counting and logging each organization's
//! outcome.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tracing::{info, warn};
use uuid::Uuid;

use super::{Client, Pass, PROGRESS_EVERY};
use crate::db::DbError;
use crate::reconcile::queries::PassQueries;
use crate::reconcile::repair::{self, RepairAction, RepairContext};
use crate::reconcile::report::{self, Correction};
use crate::reconcile::usage::OrgUsage;
use crate::telemetry::{self, error_chain, LineBudget};

impl Pass<'_> {
    /// Step 5: settle, then confirm and repair batch by batch (a dry run only reports).
    pub(super) async fn repair(
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

/// Line caps for the repair step: CRITICAL drift lines and INFO period-reset lines.
struct RepairBudgets {
    critical: LineBudget,
    resets: LineBudget,
}

impl RepairBudgets {
    pub(super) fn finish(&self, run_id: Uuid) {
        self.critical.finish(run_id, true);
        self.resets.finish(run_id, false);
    }
}
