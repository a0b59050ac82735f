//! Modbus polling throughput (issue 15): `PDTF_BENCH_DEVICES` (default 100) simulated Modbus
//! TCP devices (tokio-modbus's server, in this process, on loopback), each with
//! `PDTF_BENCH_REGISTERS` (default 100) holding registers mapped as u16 tags, polled every
//! `PDTF_BENCH_POLL_MS` (default 500) by a child `pdtf-agent run` that commits every sample
//! to its journal and runs the twin and the limit detector on it (no upstream), for
//! `PDTF_BENCH_SECS` (default 20) after a 3 s warm-up.
//!
//! Prints reads/s, registers/s and tags/s (samples committed), the agent's CPU (% of one core
//! and µs per tag) and its largest RSS. The devices run in the bench process, so their CPU is
//! not the agent's. `cargo bench -p pdtf-agent --bench modbus_poll`.

mod child;

use child::{cpu_secs, env_or, metric, rss_kib, run_agent};
use pdtf_agent::modbus_sim::{ModbusSim, SimState};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let devices: usize = env_or("PDTF_BENCH_DEVICES", 100);
    let registers: u16 = env_or("PDTF_BENCH_REGISTERS", 100);
    let poll_ms: u64 = env_or("PDTF_BENCH_POLL_MS", 500);
    let secs: u64 = env_or("PDTF_BENCH_SECS", 20);
    let mut sims = Vec::new();
    for d in 0..devices {
        let state = Arc::new(SimState::default());
        let words: Vec<u16> = (0..registers).map(|r| (d as u16 % 60) * 1000 + r).collect();
        state.set_holding(0, &words);
        sims.push(
            ModbusSim::start(0, state)
                .await
                .expect("a simulated device"),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let health = pdtf_agent::broker::free_port().expect("a free port");
    let mut text = format!(
        "[agent]\nid = \"bench\"\nsite = \"s\"\narea = \"a\"\nline = \"l\"\nstate_dir = \"{}\"\n\n[health]\nlisten = \"127.0.0.1:{health}\"\n\n",
        dir.path().join("state").display()
    );
    for (d, sim) in sims.iter().enumerate() {
        let _ = write!(
            text,
            "[modbus_devices.d{d}]\ntransport = \"tcp\"\nhost = \"127.0.0.1\"\nport = {}\n\n[[sources]]\nid = \"d{d}\"\nkind = \"modbus\"\ndevice = \"d{d}\"\n\n",
            sim.port
        );
        for r in 0..registers {
            let _ = write!(
                text,
                "[[tags]]\nname = \"d{d}.r{r}\"\nsource = \"d{d}\"\nmodbus = {{ table = \"holding\", address = {r}, type = \"u16\", poll_interval_ms = {poll_ms} }}\nlimits = {{ hi = 1000000.0 }}\n\n"
            );
        }
    }
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, text).unwrap();
    let mut agent = run_agent(&config);
    let health = format!("127.0.0.1:{health}");
    let up = Instant::now();
    while metric(&health, "pdtf_modbus_requests_total").unwrap_or(0) < devices as u64 {
        assert!(
            up.elapsed() < Duration::from_secs(60),
            "the agent never polled every device"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let samples0 = metric(&health, "pdtf_source_samples_total").unwrap_or(0);
    let requests0 = metric(&health, "pdtf_modbus_requests_total").unwrap_or(0);
    let cpu0 = cpu_secs(&agent);
    let t0 = Instant::now();
    let mut max_rss = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        max_rss = max_rss.max(rss_kib(&agent));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let samples = metric(&health, "pdtf_source_samples_total").unwrap_or(0) - samples0;
    let requests = metric(&health, "pdtf_modbus_requests_total").unwrap_or(0) - requests0;
    let timeouts = metric(&health, "pdtf_modbus_timeouts_total").unwrap_or(0);
    let overruns = metric(&health, "pdtf_modbus_overruns_total").unwrap_or(0);
    let cpu = cpu_secs(&agent) - cpu0;
    let _killed = agent.kill();
    let _reaped = agent.wait();

    let tags = devices * usize::from(registers);
    let offered = tags as f64 * 1000.0 / poll_ms as f64;
    let tags_per_s = samples as f64 / elapsed;
    println!(
        "modbus_poll: {devices} devices x {registers} registers ({tags} tags) every {poll_ms} ms, {elapsed:.1} s"
    );
    println!(
        "  reads/s {:.0}   registers/s {:.0}   tags/s {tags_per_s:.0} (offered {offered:.0})",
        requests as f64 / elapsed,
        requests as f64 * f64::from(registers) / elapsed
    );
    println!(
        "  agent CPU {:.0} % of one core, {:.2} us per tag; max RSS {:.1} MiB; timeouts {timeouts}, overruns {overruns}",
        100.0 * cpu / elapsed,
        1e6 * cpu / samples.max(1) as f64,
        max_rss as f64 / 1024.0
    );
}
