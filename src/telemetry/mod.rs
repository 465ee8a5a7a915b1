//! Log output: one event per line, `LEVEL message key=value …` in text or one JSON object in
//! JSON, on stderr (journald captures it under systemd). These lines are an interface people
//! grep (docs/design.md, "Log lines"), so the format is ours, not `tracing-subscriber`'s default:
//!
//! - `CRITICAL` is a level here: events emitted with [`critical!`] (an ERROR carrying
//!   `severity = "CRITICAL"`) print `CRITICAL` where the level goes.
//! - Free-text fields ([`format::ALWAYS_QUOTED`]: `org_name`, `error`, `reason`) are always
//!   quoted and escaped (`org_name="Acme \"Q\" Ltd\n"` stays one line); other values are quoted
//!   only when they contain spaces, quotes, `=` or control characters.
//! - Under journald (stderr is the stream `JOURNAL_STREAM` names) each line starts with its
//!   syslog priority (`<2>` CRITICAL, `<3>` ERROR, `<4>` WARN, `<6>` INFO, `<7>` DEBUG), which
//!   journald files it under, and text lines carry no timestamp: the journal has its own.
//! - JSON (`--log-format json`) carries the same fields as typed values: numbers are numbers, a
//!   NULL counter is `null`, ids and free text are strings, and integers beyond 2^53 are
//!   strings (what `jq` would otherwise round).
//!
//! Modules: [`format`] renders one event; [`escape`] bounds and escapes its values; [`budget`]
//! caps detail lines per pass; [`values`]
//! holds what the pass, `doctor` and `revert` share ([`OrNull`], [`error_chain`], [`millis`],
//! the [`critical!`] macro).

pub mod budget;
pub mod escape;
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
    let journald = stderr_is_the_journal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(LineFormat::new(format, journald))
        .try_init();
}

/// Whether stderr really is the journal: `JOURNAL_STREAM` (set by systemd) names the device and
/// inode of the stream it connected, and stderr is that stream. Only then are lines prefixed
/// with their syslog priority (`<2>` for CRITICAL…) and text lines left without a timestamp
/// (the journal has its own); a variable inherited by a child whose stderr goes elsewhere
/// changes nothing.
pub fn stderr_is_the_journal() -> bool {
    let Some(stream) = std::env::var("JOURNAL_STREAM").ok() else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat writes into the zeroed struct we own; fd 2 is always a valid argument (an
    // error is reported, not undefined behaviour).
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut stat) } != 0 {
        return false;
    }
    stat.st_dev as u64 == dev && stat.st_ino as u64 == ino
}
