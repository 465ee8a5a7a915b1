//! The sweep on a hot standby (`database.replica_url`, docs/design.md "Cost follows activity"):
//! before the comparison runs there, the replica must prove it follows this primary and has
//! replayed the pass's own start (its run row, the fold). What it finds is only a list of
//! candidates: they are re-read exactly on the primary, where confirm-then-write re-reads
//! them again under the row lock. So replica lag can delay a repair (the next pass sees it),
//! never make a wrong one. A replica that cannot serve falls back to the primary with a WARN.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Client, Pass};
use crate::db::{Database, DbError, QueryContext};
use crate::reconcile::tracking::TrackingState;

const REPLICA_STATE: &str = include_str!("../sql/replica_state.sql");

const POLL: Duration = Duration::from_millis(100);

/// Why the replica did not serve the sweep (said in the WARN line).
#[derive(Debug)]
pub(super) enum ReplicaRefusal {
    NotStandby,
    OtherDatabase,
    Behind { waited: Duration },
    Failed(DbError),
}

impl std::fmt::Display for ReplicaRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotStandby => {
                f.write_str("it is not a hot standby (pg_is_in_recovery() is false)")
            }
            Self::OtherDatabase => f.write_str(
                "it is not a copy of this database (its reconciler.tracking.database_id, or \
                 this pass's run row, differs)",
            ),
            Self::Behind { waited } => write!(
                f,
                "it did not replay this pass's start within {} s (replication lag)",
                waited.as_secs()
            ),
            Self::Failed(e) => write!(f, "{}", crate::telemetry::error_chain(e)),
        }
    }
}

impl Pass<'_> {
    /// A connection to the replica, proven to follow this primary and to have replayed what
    /// the pass wrote so far; `None` (with a WARN) when there is no replica or it cannot serve.
    pub(super) async fn replica_reader(
        &self,
        db: &Database,
        primary: &Client,
        tracking: &TrackingState,
    ) -> Option<Client> {
        let replica = db.replica()?;
        let started = Instant::now();
        match self.prove_replica(replica, primary, tracking).await {
            Ok((client, age_ms)) => {
                info!(
                    replica = replica.target(),
                    waited_ms = crate::telemetry::millis(started.elapsed()),
                    last_replay_age_ms = age_ms,
                    run_id = %self.report.run_id,
                    "sweep compares on the replica; candidates are re-read on the primary"
                );
                Some(client)
            }
            Err(refusal) => {
                self.replica_fallback(replica, &refusal);
                None
            }
        }
    }

    /// The WARN line when the sweep reads the primary after all.
    pub(super) fn replica_fallback(&self, replica: &Database, reason: &dyn std::fmt::Display) {
        warn!(
            replica = replica.target(),
            reason = %reason,
            run_id = %self.report.run_id,
            "sweep reads the primary: the replica cannot serve it"
        );
    }

    async fn prove_replica(
        &self,
        replica: &Database,
        primary: &Client,
        tracking: &TrackingState,
    ) -> Result<(Client, Option<i64>), ReplicaRefusal> {
        let lsn: String = primary
            .query_one("SELECT pg_catalog.pg_current_wal_lsn()::text", &[])
            .await
            .context("read the primary's WAL position")
            .map_err(ReplicaRefusal::Failed)?
            .get(0);
        let client = replica.client().await.map_err(ReplicaRefusal::Failed)?;
        let run_id = (!self.options.dry_run).then_some(self.report.run_id);
        let catch_up = Duration::from_secs(self.settings.database.replica_catch_up_seconds);
        let started = Instant::now();
        loop {
            let row = client
                .query_one(REPLICA_STATE, &[&tracking.database_id, &run_id, &lsn])
                .await
                .context("read the replica's state")
                .map_err(ReplicaRefusal::Failed)?;
            if !row.get::<_, bool>("in_recovery") {
                return Err(ReplicaRefusal::NotStandby);
            }
            if row.get::<_, Option<bool>>("same_database") != Some(true) {
                return Err(ReplicaRefusal::OtherDatabase);
            }
            // Caught up to the fold's position, yet without this pass's run row: the replica
            // follows another primary.
            let caught_up: bool = row.get("caught_up");
            if caught_up && !row.get::<_, bool>("sees_this_run") {
                return Err(ReplicaRefusal::OtherDatabase);
            }
            if caught_up {
                return Ok((client, row.get("replay_age_ms")));
            }
            if started.elapsed() >= catch_up {
                return Err(ReplicaRefusal::Behind { waited: catch_up });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
