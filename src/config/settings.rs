//! The typed settings, one struct per section of `config/default.toml`, with the few
//! deserializers serde needs (strict whole numbers, `metrics.listen` as an address).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::numbers;
use super::schedule::CronSchedule;
use super::values::{AmbiguousPolicy, LogFormat, Period, Rounding, Secret, Source};

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
    /// A hot standby of the same database, for the sweep's heavy read (optional).
    pub replica_url: Option<Secret>,
    pub replica_url_file: Option<PathBuf>,
    /// How long a sweep waits for the replica to replay its start before reading the primary.
    #[serde(deserialize_with = "numbers::whole_u64")]
    pub replica_catch_up_seconds: u64,
    /// `work_mem` of the sweep's read when it reads the tables (hash aggregates per
    /// organization): below what 100k organizations need, they spill to disk.
    #[serde(deserialize_with = "numbers::whole_u64")]
    pub sweep_work_mem_mb: u64,
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
    /// Incremental passes. Parsed and validated while loading: the daemon uses it as it is.
    pub cron: CronSchedule,
    /// Full passes (sweeps): every organization from the ledgers, to catch what the change
    /// tracking cannot see.
    pub full_sweep_cron: CronSchedule,
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

impl Settings {
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
