//! Configuration: the embedded `config/default.toml`, an optional file, and
//! `SYNQALL_RECONCILER__SECTION__KEY` environment variables, layered with the `config` crate into
//! a typed [`Settings`] that is validated before anything touches the database.
//!
//! Every failure here is a [`ConfigError`] that names the key; the binary maps it to exit 78
//! (EX_CONFIG). The database URL is a [`Secret`]: it never prints. Turning the URL into a
//! connection target is the database layer's job (`db::target`); this module only reads
//! settings and depends on nothing else in the crate.
//!
//! - [`settings`]: the typed sections.
//! - [`sources`]: the defaults, the file, the environment.
//! - [`checks`]: ranges serde cannot express, and start-up warnings.
//! - [`schedule`]: `schedule.cron` as a typed, validated value.
//! - [`values`]: the enum-valued keys and [`Secret`].
//! - [`error`]: [`ConfigError`], naming the key.
//! - [`numbers`]: whole numbers, strictly (no `1.5` rounded to 2, no saturation).

pub mod checks;
pub mod error;
pub mod numbers;
pub mod schedule;
pub mod settings;
pub mod sources;
pub mod values;

use std::path::Path;

use self::error::from_config_error;
pub use self::error::ConfigError;
pub use self::schedule::CronSchedule;
pub use self::settings::{
    AlertSettings, DatabaseSettings, GuardSettings, LockSettings, LogSettings, MetricsSettings,
    OrphanSettings, ScheduleSettings, Settings, ShutdownSettings, UsageSettings,
};
use self::sources::{config_file, refuse_unknown_variables};
pub use self::sources::{
    DATABASE_URL_CREDENTIAL, DEFAULT_CONFIG_TOML, ENV_PREFIX, KNOWN_VARIABLES,
    REPLICA_URL_CREDENTIAL, SYSTEM_CONFIG_PATH, TEST_FAULT_ENV,
};
pub use self::values::{AmbiguousPolicy, LogFormat, Period, Rounding, Secret, Source};

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
        checks::validate(&settings)?;
        settings.warnings = checks::warnings(&settings, file);
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
