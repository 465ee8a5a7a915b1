//! Usage (step 4 of a pass): what each organization really used, compared with its stored
//! counter. The comparison is one set-based statement ([`super::scan`]) that returns only
//! disagreeing rows, so the client's memory grows with drift, not with the number of
//! organizations. What an [`OrgUsage`] knows decides drift, the fingerprint the repair
//! re-checks ([`super::repair`]) and quota. Also here: billing-period arithmetic and the bad
//! values named beside a drift.

use std::collections::HashMap;

use chrono::{DateTime, Datelike as _, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::queries::PassQueries;
use crate::config::{Period, Source};
use crate::db::{DbError, QueryContext};

/// Count and minutes of an organization's rows in the truth ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fingerprint {
    pub entries: i64,
    pub minutes: i64,
}

/// One organization as the scan saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgUsage {
    pub org_id: Uuid,
    /// `organizations.name`; NULL where the schema allows it.
    pub name: Option<String>,
    /// `used_minutes` (any integer type, read as bigint); NULL is always drift.
    pub stored: Option<i64>,
    /// The counter holds something that is no whole number of minutes (a fractional column
    /// with 10.5, NaN, or beyond bigint): always drift, and never written by the pass.
    pub stored_invalid: bool,
    pub call_count: i64,
    pub calls_minutes: i64,
    pub metric_count: i64,
    pub metrics_minutes: i64,
    /// `max_minutes_monthly` when the period is a calendar month, else `None`.
    pub quota: Option<i64>,
    /// Set when the counter holds the previous month's total plus this month's: it was never
    /// reset at the month boundary (a period rollover, repaired without a CRITICAL line).
    pub previous_period_minutes: Option<i64>,
    /// The bad values left out of its ledgers, when the read that found it counted them (a
    /// filtered re-read does; a sweep does not, see [`bad_values`]).
    pub bad_values: Option<BadValues>,
}

impl OrgUsage {
    /// Over `max_minutes_monthly` by the truth ledger (calendar-month period only).
    pub fn is_over_quota(&self, source: Source) -> bool {
        self.quota
            .is_some_and(|quota| self.expected(source) > quota)
    }

    /// The correction is the month-boundary reset, not a drift.
    pub fn is_period_reset(&self) -> bool {
        self.previous_period_minutes.is_some()
    }

    /// The journal's `reason` for this organization's correction.
    pub fn reason(&self) -> &'static str {
        if self.is_period_reset() {
            "period_rollover"
        } else {
            "drift"
        }
    }

    /// Minutes the counter should hold, by the configured truth ledger.
    pub fn expected(&self, source: Source) -> i64 {
        match source {
            Source::Calls => self.calls_minutes,
            Source::UsageMetrics => self.metrics_minutes,
        }
    }

    /// The truth ledger's fingerprint.
    pub fn fingerprint(&self, source: Source) -> Fingerprint {
        match source {
            Source::Calls => Fingerprint {
                entries: self.call_count,
                minutes: self.calls_minutes,
            },
            Source::UsageMetrics => Fingerprint {
                entries: self.metric_count,
                minutes: self.metrics_minutes,
            },
        }
    }

    /// `used_minutes IS DISTINCT FROM expected` (or not comparable at all).
    pub fn is_drifted(&self, source: Source) -> bool {
        self.stored_invalid || self.stored != Some(self.expected(source))
    }

    /// The two ledgers disagree (reported, never averaged).
    pub fn ledgers_disagree(&self) -> bool {
        self.calls_minutes != self.metrics_minutes
    }

    /// expected − stored, with NULL counted as 0 (saturating: totals are clamped to bigint).
    pub fn delta(&self, source: Source) -> i64 {
        self.expected(source)
            .saturating_sub(self.stored.unwrap_or(0))
    }

    /// The repair would lower the counter (the mass-correction guard counts these).
    pub fn lowers(&self, source: Source) -> bool {
        self.delta(source) < 0
    }
}

/// Result of the usage read.
#[derive(Debug, Clone, Default)]
pub struct UsageScan {
    pub orgs_checked: i64,
    /// Sum of every counter (NULL and negative as 0): what the customers are billed today.
    pub billed_minutes: i64,
    /// Minutes of `minutes_transcribed` rows without an organization (ignored).
    pub unowned_metric_minutes: i64,
    /// Organizations that drifted or are over quota (an incremental comparison: candidates).
    pub disagreeing: Vec<OrgUsage>,
    /// Organizations whose two ledgers disagree now (a sweep counts them; `None` for an
    /// incremental comparison, which sees only the organizations in the log).
    pub mismatch_count: Option<i64>,
    /// Incremental comparison: change-log rows read, and whether one names no organization
    /// (a TRUNCATE: a sweep is due).
    pub log_rows: i64,
    pub unknown_organizations: bool,
    /// What the mass-correction guard measures against when this scan saw only some
    /// organizations (the latest sweep's organizations and billed minutes).
    pub guard_orgs: Option<i64>,
    pub guard_billed_minutes: Option<i64>,
    /// Calls of a status outside `usage.known_statuses`, and the statuses (`None`: no status
    /// at all) with how many calls have each. Such calls are not counted.
    pub unknown_status_calls: i64,
    pub unknown_statuses: Vec<(Option<String>, i64)>,
    /// A sweep: the snapshot its comparison read (`pg_current_snapshot()`), recorded as the
    /// change log's consumed snapshot once it is done; and whether its candidates were judged
    /// in a later snapshot (re-read on the primary after a replica's comparison), so their
    /// markers stay for the next incremental pass.
    pub read_snapshot: Option<String>,
    pub candidates_judged_later: bool,
}

/// First instant of the billing period, `None` for all time.
pub fn period_start(period: Period, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match period {
        Period::AllTime => None,
        Period::CalendarMonth => {
            let first = now
                .date_naive()
                .with_day0(0)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .expect("day 1 at midnight always exists");
            Some(first.and_utc())
        }
    }
}

/// First instant of the calendar month before the one starting at `period_start`.
pub fn previous_period_start(period_start: DateTime<Utc>) -> DateTime<Utc> {
    period_start
        .checked_sub_months(chrono::Months::new(1))
        .expect("a month before a calendar month start is representable")
}

/// The truth ledger's previous-month totals of the given organizations.
///
/// # Errors
/// The query failed.
pub async fn previous_period_totals(
    client: &impl GenericClient,
    queries: &PassQueries,
    orgs: &[Uuid],
    period_start: DateTime<Utc>,
) -> Result<HashMap<Uuid, i64>, DbError> {
    if orgs.is_empty() {
        return Ok(HashMap::new());
    }
    let previous_start = previous_period_start(period_start);
    Ok(client
        .query(
            queries.previous_totals.as_str(),
            &[&orgs, &previous_start, &period_start],
        )
        .await
        .context("read the previous month's totals")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Bad values counted as 0 in one organization's ledgers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BadValues {
    pub null_durations: i64,
    pub negative_durations: i64,
    /// NaN, infinite or beyond bigint.
    pub invalid_durations: i64,
    pub invalid_metric_values: i64,
}

impl BadValues {
    /// From a filtered comparison's `bad_values` column: [NULL, negative, unusable durations,
    /// unusable usage values].
    pub fn from_counts(counts: &[i64]) -> Option<Self> {
        match *counts {
            [null_durations, negative_durations, invalid_durations, invalid_metric_values] => {
                Some(Self {
                    null_durations,
                    negative_durations,
                    invalid_durations,
                    invalid_metric_values,
                })
            }
            _ => None,
        }
    }

    pub fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// Bad durations (counted as 0) and unusable metric values (left out) per organization, for
/// the given (reported) organizations that have any, sorted by id: from the read that found
/// them when it counted them, else read now (two index lookups per organization).
///
/// # Errors
/// The queries failed.
pub async fn bad_values(
    client: &impl GenericClient,
    queries: &PassQueries,
    orgs: &[&OrgUsage],
    period_start: Option<DateTime<Utc>>,
) -> Result<Vec<(Uuid, BadValues)>, DbError> {
    if let Some(counted) = orgs
        .iter()
        .map(|o| o.bad_values.map(|bad| (o.org_id, bad)))
        .collect::<Option<Vec<_>>>()
    {
        let mut found: Vec<(Uuid, BadValues)> =
            counted.into_iter().filter(|(_, bad)| bad.any()).collect();
        found.sort_by_key(|(id, _)| *id);
        return Ok(found);
    }
    // Some organization was found by a read that did not count them (a sweep): read them now.
    let ids: Vec<Uuid> = orgs.iter().map(|o| o.org_id).collect();
    let mut found: HashMap<Uuid, BadValues> = HashMap::new();
    for row in client
        .query(queries.bad_durations.as_str(), &[&ids, &period_start])
        .await
        .context("count calls with unusable durations")?
    {
        let bad = found.entry(row.get(0)).or_default();
        bad.null_durations = row.get("null_durations");
        bad.negative_durations = row.get("negative_durations");
        bad.invalid_durations = row.get("invalid_durations");
    }
    for row in client
        .query(queries.bad_metric_values.as_str(), &[&ids, &period_start])
        .await
        .context("count usage_metrics rows with unusable values")?
    {
        found.entry(row.get(0)).or_default().invalid_metric_values = row.get("invalid_values");
    }
    let mut found: Vec<(Uuid, BadValues)> = found.into_iter().collect();
    found.sort_by_key(|(id, _)| *id);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn org(stored: Option<i64>, calls: i64, metrics: i64) -> OrgUsage {
        OrgUsage {
            org_id: Uuid::nil(),
            name: Some("x".into()),
            stored,
            stored_invalid: false,
            call_count: 3,
            calls_minutes: calls,
            metric_count: 2,
            metrics_minutes: metrics,
            quota: None,
            previous_period_minutes: None,
            bad_values: None,
        }
    }

    #[test]
    fn previous_month_wraps_the_year() {
        let jan = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            previous_period_start(jan),
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
        );
        let mar = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        assert_eq!(
            previous_period_start(mar),
            Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn over_quota_only_with_a_quota() {
        let mut o = org(Some(0), 700, 700);
        assert!(!o.is_over_quota(Source::Calls));
        o.quota = Some(600);
        assert!(o.is_over_quota(Source::Calls));
        o.quota = Some(700);
        assert!(!o.is_over_quota(Source::Calls));
    }

    #[test]
    fn null_counter_is_drift_even_when_nothing_was_used() {
        assert!(org(None, 0, 0).is_drifted(Source::Calls));
        assert!(!org(Some(0), 0, 0).is_drifted(Source::Calls));
    }

    #[test]
    fn source_picks_the_truth_ledger() {
        let o = org(Some(10), 10, 12);
        assert!(!o.is_drifted(Source::Calls));
        assert!(o.is_drifted(Source::UsageMetrics));
        assert_eq!(o.delta(Source::UsageMetrics), 2);
        assert!(o.ledgers_disagree());
    }

    #[test]
    fn calendar_month_starts_at_utc_midnight_on_the_first() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 3, 14, 0).unwrap();
        assert_eq!(
            period_start(Period::CalendarMonth, now),
            Some(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap())
        );
        assert_eq!(period_start(Period::AllTime, now), None);
    }
}
