//! The two kinds of pass: a sweep of every organization, or an incremental pass over the
//! change log (docs/design.md, "Cost follows activity").

/// What a pass compares: every organization, or those in the change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassKind {
    /// Every organization, from the ledgers themselves (`--reconcile-now`, the nightly sweep).
    #[default]
    Sweep,
    /// Only the organizations whose ledgers or counter changed since the last pass, from the
    /// change log (the daemon's `schedule.cron`, `--reconcile-now --incremental`). Escalates
    /// to a sweep when it cannot be trusted (tracking not built yet, a TRUNCATE logged, the
    /// first pass of a calendar month).
    Incremental,
}

impl PassKind {
    /// The journal's spelling (`reconciler.runs.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sweep => "sweep",
            Self::Incremental => "incremental",
        }
    }
}
