//! How a pass is asked for ([`PassOptions`], [`RunMode`]) and how it ended ([`PassOutcome`],
//! or [`PassError`]).

pub use super::kind::PassKind;
use super::report::PassReport;
use super::visibility::Blind;
use crate::db::DbError;

/// Who started the pass; recorded in `reconciler.runs.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    Daemon,
    Once,
    Demo,
}

impl RunMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daemon => "daemon",
            Self::Once => "once",
            Self::Demo => "demo",
        }
    }
}

/// How to run one pass.
#[derive(Debug, Clone, Copy)]
pub struct PassOptions {
    pub mode: RunMode,
    /// What to compare (an incremental pass may still become a sweep).
    pub kind: PassKind,
    /// Report only: no run row, no attribution, no repair, no settle wait.
    pub dry_run: bool,
    /// A person looked (`--dry-run`) and allows a mass correction this once.
    pub allow_mass_correction: bool,
}

/// The result of a pass that did not fail.
// One value per pass: its size does not matter, and boxing would only add noise at every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum PassOutcome {
    /// Another instance holds the advisory lock; nothing was done or written.
    LockHeld,
    Completed(PassReport),
}

/// Why a pass failed. Batches committed before the failure stay committed and journalled.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// See before you write: the login cannot see (or write) what the pass reasons about.
    #[error("refusing to write: {}", blind_list(.0))]
    Blind(Vec<Blind>),
    /// A bug: the pass panicked. Caught so the run is closed as failed and logged.
    #[error("the pass panicked: {0}")]
    Panicked(String),
}

fn blind_list(blind: &[Blind]) -> String {
    blind
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl PassError {
    /// The one `ERROR reconcile pass failed` line; returns the message for the run row.
    pub fn log(&self, run_id: uuid::Uuid) -> String {
        let message = crate::telemetry::error_chain(self);
        tracing::error!(%run_id, error = message.as_str(), "reconcile pass failed");
        message
    }

    /// The connection is gone (see [`DbError::is_connection_loss`]).
    pub fn is_connection_loss(&self) -> bool {
        matches!(self, Self::Db(e) if e.is_connection_loss())
    }
}
