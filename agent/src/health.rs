//! Loopback HTTP: `/healthz` (the process serves), `/readyz` (the journal is open and fully
//! verified, not over quota, and no component reports a problem such as a TLS failure or a
//! failing journal write), `/metrics` (Prometheus text), and the batch API (JSON):
//! `/lines`, `/lines/{id}/batch` (the line's batch now, as on `P/batch`),
//! `/batches?line=&from=&to=`, `/batches/{id}?line=` and `/batches/{id}/deviations?line=`
//! (from the journal, see
//! `batch::history`).
//!
//! Hand-written on purpose: a few GET endpoints on loopback do not justify an HTTP stack in
//! the dependency tree. Requests over 8 KiB or slower than 5 s are dropped.

use crate::batch::history::{self, Filter};
use crate::journal::Store;
use pdtf_connectors::Stats;
use serde_json::{json, Value};
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

/// What the endpoints read.
#[derive(Clone)]
pub struct Api {
    pub stats: Arc<Stats>,
    pub journal: Arc<dyn Store>,
    /// Every configured line, in configuration order.
    pub lines: Vec<String>,
    pub batches: crate::batch::Live,
    /// Each line's alarm-management KPIs (JSON), refreshed at its tick.
    pub alarms: crate::batch::Live,
}

pub async fn serve(listener: TcpListener, api: Api, shutdown: CancellationToken) {
    loop {
        let conn = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = listener.accept() => c,
        };
        let Ok((stream, _)) = conn else { continue };
        let api = api.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(Duration::from_secs(5), handle(stream, &api))
                .await
                .is_err()
            {
                debug!("Health request timed out.");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, api: &Api) {
    let stats = &api.stats;
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
        ("GET", "/alarms") => {
            let lines: Vec<Value> = api
                .alarms
                .lock()
                .map(|m| {
                    m.values()
                        .filter_map(|v| serde_json::from_slice(v).ok())
                        .collect()
                })
                .unwrap_or_default();
            json_reply(&Value::Array(lines))
        }
        ("GET", p) if p == "/lines" || p.starts_with("/lines/") || p.starts_with("/batches") => {
            batch_api(api, p).await
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "try /healthz, /readyz, /metrics, /alarms, /lines, /lines/{id}/batch, /batches, /batches/{id} or /batches/{id}/deviations\n"
                .to_owned(),
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

type Reply = (&'static str, &'static str, String);

fn json_reply(v: &Value) -> Reply {
    ("200 OK", "application/json", format!("{v}\n"))
}

fn not_found(why: String) -> Reply {
    (
        "404 Not Found",
        "application/json",
        format!("{}\n", json!({ "error": why })),
    )
}

fn bad_request(why: String) -> Reply {
    (
        "400 Bad Request",
        "application/json",
        format!("{}\n", json!({ "error": why })),
    )
}

/// A journal read in a blocking task: its value, or the reply saying why there is none.
fn flatten<T>(
    read: Result<Result<T, pdtf_models::JournalError>, tokio::task::JoinError>,
) -> Result<T, Reply> {
    let (status, why) = match read {
        Ok(Ok(v)) => return Ok(v),
        Ok(Err(e)) => ("503 Service Unavailable", format!("journal: {e}")),
        Err(e) => ("500 Internal Server Error", e.to_string()),
    };
    Err((
        status,
        "application/json",
        format!("{}\n", json!({ "error": why })),
    ))
}

/// `%XX` and `+` decoded (query values: RFC 3339 times, line and batch ids).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query's parameters, decoded.
fn query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn line_state(api: &Api, line: &str) -> Value {
    api.batches
        .lock()
        .ok()
        .and_then(|m| m.get(line).cloned())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

async fn batch_api(api: &Api, target: &str) -> Reply {
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let params = query(q);
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let segments: Vec<String> = path.split('/').skip(1).map(decode).collect();
    let tracked = |l: &str| api.batches.lock().is_ok_and(|m| m.contains_key(l));
    match segments.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["lines"] => json_reply(&Value::Array(
            api.lines
                .iter()
                .map(|l| json!({"line": l, "batch_tracking": tracked(l), "batch": line_state(api, l)}))
                .collect(),
        )),
        ["lines", line, "batch"] => {
            if !api.lines.iter().any(|l| l == line) {
                return not_found(format!("no line {line:?} (lines: {})", api.lines.join(", ")));
            }
            if !tracked(line) {
                return not_found(format!("line {line:?} does not track batches (no [batch] for it)"));
            }
            json_reply(&line_state(api, line))
        }
        ["batches"] => {
            let mut filter = Filter {
                line: param("line"),
                ..Filter::default()
            };
            for (key, slot) in [("from", &mut filter.from), ("to", &mut filter.to)] {
                if let Some(v) = param(key) {
                    match humantime::parse_rfc3339_weak(&v) {
                        Ok(t) => *slot = Some(pdtf_models::Timestamp::from_system(t)),
                        Err(e) => {
                            return bad_request(format!("{key}={v:?}: {e} (expected RFC 3339, e.g. 2026-12-01T06:00:00Z)"))
                        }
                    }
                }
            }
            let j = api.journal.clone();
            let read = tokio::task::spawn_blocking(move || {
                history::batch_records(j.as_ref(), &mut |_, _| {}).map(|r| history::fold(&r))
            })
            .await;
            match flatten(read) {
                Ok(all) => json_reply(&json!(all
                    .into_iter()
                    .filter(|b| filter.keeps(b))
                    .collect::<Vec<_>>())),
                Err(failed) => failed,
            }
        }
        ["batches", id] => {
            let (j, id, line) = (api.journal.clone(), id.to_string(), param("line"));
            let read = tokio::task::spawn_blocking(move || {
                let all = history::fold(&history::batch_records(j.as_ref(), &mut |_, _| {})?);
                let Some(b) = history::find(&all, &id, line.as_deref()) else {
                    return Ok(None);
                };
                let (alarms, count) = history::batch_alarms(j.as_ref(), b)?;
                let deviations = history::batch_deviations(j.as_ref(), b)?;
                Ok::<_, pdtf_models::JournalError>(Some(history::detail(
                    b,
                    &alarms,
                    count,
                    &deviations,
                )))
            })
            .await;
            match flatten(read) {
                Ok(Some(v)) => json_reply(&v),
                Ok(None) => not_found(format!("no batch {:?} in the journal", segments[1])),
                Err(failed) => failed,
            }
        }
        ["batches", id, "deviations"] => {
            let (j, id, line) = (api.journal.clone(), id.to_string(), param("line"));
            let read = tokio::task::spawn_blocking(move || {
                let all = history::fold(&history::batch_records(j.as_ref(), &mut |_, _| {})?);
                let Some(b) = history::find(&all, &id, line.as_deref()) else {
                    return Ok(None);
                };
                let deviations = history::batch_deviations(j.as_ref(), b)?;
                Ok::<_, pdtf_models::JournalError>(Some(history::deviations_json(
                    &deviations,
                    crate::pipeline::now(),
                )))
            })
            .await;
            match flatten(read) {
                Ok(Some(v)) => json_reply(&v),
                Ok(None) => not_found(format!("no batch {:?} in the journal", segments[1])),
                Err(failed) => failed,
            }
        }
        _ => not_found(format!("no such resource {path:?}")),
    }
}
