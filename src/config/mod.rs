//! Configuration: the embedded `config/default.toml`, an optional file, and
//! `SYNQALL_RECONCILER__SECTION__KEY` environment variables, layered with the `config` crate into
//! a typed [`Settings`] that is validated before anything touches the database.
//!
//! Every failure here is a [`ConfigError`] that names the key; the binary maps it to exit 78
//! (EX_CONFIG). The database URL is a [`Secret`]: it never prints. Turning the URL into a
//! connection target is the database layer's job (`db::target`); this module only reads
//! settings and depends on nothing else in the crate.
//!
//! - [`schedule`]: `schedule.cron` as a typed, validated value.

pub mod schedule;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub use self::schedule::CronSchedule;

/// The defaults, compiled in so the binary needs no file to start.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../config/default.toml");
/// Read when `--config` is not given, if it exists.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/synqall-reconciler/config.toml";
/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "SYNQALL_RECONCILER";
/// Name of the systemd credential holding the database URL.
pub const DATABASE_URL_CREDENTIAL: &str = "database-url";

/// A configuration problem, with the key it concerns when there is one.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration{}: {message}", key.as_ref().map(|k| format!(" for key `{k}`")).unwrap_or_default())]
pub struct ConfigError {
    /// Dotted key, e.g. `usage.period`.
    pub key: Option<String>,
    /// What is wrong and what would be right.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn key(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: Some(key.to_string()),
            message: message.into(),
        }
    }
}

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

/// All settings; see `config/default.toml` for each key's meaning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub schedule: ScheduleSettings,
    pub usage: UsageSettings,
    pub orphans: OrphanSettings,
    pub lock: LockSettings,
    pub log: LogSettings,
    pub shutdown: ShutdownSettings,
    pub alert: AlertSettings,
    /// Absent from most configs: the endpoint is off unless `metrics.listen` is set.
    #[serde(default)]
    pub metrics: MetricsSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: Option<Secret>,
    pub url_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub statement_timeout_seconds: u64,
    pub lock_timeout_seconds: u64,
    pub connect_timeout_seconds: u64,
    pub pool_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// Parsed and validated while loading: the daemon uses it as it is.
    pub cron: CronSchedule,
    pub run_on_start: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageSettings {
    pub period: Period,
    pub source: Source,
    pub rounding: Rounding,
    pub settle_seconds: u64,
    pub batch_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrphanSettings {
    pub ambiguous: AmbiguousPolicy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockSettings {
    pub key: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    pub stalled_after_seconds: u64,
    pub max_critical_lines_per_pass: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// `address:port` of the Prometheus endpoint; `None` (the default) serves nothing.
    #[serde(default, deserialize_with = "socket_addr")]
    pub listen: Option<SocketAddr>,
}

/// `metrics.listen`: an `address:port`, parsed once while loading.
fn socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an address:port such as \"127.0.0.1:9464\""
        ))
    })
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

impl Settings {
    /// Load the layers: embedded defaults, then `file` (or [`SYSTEM_CONFIG_PATH`] if it exists),
    /// then the environment; then validate.
    ///
    /// # Errors
    /// An unreadable or malformed file, an unknown key, a value of the wrong type or out of range.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// [`Settings::load`] with an explicit environment (tests pass their own).
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_CONFIG_TOML,
            config::FileFormat::Toml,
        ));
        match file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError {
                        key: None,
                        message: format!("config file {} does not exist", path.display()),
                    });
                }
                builder = builder.add_source(
                    config::File::from(path.to_path_buf()).format(config::FileFormat::Toml),
                );
            }
            None if Path::new(SYSTEM_CONFIG_PATH).is_file() => {
                builder = builder.add_source(
                    config::File::with_name(SYSTEM_CONFIG_PATH).format(config::FileFormat::Toml),
                );
            }
            None => {}
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        let settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(from_config_error)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Range checks serde cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            (
                "database.statement_timeout_seconds",
                self.database.statement_timeout_seconds,
            ),
            (
                "database.connect_timeout_seconds",
                self.database.connect_timeout_seconds,
            ),
            ("database.pool_size", self.database.pool_size as u64),
            ("usage.batch_size", self.usage.batch_size as u64),
            ("shutdown.timeout_seconds", self.shutdown.timeout_seconds),
            (
                "alert.stalled_after_seconds",
                self.alert.stalled_after_seconds,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::key(key, "must be greater than 0"));
            }
        }
        if self.usage.settle_seconds > 3600 {
            return Err(ConfigError::key(
                "usage.settle_seconds",
                "must be at most 3600 (a settle longer than an hour delays every repair)",
            ));
        }
        if self.usage.batch_size > 10_000 {
            return Err(ConfigError::key(
                "usage.batch_size",
                "must be at most 10000 (a batch is one transaction holding row locks)",
            ));
        }
        if self.database.pool_size > 64 {
            return Err(ConfigError::key("database.pool_size", "must be at most 64"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::key(
                "log.level",
                format!("not a valid filter: {e}"),
            ));
        }
        Ok(())
    }

    /// Timeout applied to every statement.
    pub fn statement_timeout(&self) -> Duration {
        Duration::from_secs(self.database.statement_timeout_seconds)
    }

    /// Settle time of §4.5.
    pub fn settle(&self) -> Duration {
        Duration::from_secs(self.usage.settle_seconds)
    }
}

/// Allowed spellings of the enum-valued keys, for error messages.
const ENUM_KEYS: &[(&str, &[&str])] = &[
    ("usage.period", Period::SPELLINGS),
    ("usage.source", Source::SPELLINGS),
    ("usage.rounding", Rounding::SPELLINGS),
    ("orphans.ambiguous", AmbiguousPolicy::SPELLINGS),
    ("log.format", LogFormat::SPELLINGS),
];

/// The `config` crate's errors say "… for key `x`"; lift the key out so every message reads
/// "invalid configuration for key `x`: …", and make its two least helpful messages helpful.
fn from_config_error(e: config::ConfigError) -> ConfigError {
    let text = e.to_string();
    let Some(start) = text.find(" for key `") else {
        return ConfigError {
            key: None,
            message: text,
        };
    };
    let rest = &text[start + " for key `".len()..];
    let mut key = rest.split('`').next().unwrap_or_default().to_string();
    let mut message = text[..start].to_string();
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        key = format!("{key}.{field}");
        message = format!("unknown key ({message})");
    } else if message.contains("does not have variant constructor") {
        let allowed = ENUM_KEYS
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(String::new(), |(_, spellings)| spellings.join(", "));
        let given = message.rsplit(' ').next().unwrap_or_default();
        message = format!("unknown value `{given}`, expected one of: {allowed}");
    }
    ConfigError::key(&key, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_without_any_file_or_env() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.usage.period, Period::AllTime);
        assert_eq!(s.usage.source, Source::Calls);
        assert_eq!(s.usage.settle_seconds, 30);
        assert_eq!(s.schedule.cron.expression(), "0 */5 * * * *");
        assert_eq!(s.alert.max_critical_lines_per_pass, 200);
        assert_eq!(s.metrics.listen, None, "metrics are off by default");
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/config.toml");
        let s = Settings::load_from(Some(&example), env(&[])).unwrap();
        assert_eq!(s.usage.period, Period::AllTime);
        assert_eq!(s.metrics.listen, None);
    }

    #[test]
    fn metrics_listen_must_be_an_address_with_a_port() {
        let s = Settings::load_from(
            None,
            env(&[("SYNQALL_RECONCILER__METRICS__LISTEN", "127.0.0.1:9464")]),
        )
        .unwrap();
        assert_eq!(s.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
        let e = Settings::load_from(
            None,
            env(&[("SYNQALL_RECONCILER__METRICS__LISTEN", "localhost")]),
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("metrics.listen"), "{e}");
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let s = Settings::load_from(
            None,
            env(&[
                ("SYNQALL_RECONCILER__USAGE__SETTLE_SECONDS", "0"),
                ("SYNQALL_RECONCILER__USAGE__PERIOD", "calendar_month"),
            ]),
        )
        .unwrap();
        assert_eq!(s.usage.settle_seconds, 0);
        assert_eq!(s.usage.period, Period::CalendarMonth);
    }

    #[test]
    fn bad_enum_value_names_the_key() {
        let e = Settings::load_from(
            None,
            env(&[("SYNQALL_RECONCILER__USAGE__PERIOD", "weekly")]),
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("usage.period"), "{e}");
        assert!(e.message.contains("calendar_month"), "{e}");
    }

    #[test]
    fn unknown_key_is_named_in_full() {
        let e = Settings::load_from(
            None,
            env(&[("SYNQALL_RECONCILER__USAGE__SETTLE_SECS", "1")]),
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("usage.settle_secs"), "{e}");
    }

    #[test]
    fn out_of_range_value_names_the_key() {
        let e = Settings::load_from(None, env(&[("SYNQALL_RECONCILER__USAGE__BATCH_SIZE", "0")]))
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("usage.batch_size"), "{e}");
    }

    #[test]
    fn garbage_cron_names_the_key() {
        let e = Settings::load_from(
            None,
            env(&[("SYNQALL_RECONCILER__SCHEDULE__CRON", "every 5 minutes")]),
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("schedule.cron"), "{e}");
    }
}
