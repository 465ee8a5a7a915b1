//! How a pass is asked for ([`PassOptions`], [`RunMode`]) and how it ended ([`PassOutcome`]).

use super::report::PassReport;

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
    /// Report only: no run row, no attribution, no repair, no settle wait.
    pub dry_run: bool,
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
