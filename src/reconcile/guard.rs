//! No mass correction without a person (docs/design.md): a pass that would lower the counters
//! of a large share of all organizations, or remove a large share of all billed minutes, writes
//! nothing until someone has looked (`--dry-run`) and allowed it (`--allow-mass-correction`).
//!
//! An incident cleanup lowers a few doubled counters by a few minutes; a truth ledger that was
//! emptied (calls truncated, a wrong `usage.source`, a period switched by mistake) lowers
//! nearly every counter to nearly nothing. The thresholds (`guard.*`) sit far apart from both,
//! and small absolute numbers never trip them: a handful of organizations is not a mass. Counters
//! reset at a calendar-month boundary are expected to fall and are not counted.

use crate::config::{GuardSettings, Source};
use crate::reconcile::usage::OrgUsage;

/// A pass that the guard stops: what it would have done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MassCorrection {
    /// Counters the pass would lower, of `orgs` organizations.
    pub lowered: u64,
    pub orgs: i64,
    /// Minutes those corrections remove, of `billed_minutes` billed in all.
    pub removed_minutes: i64,
    pub billed_minutes: i64,
}

impl MassCorrection {
    /// Removed minutes as a share of all billed minutes, in percent (for the log line).
    pub fn removed_percent(&self) -> i64 {
        if self.billed_minutes <= 0 {
            return 100;
        }
        self.removed_minutes.saturating_mul(100) / self.billed_minutes
    }
}

/// What the drifted organizations would do to the bill; `Some` when that is a mass correction.
pub fn evaluate(
    drifted: &[OrgUsage],
    source: Source,
    orgs: i64,
    billed_minutes: i64,
    guard: &GuardSettings,
) -> Option<MassCorrection> {
    let lowering = drifted
        .iter()
        .filter(|o| !o.is_period_reset() && !o.stored_invalid && o.lowers(source));
    let (lowered, removed_minutes) = lowering.fold((0u64, 0i64), |(n, minutes), o| {
        (
            n + 1,
            minutes.saturating_add(o.delta(source).saturating_neg()),
        )
    });
    let many_orgs = lowered >= guard.min_lowered_orgs
        && lowered as f64 > guard.max_lowered_share * orgs.max(0) as f64;
    let many_minutes = u64::try_from(removed_minutes).unwrap_or(0) >= guard.min_removed_minutes
        && removed_minutes as f64 > guard.max_removed_share * billed_minutes.max(0) as f64;
    (many_orgs || many_minutes).then_some(MassCorrection {
        lowered,
        orgs,
        removed_minutes,
        billed_minutes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    const GUARD: GuardSettings = GuardSettings {
        max_lowered_share: 0.25,
        min_lowered_orgs: 10,
        max_removed_share: 0.10,
        min_removed_minutes: 1000,
    };

    fn org(stored: i64, calls: i64) -> OrgUsage {
        OrgUsage {
            org_id: Uuid::new_v4(),
            name: None,
            stored: Some(stored),
            stored_invalid: false,
            call_count: 1,
            calls_minutes: calls,
            metric_count: 0,
            metrics_minutes: 0,
            quota: None,
            previous_period_minutes: None,
            bad_values: None,
        }
    }

    #[test]
    fn zeroing_every_counter_trips() {
        let drifted: Vec<OrgUsage> = (0..20).map(|_| org(100, 0)).collect();
        let found = evaluate(&drifted, Source::Calls, 20, 2000, &GUARD).unwrap();
        assert_eq!((found.lowered, found.removed_minutes), (20, 2000));
        assert_eq!(found.removed_percent(), 100);
    }

    #[test]
    fn an_incident_cleanup_does_not_trip() {
        // The demo: 20 of 300 organizations lowered by ~11 minutes of ~140k billed.
        let mut drifted: Vec<OrgUsage> = (0..20).map(|_| org(480, 469)).collect();
        drifted.extend((0..30).map(|_| org(450, 470)));
        assert_eq!(
            evaluate(&drifted, Source::Calls, 300, 140_000, &GUARD),
            None
        );
    }

    #[test]
    fn a_few_organizations_are_not_a_mass() {
        let drifted: Vec<OrgUsage> = (0..3).map(|_| org(300, 0)).collect();
        assert_eq!(evaluate(&drifted, Source::Calls, 3, 900, &GUARD), None);
    }

    #[test]
    fn removing_a_large_share_of_minutes_trips_even_for_few_organizations() {
        let drifted = vec![org(50_000, 0)];
        assert!(evaluate(&drifted, Source::Calls, 100, 60_000, &GUARD).is_some());
    }
}
