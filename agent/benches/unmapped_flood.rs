//! Memory under a flood of distinct unmapped topics (issue 10: a misconfigured publisher or
//! an attacker must not be able to grow the agent without bound).
//!
//! `cargo bench -p pdtf-agent --bench unmapped_flood`. Workload: the agent binary runs as a
//! child process (so its RSS is its own) on a source subscribed to `plant/#` with one mapped
//! tag; this process hosts the broker (rumqttd) and publishes `PDTF_BENCH_TOPICS` (default
//! 300,000) messages, each on a topic never seen before (`plant/unmapped/{i}`), QoS 1, then
//! waits until the agent has counted every one. The child's VmRSS is sampled every 50,000
//! topics and 5 s after the flood; the figure is the growth per topic after the first
//! 50,000 (start-up and the caches' warm-up are in the first sample).

use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn rss_kib(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn metric(addr: &str, name: &str) -> Option<u64> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let topics: u64 = std::env::var("PDTF_BENCH_TOPICS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let port = pdtf_agent::broker::start_embedded(0).expect("broker");
    let health = pdtf_agent::broker::free_port().expect("a free port");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"[agent]
id = "bench"
site = "s"
area = "a"
line = "l"
state_dir = "{state}"

[brokers.plant]
host = "127.0.0.1"
port = {port}

[[sources]]
id = "plc"
kind = "mqtt"
broker = "plant"
topics = ["plant/#"]

[health]
listen = "127.0.0.1:{health}"

[[tags]]
name = "flow"
source = "plc"
topic = "plant/flow"
"#,
            state = dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pdtf-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the agent starts");
    let addr = format!("127.0.0.1:{health}");
    let started = Instant::now();
    while metric(&addr, "pdtf_source_malformed_total").is_none() {
        assert!(started.elapsed() < Duration::from_secs(30), "agent not up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("flood", "127.0.0.1", port), 1024);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    // The agent's subscription is live once a mapped sample arrives.
    while metric(&addr, "pdtf_source_samples_total").unwrap_or(0) == 0 {
        client
            .publish("plant/flow", QoS::AtLeastOnce, false, "1")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("unmapped-topic flood: {topics} distinct topics, QoS 1, agent as a child process");
    println!("{:>10} {:>10} {:>12}", "topics", "RSS MiB", "malformed");
    let step = 50_000;
    let mut samples = Vec::new();
    let flood = Instant::now();
    for i in 0..topics {
        client
            .publish(format!("plant/unmapped/{i}"), QoS::AtLeastOnce, false, "1")
            .await
            .unwrap();
        if (i + 1) % step == 0 || i + 1 == topics {
            // Let the agent catch up before sampling, so the sample is of the topics seen.
            let t = Instant::now();
            while metric(&addr, "pdtf_source_malformed_total").unwrap_or(0) < i + 1 {
                assert!(t.elapsed() < Duration::from_secs(120), "agent fell behind");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let rss = rss_kib(&child);
            samples.push((i + 1, rss));
            println!("{:>10} {:>10.1} {:>12}", i + 1, rss as f64 / 1024.0, i + 1);
        }
    }
    let secs = flood.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = rss_kib(&child);
    println!(
        "{:>10} {:>10.1}   (5 s after the flood)",
        "idle",
        idle as f64 / 1024.0
    );
    if let (Some(&(n0, r0)), Some(&(n1, r1))) = (samples.first(), samples.last()) {
        if n1 > n0 {
            let per_topic = (r1 as f64 - r0 as f64) * 1024.0 / (n1 - n0) as f64;
            println!(
                "growth after the first {n0} topics: {per_topic:.2} bytes per topic; {:.0} topics/s",
                topics as f64 / secs
            );
        }
    }
    let _killed = child.kill();
    let _reaped = child.wait();
}
