//! The optional Prometheus endpoint (`metrics.listen`, off by default): passes by outcome,
//! drift found and repaired, orphans, last success time and pass duration, in the text
//! exposition format at `GET /metrics`.
//!
//! A few counters do not justify an HTTP framework: the server below reads one request head
//! (bounded in size and time), answers it and closes the connection. It serves only the
//! daemon's own numbers; nothing from the database is exposed, and nothing secret.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use crate::reconcile::journal::RunStatus;
use crate::reconcile::{PassError, PassOutcome};

/// Largest request head read; anything bigger is answered 431 and closed.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A client that does not send its request head in this time is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoint reports, updated after every pass.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    passes_ok: u64,
    passes_partial: u64,
    passes_refused: u64,
    passes_failed: u64,
    passes_cancelled: u64,
    passes_lock_held: u64,
    drift_found: u64,
    drift_repaired: u64,
    period_resets: u64,
    orphans_fixed: u64,
    /// Gauges of the latest completed pass.
    orphans_left: u64,
    over_quota: u64,
    last_success_unix: Option<f64>,
    last_duration: Option<f64>,
}

impl Metrics {
    /// Count one pass's outcome.
    pub fn record(&self, result: &Result<PassOutcome, PassError>, duration: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(PassOutcome::Completed(report)) => {
                s.last_duration = Some(duration.as_secs_f64());
                s.drift_found += report.drifted;
                s.drift_repaired += report.repaired;
                s.period_resets += report.period_resets;
                s.orphans_fixed += report.orphans_fixed;
                s.orphans_left = report.orphans_left();
                s.over_quota = report.over_quota;
                match RunStatus::of(report) {
                    RunStatus::Cancelled => s.passes_cancelled += 1,
                    RunStatus::Partial => s.passes_partial += 1,
                    RunStatus::Refused => s.passes_refused += 1,
                    RunStatus::Failed => s.passes_failed += 1,
                    RunStatus::Ok => {
                        s.passes_ok += 1;
                        s.last_success_unix = Some(unix_now());
                    }
                }
            }
            Ok(PassOutcome::LockHeld) => s.passes_lock_held += 1,
            Err(_) => {
                s.last_duration = Some(duration.as_secs_f64());
                s.passes_failed += 1;
            }
        }
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(2048);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, String)]| {
            let _ = writeln!(out, "# HELP synqall_reconciler_{name} {help}");
            let _ = writeln!(out, "# TYPE synqall_reconciler_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "synqall_reconciler_{name}{labels} {value}");
            }
        };
        family(
            "passes_total",
            "counter",
            "Reconcile passes since start, by outcome.",
            &[
                ("{outcome=\"ok\"}", s.passes_ok.to_string()),
                ("{outcome=\"partial\"}", s.passes_partial.to_string()),
                ("{outcome=\"refused\"}", s.passes_refused.to_string()),
                ("{outcome=\"failed\"}", s.passes_failed.to_string()),
                ("{outcome=\"cancelled\"}", s.passes_cancelled.to_string()),
                ("{outcome=\"lock_held\"}", s.passes_lock_held.to_string()),
            ],
        );
        family(
            "drift_found_total",
            "counter",
            "Organizations whose used_minutes drifted, summed over passes.",
            &[("", s.drift_found.to_string())],
        );
        family(
            "drift_repaired_total",
            "counter",
            "Drifted counters repaired (journalled), summed over passes.",
            &[("", s.drift_repaired.to_string())],
        );
        family(
            "period_resets_total",
            "counter",
            "Counters reset at a calendar-month boundary.",
            &[("", s.period_resets.to_string())],
        );
        family(
            "orphans_fixed_total",
            "counter",
            "Orphaned calls attributed to an organization.",
            &[("", s.orphans_fixed.to_string())],
        );
        family(
            "orphans_left",
            "gauge",
            "Orphaned calls left alone by the latest pass (ambiguous or without membership).",
            &[("", s.orphans_left.to_string())],
        );
        family(
            "over_quota",
            "gauge",
            "Organizations over max_minutes_monthly at the latest pass (calendar_month).",
            &[("", s.over_quota.to_string())],
        );
        if let Some(ts) = s.last_success_unix {
            family(
                "last_success_timestamp_seconds",
                "gauge",
                "Unix time the latest successful pass finished.",
                &[("", format!("{ts:.3}"))],
            );
        }
        if let Some(d) = s.last_duration {
            family(
                "last_pass_duration_seconds",
                "gauge",
                "Duration of the latest pass that ran.",
                &[("", format!("{d:.3}"))],
            );
        }
        out
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Bind the endpoint (before READY, so a taken port fails the start, not later).
///
/// # Errors
/// The address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    info!(listen = %listener.local_addr()?, "metrics endpoint listening (GET /metrics)");
    Ok(listener)
}

/// Answer requests until the task is aborted.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &metrics).await {
                        debug!(%peer, error = %e, "metrics request failed");
                    }
                });
            }
            // Out of file descriptors and the like: back off instead of spinning.
            Err(e) => {
                debug!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => respond(&mut stream, "200 OK", &metrics.render()).await,
        ("GET", _) => respond(&mut stream, "404 Not Found", "try /metrics\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "").await,
    }
}

/// The request head, up to the blank line; `None` when it is too large.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::PassReport;

    #[test]
    fn counts_outcomes_and_renders_every_family() {
        let m = Metrics::default();
        let report = PassReport {
            drifted: 3,
            repaired: 2,
            orphans_fixed: 4,
            orphans_ambiguous: 1,
            ..PassReport::default()
        };
        m.record(
            &Ok(PassOutcome::Completed(report)),
            Duration::from_millis(1500),
        );
        m.record(&Ok(PassOutcome::LockHeld), Duration::ZERO);
        let text = m.render();
        for line in [
            "synqall_reconciler_passes_total{outcome=\"ok\"} 1",
            "synqall_reconciler_passes_total{outcome=\"lock_held\"} 1",
            "synqall_reconciler_passes_total{outcome=\"failed\"} 0",
            "synqall_reconciler_drift_found_total 3",
            "synqall_reconciler_drift_repaired_total 2",
            "synqall_reconciler_orphans_fixed_total 4",
            "synqall_reconciler_orphans_left 1",
            "synqall_reconciler_last_pass_duration_seconds 1.500",
            "# TYPE synqall_reconciler_last_success_timestamp_seconds gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn no_success_yet_means_no_timestamp() {
        let text = Metrics::default().render();
        assert!(!text.contains("last_success_timestamp_seconds"), "{text}");
    }
}
