//! Step 4 of a sweep: consume the change log, compare every organization with both ledgers in
//! one streamed statement (ledger-mismatch changes applied in batches as they arrive, so memory
//! stays flat), on the replica when one serves (`replica_steps`); the first sweep makes the
//! change tracking usable.

use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::info;
use uuid::Uuid;

use super::{Client, Pass, PROGRESS_EVERY};
use crate::db::{Database, DbError, QueryContext};
use crate::reconcile::access::{self, ReadMode, SweepRead};
use crate::reconcile::mismatch::LedgerMismatch;
use crate::reconcile::queries::PassQueries;
use crate::reconcile::scan::{self, ScanArgs, ScanRow, ScanStream};
use crate::reconcile::tracking::{self, TrackingState};
use crate::reconcile::usage::UsageScan;
use crate::telemetry;

/// Ledger-mismatch changes applied per statement while the comparison streams.
const MISMATCH_BATCH: usize = 5_000;

/// Which side of the comparison failed: reading (a replica's failure falls back to the
/// primary) or writing the mismatch changes on the primary (the pass fails).
enum ScanFailure {
    Read(DbError),
    Write(DbError),
}

impl ScanFailure {
    fn into_inner(self) -> DbError {
        match self {
            Self::Read(e) | Self::Write(e) => e,
        }
    }
}

impl Pass<'_> {
    /// Step 4 of a sweep; returns what the comparison found (drift, quota, statuses, totals).
    pub(super) async fn sweep(
        &mut self,
        db: &Database,
        client: &mut Client,
        queries: &PassQueries,
        tracking: &TrackingState,
        period_start: Option<DateTime<Utc>>,
    ) -> Result<UsageScan, DbError> {
        let fence = self.lock.fence();
        // The TRUNCATE markers this sweep covers: those visible before it compares.
        let unknown = tracking::unknown_markers(&***client).await?;
        crate::fault::pause("sweep").await;
        let scan = self
            .compare(db, client, queries, tracking, period_start)
            .await?;
        self.report.orgs_checked = scan.orgs_checked;
        self.report.ledger_mismatches =
            u64::try_from(scan.mismatch_count.unwrap_or(0)).unwrap_or(0);
        self.report.billed_minutes = Some(scan.billed_minutes);
        if !self.options.dry_run {
            self.lock.ensure_held().await?;
            // The log rows the comparison's snapshot saw are consumed: every organization was
            // judged in that snapshot (its drift, with insurance markers until settled).
            let drifted: Vec<Uuid> = scan.disagreeing.iter().map(|o| o.org_id).collect();
            let snapshot = scan.read_snapshot.as_deref().unwrap_or_default();
            let consumed = tracking::consume_seen(client, snapshot, &drifted, fence).await?;
            self.report.log_rows_folded = consumed.folded;
            // Judged later on the primary (after a replica's comparison): their markers stay,
            // and the next incremental pass judges them in its own snapshot.
            if !scan.candidates_judged_later {
                self.insurance = consumed.insurance;
            }
            self.keep_tracking_honest(client, tracking).await?;
            tracking::clear_unknown(&***client, &unknown, fence).await?;
        }
        Ok(scan)
    }

    /// Compare every organization (and count the users without organization, a scan of all
    /// users): on the replica when it serves (its candidates then re-read exactly here), else
    /// here. A replica that fails mid-read falls back to the primary; a failed write on the
    /// primary fails the pass.
    async fn compare(
        &mut self,
        db: &Database,
        client: &Client,
        queries: &PassQueries,
        tracking: &TrackingState,
        period_start: Option<DateTime<Utc>>,
    ) -> Result<UsageScan, DbError> {
        // Decided on the primary: a standby keeps no statistics of the primary's writes.
        let read = SweepRead::choose(&access::inspect(&***client).await?);
        if let (Some(replica), Some(reader)) = (
            db.replica(),
            self.replica_reader(db, client, tracking).await,
        ) {
            let users = self.orphaned_users(&reader).await;
            let found = match users {
                Ok(()) => {
                    self.compare_everything(db, &reader, queries, &read, period_start)
                        .await
                }
                Err(e) => Err(ScanFailure::Read(e)),
            };
            match found {
                Ok(found) => {
                    let candidates: Vec<Uuid> =
                        found.disagreeing.iter().map(|o| o.org_id).collect();
                    // The replica's mismatch changes are applied already; the primary's exact
                    // re-read decides drift only.
                    let (exact, _changes) = self
                        .reread(&***client, queries, &candidates, period_start)
                        .await?;
                    return Ok(UsageScan {
                        disagreeing: exact.disagreeing,
                        candidates_judged_later: true,
                        ..found
                    });
                }
                Err(ScanFailure::Read(e)) => {
                    self.replica_fallback(replica, &telemetry::error_chain(&e));
                }
                Err(ScanFailure::Write(e)) => return Err(e),
            }
        }
        self.orphaned_users(client).await?;
        self.compare_everything(db, client, queries, &read, period_start)
            .await
            .map_err(ScanFailure::into_inner)
    }

    /// The one statement that compares every counter with both ledgers, in a read-only
    /// transaction on `source` that reads the ledgers as `read` says (`access`).
    async fn compare_everything(
        &mut self,
        db: &Database,
        source: &Client,
        queries: &PassQueries,
        read: &SweepRead,
        period_start: Option<DateTime<Utc>>,
    ) -> Result<UsageScan, ScanFailure> {
        match read.mode() {
            ReadMode::Indexes => info!(
                run_id = %self.report.run_id,
                "sweep reads the ledgers through their covering indexes"
            ),
            ReadMode::Tables => info!(
                run_id = %self.report.run_id,
                why = read.why_tables().as_str(),
                "sweep reads the ledgers' tables"
            ),
            ReadMode::OneIndex { .. } => info!(
                run_id = %self.report.run_id,
                read = read.as_str(),
                why = read.why_tables().as_str(),
                "sweep reads one ledger through its covering index and the other's table"
            ),
        }
        self.report.sweep_read = Some(read.as_str());
        let begin = read.begin(self.settings.database.sweep_work_mem_mb);
        source
            .batch_execute(&begin)
            .await
            .context("begin the sweep's read")
            .map_err(ScanFailure::Read)?;
        let found = match source
            .query_one("SELECT pg_catalog.pg_current_snapshot()::text", &[])
            .await
        {
            Ok(row) => self
                .stream_comparison(
                    db,
                    source,
                    queries,
                    &queries.sweep_comparison(read.shapes(), read.metric_sum()),
                    period_start,
                )
                .await
                .map(|scan| UsageScan {
                    read_snapshot: Some(row.get(0)),
                    ..scan
                }),
            Err(e) => Err(ScanFailure::Read(DbError::Query {
                what: "read the sweep's snapshot",
                source: e,
            })),
        };
        // The transaction only read: a failed end fails the read (the connection is gone).
        let end = if found.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = source
            .batch_execute(end)
            .await
            .context("end the sweep's read");
        match (found, ended) {
            (Ok(scan), Ok(())) => Ok(scan),
            (Ok(_), Err(e)) => Err(ScanFailure::Read(e)),
            (Err(e), _) => Err(e),
        }
    }

    /// The comparison (`comparison`, one of `queries`' sweep statements) streamed from
    /// `source`, with a progress line every few seconds while it runs. The mismatch changes
    /// are written on the primary (`db`).
    async fn stream_comparison(
        &mut self,
        db: &Database,
        source: &Client,
        queries: &PassQueries,
        comparison: &str,
        period_start: Option<DateTime<Utc>>,
    ) -> Result<UsageScan, ScanFailure> {
        let run_id = self.report.run_id;
        let started = Instant::now();
        let args = ScanArgs {
            period_start,
            known_statuses: &self.settings.usage.known_statuses,
            orgs: None,
        };
        let params = scan::lean_sweep_params(&args);
        let mut rows = ScanStream::start(&***source, comparison, &params)
            .await
            .map_err(ScanFailure::Read)?;
        // Mismatch changes are written on a connection of their own while the rows arrive.
        let writer = db.client().await.map_err(ScanFailure::Write)?;
        let mut scan = UsageScan::default();
        let mut changes: Vec<LedgerMismatch> = Vec::new();
        let mut budget = self.budget("ledger mismatch");
        let mut progress =
            tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        loop {
            let row = tokio::select! {
                row = rows.next() => row,
                _ = progress.tick() => {
                    info!(
                        %run_id,
                        elapsed_s = started.elapsed().as_secs(),
                        "reconcile pass progress: comparing used_minutes with the ledgers"
                    );
                    continue;
                }
            };
            match row.transpose().map_err(ScanFailure::Read)? {
                None => break,
                Some(ScanRow::Mismatch(change)) => {
                    changes.push(change);
                    if changes.len() >= MISMATCH_BATCH {
                        self.apply_mismatches(&**writer, &changes, &mut budget)
                            .await
                            .map_err(ScanFailure::Write)?;
                        changes.clear();
                        self.control.progress.bump();
                    }
                }
                Some(other) => scan.absorb(other, &mut changes),
            }
        }
        self.apply_mismatches(&**writer, &changes, &mut budget)
            .await
            .map_err(ScanFailure::Write)?;
        // In the same snapshot, on the same server: the comparison read completed calls only.
        let reread = scan::count_unknown_statuses(&***source, queries, &args, &mut scan)
            .await
            .map_err(ScanFailure::Read)?;
        if let Some(why) = reread {
            info!(
                %run_id,
                unknown_status_calls = scan.unknown_status_calls,
                why,
                "sweep read calls a second time to count the calls of unknown statuses"
            );
        }
        budget.finish(run_id, false);
        self.report.scan_ms = telemetry::millis(started.elapsed());
        self.control.progress.bump();
        Ok(scan)
    }

    /// The first sweep since the triggers exist covered every organization: from now on
    /// incremental passes may rely on the log.
    async fn keep_tracking_honest(
        &mut self,
        client: &Client,
        tracking: &TrackingState,
    ) -> Result<(), DbError> {
        if tracking.initialized {
            return Ok(());
        }
        let (run_id, fence) = (self.report.run_id, self.lock.fence());
        tracking::mark_initialized(&***client, run_id, fence).await?;
        info!(
            %run_id,
            "change tracking ready: incremental passes compare only what changed from now on"
        );
        Ok(())
    }
}
