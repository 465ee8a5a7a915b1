//! Checks on loaded settings: ranges serde cannot express (refused, exit 78), and what is
//! legal but risky (warned about once logging is up).

use std::path::Path;
use std::time::Duration;

use super::error::ConfigError;
use super::settings::Settings;
use super::sources::SYSTEM_CONFIG_PATH;

/// Range checks serde cannot express.
pub(super) fn validate(settings: &Settings) -> Result<(), ConfigError> {
    positive_numbers(settings)?;
    upper_bounds(settings)?;
    for (key, share) in [
        ("guard.max_lowered_share", settings.guard.max_lowered_share),
        ("guard.max_removed_share", settings.guard.max_removed_share),
    ] {
        if !(share > 0.0 && share <= 1.0) {
            return Err(ConfigError::key(
                key,
                format!("{share} is not a share: use a number above 0 and at most 1"),
            ));
        }
    }
    if !settings
        .usage
        .known_statuses
        .iter()
        .any(|s| s == "completed")
    {
        return Err(ConfigError::key(
            "usage.known_statuses",
            "must include \"completed\", the status that counts",
        ));
    }
    schedule_fits_the_stall_alert(settings)?;
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&settings.log.level) {
        return Err(ConfigError::key(
            "log.level",
            format!("not a valid filter: {e}"),
        ));
    }
    Ok(())
}

/// Zero means nothing for these (a zero timeout, an empty batch, no detail lines).
fn positive_numbers(settings: &Settings) -> Result<(), ConfigError> {
    let positive = [
        (
            "database.statement_timeout_seconds",
            settings.database.statement_timeout_seconds,
        ),
        (
            "database.connect_timeout_seconds",
            settings.database.connect_timeout_seconds,
        ),
        ("database.pool_size", settings.database.pool_size as u64),
        (
            "database.sweep_work_mem_mb",
            settings.database.sweep_work_mem_mb,
        ),
        (
            "database.repair_idle_timeout_seconds",
            settings.database.repair_idle_timeout_seconds,
        ),
        (
            "database.repair_lock_timeout_seconds",
            settings.database.repair_lock_timeout_seconds,
        ),
        (
            "database.pass_timeout_seconds",
            settings.database.pass_timeout_seconds,
        ),
        ("lock.lease_seconds", settings.lock.lease_seconds),
        (
            "database.lock_timeout_seconds",
            settings.database.lock_timeout_seconds,
        ),
        (
            "alert.max_critical_lines_per_pass",
            settings.alert.max_critical_lines_per_pass as u64,
        ),
        ("usage.batch_size", settings.usage.batch_size as u64),
        (
            "shutdown.timeout_seconds",
            settings.shutdown.timeout_seconds,
        ),
        (
            "alert.stalled_after_seconds",
            settings.alert.stalled_after_seconds,
        ),
    ];
    for (key, value) in positive {
        if value == 0 {
            return Err(ConfigError::key(key, "must be greater than 0"));
        }
    }
    Ok(())
}

/// Ceilings that keep one setting from hurting the app (row locks held, connections taken).
fn upper_bounds(settings: &Settings) -> Result<(), ConfigError> {
    if settings.database.sweep_work_mem_mb > 2048 {
        return Err(ConfigError::key(
            "database.sweep_work_mem_mb",
            "must be at most 2048 (each of up to 3 processes may use twice this)",
        ));
    }
    if settings.usage.settle_seconds > 3600 {
        return Err(ConfigError::key(
            "usage.settle_seconds",
            "must be at most 3600 (a settle longer than an hour delays every repair)",
        ));
    }
    if settings.usage.batch_size > 10_000 {
        return Err(ConfigError::key(
            "usage.batch_size",
            "must be at most 10000 (a batch is one transaction holding row locks)",
        ));
    }
    if settings.database.pool_size > 64 {
        return Err(ConfigError::key("database.pool_size", "must be at most 64"));
    }
    Ok(())
}

/// Passes further apart than the stall threshold would make every gap a stall alert.
fn schedule_fits_the_stall_alert(settings: &Settings) -> Result<(), ConfigError> {
    let gap = settings.schedule.cron.longest_gap();
    let stalled_after = Duration::from_secs(settings.alert.stalled_after_seconds);
    if gap <= stalled_after {
        return Ok(());
    }
    Err(ConfigError::key(
        "schedule.cron",
        format!(
            "{} (UTC) runs passes up to {} s apart, longer than alert.stalled_after_seconds \
             = {}: every gap would be reported as a stall. {}Schedule passes more often, or \
             raise alert.stalled_after_seconds above {}",
            settings.schedule.cron.meaning(),
            gap.as_secs(),
            stalled_after.as_secs(),
            settings
                .schedule
                .cron
                .likely_meant()
                .map(|hint| format!("Did you mean `{hint}`? "))
                .unwrap_or_default(),
            gap.as_secs()
        ),
    ))
}

/// Things worth a WARN at start-up that are not errors.
pub(super) fn warnings(settings: &Settings, file: Option<&Path>) -> Vec<String> {
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
