//! Where to connect: the database URL resolved from its sources (command line or environment,
//! `database.url`, `database.url_file`, the systemd credential), parsed and checked into a
//! [`DatabaseTarget`] whose only printable form is [`DatabaseTarget::describe`]
//! (`user@host:port/db`, never the password).
//!
//! Refused here, before any connection: a malformed URL (the message never repeats it), a URL
//! naming no host, Supabase's transaction pooler port, and plaintext to a remote host
//! ([`super::tls::enforce`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio_postgres::config::Host;

use crate::config::{
    ConfigError, Secret, Settings, DATABASE_URL_CREDENTIAL, REPLICA_URL_CREDENTIAL,
};

/// Supabase's transaction pooler: no session state, so no advisory lock.
const TRANSACTION_POOLER_PORT: u16 = 6543;

/// A parsed, validated connection target. The URL stays secret; [`DatabaseTarget::describe`]
/// is what logs show.
#[derive(Clone)]
pub struct DatabaseTarget {
    config: tokio_postgres::Config,
    /// `sslrootcert=…` from the URL: the CA file, as `database.ca_file` would be.
    root_cert: Option<PathBuf>,
    /// `database.replica_url`: a hot standby of the same database, for the sweep's read.
    replica: Option<Box<DatabaseTarget>>,
}

impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The connection target, resolved from (in order) `cli_url` (`--database-url` or
/// `DATABASE_URL`), `database.url`, `database.url_file`, the systemd credential
/// (`$CREDENTIALS_DIRECTORY/database-url`, inside the unit), and the file the unit loads that
/// credential from (`database-url` beside the config file, for commands run by hand as root).
///
/// # Errors
/// No URL anywhere, an unreadable file, a malformed URL, or the transaction pooler port.
pub fn resolve(
    settings: &Settings,
    cli_url: Option<&Secret>,
) -> Result<DatabaseTarget, ConfigError> {
    let (key, url) = if let Some(url) = cli_url {
        ("--database-url / DATABASE_URL".to_string(), url.clone())
    } else if let Some(url) = &settings.database.url {
        ("database.url".to_string(), url.clone())
    } else if let Some(path) = &settings.database.url_file {
        (
            "database.url_file".to_string(),
            read_secret_file("database.url_file", path)?,
        )
    } else if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&dir).join(DATABASE_URL_CREDENTIAL);
        if !path.is_file() {
            return Err(no_url_error());
        }
        (
            "$CREDENTIALS_DIRECTORY/database-url".to_string(),
            read_secret_file(DATABASE_URL_CREDENTIAL, &path)?,
        )
    } else {
        let path = settings.config_dir.join(DATABASE_URL_CREDENTIAL);
        if !path.exists() {
            return Err(no_url_error());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError::key(
                "database.url",
                format!(
                    "cannot read {}: {e}; it is the unit's credential, readable by root only: \
                     run as root, or pass --database-url",
                    path.display()
                ),
            )
        })?;
        (
            path.display().to_string(),
            non_empty("database.url", &path, &text)?,
        )
    };
    Ok(DatabaseTarget::parse(&key, url)?.with_replica(resolve_replica(settings)?))
}

/// The replica's URL, if one is configured: `database.replica_url`, `database.replica_url_file`,
/// the credential `replica-url` (inside the unit), or the file `replica-url` beside the config
/// file (by hand). None of them: no replica.
fn resolve_replica(settings: &Settings) -> Result<Option<DatabaseTarget>, ConfigError> {
    let key = "database.replica_url";
    let url = if let Some(url) = &settings.database.replica_url {
        url.clone()
    } else if let Some(path) = &settings.database.replica_url_file {
        read_secret_file("database.replica_url_file", path)?
    } else {
        let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(|dir| Path::new(&dir).join(REPLICA_URL_CREDENTIAL))
            .filter(|p| p.is_file());
        let beside_config = settings.config_dir.join(REPLICA_URL_CREDENTIAL);
        match credential.or_else(|| beside_config.is_file().then_some(beside_config)) {
            Some(path) => read_secret_file(key, &path)?,
            None => return Ok(None),
        }
    };
    DatabaseTarget::parse(key, url).map(Some)
}

fn no_url_error() -> ConfigError {
    ConfigError::key(
        "database.url",
        "no database URL: set --database-url, DATABASE_URL, database.url, database.url_file, \
         or the systemd credential `database-url` (the file database-url beside the config \
         file, /etc/synqall-reconciler/database-url by default)",
    )
}

fn read_secret_file(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::key(key, format!("cannot read {}: {e}", path.display())))?;
    non_empty(key, path, &text)
}

/// The package creates the credential file empty (0600): say what to put in it.
fn non_empty(key: &str, path: &Path, text: &str) -> Result<Secret, ConfigError> {
    let url = text.trim();
    if url.is_empty() {
        return Err(ConfigError::key(
            key,
            format!(
                "{} is empty: write the database URL into it (postgres://user:password@host:5432/db)",
                path.display()
            ),
        ));
    }
    Ok(Secret::new(url))
}

impl DatabaseTarget {
    /// The same target, with a hot standby for the sweep's read.
    pub fn with_replica(mut self, replica: Option<DatabaseTarget>) -> Self {
        self.replica = replica.map(Box::new);
        self
    }

    /// The configured hot standby, if any.
    pub fn replica(&self) -> Option<&DatabaseTarget> {
        self.replica.as_deref()
    }

    /// Parse and check a URL that came from `key`.
    ///
    /// # Errors
    /// Malformed URL (the message never repeats it), the transaction pooler.
    pub fn parse(key: &str, url: Secret) -> Result<Self, ConfigError> {
        let (cleaned, extracted) = super::url::preparse(key, url.expose())?;
        let mut config = tokio_postgres::Config::from_str(&cleaned).map_err(|e| {
            // tokio-postgres's parse errors name the option, never echo the input.
            ConfigError::key(
                key,
                format!(
                    "not a valid PostgreSQL URL: {}",
                    crate::telemetry::error_chain(&e)
                ),
            )
        })?;
        if config.get_hosts().is_empty() {
            return Err(ConfigError::key(key, "the URL names no host"));
        }
        if config.get_ports().contains(&TRANSACTION_POOLER_PORT) {
            return Err(ConfigError::key(
                key,
                "port 6543 is Supabase's transaction pooler, which cannot hold the session \
                 advisory lock or prepared statements; use the direct connection \
                 (db.<project>.supabase.co:5432) or the session pooler (port 5432)",
            ));
        }
        super::tls::enforce(key, &mut config, extracted.verify)?;
        Ok(Self {
            config,
            replica: None,
            root_cert: extracted.root_cert.map(PathBuf::from),
        })
    }

    /// The CA file named by the URL (`sslrootcert`), if any.
    pub fn root_cert(&self) -> Option<&Path> {
        self.root_cert.as_deref()
    }

    /// The tokio-postgres config, for connecting.
    pub fn pg_config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// `user@host:port/dbname`, safe to log; every host the connection may try, in order
    /// (`host=` in a URL's query adds one), each with its port.
    pub fn describe(&self) -> String {
        let ports = self.config.get_ports();
        let hosts = self
            .config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let host = match host {
                    Host::Tcp(h) => h.clone(),
                    Host::Unix(p) => p.display().to_string(),
                };
                // One port applies to every host; otherwise one per host.
                let port = ports
                    .get(i)
                    .or_else(|| (ports.len() == 1).then(|| &ports[0]))
                    .copied()
                    .unwrap_or(5432);
                format!("{host}:{port}")
            })
            .collect::<Vec<_>>();
        format!(
            "{}@{}/{}",
            self.config.get_user().unwrap_or("?"),
            if hosts.is_empty() {
                "?".to_string()
            } else {
                hosts.join(",")
            },
            self.config.get_dbname().unwrap_or("?")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_pooler_is_refused_naming_the_alternative() {
        let e = DatabaseTarget::parse(
            "database.url",
            Secret::new("postgres://u:hunter2@aws-0-eu.pooler.supabase.com:6543/postgres"),
        )
        .unwrap_err();
        assert!(e.message.contains("session pooler"), "{e}");
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn describe_hides_the_password() {
        let t = DatabaseTarget::parse(
            "database.url",
            Secret::new("postgres://u:hunter2@db.example.com:5432/postgres"),
        )
        .unwrap();
        assert_eq!(t.describe(), "u@db.example.com:5432/postgres");
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn describe_names_every_host_the_connection_may_try() {
        let t = DatabaseTarget::parse(
            "database.url",
            Secret::new("postgres://u@localhost/app?host=/run/postgresql&port=5433"),
        )
        .unwrap();
        let described = t.describe();
        assert!(described.contains("/run/postgresql:5433"), "{described}");
        assert!(described.starts_with("u@localhost:"), "{described}");
    }
}
