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
    /// Step 5: settle, then confirm and repair batch by batch. A dry run only reports, and a
    /// mass correction waits for a person.
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
            errors: self.budget("Failed to update organization"),
        };
        let held = self.hold_mass_correction(drifted, &mut budgets);
        if held || self.options.dry_run {
            if !held {
                for org in drifted {
                    self.record(&mut budgets, org, &RepairAction::WouldRepair);
                }
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
        let database = &self.settings.database;
        let ctx = RepairContext {
            queries,
            run_id,
            source: usage.source,
            period: usage.period,
            period_start,
            fence: self.lock.fence(),
            idle_timeout: Duration::from_secs(database.repair_idle_timeout_seconds),
            lock_timeout: Duration::from_secs(database.repair_lock_timeout_seconds),
        };
        let repair_started = Instant::now();
        crate::fault::hit("repair");
        let result = self
            .repair_batches(client, &ctx, drifted, &mut budgets)
            .await;
        budgets.finish(run_id);
        self.report.repair_ms = telemetry::millis(repair_started.elapsed());
        result
    }

    /// The guard found a mass correction: without `--allow-mass-correction` nothing is written
    /// and every drift is reported as held (true). A dry run says what a real pass would do.
    fn hold_mass_correction(&mut self, drifted: &[OrgUsage], budgets: &mut RepairBudgets) -> bool {
        let Some(mass) = self.report.mass_correction else {
            return false;
        };
        let run_id = self.report.run_id;
        if self.options.dry_run {
            warn!(
                lowered = mass.lowered,
                removed_minutes = mass.removed_minutes,
                %run_id,
                "mass correction: a pass without --allow-mass-correction would refuse to write"
            );
            return false;
        }
        if self.options.allow_mass_correction {
            warn!(
                lowered = mass.lowered,
                removed_minutes = mass.removed_minutes,
                %run_id,
                "mass correction allowed by --allow-mass-correction"
            );
            self.report.mass_correction = None;
            return false;
        }
        report::log_mass_correction(run_id, &mass);
        let held = RepairAction::Refused {
            reason: "held: mass correction refused, see the mass correction line".into(),
        };
        let source = self.settings.usage.source;
        for org in drifted {
            self.report.would_repair += 1;
            if budgets.critical.allow() {
                report::log_drift(run_id, org, source, &held);
            }
        }
        true
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
    /// statement fails is rolled back whole and retried organization by organization, so one
    /// bad row affects only itself; a lost connection stops the pass.
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
                Ok(actions) => self.record_all(budgets, batch, actions),
                Err(DbError::Fenced) => return Err(self.fenced(budgets, batch)),
                Err(e) if e.is_connection_loss() => return Err(e),
                Err(_) if batch.len() > 1 => {
                    for org in batch {
                        self.repair_alone(client, ctx, org, budgets).await?;
                    }
                }
                Err(e) => {
                    let failed = RepairAction::Failed {
                        reason: error_chain(&e),
                    };
                    self.record(budgets, batch[0], &failed);
                }
            }
        }
        Ok(())
    }

    /// One organization in a transaction of its own, after its batch failed.
    async fn repair_alone(
        &mut self,
        client: &mut Client,
        ctx: &RepairContext<'_>,
        org: &OrgUsage,
        budgets: &mut RepairBudgets,
    ) -> Result<(), DbError> {
        self.lock.ensure_held().await?;
        let result = repair::repair_batch(client, ctx, &[org]).await;
        self.control.progress.bump();
        match result {
            Ok(actions) => self.record_all(budgets, &[org], actions),
            Err(DbError::Fenced) => return Err(self.fenced(budgets, &[org])),
            Err(e) if e.is_connection_loss() => return Err(e),
            Err(e) => {
                let failed = RepairAction::Failed {
                    reason: error_chain(&e),
                };
                self.record(budgets, org, &failed);
            }
        }
        Ok(())
    }

    /// Fenced out: another instance holds the lock. The batch's drifts are reported as
    /// `action=fenced` and the pass stops.
    fn fenced(&mut self, budgets: &mut RepairBudgets, batch: &[&OrgUsage]) -> DbError {
        for org in batch {
            self.record(budgets, org, &RepairAction::Fenced);
        }
        DbError::Fenced
    }

    fn record_all(
        &mut self,
        budgets: &mut RepairBudgets,
        batch: &[&OrgUsage],
        actions: Vec<(Uuid, RepairAction)>,
    ) {
        for (org_id, action) in actions {
            let org = batch
                .iter()
                .find(|o| o.org_id == org_id)
                .expect("actions are for the batch's organizations");
            self.record(budgets, org, &action);
        }
    }

    /// Count an action and log its lines (within the budgets): CRITICAL for a drift (with the
    /// ERROR line where a write failed or was refused), INFO for a period reset.
    fn record(&mut self, budgets: &mut RepairBudgets, org: &OrgUsage, action: &RepairAction) {
        let (run_id, source) = (self.report.run_id, self.settings.usage.source);
        let reset = org.is_period_reset();
        if matches!(action, RepairAction::Repaired { .. }) {
            self.repaired_ids.insert(org.org_id);
        }
        match action {
            RepairAction::Repaired { .. } if reset => self.report.period_resets += 1,
            RepairAction::Repaired { .. } => self.report.repaired += 1,
            RepairAction::WouldRepair if reset => self.report.would_reset += 1,
            RepairAction::WouldRepair => self.report.would_repair += 1,
            RepairAction::Fenced => self.report.fenced += 1,
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
            RepairAction::Refused { reason } | RepairAction::Failed { reason } => {
                if matches!(action, RepairAction::Failed { .. }) {
                    self.report.failed += 1;
                } else {
                    self.report.refused += 1;
                }
                if budgets.errors.allow() {
                    report::log_update_failed(run_id, org.org_id, reason);
                }
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

/// Line caps for the repair step: CRITICAL drift lines, INFO period-reset lines and ERROR
/// lines for failed or refused writes.
struct RepairBudgets {
    critical: LineBudget,
    resets: LineBudget,
    errors: LineBudget,
}

impl RepairBudgets {
    fn finish(&self, run_id: Uuid) {
        self.critical.finish(run_id, true);
        self.resets.finish(run_id, false);
        self.errors.finish(run_id, false);
    }
}
