//! The pass's output: what it found and did ([`PassReport`]), the log lines people grep
//! (docs/design.md, "Log lines"), and the human-readable report `--reconcile-now` and `demo`
//! print. Callers cap the detail lines with [`crate::telemetry::LineBudget`].

use std::fmt;
use std::time::Duration;

use tracing::{info, warn};
use uuid::Uuid;

use super::guard::MassCorrection;
use super::kind::PassKind;
use super::orphans::{Attribution, OrphanedCall};
use super::repair::RepairAction;
use super::usage::{BadValues, OrgUsage};
use crate::config::Source;
use crate::telemetry::critical;
use crate::telemetry::{NullableText, OrNull};

/// What one pass found and did.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    pub run_id: Uuid,
    pub dry_run: bool,
    /// What the pass compared (after any escalation to a sweep).
    pub kind: PassKind,
    /// Change-log rows folded into the tracking totals.
    pub log_rows_folded: i64,
    /// An incremental pass: organizations the log could not clear, re-read exactly.
    pub candidates: u64,
    /// A sweep's billed minutes (sum of every counter), for later incremental passes' guard.
    pub billed_minutes: Option<i64>,
    pub orgs_checked: i64,
    pub drifted: u64,
    pub repaired: u64,
    pub would_repair: u64,
    pub lost_race: u64,
    pub refused: u64,
    pub failed: u64,
    /// Repairs not written because another instance took the lock over.
    pub fenced: u64,
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
    /// Completed calls with NULL / negative / unusable (NaN, infinite, beyond bigint) durations
    /// in drifted organizations (counted 0), and unusable metric values there (left out).
    pub null_durations: i64,
    pub negative_durations: i64,
    pub invalid_durations: i64,
    pub invalid_metric_values: i64,
    /// Calls whose status is not in `usage.known_statuses` (not counted).
    pub unknown_status_calls: i64,
    /// The guard stopped this pass: nothing was repaired (or, in a dry run, would be refused).
    pub mass_correction: Option<MassCorrection>,
    pub duration: Duration,
    pub corrections: Vec<Correction>,
    /// Stopped early by shutdown; what was committed is whole and journalled.
    pub cancelled: bool,
    /// Time spent on orphaned calls and users, on the usage comparison, and on repairs.
    pub orphans_ms: u64,
    pub scan_ms: u64,
    pub repair_ms: u64,
    /// How a sweep's comparison read the ledgers: `indexes` or `tables` (`access`).
    pub sweep_read: Option<&'static str>,
}

impl PassReport {
    /// Orphaned calls left alone (ambiguous or without membership).
    pub fn orphans_left(&self) -> u64 {
        self.orphans_ambiguous + self.orphans_no_membership
    }

    /// Some counter is still wrong after this pass (exit 2 for `--reconcile-now`).
    pub fn drift_left(&self) -> bool {
        self.would_repair + self.lost_race + self.refused + self.failed > 0
            || self.mass_correction.is_some()
    }

    /// Drift was found but not all of it repaired: a repair failed, was refused or lost its
    /// race. Such a pass is `partial`, never `ok`.
    pub fn partial(&self) -> bool {
        self.lost_race + self.refused + self.failed > 0
    }
}

/// The `WARN orphaned call ambiguous …` line.
pub fn log_ambiguous_orphan(run_id: Uuid, call: &OrphanedCall, candidates: &[Uuid]) {
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

/// The `INFO orphaned call attributed …` line.
pub fn log_attribution(run_id: Uuid, a: &Attribution, dry_run: bool) {
    info!(
        call_id = %a.call_id,
        org_id = %a.org_id,
        rule = a.rule.as_str(),
        action = if dry_run { "would_attribute" } else { "attributed" },
        %run_id,
        "orphaned call attributed"
    );
}

/// The `CRITICAL used_minutes drift …` line.
pub fn log_drift(run_id: Uuid, org: &OrgUsage, source: Source, action: &RepairAction) {
    critical!(
        org_id = %org.org_id,
        org_name = %NullableText(org.name.as_deref()),
        stored = %OrNull(org.stored),
        expected = org.expected(source),
        delta = org.delta(source),
        calls_minutes = org.calls_minutes,
        metrics_minutes = org.metrics_minutes,
        action = action.label(),
        reason = action.reason(),
        %run_id,
        "used_minutes drift"
    );
}

/// The INFO line for a counter reset at the month boundary: expected, so not CRITICAL.
pub fn log_period_reset(run_id: Uuid, org: &OrgUsage, source: Source, action: &RepairAction) {
    let action = match action {
        RepairAction::Repaired { .. } => "reset",
        RepairAction::WouldRepair => "would_reset",
        other => other.label(),
    };
    info!(
        org_id = %org.org_id,
        org_name = %NullableText(org.name.as_deref()),
        stored = %OrNull(org.stored),
        expected = org.expected(source),
        previous_period_minutes = org.previous_period_minutes.unwrap_or(0),
        action,
        %run_id,
        "billing period rollover: used_minutes reset to this month's usage"
    );
}

/// The WARN line for an organization over its monthly quota.
pub fn log_over_quota(run_id: Uuid, org: &OrgUsage, source: Source) {
    let quota = org.quota.unwrap_or(0);
    warn!(
        org_id = %org.org_id,
        org_name = %NullableText(org.name.as_deref()),
        used = org.expected(source),
        max_minutes_monthly = quota,
        over_by = org.expected(source).saturating_sub(quota),
        %run_id,
        "organization over its monthly quota"
    );
}

/// The `CRITICAL mass correction refused …` line.
pub fn log_mass_correction(run_id: Uuid, m: &MassCorrection) {
    critical!(
        lowered = m.lowered,
        orgs = m.orgs,
        removed_minutes = m.removed_minutes,
        billed_minutes = m.billed_minutes,
        %run_id,
        "mass correction refused: would lower {} of {} organizations and remove {} of {} billed minutes ({}%); nothing written; run --reconcile-now --dry-run to inspect, then --reconcile-now --allow-mass-correction",
        m.lowered,
        m.orgs,
        m.removed_minutes,
        m.billed_minutes,
        m.removed_percent()
    );
}

/// The `WARN calls with an unknown status …` line (one per status).
pub fn log_unknown_status(run_id: Uuid, status: Option<&str>, calls: i64) {
    warn!(
        status = %NullableText(status),
        calls,
        %run_id,
        "calls with a status not in usage.known_statuses are not counted"
    );
}

/// The `WARN … counted as 0 …` line naming one organization's bad ledger values.
pub fn log_bad_values(run_id: Uuid, org_id: Uuid, bad: &BadValues) {
    warn!(
        %org_id,
        null_durations = bad.null_durations,
        negative_durations = bad.negative_durations,
        invalid_durations = bad.invalid_durations,
        invalid_metric_values = bad.invalid_metric_values,
        %run_id,
        "completed calls with NULL, negative or unusable duration_minutes counted as 0"
    );
}

/// The `ERROR Failed to update organization …` line.
pub fn log_update_failed(run_id: Uuid, org_id: Uuid, error: &str) {
    tracing::error!(%org_id, error, %run_id, "Failed to update organization");
}

/// The one INFO line per pass.
pub fn log_summary(report: &PassReport) {
    info!(
        run_id = %report.run_id,
        orgs_checked = report.orgs_checked,
        drifted = report.drifted,
        repaired = report.repaired,
        orphans_fixed = report.orphans_fixed,
        orphans_left = report.orphans_left(),
        duration_ms = crate::telemetry::millis(report.duration),
        lost_race = report.lost_race,
        refused = report.refused,
        failed = report.failed,
        fenced = report.fenced,
        would_repair = report.would_repair,
        mass_correction_refused = report.mass_correction.is_some(),
        period_resets = report.period_resets + report.would_reset,
        over_quota = report.over_quota,
        ledger_mismatches = report.ledger_mismatches,
        kind = report.kind.as_str(),
        log_rows_folded = report.log_rows_folded,
        candidates = report.candidates,
        dry_run = report.dry_run,
        cancelled = report.cancelled,
        orphans_ms = report.orphans_ms,
        scan_ms = report.scan_ms,
        repair_ms = report.repair_ms,
        sweep_read = report.sweep_read.unwrap_or("-"),
        "reconcile pass finished"
    );
}

/// One counter correction, for the human report.
#[derive(Debug, Clone)]
pub struct Correction {
    pub org_name: Option<String>,
    pub stored: Option<i64>,
    pub expected: i64,
    pub action: &'static str,
}

/// One aligned `label  value` line of the human report.
fn row(f: &mut fmt::Formatter<'_>, label: &str, value: impl fmt::Display) -> fmt::Result {
    writeln!(f, "  {label:<44} {value}")
}

impl fmt::Display for PassReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let title = if self.dry_run {
            "Reconcile pass (dry run: nothing written)"
        } else {
            "Reconcile pass"
        };
        writeln!(f, "{title} {}", self.run_id)?;
        self.fmt_counters(f)?;
        self.fmt_orphans(f)?;
        row(
            f,
            "calls with NULL duration (drifted orgs)",
            self.null_durations,
        )?;
        row(
            f,
            "completed calls with negative duration",
            self.negative_durations,
        )?;
        if self.invalid_durations + self.invalid_metric_values > 0 {
            row(
                f,
                "unusable durations (NaN, infinite, huge)",
                self.invalid_durations,
            )?;
            row(
                f,
                "unusable usage_metrics values",
                self.invalid_metric_values,
            )?;
        }
        if self.unknown_status_calls > 0 {
            row(
                f,
                "calls with an unknown status (not counted)",
                self.unknown_status_calls,
            )?;
        }
        row(f, "took", format!("{} ms", self.duration.as_millis()))?;
        self.fmt_corrections(f)
    }
}

impl PassReport {
    /// Counters: checked, drifted and what became of them.
    fn fmt_counters(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        row(f, "organizations checked", self.orgs_checked)?;
        row(f, "counters drifted", self.drifted)?;
        if self.dry_run {
            row(f, "  would repair", self.would_repair)?;
        } else {
            row(f, "  repaired", self.repaired)?;
            row(f, "  left for the next pass (still moving)", self.lost_race)?;
        }
        if self.period_resets + self.would_reset > 0 {
            let label = if self.dry_run {
                "  would reset (new calendar month, not drift)"
            } else {
                "reset for the new calendar month (not drift)"
            };
            row(f, label, self.period_resets + self.would_reset)?;
        }
        if self.over_quota > 0 {
            row(f, "over max_minutes_monthly", self.over_quota)?;
        }
        if self.refused + self.failed > 0 {
            row(
                f,
                "  refused (does not fit, or not whole minutes)",
                self.refused,
            )?;
            row(f, "  failed (see ERROR lines)", self.failed)?;
        }
        if let Some(m) = &self.mass_correction {
            let label = if self.dry_run {
                "MASS CORRECTION: a real pass would refuse"
            } else {
                "MASS CORRECTION REFUSED: nothing repaired"
            };
            row(
                f,
                label,
                format!(
                    "{} of {} counters lowered, {} of {} minutes removed; \
                     --reconcile-now --allow-mass-correction applies it",
                    m.lowered, m.orgs, m.removed_minutes, m.billed_minutes
                ),
            )?;
        }
        row(
            f,
            "ledger mismatches (calls vs usage_metrics)",
            self.ledger_mismatches,
        )
    }

    /// Orphaned calls and users.
    fn fmt_orphans(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "attributable"
        } else {
            "attributed"
        };
        row(f, &format!("orphaned calls {verb}"), self.orphans_fixed)?;
        row(f, "  left alone: ambiguous", self.orphans_ambiguous)?;
        row(
            f,
            "  left alone: user has no membership",
            self.orphans_no_membership,
        )?;
        match self.orphaned_users {
            Some(n) => row(f, "users without an organization", n),
            None => row(
                f,
                "users without an organization",
                "(auth.users not readable)",
            ),
        }
    }

    /// The ten largest corrections.
    fn fmt_corrections(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.corrections.is_empty() {
            return Ok(());
        }
        writeln!(f, "  largest corrections (stored -> expected):")?;
        let mut worst: Vec<&Correction> = self.corrections.iter().collect();
        worst.sort_by_key(|c| {
            std::cmp::Reverse(
                c.expected
                    .saturating_sub(c.stored.unwrap_or(0))
                    .unsigned_abs(),
            )
        });
        for c in worst.iter().take(10) {
            let name: String = match &c.org_name {
                Some(name) => name.chars().filter(|c| !c.is_control()).take(32).collect(),
                None => "NULL".to_string(),
            };
            writeln!(
                f,
                "    {name:<32} {:>8} -> {:<8} {}",
                OrNull(c.stored).to_string(),
                c.expected,
                c.action
            )?;
        }
        Ok(())
    }
}
