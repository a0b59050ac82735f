//! Journal engine benchmark: commit throughput and latency, read-back speed.
//!
//! `cargo bench -p pdtf-agent --features sled --bench journal` (redb only without the
//! feature). Workload, per engine, in a fresh directory under `target/` (the project's disk,
//! with each engine's real durability: redb `Durability::Immediate`, sled `flush()`):
//! 1. group commit: 200 commits of 500 sample records (100,000 records);
//! 2. single-record commits: 300 commits of 1 record (the fsync-bound worst case);
//! 3. read-back: all records from seq 1 in chunks of 1,000;
//! 4. several lines (redb only): 1 and then 4 threads, each a line pipeline committing its
//!    own batches onto the one journal (3,000 records per line, in commits of 10 and of 100
//!    records), as `[[lines]]` does: total records/s and each commit's p99 latency.
//!
//! Set `PDTF_BENCH_ROUNDS` (default 3) to repeat; each figure is the median round.

use pdtf_agent::config::Engine;
mod common;

use common::batch;
use pdtf_models::Seq;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Round {
    group_rps: f64,
    group_p50: Duration,
    group_p99: Duration,
    single_cps: f64,
    single_p50: Duration,
    single_p99: Duration,
    read_rps: f64,
}

fn round(engine: Engine, dir: &PathBuf) -> Round {
    let _ = std::fs::remove_dir_all(dir);
    let j = pdtf_agent::journal::open(engine, dir).expect("open journal");
    let mut lat = Vec::new();
    let started = Instant::now();
    for c in 0..200 {
        let b = batch(500, c * 500);
        let t = Instant::now();
        j.append(b).unwrap();
        lat.push(t.elapsed());
    }
    let group_rps = 100_000.0 / started.elapsed().as_secs_f64();
    lat.sort();
    let (group_p50, group_p99) = (pct(&lat, 0.5), pct(&lat, 0.99));
    let mut lat = Vec::new();
    let started = Instant::now();
    for c in 0..300 {
        let b = batch(1, 100_000 + c);
        let t = Instant::now();
        j.append(b).unwrap();
        lat.push(t.elapsed());
    }
    let single_cps = 300.0 / started.elapsed().as_secs_f64();
    lat.sort();
    let (single_p50, single_p99) = (pct(&lat, 0.5), pct(&lat, 0.99));
    let started = Instant::now();
    let mut from = 1;
    let mut n = 0;
    loop {
        let r = j.read_from(Seq(from), 1_000).unwrap();
        let Some(last) = r.last() else { break };
        from = last.seq.0 + 1;
        n += r.len();
    }
    assert_eq!(n, 100_300);
    let read_rps = n as f64 / started.elapsed().as_secs_f64();
    drop(j);
    let _ = std::fs::remove_dir_all(dir);
    Round {
        group_rps,
        group_p50,
        group_p99,
        single_cps,
        single_p50,
        single_p99,
        read_rps,
    }
}

/// `lines` threads each commit `per_line` records in commits of `batch_len` onto one journal:
/// (total records/s, p99 commit latency over all lines).
fn lines_round(dir: &PathBuf, lines: usize, batch_len: usize) -> (f64, Duration) {
    let _ = std::fs::remove_dir_all(dir);
    let j = std::sync::Arc::new(pdtf_agent::journal::open(Engine::Redb, dir).expect("open"));
    let per_line = 3_000;
    let started = Instant::now();
    let threads: Vec<_> = (0..lines)
        .map(|l| {
            let j = j.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                for c in 0..per_line / batch_len {
                    let b = batch(batch_len, l * per_line + c * batch_len);
                    let t = Instant::now();
                    j.append(b).unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let rps = (lines * per_line) as f64 / started.elapsed().as_secs_f64();
    assert_eq!(j.last_seq().unwrap().0, (lines * per_line) as u64);
    drop(j);
    let _ = std::fs::remove_dir_all(dir);
    lat.sort();
    (rps, pct(&lat, 0.99))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn median_d(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("PDTF_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-journal");
    let mut engines = vec![("redb", Engine::Redb)];
    if cfg!(feature = "sled") {
        engines.push(("sled", Engine::Sled));
    }
    println!("| engine | group commit (500/commit) records/s | commit p50 | commit p99 | single-record commits/s | p50 | p99 | read-back records/s |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, engine) in engines {
        let rs: Vec<Round> = (0..rounds)
            .map(|_| round(engine, &base.join(name)))
            .collect();
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {:.0} | {:.2} ms | {:.2} ms | {:.0} |",
            median(rs.iter().map(|r| r.group_rps).collect()),
            median_d(rs.iter().map(|r| r.group_p50).collect()).as_secs_f64() * 1e3,
            median_d(rs.iter().map(|r| r.group_p99).collect()).as_secs_f64() * 1e3,
            median(rs.iter().map(|r| r.single_cps).collect()),
            median_d(rs.iter().map(|r| r.single_p50).collect()).as_secs_f64() * 1e3,
            median_d(rs.iter().map(|r| r.single_p99).collect()).as_secs_f64() * 1e3,
            median(rs.iter().map(|r| r.read_rps).collect()),
        );
    }
    println!();
    println!(
        "| lines committing at once (redb) | records per commit | total records/s | commit p99 |"
    );
    println!("|---|---|---|---|");
    for batch_len in [10, 100] {
        for lines in [1, 4] {
            let rs: Vec<(f64, Duration)> = (0..rounds)
                .map(|_| lines_round(&base.join("lines"), lines, batch_len))
                .collect();
            println!(
                "| {lines} | {batch_len} | {:.0} | {:.2} ms |",
                median(rs.iter().map(|r| r.0).collect()),
                median_d(rs.iter().map(|r| r.1).collect()).as_secs_f64() * 1e3,
            );
        }
    }
}
