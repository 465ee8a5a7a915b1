//! Per-pass caps on detail lines: at most `alert.max_critical_lines_per_pass` lines of one kind
//! (CRITICAL drift lines, and also each kind of WARN/INFO detail line: ambiguous orphans,
//! ledger mismatches, revert restores…), then one summary line counting the rest, so a mass
//! drift cannot flood the journal.

use tracing::warn;
use uuid::Uuid;

use super::values::critical;

/// At most `max` detail lines of one kind per pass; the rest are counted and summarised once
/// by [`LineBudget::finish`].
#[derive(Debug)]
pub struct LineBudget {
    kind: &'static str,
    max: usize,
    used: usize,
    suppressed: u64,
}

impl LineBudget {
    pub fn new(kind: &'static str, max: usize) -> Self {
        Self {
            kind,
            max,
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether one more line may be logged; counts the ones that may not.
    pub fn allow(&mut self) -> bool {
        if self.used < self.max {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Lines not logged so far.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// Log the one summary line for what was suppressed, if anything was: CRITICAL when the
    /// suppressed lines were CRITICAL (so an alert on CRITICAL still sees them), else WARN.
    pub fn finish(&self, run_id: Uuid, critical: bool) {
        if self.suppressed == 0 {
            return;
        }
        if critical {
            critical!(kind = self.kind, suppressed = self.suppressed, %run_id,
                "used_minutes drift lines suppressed (alert.max_critical_lines_per_pass)");
        } else {
            warn!(
                kind = self.kind,
                suppressed = self.suppressed,
                %run_id,
                "log lines suppressed (alert.max_critical_lines_per_pass)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_up_to_the_cap_and_counts_the_rest() {
        let mut budget = LineBudget::new("x", 2);
        let allowed = (0..5).filter(|_| budget.allow()).count();
        assert_eq!((allowed, budget.suppressed()), (2, 3));
    }
}
