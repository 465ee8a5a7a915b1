//! Step 3 of a pass: orphaned calls attributed by the rule (or reported), and the orphaned
//! users counted.

use tokio_postgres::error::SqlState;
use tracing::{info, warn};

use super::{Client, Pass};
use crate::db::{DbError, QueryContext};
use crate::reconcile::orphans::{self, Attribution, Decision};
use crate::reconcile::queries::{self, PassQueries};
use crate::reconcile::report;
use crate::telemetry::{error_chain, OrNull};

impl Pass<'_> {
    /// Step 3: attribute what can be attributed, report the rest.
    pub(super) async fn orphaned_calls(
        &mut self,
        client: &Client,
        queries: &PassQueries,
    ) -> Result<(), DbError> {
        let run_id = self.report.run_id;
        let orphans = orphans::find(&***client, queries).await?;
        let mut warn_budget = self.budget("orphaned call");
        let mut to_attribute = Vec::new();
        for call in &orphans {
            match orphans::decide(call, self.settings.orphans.ambiguous) {
                Decision::Attribute { org_id, rule } => to_attribute.push(Attribution {
                    call_id: call.call_id,
                    org_id,
                    rule,
                }),
                Decision::Ambiguous { candidates } => {
                    self.report.orphans_ambiguous += 1;
                    if warn_budget.allow() {
                        report::log_ambiguous_orphan(run_id, call, &candidates);
                    }
                }
                Decision::NoMembership => {
                    self.report.orphans_no_membership += 1;
                    if warn_budget.allow() {
                        warn!(
                            call_id = %call.call_id,
                            user_id = %OrNull(call.user_id),
                            %run_id,
                            "orphaned call without membership"
                        );
                    }
                }
            }
        }
        warn_budget.finish(run_id, false);
        self.attribute(client, &to_attribute).await
    }

    /// Step 3: attribute in batches, each one statement with its journal rows.
    async fn attribute(
        &mut self,
        client: &Client,
        to_attribute: &[Attribution],
    ) -> Result<(), DbError> {
        let (run_id, dry_run) = (self.report.run_id, self.options.dry_run);
        let mut info_budget = self.budget("orphaned call attributed");
        for batch in to_attribute.chunks(self.settings.usage.batch_size) {
            if self.stop_requested() {
                break;
            }
            let attributed = if dry_run {
                batch.iter().map(|a| a.call_id).collect()
            } else {
                self.lock.ensure_held().await?;
                orphans::attribute(&***client, run_id, batch, self.lock.fence()).await?
            };
            self.control.progress.bump();
            self.report.orphans_fixed += attributed.len() as u64;
            for a in batch.iter().filter(|a| attributed.contains(&a.call_id)) {
                if info_budget.allow() {
                    report::log_attribution(run_id, a, dry_run);
                }
            }
        }
        info_budget.finish(run_id, false);
        Ok(())
    }

    /// The seed's "orphaned users" check: counted only; skipped where auth.users is not there.
    pub(super) async fn orphaned_users(&mut self, client: &Client) -> Result<(), DbError> {
        match client.query_one(queries::ORPHANED_USERS, &[]).await {
            Ok(row) => {
                let n: i64 = row.get(0);
                self.report.orphaned_users = Some(n);
                if n > 0 {
                    info!(orphaned_users = n, run_id = %self.report.run_id, "users without any organization");
                }
                Ok(())
            }
            Err(e)
                if [
                    SqlState::UNDEFINED_TABLE,
                    SqlState::INVALID_SCHEMA_NAME,
                    SqlState::INSUFFICIENT_PRIVILEGE,
                ]
                .iter()
                .any(|c| e.code() == Some(c)) =>
            {
                info!(
                    reason = error_chain(&e).as_str(),
                    "orphaned users check skipped: auth.users is absent or unreadable"
                );
                Ok(())
            }
            Err(e) => Err(e).context("count orphaned users"),
        }
    }
}
