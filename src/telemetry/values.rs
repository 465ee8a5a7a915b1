//! Small pieces every module that talks to people uses: [`OrNull`] for values that may be
//! NULL, [`error_chain`] for errors with their causes, [`millis`] for `…_ms` fields, and the
//! [`critical!`] macro for the CRITICAL level.

use std::fmt::{self, Write as _};

/// Log an event at the CRITICAL level: an ERROR that prints as `CRITICAL`.
macro_rules! critical {
    ($($arg:tt)+) => {
        ::tracing::error!(severity = "CRITICAL", $($arg)+)
    };
}
pub(crate) use critical;

/// A value that may be NULL, as log lines and reports print it: the value, or `NULL` (a NULL
/// counter, a call without user or organization). JSON logs turn `NULL` into `null`.
pub struct OrNull<T>(pub Option<T>);

impl<T: fmt::Display> fmt::Display for OrNull<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("NULL"),
        }
    }
}

/// What [`NullableText`] displays for NULL. PostgreSQL text cannot hold a NUL character, so no
/// real value can look like this; the log formatter turns it into a bare `NULL` (JSON `null`).
pub const NULL_TEXT: &str = "\u{0}NULL";

/// Free text from the database that may be NULL (an organization without a name), for
/// `%`-fields of the log: a name is always quoted, a NULL is a bare `NULL`, so no name can pass
/// for a NULL.
pub struct NullableText<'a>(pub Option<&'a str>);

impl fmt::Display for NullableText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.unwrap_or(NULL_TEXT))
    }
}

/// A duration as a `…_ms` log field: whole milliseconds, saturating.
pub fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `outer: inner: root`, so the cause is in the one line. Every error shown to a person goes
/// through this: a bare `tokio_postgres::Error` displays only "db error", its cause (the
/// server's message) is one level down.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    // tokio-postgres says only "db error" for what the server said; the server's words are
    // the next cause, so that placeholder is dropped wherever it appears.
    const PLACEHOLDER: &str = "db error";
    let strip = |s: String| -> String {
        s.strip_suffix(PLACEHOLDER)
            .map(|rest| rest.trim_end_matches(": ").to_string())
            .unwrap_or(s)
    };
    let mut text = strip(error.to_string());
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = strip(cause.to_string());
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            let _ = write!(text, "{cause_text}");
        }
        source = cause.source();
    }
    text
}
