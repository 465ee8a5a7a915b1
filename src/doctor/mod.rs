//! `doctor`: the incident write-up's verification checklist and the security checks, automated.
//! Each check prints `OK`, `WARN` or `FAIL` with its numbers and, when not OK, the fix.
//!
//! FAIL is for what is broken or exploitable (an unmigrated database, a hijackable or
//! over-granted `increment_used_minutes`, an exposed journal, a stalled reconciler); WARN is for
//! what a pass repairs or a human should look at (drift, orphans, ledger mismatch, a missing
//! index). `doctor` writes nothing: the function's input checks are probed in transactions that
//! are rolled back. A check that cannot run (privileges, a missing table) is a WARN saying so;
//! the others still run.
//!
//! This file holds the order of the checks; the report types are in [`report`], the checks
//! themselves in `security`, `data`, `operations` and `tracking` (what incremental passes rely
//! on), their SQL in `sql/`.

mod data;
mod operations;
pub mod report;
mod security;
mod tracking;

pub use self::report::{Check, DoctorReport, Verdict};
use crate::config::Settings;
use crate::db::{migrations, Database, DatabaseTarget, DbError};
use crate::telemetry::error_chain;

/// Run every check.
///
/// # Errors
/// Only when the database cannot be reached at all; a failing check is a line of the report.
pub async fn doctor(
    db: &Database,
    settings: &Settings,
    target: &DatabaseTarget,
) -> Result<DoctorReport, DbError> {
    let mut conn = db.dedicated().await?;
    let client = &mut conn.client;
    let mut checks = vec![security::connection(db, client, settings).await];
    let migrated = migrations::ensure_current(&*client).await;
    checks.push(operations::migrations_check(&migrated));
    let migrated = migrated.is_ok();
    checks.push(or_not_checked(
        "used_minutes column",
        data::used_minutes_column(&*client).await,
    ));
    checks.push(or_not_checked(
        "increment_used_minutes",
        security::function(client, migrated).await,
    ));
    if migrated {
        checks.push(or_not_checked(
            "journal privileges",
            security::journal_privileges(&*client).await,
        ));
    }
    checks.push(or_not_checked(
        "rows visible to the pass",
        security::visibility(&*client, settings).await,
    ));
    checks.push(or_not_checked(
        "ledger writers",
        security::ledger_writers(&*client).await,
    ));
    checks.extend(data::usage_checks(&*client, settings).await);
    checks.extend(or_not_checked_many(
        "orphaned calls",
        data::orphans(&*client).await,
    ));
    checks.push(data::orphaned_users(&*client).await);
    checks.push(if migrated {
        or_not_checked(
            "last successful pass",
            operations::last_success(&*client, settings).await,
        )
    } else {
        Check::fail(
            "last successful pass",
            "no reconciler journal in this database",
            "synqall-reconciler migrate, then start the daemon (or --reconcile-now)",
        )
    });
    checks.push(or_not_checked(
        "indexes",
        operations::indexes(&*client, settings).await,
    ));
    checks.push(or_not_checked(
        "used_minutes index",
        operations::used_minutes_index(&*client).await,
    ));
    if migrated {
        checks.push(or_not_checked(
            "change tracking",
            tracking::change_tracking(&*client).await,
        ));
    }
    checks.push(or_not_checked(
        "covering index",
        tracking::covering_index(&*client).await,
    ));
    Ok(DoctorReport {
        database: target.describe(),
        checks,
    })
}

fn or_not_checked(name: &'static str, result: Result<Check, DbError>) -> Check {
    result.unwrap_or_else(|e| Check::not_checked(name, error_chain(&e)))
}

fn or_not_checked_many(name: &'static str, result: Result<Vec<Check>, DbError>) -> Vec<Check> {
    result.unwrap_or_else(|e| vec![Check::not_checked(name, error_chain(&e))])
}
