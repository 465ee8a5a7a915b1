//! Command-line interface. Every option also reads an environment variable, so a systemd
//! `Environment=` line can set it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{LogFormat, Secret};

/// Keeps organizations.used_minutes honest: recomputes usage from completed calls, repairs
/// drift, attributes orphaned calls and journals every correction.
#[derive(Debug, Parser)]
#[command(name = "synqall-reconciler", version, about, long_about = None)]
#[command(after_long_help = AFTER_LONG_HELP)]
pub struct Cli {
    /// Config file layered over the defaults (default: /etc/synqall-reconciler/config.toml if
    /// it exists).
    #[arg(
        long,
        global = true,
        env = "SYNQALL_RECONCILER_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Database URL; overrides database.url. Prefer the DATABASE_URL variable or a credential
    /// file: a URL on the command line is visible in `ps`.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true, value_name = "URL",
          value_parser = parse_secret)]
    pub database_url: Option<Secret>,

    /// Log format; overrides log.format.
    #[arg(long, global = true, env = "SYNQALL_RECONCILER_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Run one pass now and exit: 0 done, 2 drift left unrepaired, 1 error, 75 lock held,
    /// 78 bad config.
    #[arg(long)]
    pub reconcile_now: bool,

    /// With --reconcile-now: report only, write nothing (exit 2 if any counter drifted).
    #[arg(long, requires = "reconcile_now")]
    pub dry_run: bool,

    /// With --reconcile-now: compare only the organizations whose ledgers or counter changed
    /// since the last pass (what the daemon runs on schedule.cron) instead of a full sweep.
    #[arg(long, requires = "reconcile_now")]
    pub incremental: bool,

    /// With --reconcile-now: apply a correction the mass-correction guard holds back (many
    /// counters lowered, or a large share of billed minutes removed). Look first with --dry-run.
    #[arg(long, requires = "reconcile_now", conflicts_with = "dry_run")]
    pub allow_mass_correction: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--help` (and the man page): files and exit codes.
const AFTER_LONG_HELP: &str = "\
Files:
  /etc/synqall-reconciler/config.toml   settings over the built-in defaults (--config)
  /etc/synqall-reconciler/database-url  the database URL, root-only (0600); the unit loads it as
                                        its credential, commands run by hand as root read it
  /usr/share/synqall-reconciler/        alert rules (alerts.yml) and a Grafana dashboard

Exit status:
  0   done (repairs included); doctor: nothing FAILs
  1   error: database unreachable, not migrated, a failed pass
  2   drift left unrepaired; doctor found a FAIL; status --max-age exceeded
  64  bad command line
  75  another instance holds the lock
  78  bad configuration (a transaction pooler included)

Documentation: /usr/share/doc/synqall-reconciler/README.md";

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// The daemon: passes on the configured schedule until SIGTERM (the default).
    Run,
    /// Apply pending migrations and print what was applied.
    Migrate,
    /// The latest passes (what each found and did, how it ended) and the time since the last
    /// successful one.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// How many passes to show.
        #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(0..=10_000))]
        limit: i64,
        /// Exit 2 when the last successful pass is older than this (or there is none): a check
        /// for cron, Nagios-style probes and scripts.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        max_age: Option<u64>,
    },
    /// The incident checklist and the security checks, automated: OK/WARN/FAIL per check with
    /// its numbers and fix. Exit 0 when nothing FAILs, 2 when something does. Writes nothing.
    Doctor {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Undo one run's corrections (counters and attributions), each only where the value is
    /// still the one the run wrote; journalled as a run of its own. Idempotent.
    Revert {
        /// The run's id, as in its log lines and in `status`.
        run_id: uuid::Uuid,
    },
    /// Start a throwaway local PostgreSQL, load sample data with drift and orphans, run a pass,
    /// print the report, clean up.
    Demo,
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    Ok(Secret::new(s))
}

impl Cli {
    /// `status --json` or `doctor --json`: stdout is JSON, also on error.
    pub fn wants_json_report(&self) -> bool {
        matches!(
            self.command,
            Some(Command::Status { json: true, .. } | Command::Doctor { json: true })
        )
    }

    /// Parse `args`: the global options (`--config`, `--database-url`, `--log-format`) may
    /// stand before or after a subcommand; only `--reconcile-now` (and its companions) cannot
    /// be combined with one.
    ///
    /// # Errors
    /// A clap usage error (exit 64) or `--help`/`--version` (exit 0).
    pub fn parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::CommandFactory;
        let cli = Self::try_parse_from(args)?;
        if let (true, Some(command)) = (cli.reconcile_now, &cli.command) {
            let name = match command {
                Command::Run => "run",
                Command::Migrate => "migrate",
                Command::Status { .. } => "status",
                Command::Doctor { .. } => "doctor",
                Command::Revert { .. } => "revert",
                Command::Demo => "demo",
            };
            return Err(Self::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--reconcile-now runs one pass and exits; it cannot be combined with `{name}`"
                ),
            ));
        }
        Ok(cli)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_stand_before_or_after_the_subcommand() {
        for args in [
            &["x", "--config", "c.toml", "run"][..],
            &["x", "run", "--config", "c.toml"][..],
            &["x", "--log-format", "json", "status"][..],
            &[
                "x",
                "status",
                "--log-format",
                "json",
                "--database-url",
                "postgres://h/d",
            ][..],
            &["x", "--config", "c.toml", "doctor", "--json"][..],
        ] {
            assert!(Cli::parse_args(args).is_ok(), "{args:?}");
        }
        let e = Cli::parse_args(["x", "--reconcile-now", "status"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(Cli::parse_args(["x", "status", "--limit", "-1"]).is_err());
    }

    #[test]
    fn dry_run_needs_reconcile_now() {
        assert!(Cli::try_parse_from(["synqall-reconciler", "--dry-run"]).is_err());
        assert!(
            Cli::try_parse_from(["synqall-reconciler", "--reconcile-now", "--dry-run"]).is_ok()
        );
    }
}
