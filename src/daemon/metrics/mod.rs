//! The optional Prometheus endpoint (`metrics.listen`, off by default), exposed with
//! `prometheus-client` in the OpenMetrics text format at `GET /metrics`.
//!
//! Two kinds of numbers:
//! - what this process saw: passes by outcome, repairs by outcome, drift found, orphans, a
//!   pass-duration histogram, the latest pass's gauges (drift left, ledger mismatches,
//!   orphans left), whether this instance holds the lock;
//! - what the journal says, read at scrape time from [`Health`] (so it exists from start-up,
//!   survives restarts and covers the other instance of a pair): the last successful pass,
//!   whether the reconciler is stalled, whether the database answers.
//!
//! Every labelled series is created at start-up with 0, so `increase()` sees the first
//! failure (a series that appears at 1 has no increase). The alert rules built on these live
//! in `monitoring/alerts.yml`.
//!
//! - [`http`]: the minimal HTTP server.

pub mod http;

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::health::Health;
use crate::reconcile::journal::RunStatus;
use crate::reconcile::{PassError, PassOutcome, PassReport};

pub use http::{bind, serve};

/// Pass outcomes, as `passes_total{outcome=…}` (the run statuses, plus `lock_held`).
const PASS_OUTCOMES: &[&str] = &[
    "ok",
    "partial",
    "refused",
    "failed",
    "cancelled",
    "lock_held",
];
/// Per-organization repair outcomes, as `repairs_total{outcome=…}`.
const REPAIR_OUTCOMES: &[&str] = &["repaired", "lost_race", "refused", "failed", "fenced"];
/// Pass durations in seconds: a small database takes milliseconds, the pass deadline is 30 min.
const DURATION_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The registry and the handles the daemon updates.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    health: Health,
    passes: Family<Outcome, Counter>,
    repairs: Family<Outcome, Counter>,
    drift_found: Counter,
    period_resets: Counter,
    orphans_fixed: Counter,
    mass_corrections_refused: Counter,
    pass_duration: Histogram,
    last_pass_duration: FloatGauge,
    drift_unrepaired: Gauge,
    ledger_mismatches: Gauge,
    orphans_left: Gauge,
    over_quota: Gauge,
    lock_held: Gauge,
    last_success: FloatGauge,
    stalled: Gauge,
    database_up: Gauge,
}

impl Metrics {
    /// All families registered, every labelled series at 0; the journal's numbers come from
    /// `health` at each scrape.
    pub fn new(health: Health) -> Self {
        let mut registry = Registry::with_prefix("synqall_reconciler");
        registry.register(
            "build",
            "The running version.",
            Info::new(Build {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let metrics = Self {
            health,
            passes: Family::default(),
            repairs: Family::default(),
            drift_found: Counter::default(),
            period_resets: Counter::default(),
            orphans_fixed: Counter::default(),
            mass_corrections_refused: Counter::default(),
            pass_duration: Histogram::new(DURATION_BUCKETS),
            last_pass_duration: FloatGauge::default(),
            drift_unrepaired: Gauge::default(),
            ledger_mismatches: Gauge::default(),
            orphans_left: Gauge::default(),
            over_quota: Gauge::default(),
            lock_held: Gauge::default(),
            last_success: FloatGauge::default(),
            stalled: Gauge::default(),
            database_up: Gauge::default(),
            registry,
        };
        metrics.register()
    }

    fn register(mut self) -> Self {
        self.register_counters();
        self.register_gauges();
        self
    }

    /// What this process counted since start (every labelled series from 0).
    fn register_counters(&mut self) {
        for outcome in PASS_OUTCOMES {
            let _ = self.passes.get_or_create(&Outcome { outcome });
        }
        for outcome in REPAIR_OUTCOMES {
            let _ = self.repairs.get_or_create(&Outcome { outcome });
        }
        let r = &mut self.registry;
        r.register(
            "passes",
            "Passes since start, by outcome; only ok is a success (partial: some repair failed, \
             was refused or lost its race; refused: a mass correction or a blind login).",
            self.passes.clone(),
        );
        r.register(
            "repairs",
            "Drifted counters by what happened to them: repaired, lost_race (the app wrote \
             first), refused, failed, fenced (the lock was lost).",
            self.repairs.clone(),
        );
        r.register(
            "drift_found",
            "Organizations whose used_minutes drifted, summed over passes.",
            self.drift_found.clone(),
        );
        // Kept beside repairs_total{outcome="repaired"} for dashboards of the first release.
        r.register(
            "drift_repaired",
            "Drifted counters repaired (journalled), summed over passes.",
            self.repairs
                .get_or_create(&Outcome {
                    outcome: "repaired",
                })
                .clone(),
        );
        r.register(
            "period_resets",
            "Counters reset at a calendar-month boundary.",
            self.period_resets.clone(),
        );
        r.register(
            "orphans_fixed",
            "Orphaned calls attributed to an organization.",
            self.orphans_fixed.clone(),
        );
        r.register(
            "mass_corrections_refused",
            "Passes that wrote nothing because they would have corrected too much at once.",
            self.mass_corrections_refused.clone(),
        );
        r.register(
            "pass_duration_seconds",
            "Duration of the passes that ran (not lock_held).",
            self.pass_duration.clone(),
        );
    }

    /// The latest pass's numbers, this instance's role, and the journal's (read at scrape time).
    fn register_gauges(&mut self) {
        let r = &mut self.registry;
        r.register(
            "last_pass_duration_seconds",
            "Duration of the latest pass that ran.",
            self.last_pass_duration.clone(),
        );
        r.register(
            "drift_unrepaired",
            "Drifted counters the latest pass left wrong (settling, lost races, failures, a \
             refused mass correction).",
            self.drift_unrepaired.clone(),
        );
        r.register(
            "ledger_mismatches",
            "Organizations whose two ledgers (calls, usage_metrics) disagree, at the latest pass.",
            self.ledger_mismatches.clone(),
        );
        r.register(
            "orphans_left",
            "Orphaned calls left alone by the latest pass (ambiguous or without membership).",
            self.orphans_left.clone(),
        );
        r.register(
            "over_quota",
            "Organizations over max_minutes_monthly at the latest pass (calendar_month).",
            self.over_quota.clone(),
        );
        r.register(
            "lock_held",
            "1 when this instance's latest pass held the advisory lock (the active one of a \
             pair), 0 when it stood by.",
            self.lock_held.clone(),
        );
        r.register(
            "last_success_timestamp_seconds",
            "Unix time of the latest ok pass in the journal, by any instance; 0 when none is \
             known (never succeeded, or the journal unreadable since start-up).",
            self.last_success.clone(),
        );
        r.register(
            "stalled",
            "1 while no pass succeeded for alert.stalled_after_seconds (the CRITICAL \
             reconciler stalled episode).",
            self.stalled.clone(),
        );
        let stalled_after = Gauge::<i64>::default();
        stalled_after.set(i64::try_from(self.health.stalled_after().as_secs()).unwrap_or(i64::MAX));
        r.register(
            "stalled_after_seconds",
            "alert.stalled_after_seconds, for alert rules.",
            stalled_after,
        );
        r.register(
            "database_up",
            "1 when the latest read of the journal succeeded, 0 when the database did not \
             answer (or refused the login).",
            self.database_up.clone(),
        );
    }

    /// Count one pass's outcome.
    pub fn record(&self, result: &Result<PassOutcome, PassError>, duration: Duration) {
        let outcome = match result {
            Ok(PassOutcome::Completed(report)) => {
                self.record_report(report);
                RunStatus::of(report).as_str()
            }
            Ok(PassOutcome::LockHeld) => {
                self.lock_held.set(0);
                "lock_held"
            }
            Err(e) => {
                // A pass that failed reconciled nothing, lock or not.
                self.lock_held.set(0);
                match e {
                    PassError::Blind(_) => "refused",
                    _ => "failed",
                }
            }
        };
        self.passes.get_or_create(&Outcome { outcome }).inc();
        if outcome != "lock_held" {
            self.pass_duration.observe(duration.as_secs_f64());
            self.last_pass_duration.set(duration.as_secs_f64());
        }
    }

    fn record_report(&self, report: &PassReport) {
        self.lock_held.set(1);
        self.drift_found.inc_by(report.drifted);
        self.period_resets.inc_by(report.period_resets);
        self.orphans_fixed.inc_by(report.orphans_fixed);
        for (outcome, n) in [
            ("repaired", report.repaired),
            ("lost_race", report.lost_race),
            ("refused", report.refused),
            ("failed", report.failed),
            ("fenced", report.fenced),
        ] {
            self.repairs.get_or_create(&Outcome { outcome }).inc_by(n);
        }
        if report.mass_correction.is_some() && !report.dry_run {
            self.mass_corrections_refused.inc();
        }
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.drift_unrepaired
            .set(gauge(report.drifted.saturating_sub(report.repaired)));
        self.ledger_mismatches.set(gauge(report.ledger_mismatches));
        self.orphans_left.set(gauge(report.orphans_left()));
        self.over_quota.set(gauge(report.over_quota));
    }

    /// The exposition, with the journal's numbers as of now.
    pub fn render(&self) -> String {
        let view = self.health.view();
        self.last_success.set(
            view.last_success
                .map(|t| t.timestamp_millis() as f64 / 1000.0)
                .unwrap_or(0.0),
        );
        self.stalled.set(i64::from(view.stalled));
        self.database_up.set(i64::from(view.database_up));
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(Health::new(Duration::from_secs(1800)))
    }

    #[test]
    fn counts_outcomes_and_renders_every_family() {
        let m = metrics();
        let report = PassReport {
            drifted: 3,
            repaired: 2,
            orphans_fixed: 4,
            orphans_ambiguous: 1,
            ledger_mismatches: 5,
            ..PassReport::default()
        };
        m.record(
            &Ok(PassOutcome::Completed(report)),
            Duration::from_millis(1500),
        );
        let partial = PassReport {
            drifted: 1,
            failed: 1,
            ..PassReport::default()
        };
        m.record(
            &Ok(PassOutcome::Completed(partial)),
            Duration::from_millis(10),
        );
        m.record(&Ok(PassOutcome::LockHeld), Duration::ZERO);
        let text = m.render();
        for line in [
            "synqall_reconciler_build_info{version=\"0.1.0\"} 1",
            "synqall_reconciler_passes_total{outcome=\"ok\"} 1",
            "synqall_reconciler_passes_total{outcome=\"partial\"} 1",
            "synqall_reconciler_passes_total{outcome=\"lock_held\"} 1",
            "synqall_reconciler_passes_total{outcome=\"failed\"} 0",
            "synqall_reconciler_repairs_total{outcome=\"failed\"} 1",
            "synqall_reconciler_repairs_total{outcome=\"lost_race\"} 0",
            "synqall_reconciler_drift_found_total 4",
            "synqall_reconciler_drift_repaired_total 2",
            "synqall_reconciler_orphans_fixed_total 4",
            "synqall_reconciler_drift_unrepaired 1",
            "synqall_reconciler_ledger_mismatches 0",
            "synqall_reconciler_lock_held 0",
            "synqall_reconciler_pass_duration_seconds_count 2",
            "synqall_reconciler_last_pass_duration_seconds 0.01",
            "synqall_reconciler_stalled_after_seconds 1800",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn the_journal_gauges_exist_before_any_pass() {
        let text = metrics().render();
        for line in [
            "synqall_reconciler_last_success_timestamp_seconds 0.0",
            "synqall_reconciler_stalled 0",
            "synqall_reconciler_database_up 0",
            "synqall_reconciler_passes_total{outcome=\"partial\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
