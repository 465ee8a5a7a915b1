//! One reconcile pass, the single entry point [`run_once`] shared by the daemon,
//! `--reconcile-now`, `demo` and the tests. docs/design.md ("One pass") says what a pass
//! guarantees and why; this module is its outline.
//!
//! Order of work: take the advisory lock (or skip), check migrations and schema, open the run
//! row, attribute orphaned calls, compare counters with the ledgers (with a calendar-month
//! period also: over-quota warnings, and counters never reset at the month boundary marked as
//! period resets rather than drift), wait for drift to settle, confirm and repair in batches
//! (re-checking the lock before each), close the run row, log the summary. Whatever happens,
//! [`pass::Pass::finish`] logs the outcome, closes the run row and the lock is released.
//!
//! Modules, one step each: [`orphans`] (step 3), [`usage`] (step 4), [`repair`] (step 5),
//! [`journal`] (the run row), [`report`] (log lines and the printed report), [`queries`] (the
//! SQL), [`control`] (progress and cancellation seen from outside), [`outcome`] (how a pass is
//! asked for and how it ended), [`pass`] (the steps in order).

pub mod access;
pub mod control;
pub mod guard;
pub mod journal;
pub mod kind;
pub mod mismatch;
pub mod orphans;
pub mod outcome;
pub mod pass;
pub mod queries;
pub mod repair;
pub mod report;
pub mod scan;
pub mod tracking;
pub mod usage;
pub mod visibility;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;

use tracing::info;
use uuid::Uuid;

use self::control::PassControl;
pub use self::outcome::{PassError, PassKind, PassOptions, PassOutcome, RunMode};
use self::pass::Pass;
pub use self::report::PassReport;
use crate::config::Settings;
use crate::db::lock::AdvisoryLock;
use crate::db::{Database, DbError};

/// Run one pass.
///
/// # Errors
/// Connection loss, an unmigrated database, a missing column, a failed statement, or loss of
/// the advisory lock. Batches committed before the failure stay committed and journalled; the
/// failure is logged (`ERROR reconcile pass failed`) and the run row closed as `failed`
/// before this returns.
pub async fn run_once(
    db: &Database,
    settings: &Settings,
    options: PassOptions,
    control: &PassControl,
) -> Result<PassOutcome, PassError> {
    let started = Instant::now();
    control.progress.bump();
    let run_id = Uuid::new_v4();
    let lock = match AdvisoryLock::try_acquire(db, settings.lock.key, settings.lease()).await {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            info!(
                lock_key = settings.lock.key.to_string().as_str(),
                "reconcile pass skipped: the advisory lock is held by another instance"
            );
            return Ok(PassOutcome::LockHeld);
        }
        Err(e) => {
            let e = PassError::Db(e);
            e.log(run_id);
            return Err(e);
        }
    };
    let mut pass = Pass::new(settings, control, &lock, run_id, options);
    // A panic (a bug) must not leave the run row `running` and the journal silent: it becomes
    // a failed pass like any other. Nor may a hung server hang the pass: past its deadline it
    // is cancelled, its statement too.
    let deadline = Duration::from_secs(settings.database.pass_timeout_seconds);
    let run = AssertUnwindSafe(pass.run(db)).catch_unwind();
    let result = match tokio::time::timeout(deadline, run).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(PassError::Panicked(panic_message(panic.as_ref()))),
        Err(_) => {
            pass.cancel_statement(db).await;
            Err(PassError::Db(DbError::Timeout {
                what: "the pass (database.pass_timeout_seconds)",
                seconds: deadline.as_secs(),
            }))
        }
    };
    let outcome = pass.finish(db, result, started).await;
    lock.release().await;
    outcome
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string())
}
