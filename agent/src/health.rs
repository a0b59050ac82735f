//! Loopback HTTP: `/healthz` (the process serves), `/readyz` (the journal is open and fully
//! verified, not over quota, and no component reports a problem such as a TLS failure or a
//! failing journal write) and `/metrics` (Prometheus text).
//!
//! Hand-written on purpose: three GET endpoints on loopback do not justify an HTTP stack in
//! the dependency tree. Requests over 8 KiB or slower than 5 s are dropped.

use pdtf_connectors::Stats;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Why the agent is not ready, or `None` when it is.
pub fn not_ready(stats: &Stats) -> Option<String> {
    let mut why = Vec::new();
    if !Stats::flag(&stats.store_verified) {
        why.push("journal: not verified yet".to_owned());
    }
    if Stats::flag(&stats.store_full) {
        why.push("journal: over quota".to_owned());
    }
    why.extend(
        stats
            .problems()
            .into_iter()
            .map(|(k, v)| format!("{k}: {v}")),
    );
    (!why.is_empty()).then(|| why.join("\n"))
}

pub async fn serve(listener: TcpListener, stats: Arc<Stats>, shutdown: CancellationToken) {
    loop {
        let conn = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = listener.accept() => c,
        };
        let Ok((stream, _)) = conn else { continue };
        let stats = stats.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(Duration::from_secs(5), handle(stream, &stats))
                .await
                .is_err()
            {
                debug!("Health request timed out.");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, stats: &Arc<Stats>) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return;
        }
    }
    let line = String::from_utf8_lossy(&buf);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        ("GET", "/readyz") => match not_ready(stats) {
            None => ("200 OK", "text/plain", "ready\n".to_owned()),
            Some(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("not ready\n{why}\n"),
            ),
        },
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4",
            stats.render_prometheus(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "try /healthz, /readyz or /metrics\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _written = stream.write_all(head.as_bytes()).await;
    let _written = stream.write_all(body.as_bytes()).await;
    let _closed = stream.shutdown().await;
}
