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
//! This file holds the report types and the order of the checks; the checks themselves are in
//! [`security`], [`data`] and [`operations`], their SQL in `sql/`.

mod data;
mod operations;
mod security;

use std::fmt;

use serde::Serialize;

use crate::config::Settings;
use crate::db::{migrations, Database, DatabaseTarget, DbError};
use crate::telemetry::error_chain;

/// How many of the worst drifted organizations a check names.
const WORST: usize = 5;

/// The outcome of one check, worst last (so `max` is the overall verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    /// What was found, with the numbers.
    pub detail: String,
    /// What to do about it (absent when OK).
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            verdict: Verdict::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            verdict: Verdict::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            verdict: Verdict::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// A check that could not run is a WARN naming why: never a silent OK.
    fn not_checked(name: &'static str, why: impl fmt::Display) -> Self {
        Self::warn(
            name,
            format!("not checked: {why}"),
            "run doctor as the database owner (or a role that can read this), or fix the cause above",
        )
    }
}

/// Everything `doctor` found.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    pub database: String,
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// Some check FAILed (exit 2).
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.verdict == Verdict::Fail)
    }

    fn count(&self, verdict: Verdict) -> usize {
        self.checks.iter().filter(|c| c.verdict == verdict).count()
    }
}

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
    let mut checks = vec![security::connection(client, settings).await];
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

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "synqall-reconciler doctor: {}", self.database)?;
        for check in &self.checks {
            writeln!(
                f,
                "{:<5} {:<24} {}",
                check.verdict.label(),
                check.name,
                check.detail
            )?;
            if let Some(fix) = &check.fix {
                writeln!(f, "{:<30} fix: {fix}", "")?;
            }
        }
        writeln!(
            f,
            "{} FAIL, {} WARN, {} OK",
            self.count(Verdict::Fail),
            self.count(Verdict::Warn),
            self.count(Verdict::Ok)
        )
    }
}
