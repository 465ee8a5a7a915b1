//! What `doctor` prints: one [`Check`] per line (`OK`, `WARN` or `FAIL`, the numbers, the fix),
//! gathered in a [`DoctorReport`] that renders as a table or as JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// The outcome of one check, worst last (so `max` is the overall verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    pub(super) fn label(self) -> &'static str {
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
    /// The numbers in `detail`, as fields for scripts (`--json`): `{"drifted": 3, …}`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<&'static str, serde_json::Value>,
}

impl Check {
    pub(super) fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            verdict: Verdict::Ok,
            detail: detail.into(),
            fix: None,
            facts: BTreeMap::new(),
        }
    }

    /// Add a number (or other value) behind the prose, for `--json`.
    pub(super) fn fact(mut self, key: &'static str, value: impl Into<serde_json::Value>) -> Self {
        self.facts.insert(key, value.into());
        self
    }

    pub(super) fn warn(
        name: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::with_fix(name, Verdict::Warn, detail.into(), fix.into())
    }

    pub(super) fn fail(
        name: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::with_fix(name, Verdict::Fail, detail.into(), fix.into())
    }

    fn with_fix(name: &'static str, verdict: Verdict, detail: String, fix: String) -> Self {
        Self {
            name,
            verdict,
            detail,
            fix: Some(fix),
            facts: BTreeMap::new(),
        }
    }

    /// A check that could not run is a WARN naming why: never a silent OK.
    pub(super) fn not_checked(name: &'static str, why: impl fmt::Display) -> Self {
        Self::warn(
            name,
            format!("not checked: {why}"),
            "run doctor as the database owner (or a role that can read this), or fix the cause above",
        )
    }
}

/// Everything `doctor` found. As JSON: `{"database", "summary": {"fail", "warn", "ok"},
/// "checks": [{"name", "verdict", "detail", "fix", "facts"}]}`.
#[derive(Debug, Clone)]
pub struct DoctorReport {
    pub database: String,
    pub checks: Vec<Check>,
}

/// The verdict counts, for `--json`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub fail: usize,
    pub warn: usize,
    pub ok: usize,
}

impl DoctorReport {
    /// Some check FAILed (exit 2).
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.verdict == Verdict::Fail)
    }

    pub(super) fn count(&self, verdict: Verdict) -> usize {
        self.checks.iter().filter(|c| c.verdict == verdict).count()
    }

    pub fn summary(&self) -> Summary {
        Summary {
            fail: self.count(Verdict::Fail),
            warn: self.count(Verdict::Warn),
            ok: self.count(Verdict::Ok),
        }
    }
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

impl Serialize for DoctorReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut report = serializer.serialize_struct("DoctorReport", 3)?;
        report.serialize_field("database", &self.database)?;
        report.serialize_field("summary", &self.summary())?;
        report.serialize_field("checks", &self.checks)?;
        report.end()
    }
}
