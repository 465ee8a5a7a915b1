//! The endpoint's HTTP side: one request head read (bounded in size and time), answered with
//! the exposition and the connection closed. A handful of gauges does not justify an HTTP
//! framework; nothing from the database is exposed here, and nothing secret.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use super::Metrics;

/// Largest request head read; anything bigger is answered 431 and closed.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A client that does not send its request head in this time is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// What the body is (prometheus-client writes OpenMetrics text, which Prometheus reads).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Errors are plain text.
const TEXT: &str = "text/plain; charset=utf-8";

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
            return respond(&mut stream, "431 Request Header Fields Too Large", TEXT, "").await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => {
            respond(&mut stream, "200 OK", CONTENT_TYPE, &metrics.render()).await
        }
        ("GET", _) => respond(&mut stream, "404 Not Found", TEXT, "try /metrics\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", TEXT, "").await,
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

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
