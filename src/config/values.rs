//! Value types of the configuration: the enum-valued keys (with their config spellings, also
//! used in logs and the journal) and [`Secret`], a string that never prints.

use std::fmt;

use serde::Deserialize;

/// A string that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it (connecting).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The billing period a counter covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// Every completed call ever (the seed's definition).
    AllTime,
    /// Calls created in the current calendar month, UTC.
    CalendarMonth,
}

/// Which ledger is the truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Calls,
    UsageMetrics,
}

/// Per-call rounding of numeric durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    Ceil,
    Round,
    Floor,
}

/// What to do with an orphaned call whose owner cannot be decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmbiguousPolicy {
    Skip,
    EarliestMembership,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

macro_rules! display_as_snake_case {
    ($($ty:ty => { $($variant:ident => $text:literal),* $(,)? })*) => {$(
        impl $ty {
            /// Every config spelling, for error messages.
            pub const SPELLINGS: &'static [&'static str] = &[$($text),*];

            /// The config spelling, also used in logs and the journal.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}

display_as_snake_case! {
    Period => { AllTime => "all_time", CalendarMonth => "calendar_month" }
    Source => { Calls => "calls", UsageMetrics => "usage_metrics" }
    Rounding => { Ceil => "ceil", Round => "round", Floor => "floor" }
    AmbiguousPolicy => { Skip => "skip", EarliestMembership => "earliest_membership" }
    LogFormat => { Text => "text", Json => "json" }
}
