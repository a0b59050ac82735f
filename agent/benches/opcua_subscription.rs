//! OPC UA subscription benchmark: samples/s from one subscription of many monitored items.
//!
//! `cargo bench -p pdtf-agent --bench opcua_subscription`. Workload, all on loopback in one
//! process (so the server's work is on the same two cores as the agent's):
//! - the simulated server (async-opcua's server, security None) holds `PDTF_BENCH_ITEMS`
//!   (default 10,000) Double variables; a writer task sets every one of them to a new value
//!   every `PDTF_BENCH_WRITE_MS` (default 100 ms), in one address-space lock per scan;
//! - the agent's `OpcuaSource` subscribes to all of them in one subscription (publishing
//!   interval 100 ms, sampling interval 100 ms, queue size 10, monitored items created 200
//!   per request), exactly as `run` does; its batches go to a channel that only counts;
//! - after the subscription is in place and a 3 s warm-up, samples are counted for
//!   `PDTF_BENCH_SECS` (default 10 s). The offered rate is items × 1000 / write_ms. Scan n
//!   writes the value n, so a jump of more than 1 in an item's values is a missed change
//!   (the server's sampling or queue dropped it, or it never arrived); those are counted too.
//!
//! Also printed: the time from start to the first sample of every item (connect, read
//! the namespace array, create the subscription and all items), the CPU the whole process
//! used during the window (server, writer and agent together; the machine has 2 cores) and
//! its peak resident memory. `PDTF_BENCH_SAMPLING_MS` (default 100) sets the items' sampling
//! interval; the simulated server samples down to 10 ms, so with a faster writer the
//! ceiling can be found.

use opcua::types::{StatusCode, Variant};
use pdtf_agent::opcua_sim::{SimOptions, SimServer};
use pdtf_connectors::opcua::{OpcuaItem, OpcuaServerConfig, OpcuaSource, ValueType};
use pdtf_connectors::{SourceMsg, Stats};
use pdtf_models::TagId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let items = env("PDTF_BENCH_ITEMS", 10_000) as usize;
    let write_ms = env("PDTF_BENCH_WRITE_MS", 100);
    let secs = env("PDTF_BENCH_SECS", 10);
    let sampling_ms = env("PDTF_BENCH_SAMPLING_MS", 100);
    let pki = tempfile::tempdir()?;
    let names: Vec<String> = (0..items).map(|i| format!("V{i:05}")).collect();
    let server = Arc::new(
        SimServer::start(SimOptions {
            port: 0,
            pki_dir: pki.path().join("server"),
            folder: "Bench".into(),
            variables: names
                .iter()
                .map(|n| (n.clone(), Variant::Double(0.0)))
                .collect(),
            ..Default::default()
        })
        .await?,
    );
    let stop = CancellationToken::new();
    let writer = {
        let (server, names, stop) = (server.clone(), names.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(write_ms));
            let mut n = 0u64;
            while tokio::select! { _ = stop.cancelled() => false, _ = tick.tick() => true } {
                n += 1;
                let v = n as f64;
                server.set_many(
                    names
                        .iter()
                        .map(|name| (name.as_str(), Variant::Double(v), StatusCode::Good)),
                );
            }
        })
    };
    let source = OpcuaSource {
        id: "bench".into(),
        agent_id: "bench".into(),
        server: OpcuaServerConfig::new(server.endpoint.clone()),
        pki_dir: pki.path().join("agent"),
        publishing_interval: Duration::from_millis(100),
        chunk_size: 200,
        max_notifications_per_publish: 1_000,
        items: names
            .iter()
            .enumerate()
            .map(|(i, n)| OpcuaItem {
                tag: TagId(i as u32),
                node: server.node(n).parse().expect("node id"),
                value_type: ValueType::Number,
                sampling_interval_ms: sampling_ms as f64,
                queue_size: 10,
                discard_oldest: true,
                deadband: None,
            })
            .collect(),
        max_batch_samples: 1_000,
        flush_interval: Duration::from_millis(50),
        reload: None,
    };
    let (tx, mut rx) = mpsc::channel(64);
    let stats = Arc::new(Stats::default());
    let task = tokio::spawn(source.run(tx, stats.clone(), stop.clone()));

    let started = Instant::now();
    let count = Arc::new(AtomicU64::new(0));
    let missed = Arc::new(AtomicU64::new(0));
    let counter = {
        let (count, missed) = (count.clone(), missed.clone());
        let mut seen = vec![false; items];
        let mut last = vec![0.0f64; items];
        let mut missing = items;
        tokio::spawn(async move {
            let mut all_seen_at = None;
            while let Some(msg) = rx.recv().await {
                if let SourceMsg::Samples(batch) = msg {
                    count.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for s in &batch {
                        let i = s.tag.0 as usize;
                        // Scan n writes n to every item: a jump of more than 1 is a change
                        // that never arrived.
                        let v = s.value.as_f64().unwrap_or(0.0);
                        if last[i] > 0.0 && v > last[i] + 1.0 {
                            missed.fetch_add((v - last[i] - 1.0) as u64, Ordering::Relaxed);
                        }
                        last[i] = last[i].max(v);
                        if !seen[i] {
                            seen[i] = true;
                            missing -= 1;
                            if missing == 0 {
                                all_seen_at = Some(started.elapsed());
                            }
                        }
                    }
                }
            }
            all_seen_at
        })
    };

    eprintln!("{items} items, every one written every {write_ms} ms; waiting for the first sample of each…");
    let subscribed = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if counter.is_finished() {
            anyhow::bail!("the source stopped");
        }
        let n = count.load(Ordering::Relaxed);
        if n >= items as u64 {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(120) {
            anyhow::bail!(
                "only {n} samples after 120 s; problems: {:?}",
                stats.problems
            );
        }
    };
    eprintln!(
        "first {items} samples after {:.1} s; warming up 3 s",
        subscribed.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (c0, t0, cpu0) = (count.load(Ordering::Relaxed), Instant::now(), cpu_secs());
    let m0 = missed.load(Ordering::Relaxed);
    let mut last = c0;
    for s in 1..=secs {
        tokio::time::sleep_until((t0 + Duration::from_secs(s)).into()).await;
        let c = count.load(Ordering::Relaxed);
        eprintln!("  {s:>3} s: {:>8} samples/s", c - last);
        last = c;
    }
    let (c1, elapsed, cpu1) = (count.load(Ordering::Relaxed), t0.elapsed(), cpu_secs());
    let m1 = missed.load(Ordering::Relaxed);
    stop.cancel();
    let _ = task.await;
    let _ = writer.await;
    let all_seen = counter.await?.map(|d| format!("{:.1} s", d.as_secs_f64()));

    let rate = (c1 - c0) as f64 / elapsed.as_secs_f64();
    let offered = items as f64 * 1000.0 / write_ms as f64;
    println!(
        "opcua_subscription: {items} monitored items in one subscription, loopback, security None"
    );
    println!("  offered (value changes/s)        {offered:>10.0}");
    println!(
        "  received samples/s               {rate:>10.0}  ({:.1} % of offered)",
        100.0 * rate / offered
    );
    println!(
        "  changes missed in the window     {:>10}  ({:.2} % of received)",
        m1 - m0,
        100.0 * (m1 - m0) as f64 / (c1 - c0).max(1) as f64
    );
    println!(
        "  every item's first sample after  {:>10}",
        all_seen.unwrap_or_else(|| "never".into())
    );
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        println!(
            "  CPU (server + writer + agent)    {:>10.2} cores",
            (b - a) / elapsed.as_secs_f64()
        );
    }
    if let Some(mib) = peak_rss_mib() {
        println!("  peak RSS (server + agent)        {mib:>8.0} MiB");
    }
    Ok(())
}
