//! The comparison statement's rows (`sql/drifted_orgs.sql`, and the incremental
//! `tracking/sql/compare_dirty.sql` in the same layout), streamed: the client holds what it
//! keeps (drifted organizations, unknown statuses, totals), never the whole result, so a pass's
//! memory does not grow with organizations or ledger mismatches (a mismatch that did not change
//! costs no row at all; those that did are handed on in batches).

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use super::mismatch::LedgerMismatch;
use super::usage::{OrgUsage, UsageScan};
use crate::db::{DbError, QueryContext};

/// What the statement is asked.
#[derive(Debug, Clone)]
pub struct ScanArgs<'a> {
    pub period_start: Option<DateTime<Utc>>,
    pub known_statuses: &'a [String],
    /// The organizations of a filtered read; `None` for all.
    pub orgs: Option<&'a [Uuid]>,
}

/// One row of the comparison.
#[derive(Debug, Clone)]
pub enum ScanRow {
    /// Drifted, over quota, or with wrong change-tracking totals (see [`OrgUsage`]).
    Org(OrgUsage),
    /// A ledger mismatch that appeared, changed or resolved.
    Mismatch(LedgerMismatch),
    /// Calls of a status outside `usage.known_statuses`.
    Status(Option<String>, i64),
    /// The totals row.
    Total {
        orgs_checked: i64,
        billed_minutes: Option<i64>,
        unowned_metric_minutes: i64,
        mismatches: Option<i64>,
        /// Incremental comparison only: log rows read, and whether one names no organization.
        log_rows: i64,
        unknown_organizations: bool,
    },
}

impl ScanRow {
    fn from_row(row: &Row) -> Self {
        match row.get::<_, &str>("kind") {
            "total" => Self::Total {
                orgs_checked: row.get("orgs_checked"),
                billed_minutes: row.get("billed_minutes"),
                unowned_metric_minutes: row.get("unowned_metric_minutes"),
                mismatches: row.get("mismatches"),
                log_rows: row.get::<_, Option<i64>>("call_count").unwrap_or_default(),
                unknown_organizations: row
                    .get::<_, Option<bool>>("stored_invalid")
                    .unwrap_or_default(),
            },
            "status" => Self::Status(row.get("status"), row.get("call_count")),
            "mismatch" => Self::Mismatch(LedgerMismatch::from_scan_row(row)),
            _ => Self::Org(OrgUsage {
                org_id: row.get("id"),
                name: row.get("name"),
                stored: row.get("stored"),
                stored_invalid: row.get("stored_invalid"),
                call_count: row.get("call_count"),
                calls_minutes: row.get("calls_minutes"),
                metric_count: row.get("metric_count"),
                metrics_minutes: row.get("metrics_minutes"),
                quota: row.get("quota"),
                previous_period_minutes: None,
            }),
        }
    }
}

/// The rows of a running comparison statement, as they arrive.
pub struct ScanStream {
    rows: std::pin::Pin<Box<tokio_postgres::RowStream>>,
}

impl ScanStream {
    /// Start `sql` (a comparison statement).
    ///
    /// # Errors
    /// The statement failed to start.
    pub async fn start<C: GenericClient>(
        client: &C,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Self, DbError> {
        let rows = client
            .query_raw(sql, params.iter().copied())
            .await
            .context("compare used_minutes with the ledgers")?;
        Ok(Self {
            rows: Box::pin(rows),
        })
    }

    /// The next row; `None` at the end.
    ///
    /// # Errors
    /// The statement failed while running (e.g. `statement_timeout`).
    pub async fn next(&mut self) -> Option<Result<ScanRow, DbError>> {
        let row = self.rows.next().await?;
        Some(
            row.context("compare used_minutes with the ledgers")
                .map(|row| ScanRow::from_row(&row)),
        )
    }
}

/// The comparison's parameters, in the order `drifted_orgs.sql` numbers them (`$3` only in
/// the filtered variant, which alone names it).
pub fn sweep_params<'a>(
    args: &'a ScanArgs<'a>,
    orgs: &'a Option<Vec<Uuid>>,
) -> Vec<&'a (dyn ToSql + Sync)> {
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&args.period_start, &args.known_statuses];
    if let Some(orgs) = orgs {
        params.push(orgs);
    }
    params
}

/// Everything in memory: for `doctor` and for an incremental pass's few candidates.
///
/// # Errors
/// As [`ScanStream`].
pub async fn collect<C: GenericClient>(
    client: &C,
    sql: &str,
    args: &ScanArgs<'_>,
) -> Result<(UsageScan, Vec<LedgerMismatch>), DbError> {
    let orgs: Option<Vec<Uuid>> = args.orgs.map(<[Uuid]>::to_vec);
    let params = sweep_params(args, &orgs);
    let mut rows = ScanStream::start(client, sql, &params).await?;
    let mut scan = UsageScan::default();
    let mut mismatches = Vec::new();
    while let Some(row) = rows.next().await {
        scan.absorb(row?, &mut mismatches);
    }
    Ok((scan, mismatches))
}

impl UsageScan {
    /// Keep what a row says; a mismatch goes to `mismatches`.
    pub fn absorb(&mut self, row: ScanRow, mismatches: &mut Vec<LedgerMismatch>) {
        match row {
            ScanRow::Org(org) => self.disagreeing.push(org),
            ScanRow::Mismatch(m) => mismatches.push(m),
            ScanRow::Status(status, calls) => self.unknown_statuses.push((status, calls)),
            ScanRow::Total {
                orgs_checked,
                billed_minutes,
                unowned_metric_minutes,
                mismatches,
                log_rows,
                unknown_organizations,
            } => {
                self.orgs_checked = orgs_checked;
                self.billed_minutes = billed_minutes.unwrap_or_default();
                self.unowned_metric_minutes = unowned_metric_minutes;
                self.mismatch_count = mismatches;
                self.log_rows = log_rows;
                self.unknown_organizations = unknown_organizations;
            }
        }
    }
}
