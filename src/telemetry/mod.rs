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
//! Modules: [`format`] renders one event; [`budget`] caps detail lines per pass; [`values`]
//! holds what the pass, `doctor` and `revert` share ([`OrNull`], [`error_chain`], [`millis`],
//! the [`critical!`] macro).

pub mod budget;
pub mod format;
pub mod values;

use tracing_subscriber::EnvFilter;

pub use self::budget::LineBudget;
use self::format::LineFormat;
pub(crate) use self::values::critical;
pub use self::values::{error_chain, millis, NullableText, OrNull};
use crate::config::LogFormat;

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
