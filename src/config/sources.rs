//! Where settings come from: the embedded defaults, the file (read here, so that its errors
//! name it), the environment (variables that look like ours but are not are refused), and the
//! credential's file name.

use std::path::Path;

use super::error::{self, ConfigError};

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
/// Name of the (optional) credential holding the replica's URL.
pub const REPLICA_URL_CREDENTIAL: &str = "replica-url";

/// Variables that look like ours but are not: `SYNQALL_RECONCILER_USAGE__SETTLE_SECONDS` (one
/// underscore) would otherwise be ignored in silence.
pub(super) fn refuse_unknown_variables(env: &[(String, String)]) -> Result<(), ConfigError> {
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

/// A config file as a source: read here, so that an unreadable file's error names it, and a
/// syntax error says which file without quoting its lines.
pub(super) fn config_file(
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
