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
//! - [`values`]: the enum-valued keys and [`Secret`].
//! - [`error`]: [`ConfigError`], naming the key.
//! - [`numbers`]: whole numbers, strictly (no `1.5` rounded to 2, no saturation).

pub mod error;
pub mod numbers;
pub mod schedule;
pub mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use self::error::from_config_error;
pub use self::error::ConfigError;
pub use self::schedule::CronSchedule;
pub use self::values::{AmbiguousPolicy, LogFormat, Period, Rounding, Secret, Source};

/// The defaults, compiled in so the binary needs no file to start.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../config/default.toml");
/// Read when `--config` is not given, if it exists.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/synqall-reconciler/config.toml";
/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "SYNQALL_RECONCILER";
/// Environment variables of ours besides `SYNQALL_RECONCILER__SECTION__KEY`.
pub const KNOWN_VARIABLES: &[&str] =
    &["SYNQALL_RECONCILER_CONFIG", "SYNQALL_RECONCILER_LOG_FORMAT"];
/// The tests' fault-injection variable (debug builds only; see `crate::fault`).
pub const TEST_FAULT_ENV: &str = "SYNQALL_RECONCILER_TEST_FAULT";
/// Name of the systemd credential holding the database URL.
pub const DATABASE_URL_CREDENTIAL: &str = "database-url";

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
    pub guard: GuardSettings,
    /// Absent from most configs: the endpoint is off unless `metrics.listen` is set.
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// What is worth a WARN once logging is up (a world-readable file holding the URL, a
    /// metrics endpoint on a public address).
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// The directory of the config file in use (of [`SYSTEM_CONFIG_PATH`] when there is none):
    /// its `database-url` file is the credential the unit loads, so that `status` and `doctor`
    /// run by hand on the box find the same database.
    #[serde(skip)]
    pub config_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: Option<Secret>,
    pub url_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    #[serde(deserialize_with = "numbers::whole_u64")]
    pub statement_timeout_seconds: u64,
    #[serde(deserialize_with = "numbers::whole_u64")]
    pub lock_timeout_seconds: u64,
    #[serde(deserialize_with = "numbers::whole_u64")]
    pub connect_timeout_seconds: u64,
    #[serde(deserialize_with = "numbers::whole_usize")]
    pub pool_size: usize,
    /// A repair transaction left idle this long (its process frozen) is ended by the server,
    /// releasing the row locks the app's increments wait for.
    #[serde(deserialize_with = "numbers::whole_u64")]
    pub repair_idle_timeout_seconds: u64,
    /// How long a repair statement may wait for a lock.
    #[serde(deserialize_with = "numbers::whole_u64")]
    pub repair_lock_timeout_seconds: u64,
    /// A whole pass (settle included) that runs longer is cancelled and recorded failed.
    #[serde(deserialize_with = "numbers::whole_u64")]
    pub pass_timeout_seconds: u64,
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
    #[serde(deserialize_with = "numbers::whole_u64")]
    pub settle_seconds: u64,
    #[serde(deserialize_with = "numbers::whole_usize")]
    pub batch_size: usize,
    /// Call statuses the app uses; a call with any other is not counted and is reported.
    pub known_statuses: Vec<String>,
}

/// The mass-correction guard (docs/design.md, "No mass correction without a person").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardSettings {
    /// Share of all organizations whose counters one pass may lower.
    pub max_lowered_share: f64,
    /// Below this many lowered counters the share is not looked at (small databases).
    #[serde(deserialize_with = "numbers::whole_u64")]
    pub min_lowered_orgs: u64,
    /// Share of all billed minutes one pass may remove.
    pub max_removed_share: f64,
    /// Below this many removed minutes the share is not looked at.
    #[serde(deserialize_with = "numbers::whole_u64")]
    pub min_removed_minutes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrphanSettings {
    pub ambiguous: AmbiguousPolicy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockSettings {
    #[serde(deserialize_with = "numbers::whole_i64")]
    pub key: i64,
    /// A holder whose heartbeat is older than this is taken over by a standby.
    #[serde(deserialize_with = "numbers::whole_u64")]
    pub lease_seconds: u64,
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
    #[serde(deserialize_with = "numbers::whole_u64")]
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    #[serde(deserialize_with = "numbers::whole_u64")]
    pub stalled_after_seconds: u64,
    #[serde(deserialize_with = "numbers::whole_usize")]
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

/// Variables that look like ours but are not: `SYNQALL_RECONCILER_USAGE__SETTLE_SECONDS` (one
/// underscore) would otherwise be ignored in silence.
fn refuse_unknown_variables(env: &[(String, String)]) -> Result<(), ConfigError> {
    let known = |name: &str| {
        name.starts_with(&format!("{ENV_PREFIX}__"))
            || KNOWN_VARIABLES.contains(&name)
            || (cfg!(debug_assertions) && name == TEST_FAULT_ENV)
    };
    let unknown: Vec<&str> = env
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| name.starts_with(ENV_PREFIX) && !known(name))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ConfigError {
        key: None,
        message: format!(
            "unknown environment variable(s) {}: settings are {ENV_PREFIX}__SECTION__KEY (two \
             underscores after the prefix and between section and key, e.g. \
             {ENV_PREFIX}__USAGE__SETTLE_SECONDS); the others are {}",
            unknown.join(", "),
            KNOWN_VARIABLES.join(", ")
        ),
    })
}

/// Things worth a WARN at start-up that are not errors.
fn warnings(settings: &Settings, file: Option<&Path>) -> Vec<String> {
    let mut found = Vec::new();
    let file = file.or_else(|| {
        Path::new(SYSTEM_CONFIG_PATH)
            .exists()
            .then(|| Path::new(SYSTEM_CONFIG_PATH))
    });
    if let Some(path) = file {
        use std::os::unix::fs::PermissionsExt as _;
        let world_readable = std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o004 != 0)
            .unwrap_or(false);
        let holds_url = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| {
                config::Config::builder()
                    .add_source(config::File::from_str(&text, config::FileFormat::Toml))
                    .build()
                    .ok()
            })
            .is_some_and(|c| c.get_string("database.url").is_ok());
        if world_readable && holds_url {
            found.push(format!(
                "{} holds database.url and is readable by every local user: move the URL to a \
                 credential file (database.url_file, mode 0600) or chmod o-r the file",
                path.display()
            ));
        }
    }
    if let Some(addr) = settings.metrics.listen {
        if !addr.ip().is_loopback() {
            found.push(format!(
                "metrics.listen = {addr} is not a loopback address: the endpoint has no \
                 authentication; bind it to 127.0.0.1 or a private interface, behind a firewall"
            ));
        }
    }
    found
}

/// A config file as a source: read here, so that an unreadable file's error names it, and a
/// syntax error says which file without quoting its lines.
fn config_file(
    path: &Path,
) -> Result<config::File<config::FileSourceString, config::FileFormat>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        key: None,
        message: format!("cannot read config file {}: {e}", path.display()),
    })?;
    if let Err(e) = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .build()
    {
        return Err(ConfigError {
            key: None,
            message: format!(
                "config file {}: {}",
                path.display(),
                error::without_source(&e.to_string())
            ),
        });
    }
    Ok(config::File::from_str(&text, config::FileFormat::Toml))
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
            Some(path) => builder = builder.add_source(config_file(path)?),
            None if Path::new(SYSTEM_CONFIG_PATH).exists() => {
                builder = builder.add_source(config_file(Path::new(SYSTEM_CONFIG_PATH))?);
            }
            None => {}
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        refuse_unknown_variables(&env)?;
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("usage.known_statuses")
                .source(Some(env)),
        );
        let mut settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(from_config_error)?;
        settings.validate()?;
        settings.warnings = warnings(&settings, file);
        settings.config_dir = file
            .and_then(Path::parent)
            .unwrap_or_else(|| {
                Path::new(SYSTEM_CONFIG_PATH)
                    .parent()
                    .unwrap_or(Path::new("/"))
            })
            .to_path_buf();
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
            (
                "database.repair_idle_timeout_seconds",
                self.database.repair_idle_timeout_seconds,
            ),
            (
                "database.repair_lock_timeout_seconds",
                self.database.repair_lock_timeout_seconds,
            ),
            (
                "database.pass_timeout_seconds",
                self.database.pass_timeout_seconds,
            ),
            ("lock.lease_seconds", self.lock.lease_seconds),
            (
                "database.lock_timeout_seconds",
                self.database.lock_timeout_seconds,
            ),
            (
                "alert.max_critical_lines_per_pass",
                self.alert.max_critical_lines_per_pass as u64,
            ),
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
        for (key, share) in [
            ("guard.max_lowered_share", self.guard.max_lowered_share),
            ("guard.max_removed_share", self.guard.max_removed_share),
        ] {
            if !(share > 0.0 && share <= 1.0) {
                return Err(ConfigError::key(
                    key,
                    format!("{share} is not a share: use a number above 0 and at most 1"),
                ));
            }
        }
        if !self.usage.known_statuses.iter().any(|s| s == "completed") {
            return Err(ConfigError::key(
                "usage.known_statuses",
                "must include \"completed\", the status that counts",
            ));
        }
        if self.database.pool_size > 64 {
            return Err(ConfigError::key("database.pool_size", "must be at most 64"));
        }
        self.schedule_fits_the_stall_alert()?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::key(
                "log.level",
                format!("not a valid filter: {e}"),
            ));
        }
        Ok(())
    }

    /// Passes further apart than the stall threshold would make every gap a stall alert.
    fn schedule_fits_the_stall_alert(&self) -> Result<(), ConfigError> {
        let gap = self.schedule.cron.longest_gap();
        let stalled_after = Duration::from_secs(self.alert.stalled_after_seconds);
        if gap <= stalled_after {
            return Ok(());
        }
        Err(ConfigError::key(
            "schedule.cron",
            format!(
                "{} (UTC) runs passes up to {} s apart, longer than alert.stalled_after_seconds \
                 = {}: every gap would be reported as a stall. {}Schedule passes more often, or \
                 raise alert.stalled_after_seconds above {}",
                self.schedule.cron.meaning(),
                gap.as_secs(),
                stalled_after.as_secs(),
                self.schedule
                    .cron
                    .likely_meant()
                    .map(|hint| format!("Did you mean `{hint}`? "))
                    .unwrap_or_default(),
                gap.as_secs()
            ),
        ))
    }

    /// Timeout applied to every statement.
    pub fn statement_timeout(&self) -> Duration {
        Duration::from_secs(self.database.statement_timeout_seconds)
    }

    /// Settle time of §4.5.
    pub fn settle(&self) -> Duration {
        Duration::from_secs(self.usage.settle_seconds)
    }

    /// The lock's lease.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lock.lease_seconds)
    }
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
