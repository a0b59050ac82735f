//! Tag → committed → retained alarm published: latency under background load (issue 11).
//!
//! `cargo bench -p pdtf-agent --bench alarm_latency`. Workload: the agent in process (journal
//! with `Durability::Immediate`, alarms, upstream sync, all on one broker), 100 background
//! tags at `PDTF_BENCH_RATES` messages/s (default `1000,10000`; QoS 0, values inside their
//! limits) and a probe tag `temp` (limit hi 80) that crosses its limit every 50 ms (QoS 1,
//! alternately 95 and 20). Each probe's latency is from its publish to the arrival of the
//! retained alarm message for it at a separate subscriber; `PDTF_BENCH_PROBES` (default 200)
//! probes per rate. Broker: an embedded rumqttd, or `PDTF_BENCH_BROKER=host:port` (e.g. a
//! Mosquitto with `set_tcp_nodelay true`). The alarm still goes out only after its record is
//! durable: that is the path measured. `PDTF_BENCH_MAX_P50_MS` makes it a regression gate
//! (exit 1 when a rate's p50 is above it): `.ci/run` runs a short version with a wide margin
//! (the flush timer this replaced cost 48 ms).

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn client(id: &str, host: &str, port: u16) -> AsyncClient {
    let (c, mut el) = AsyncClient::new(MqttOptions::new(id, host, port), 4096);
    el.network_options.set_tcp_nodelay(true);
    tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    c
}

fn config(dir: &std::path::Path, host: &str, port: u16) -> String {
    let mut text = format!(
        r#"[agent]
id = "bench"
site = "s"
area = "a"
line = "l"
state_dir = "{state}"

[brokers.b]
host = "{host}"
port = {port}

[[sources]]
id = "plc"
kind = "mqtt"
broker = "b"
qos = 1
topics = ["bench/#"]

[sinks.alerts]
broker = "b"

[sinks.upstream]
broker = "b"

[[tags]]
name = "temp"
source = "plc"
topic = "bench/temp"
limits = {{ hi = 80.0, deadband = 1.0 }}
"#,
        state = dir.join("state").display()
    );
    for i in 0..100 {
        text.push_str(&format!(
            "\n[[tags]]\nname = \"load{i}\"\nsource = \"plc\"\ntopic = \"bench/load{i}\"\nlimits = {{ hi = 1000.0 }}\n"
        ));
    }
    text
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rates: Vec<u64> = std::env::var("PDTF_BENCH_RATES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let probes: usize = env_or("PDTF_BENCH_PROBES", 200);
    let gate: Option<f64> = std::env::var("PDTF_BENCH_MAX_P50_MS")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut over_gate = false;
    let (host, port) = match std::env::var("PDTF_BENCH_BROKER") {
        Ok(hp) => {
            let (h, p) = hp.rsplit_once(':').expect("PDTF_BENCH_BROKER=host:port");
            (h.to_owned(), p.parse().expect("a port"))
        }
        Err(_) => (
            "127.0.0.1".to_owned(),
            pdtf_agent::broker::start_embedded(0).expect("broker"),
        ),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config(dir.path(), &host, port)).unwrap();
    let c = pdtf_agent::config::load(&path).expect("bench config valid");
    let agent = pdtf_agent::Agent::start(&c).expect("agent starts");

    // The probe's subscriber: each alarm message's arrival time and state.
    let arrivals: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let (sub, mut el) = AsyncClient::new(MqttOptions::new("probe-sub", &host, port), 64);
    el.network_options.set_tcp_nodelay(true);
    sub.subscribe("pdtf/s/a/l/alarms/temp", QoS::AtLeastOnce)
        .await
        .unwrap();
    let store = arrivals.clone();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let active = p.payload.windows(8).any(|w| w == b"\"active\"");
                    store.lock().unwrap().push((Instant::now(), active));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    let probe = client("probe-pub", &host, port);
    let load = client("load-pub", &host, port);
    // Warm up: the subscription is live once the agent has a sample.
    while pdtf_connectors::Stats::get(&agent.stats.samples_in) == 0 {
        load.publish("bench/load0", QoS::AtLeastOnce, false, "1")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("tag -> committed -> retained alarm, agent in process, broker {host}:{port}");
    println!(
        "{:>8} {:>8} {:>9} {:>9} {:>9}",
        "msg/s", "probes", "p50 ms", "p99 ms", "max ms"
    );
    let mut active = false;
    for rate in rates {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let bg = {
            let (load, stop) = (load.clone(), stop.clone());
            tokio::spawn(async move {
                // In 1 ms slices: rate/1000 messages per slice.
                let per_ms = (rate / 1000).max(1);
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                let mut k = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tick.tick().await;
                    for _ in 0..per_ms {
                        let topic = format!("bench/load{}", k % 100);
                        let _ =
                            load.try_publish(topic, QoS::AtMostOnce, false, format!("{}", k % 500));
                        k += 1;
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut latencies = Vec::with_capacity(probes);
        for _ in 0..probes {
            active = !active;
            let seen_before = arrivals.lock().unwrap().len();
            let sent = Instant::now();
            probe
                .publish(
                    "bench/temp",
                    QoS::AtLeastOnce,
                    false,
                    if active { "95" } else { "20" },
                )
                .await
                .unwrap();
            let deadline = sent + Duration::from_secs(5);
            let got = loop {
                let hit = arrivals.lock().unwrap()[seen_before..]
                    .iter()
                    .find(|(_, a)| *a == active)
                    .map(|(t, _)| *t);
                if let Some(t) = hit {
                    break Some(t);
                }
                if Instant::now() > deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            };
            if let Some(t) = got {
                latencies.push(t.duration_since(sent));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = bg.await;
        latencies.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        if latencies.is_empty() {
            println!("{rate:>8} no alarm arrived");
            over_gate |= gate.is_some();
            continue;
        }
        let p50 = ms(pct(&latencies, 0.5));
        println!(
            "{:>8} {:>8} {:>9.2} {:>9.2} {:>9.2}",
            rate,
            latencies.len(),
            p50,
            ms(pct(&latencies, 0.99)),
            ms(*latencies.last().unwrap())
        );
        let missing = latencies.len() < probes;
        if gate.is_some_and(|g| p50 > g || missing) {
            over_gate = true;
        }
    }
    agent.shutdown(Duration::from_secs(1)).await;
    if over_gate {
        eprintln!(
            "alarm latency regression: a p50 is over PDTF_BENCH_MAX_P50_MS or alarms went missing"
        );
        std::process::exit(1);
    }
}
