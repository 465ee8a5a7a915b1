//! The `synqall-reconciler` binary: parse the command line, load config, set up logging, call
//! the library, map the outcome to an exit code. Nothing else lives here.

use std::process::ExitCode;

use synqall_reconciler::cli::Cli;
use synqall_reconciler::config::{LogFormat, Settings};
use synqall_reconciler::{telemetry, Exit};

fn main() -> ExitCode {
    let cli = match Cli::parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors. A usage error is 64 (EX_USAGE), never 2:
            // 2 means "drift left" to the scripts that run this.
            return if e.use_stderr() {
                ExitCode::from(Exit::Usage as u8)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            // The configured log settings are part of what failed. Asked for JSON on the
            // command line: still one JSON object, so every line a collector sees parses.
            if cli.log_format == Some(LogFormat::Json) {
                telemetry::init(LogFormat::Json, "info");
                tracing::error!(
                    error = e.to_string().as_str(),
                    exit_code = Exit::Config as u8,
                    "invalid configuration"
                );
            } else {
                eprintln!("ERROR {e}");
            }
            json_error_on_stdout(&cli, &e.to_string(), Exit::Config);
            return ExitCode::from(Exit::Config as u8);
        }
    };
    telemetry::init(
        cli.log_format.unwrap_or(settings.log.format),
        &settings.log.level,
    );
    for warning in &settings.warnings {
        tracing::warn!(warning = warning.as_str(), "configuration");
    }
    // A panic is a bug: say so in the log format people grep, not as a bare stderr line.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "synqall-reconciler panicked");
    }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "Failed to start the async runtime");
            return ExitCode::from(Exit::Error as u8);
        }
    };
    let exit = match runtime.block_on(synqall_reconciler::run(&cli, settings)) {
        Ok(exit) => exit,
        Err(e) => {
            tracing::error!(
                error = telemetry::error_chain(&e).as_str(),
                exit_code = e.exit() as u8,
                "synqall-reconciler failed"
            );
            json_error_on_stdout(&cli, &telemetry::error_chain(&e), e.exit());
            e.exit()
        }
    };
    ExitCode::from(exit as u8)
}

/// `status --json` and `doctor --json` print JSON on stdout whatever happens, for the scripts
/// that parse it: a failure is `{"error": …, "exit_code": …}` (the ERROR line is on stderr).
fn json_error_on_stdout(cli: &Cli, error: &str, exit: Exit) {
    if cli.wants_json_report() {
        println!(
            "{}",
            serde_json::json!({ "error": error, "exit_code": exit as u8 })
        );
    }
}
