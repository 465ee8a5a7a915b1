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
use super::queries::PassQueries;
use super::usage::{BadValues, OrgUsage, UsageScan};
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
    /// The totals row.
    Total {
        orgs_checked: i64,
        billed_minutes: Option<i64>,
        unowned_metric_minutes: i64,
        mismatches: Option<i64>,
        /// Incremental comparison only: log rows read, and whether one names no organization.
        log_rows: i64,
        unknown_organizations: bool,
        /// Calls of a status outside `usage.known_statuses` (`doctor`'s comparison or a
        /// re-read; the sweep's does not count them: [`count_unknown_statuses`]).
        unknown_status_calls: i64,
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
                unknown_status_calls: row
                    .get::<_, Option<i64>>("unknown_status_calls")
                    .unwrap_or_default(),
            },
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
                bad_values: row
                    .get::<_, Option<Vec<i64>>>("bad_values")
                    .as_deref()
                    .and_then(BadValues::from_counts),
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

/// The parameters of a comparison that counts unknown statuses, in the order
/// `drifted_orgs.sql` numbers them (`$3` only in the filtered variant, which alone names it).
/// The sweep's comparison has `$1` alone ([`lean_sweep_params`]).
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

/// The sweep's comparison's one parameter: it reads completed calls only.
pub fn lean_sweep_params<'a>(args: &'a ScanArgs<'a>) -> [&'a (dyn ToSql + Sync); 1] {
    [&args.period_start]
}

/// Everything in memory: for `doctor` and for an incremental pass's few candidates (the
/// organizations of `args.orgs`, or all).
///
/// # Errors
/// As [`ScanStream`].
pub async fn collect<C: GenericClient>(
    client: &C,
    queries: &PassQueries,
    args: &ScanArgs<'_>,
) -> Result<(UsageScan, Vec<LedgerMismatch>), DbError> {
    let (sql, _) = statements(queries, args);
    let orgs: Option<Vec<Uuid>> = args.orgs.map(<[Uuid]>::to_vec);
    let params = sweep_params(args, &orgs);
    let mut rows = ScanStream::start(client, sql, &params).await?;
    let mut scan = UsageScan::default();
    let mut mismatches = Vec::new();
    while let Some(row) = rows.next().await {
        scan.absorb(row?, &mut mismatches);
    }
    name_unknown_statuses(client, queries, args, &mut scan).await?;
    Ok((scan, mismatches))
}

/// The comparison and the naming of unknown statuses for `args`: of every organization, or
/// filtered to `args.orgs`.
fn statements<'q>(queries: &'q PassQueries, args: &ScanArgs<'_>) -> (&'q str, &'q str) {
    match args.orgs {
        Some(_) => (&queries.candidate_orgs, &queries.candidate_unknown_statuses),
        None => (&queries.drifted_orgs, &queries.unknown_statuses),
    }
}

/// When the comparison counted calls of unknown statuses, name the statuses (a second read
/// of those organizations' calls; none at all on clean data).
///
/// # Errors
/// The statement failed.
pub async fn name_unknown_statuses<C: GenericClient>(
    client: &C,
    queries: &PassQueries,
    args: &ScanArgs<'_>,
    scan: &mut UsageScan,
) -> Result<(), DbError> {
    if scan.unknown_status_calls == 0 {
        return Ok(());
    }
    let (_, sql) = statements(queries, args);
    scan.unknown_statuses = read_unknown_statuses(client, sql, args).await?;
    Ok(())
}

/// Above this many drifted organizations a sweep counts the calls of unknown statuses in one
/// read of every call rather than through the drifted organizations' index lookups.
const DRIFTED_STATUS_READ_MAX: usize = 10_000;

/// The sweep's comparison reads completed calls only, so the calls of unknown statuses are
/// counted and named apart: of every organization (a second read of calls) when the planner's
/// statistics of `calls.status` show such statuses, or there are none; otherwise of the
/// drifted organizations alone (a status the app bills and the configuration does not know
/// makes its organizations drift, and this names it where it matters). Returns why it read
/// every call, when it did.
///
/// # Errors
/// A statement failed.
pub async fn count_unknown_statuses<C: GenericClient>(
    client: &C,
    queries: &PassQueries,
    args: &ScanArgs<'_>,
    scan: &mut UsageScan,
) -> Result<Option<&'static str>, DbError> {
    let statistics_show_them: bool = client
        .query_one(queries.status_statistics, &[&args.known_statuses])
        .await
        .context("read the statistics of calls.status")?
        .get("count_them");
    let drifted: Vec<Uuid> = scan.disagreeing.iter().map(|o| o.org_id).collect();
    let everything = if statistics_show_them {
        Some(
            "the statistics of calls.status show statuses outside usage.known_statuses \
             (or calls was never analyzed)",
        )
    } else if drifted.len() > DRIFTED_STATUS_READ_MAX {
        Some("more organizations drifted than their calls are worth reading by index")
    } else {
        None
    };
    if everything.is_none() && drifted.is_empty() {
        return Ok(None);
    }
    let (sql, orgs) = if everything.is_some() {
        (&queries.unknown_statuses, None)
    } else {
        (
            &queries.candidate_unknown_statuses,
            Some(drifted.as_slice()),
        )
    };
    let read = ScanArgs {
        orgs,
        ..args.clone()
    };
    scan.unknown_statuses = read_unknown_statuses(client, sql, &read).await?;
    scan.unknown_status_calls = scan.unknown_statuses.iter().map(|(_, n)| n).sum();
    Ok(everything)
}

/// The unknown statuses with their calls, by `sql` (a variant of `sql/unknown_statuses.sql`).
async fn read_unknown_statuses<C: GenericClient>(
    client: &C,
    sql: &str,
    args: &ScanArgs<'_>,
) -> Result<Vec<(Option<String>, i64)>, DbError> {
    let orgs: Option<Vec<Uuid>> = args.orgs.map(<[Uuid]>::to_vec);
    let params = sweep_params(args, &orgs);
    let rows = client
        .query(sql, &params)
        .await
        .context("name the calls' unknown statuses")?;
    Ok(rows
        .iter()
        .map(|r| (r.get("status"), r.get("calls")))
        .collect())
}

impl UsageScan {
    /// Keep what a row says; a mismatch goes to `mismatches`.
    pub fn absorb(&mut self, row: ScanRow, mismatches: &mut Vec<LedgerMismatch>) {
        match row {
            ScanRow::Org(org) => self.disagreeing.push(org),
            ScanRow::Mismatch(m) => mismatches.push(m),
            ScanRow::Total {
                orgs_checked,
                billed_minutes,
                unowned_metric_minutes,
                mismatches,
                log_rows,
                unknown_organizations,
                unknown_status_calls,
            } => {
                self.unknown_status_calls = unknown_status_calls;
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
