//! Signals: SIGTERM (systemd stop) and SIGINT (Ctrl-C) request shutdown; SIGHUP is answered with
//! a clear line saying the configuration is only read at start.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Listen for signals in the background; the token is cancelled on SIGTERM or SIGINT.
///
/// # Errors
/// The signal handlers could not be installed.
pub fn listen() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => {
                    info!(signal = "SIGTERM", "shutdown requested");
                    cancel.cancel();
                }
                _ = interrupt.recv() => {
                    info!(signal = "SIGINT", "shutdown requested");
                    cancel.cancel();
                }
                _ = hangup.recv() => {
                    warn!(
                        signal = "SIGHUP",
                        "configuration is read only at start; nothing was reloaded \
                         (restart the service to apply changes)"
                    );
                }
            }
        }
    });
    Ok(token)
}
