//! Start-up readiness against journal size: with and without the verified checkpoint.
//!
//! `cargo bench -p pdtf-agent --bench startup`. Workload: a redb journal of
//! `PDTF_BENCH_RECORDS` sample records (default 1,300,000, the size issue 11 measured),
//! written in commits of 4,096 under `target/bench-startup`; then the real `Agent::start`
//! (one MQTT source whose broker is absent, so nothing else runs) is timed to readiness
//! (`/readyz` would be 200: the journal verified), twice:
//! 1. no checkpoint (a journal from an earlier release): the whole chain before ready;
//! 2. the checkpoint 10,000 records behind the end (what a crash a few seconds after the last
//!    housekeeping round leaves): the tail before ready, then the whole chain in the
//!    background (about case 1's time again, after ready).
//!
//! Each case runs `PDTF_BENCH_ROUNDS` times (default 3); the median is printed. With
//! `PDTF_BENCH_MAX_READY_MS` set (`.ci/run`), it fails when case 2 took longer.

mod common;

use pdtf_agent::verified::CURSOR;
use pdtf_agent::Agent;
use pdtf_connectors::Stats;
use pdtf_models::Seq;
use std::path::Path;
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(dir: &Path) -> pdtf_agent::config::Config {
    let text = format!(
        "[agent]\nid = \"bench\"\nsite = \"s\"\narea = \"a\"\nline = \"l\"\nstate_dir = \"{}\"\n\n[brokers.plant]\nhost = \"127.0.0.1\"\nport = 9\n\n[[sources]]\nid = \"plc\"\nkind = \"mqtt\"\nbroker = \"plant\"\n\n[[tags]]\nname = \"t\"\nsource = \"plc\"\ntopic = \"t\"\n",
        dir.display()
    );
    pdtf_agent::config::load_str(&text, &dir.join("agent.toml"), &|_| None).expect("config")
}

/// Time from `Agent::start` to ready, and how much of it `Agent::start` itself took (the
/// journal's open and the alarm-state scan, before verification begins).
fn start(rt: &tokio::runtime::Runtime, dir: &Path) -> (Duration, Duration) {
    rt.block_on(async {
        let t = Instant::now();
        let agent = Agent::start(&config(dir)).expect("start");
        let started = t.elapsed();
        while !Stats::flag(&agent.stats.store_verify_done) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ready = t.elapsed();
        assert!(Stats::flag(&agent.stats.store_verified), "verified");
        agent.shutdown(Duration::ZERO).await;
        (ready, started)
    })
}

fn main() {
    let records = env("PDTF_BENCH_RECORDS", 1_300_000);
    let rounds = env("PDTF_BENCH_ROUNDS", 3) as usize;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-startup");
    let _ = std::fs::remove_dir_all(&dir);
    let t = Instant::now();
    {
        let j = pdtf_agent::journal::open(pdtf_agent::config::Engine::Redb, &dir).unwrap();
        let mut written = 0;
        while written < records {
            let n = (records - written).min(4_096) as usize;
            j.append(common::batch(n, written as usize)).unwrap();
            written += n as u64;
        }
    }
    println!(
        "journal of {records} records written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let set = |seq: u64| {
        // The last run's background pass may still hold the file for a moment.
        let j = loop {
            match pdtf_agent::journal::open(pdtf_agent::config::Engine::Redb, &dir) {
                Ok(j) => break j,
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        j.set_cursor(CURSOR, Seq(seq)).unwrap();
        j.last_seq().unwrap().0
    };
    let full: Vec<(Duration, Duration)> = (0..rounds)
        .map(|_| {
            set(0);
            start(&rt, &dir)
        })
        .collect();
    let tail: Vec<(Duration, Duration)> = (0..rounds)
        .map(|_| {
            let last = set(0);
            set(last.saturating_sub(10_000));
            start(&rt, &dir)
        })
        .collect();
    println!("| start-up ({records} records) | time to ready (median of {rounds}) | of which `Agent::start` |");
    println!("|---|---|---|");
    for (what, runs) in [
        ("no checkpoint: whole chain before ready", &full),
        ("checkpoint 10,000 records behind: tail before ready", &tail),
    ] {
        println!(
            "| {what} | {:.3} s | {:.3} s |",
            median(runs.iter().map(|r| r.0).collect()).as_secs_f64(),
            median(runs.iter().map(|r| r.1).collect()).as_secs_f64()
        );
    }
    // A regression gate for `.ci/run`: ready after the checkpoint within this many ms.
    if let Some(limit) = std::env::var("PDTF_BENCH_MAX_READY_MS")
        .ok()
        .and_then(|v| v.parse::<u128>().ok())
    {
        let ready = median(tail.iter().map(|r| r.0).collect()).as_millis();
        assert!(
            ready <= limit,
            "ready after {ready} ms, over PDTF_BENCH_MAX_READY_MS={limit}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
