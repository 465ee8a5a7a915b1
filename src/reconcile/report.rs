//! The pass's output: the log lines people grep (DESIGN.md §5), capped per pass so a mass drift
//! cannot flood the journal, and the human-readable report `--reconcile-now` and `demo` print.

use std::fmt;

use tracing::{info, warn};
use uuid::Uuid;

use super::usage::{OrgUsage, RepairAction};
use super::PassReport;
use crate::config::Source;
use crate::critical;

/// At most `max` detail lines of one kind per pass; the rest are counted and summarised once.
#[derive(Debug)]
pub struct LineBudget {
    kind: &'static str,
    max: usize,
    used: usize,
    suppressed: u64,
}

impl LineBudget {
    pub fn new(kind: &'static str, max: usize) -> Self {
        Self {
            kind,
            max,
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether one more line may be logged; counts the ones that may not.
    pub fn allow(&mut self) -> bool {
        if self.used < self.max {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Log the one summary line for what was suppressed, if anything was.
    pub fn finish(&self, run_id: Uuid, critical: bool) {
        if self.suppressed == 0 {
            return;
        }
        if critical {
            critical!(kind = self.kind, suppressed = self.suppressed, %run_id,
                "used_minutes drift lines suppressed (alert.max_critical_lines_per_pass)");
        } else {
            warn!(
                kind = self.kind,
                suppressed = self.suppressed,
                %run_id,
                "log lines suppressed (alert.max_critical_lines_per_pass)"
            );
        }
    }
}

/// A value that may be NULL, as log lines and reports print it: the value, or `NULL` (a NULL
/// counter, a call without user or organization). JSON logs turn `NULL` into `null`.
pub struct OrNull<T>(pub Option<T>);

impl<T: fmt::Display> fmt::Display for OrNull<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("NULL"),
        }
    }
}

/// The `CRITICAL used_minutes drift …` line.
pub fn log_drift(run_id: Uuid, org: &OrgUsage, source: Source, action: &RepairAction) {
    let reason = match action {
        RepairAction::LostRace { reason } => Some(*reason),
        RepairAction::Refused { reason } => Some(reason.as_str()),
        _ => None,
    };
    critical!(
        org_id = %org.org_id,
        org_name = org.name.as_str(),
        stored = %OrNull(org.stored),
        expected = org.expected(source),
        delta = org.delta(source),
        calls_minutes = org.calls_minutes,
        metrics_minutes = org.metrics_minutes,
        action = action.label(),
        reason,
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
        org_name = org.name.as_str(),
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
        org_name = org.name.as_str(),
        used = org.expected(source),
        max_minutes_monthly = quota,
        over_by = org.expected(source) - i64::from(quota),
        %run_id,
        "organization over its monthly quota"
    );
}

/// The `ERROR Failed to update organization …` line.
pub fn log_update_failed(run_id: Uuid, org_id: Uuid, error: &str) {
    tracing::error!(%org_id, error, %run_id, "Failed to update organization");
}

/// The `WARN ledger mismatch …` line.
pub fn log_ledger_mismatch(run_id: Uuid, org: &OrgUsage) {
    warn!(
        org_id = %org.org_id,
        org_name = org.name.as_str(),
        calls_minutes = org.calls_minutes,
        metrics_minutes = org.metrics_minutes,
        %run_id,
        "ledger mismatch between calls and usage_metrics"
    );
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
        would_repair = report.would_repair,
        period_resets = report.period_resets + report.would_reset,
        over_quota = report.over_quota,
        ledger_mismatches = report.ledger_mismatches,
        dry_run = report.dry_run,
        cancelled = report.cancelled,
        orphans_ms = report.orphans_ms,
        scan_ms = report.scan_ms,
        repair_ms = report.repair_ms,
        "reconcile pass finished"
    );
}

/// One counter correction, for the human report.
#[derive(Debug, Clone)]
pub struct Correction {
    pub org_name: String,
    pub stored: Option<i32>,
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
            row(f, "  refused (out of range)", self.refused)?;
            row(f, "  failed (see ERROR lines)", self.failed)?;
        }
        row(
            f,
            "ledger mismatches (calls vs usage_metrics)",
            self.ledger_mismatches,
        )?;
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
            Some(n) => row(f, "users without an organization", n)?,
            None => row(
                f,
                "users without an organization",
                "(auth.users not readable)",
            )?,
        }
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
        row(f, "took", format!("{} ms", self.duration.as_millis()))?;
        if !self.corrections.is_empty() {
            writeln!(f, "  largest corrections (stored -> expected):")?;
            let mut worst: Vec<&Correction> = self.corrections.iter().collect();
            worst.sort_by_key(|c| {
                std::cmp::Reverse((c.expected - i64::from(c.stored.unwrap_or(0))).abs())
            });
            for c in worst.iter().take(10) {
                let name: String = c
                    .org_name
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(32)
                    .collect();
                writeln!(
                    f,
                    "    {name:<32} {:>8} -> {:<8} {}",
                    OrNull(c.stored).to_string(),
                    c.expected,
                    c.action
                )?;
            }
        }
        Ok(())
    }
}
