//! Log output: one event per line, `LEVEL message key=value …` in text or one JSON object in
//! JSON, on stderr (journald captures it under systemd). These lines are an interface people
//! grep (docs/design.md, "Log lines"), so the format is ours, not `tracing-subscriber`'s default:
//!
//! - `CRITICAL` is a level here: events emitted with [`critical!`] (an ERROR carrying
//!   `severity = "CRITICAL"`) print `CRITICAL` where the level goes.
//! - Free-text fields ([`format::ALWAYS_QUOTED`]: `org_name`, `error`, `reason`) are always
//!   quoted and escaped (`org_name="Acme \"Q\" Ltd\n"` stays one line); other values are quoted
//!   only when they contain spaces, quotes, `=` or control characters.
//! - Under systemd (`JOURNAL_STREAM` set) the timestamp is left out: the journal has its own.
//! - JSON (`--log-format json`) carries the same fields as typed values: numbers are numbers, a
//!   NULL counter is `null`, ids and free text are strings.
//!
//! Modules: [`format`] renders one event; [`budget`] caps detail lines per pass. Shared by the
//! pass, `doctor` and `revert`: [`OrNull`], [`error_chain`], [`millis`].

pub mod budget;
pub mod format;

use std::fmt::{self, Write as _};

use tracing_subscriber::EnvFilter;

pub use self::budget::LineBudget;
use self::format::LineFormat;
use crate::config::LogFormat;

/// Log an event at the CRITICAL level: an ERROR that prints as `CRITICAL`.
#[macro_export]
macro_rules! critical {
    ($($arg:tt)+) => {
        ::tracing::error!(severity = "CRITICAL", $($arg)+)
    };
}

/// Install the global subscriber. `filter` is a tracing filter (`log.level`); `RUST_LOG`, when
/// set, wins. Calling it twice is harmless (the second call does nothing).
pub fn init(format: LogFormat, filter: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(filter))
        // The scheduler logs every tick at INFO, and tokio-postgres relays server NOTICEs
        // ("schema already exists, skipping") at INFO: noise in a billing daemon's journal.
        .add_directive(
            "tokio_cron_scheduler=warn"
                .parse()
                .expect("static directive"),
        )
        .add_directive("tokio_postgres=warn".parse().expect("static directive"));
    let timestamps = std::env::var_os("JOURNAL_STREAM").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(LineFormat::new(format, timestamps))
        .try_init();
}

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

/// A duration as a `…_ms` log field: whole milliseconds, saturating.
pub fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `outer: inner: root`, so the cause is in the one line. Every error shown to a person goes
/// through this: a bare `tokio_postgres::Error` displays only "db error", its cause (the
/// server's message) is one level down.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}
