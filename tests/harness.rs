//! Shared parts of the end-to-end tests: real MQTT on loopback, nothing mocked.
//!
//! - `broker()`: an embedded rumqttd on a free 127.0.0.1 port.
//! - `Proxy`: a TCP relay whose `blackhole()` swallows traffic (writes still succeed) and
//!   whose `cut()` drops every connection and refuses new ones until `restore()`: a network
//!   partition or broker outage as the agent sees it, in-flight data lost.
//! - `Consumer`: an MQTT subscriber that keeps every message it gets.
//! - `agent_config()`: a config for one line whose brokers point where the test says;
//!   `two_line_config()` the same with a second line.

use pdtf_agent::config::{self, Config};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub fn broker() -> u16 {
    pdtf_agent::broker::start_embedded(0).expect("embedded broker starts")
}

/// Polls `check` every 20 ms until it returns true; panics with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    forwarding: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
}

/// Copies `from` → `to` while `forwarding`; otherwise reads and discards, like a network
/// that swallows packets while the sender's writes still succeed.
async fn relay(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, forwarding: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if forwarding.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    pub async fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let forwarding = Arc::new(AtomicBool::new(true));
        let (generation, gen_rx) = watch::channel(0u64);
        let up2 = up.clone();
        let fwd = forwarding.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused by closing at once
                }
                let mut gen_rx = gen_rx.clone();
                gen_rx.borrow_and_update();
                let fwd = fwd.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target_port)).await else {
                        return;
                    };
                    let (in_r, in_w) = inbound.into_split();
                    let (out_r, out_w) = outbound.into_split();
                    tokio::select! {
                        _ = relay(in_r, out_w, fwd.clone()) => {}
                        _ = relay(out_r, in_w, fwd) => {}
                        _ = gen_rx.changed() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            up,
            forwarding,
            generation,
        }
    }

    /// Keeps connections open but silently discards everything in both directions.
    pub fn blackhole(&self) {
        self.forwarding.store(false, Ordering::SeqCst);
    }

    /// Drops all relayed connections (buffered data is lost) and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.forwarding.store(true, Ordering::SeqCst);
        self.up.store(true, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Message {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("message is JSON")
    }
}

pub struct Consumer {
    pub messages: Arc<Mutex<Vec<Message>>>,
    pub client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Consumer {
    /// Subscribes to `filter` at QoS 1 and returns once the broker confirmed the subscription.
    pub async fn start(port: u16, id: &str, filter: &str) -> Consumer {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_max_packet_size(8 << 20, 8 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let store = messages.clone();
        let task = tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _sent = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        store.lock().unwrap().push(Message {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        })
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .expect("subscription confirmed")
            .unwrap();
        Consumer {
            messages,
            client,
            task,
        }
    }

    pub fn snapshot(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until the last message received has `"state": state` (an alarm topic's state).
    pub async fn wait_last_state(&self, state: &str, what: &str) {
        wait_until(what, Duration::from_secs(60), || {
            self.snapshot()
                .last()
                .is_some_and(|m| m.json()["state"] == state)
        })
        .await;
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A plain publisher for feeding tags.
pub struct Publisher {
    pub client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub fn start(port: u16, id: &str) -> Publisher {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_max_packet_size(8 << 20, 8 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        let task = tokio::spawn(async move {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Publisher { client, task }
    }

    pub async fn send(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .unwrap();
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Tag map used by the tests: `temp` (JSON, limits hi 80 / hihi 90) and `flow` (bare number,
/// last, so keys can be appended to it).
pub const TEST_TAGS: &str = r#"
[[tags]]
name = "temp"
unit = "degC"
source = "plc"
topic = "line/temp"
value_pointer = "/v"
time_pointer = "/ts"
limits = { hi = 80.0, hihi = 90.0, deadband = 1.0 }

[[tags]]
name = "flow"
unit = "m3/h"
source = "plc"
topic = "line/flow"
"#;

/// Recipe `gran` (product Granulate, phases preheat and spraying, marked 1 and 2 for a phase
/// tag), for the batch tests; tables of the recipe (materials, trajectories) may follow it.
pub const GRAN_RECIPE: &str = r#"
[[recipes]]
id = "gran"
version = 1
product = "Granulate"
product_code = "G-1"
[[recipes.phases]]
name = "preheat"
start_on = 1
[[recipes.phases]]
name = "spraying"
start_on = 2
"#;

/// The `[agent]` section every test config starts with; the journal goes in `dir/state`.
pub fn agent_section(dir: &Path) -> String {
    format!(
        "[agent]\nid = \"test-agent\"\nsite = \"s1\"\narea = \"a1\"\nline = \"l1\"\nstate_dir = \"{}\"\n",
        dir.join("state").display()
    )
}

/// One line: source on `source_port`, alerts and upstream on `sink_port`.
pub fn agent_config(state_dir: &Path, source_port: u16, sink_port: u16) -> Config {
    agent_config_with(state_dir, source_port, sink_port, "", "")
}

/// The agent file of the tests, without tags: source broker on `source_port`, alerts and
/// upstream on `sink_port`, plus `sections` (TOML tables such as `[journal]`).
pub fn agent_toml(state_dir: &Path, source_port: u16, sink_port: u16, sections: &str) -> String {
    format!(
        r#"
{agent}
[brokers.plant]
host = "127.0.0.1"
port = {source_port}
backoff_initial_ms = 50
backoff_max_ms = 300

[brokers.upstream]
host = "127.0.0.1"
port = {sink_port}
backoff_initial_ms = 50
backoff_max_ms = 300

[[sources]]
id = "plc"
kind = "mqtt"
broker = "plant"
flush_interval_ms = 5

[sinks.alerts]
broker = "upstream"

[sinks.upstream]
broker = "upstream"
max_batch_records = 50
max_inflight = 4

{sections}
"#,
        agent = agent_section(state_dir)
    )
}

/// As `agent_config`, with `sections` (TOML tables such as `[journal]`) added and `flow_extra`
/// (keys such as `compression = {...}`) added to the `flow` tag.
pub fn agent_config_with(
    state_dir: &Path,
    source_port: u16,
    sink_port: u16,
    sections: &str,
    flow_extra: &str,
) -> Config {
    let text = format!(
        "{}{TEST_TAGS}{flow_extra}",
        agent_toml(state_dir, source_port, sink_port, sections)
    );
    load_test_config(&text, state_dir)
}

/// Loads a test configuration as if from `state_dir/agent.toml`; invalid is a test bug.
fn load_test_config(text: &str, state_dir: &Path) -> Config {
    config::load_str(text, &state_dir.join("agent.toml"), &|_| None)
        .unwrap_or_else(|e| panic!("test config invalid: {e:?}"))
}

/// The value of the `k`-th alarm flip of a flood: above every limit, then back in range.
fn flip_value(k: u64) -> f64 {
    if (k / 10).is_multiple_of(2) {
        95.0
    } else {
        20.0
    }
}

/// The `k`-th message of a flood that keeps alarms firing: every 10th moves `temp` across
/// its limits (a raise, then a clear), the others are `flow` samples. (topic, payload).
pub fn alarm_flood_message(k: u64) -> (&'static str, String) {
    if k.is_multiple_of(10) {
        let v = flip_value(k);
        ("line/temp", format!(r#"{{"v":{v},"ts":1763800000000}}"#))
    } else {
        ("line/flow", format!("{}", k % 1000))
    }
}

/// What `two_line_config` adds to the test agent: a second MQTT source `plc2` on its own
/// line `coat` (the first line, `l1`, keeps `plc`, so agent-level topics stay under `l1`).
pub const SECOND_LINE: &str = r#"
[[sources]]
id = "plc2"
kind = "mqtt"
broker = "plant"
flush_interval_ms = 5

[[lines]]
id = "l1"
sources = ["plc"]

[[lines]]
id = "coat"
sources = ["plc2"]
"#;

/// The second line's tag, after the test tags so their ids (temp 0, flow 1) stay.
pub const SECOND_LINE_TAGS: &str = r#"
[[tags]]
name = "exhaust"
unit = "degC"
source = "plc2"
topic = "coat/exhaust"
limits = { hi = 80.0, deadband = 1.0 }
"#;

/// As `agent_config`, with two lines: `l1` (source `plc`: `temp`, `flow`) and `coat`
/// (source `plc2`: `exhaust`, alarms on `pdtf/s1/a1/coat/alarms/exhaust`).
pub fn two_line_config(state_dir: &Path, source_port: u16, sink_port: u16) -> Config {
    let text = format!(
        "{}{TEST_TAGS}{SECOND_LINE_TAGS}",
        agent_toml(state_dir, source_port, sink_port, SECOND_LINE)
    );
    load_test_config(&text, state_dir)
}

/// `alarm_flood_message` for two lines: every 10th message (offset 5) moves the second
/// line's `exhaust` across its limit instead, so both lines raise and clear throughout.
pub fn two_line_flood_message(k: u64) -> (&'static str, String) {
    if k % 10 == 5 {
        ("coat/exhaust", format!("{}", flip_value(k)))
    } else {
        alarm_flood_message(k)
    }
}

/// Publishes `flow` values until the agent has ingested one (its subscription is live).
pub async fn wait_until_sample(agent: &pdtf_agent::Agent, publisher: &Publisher) {
    for _ in 0..500 {
        publisher.send("line/flow", "1.0").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if pdtf_connectors::Stats::get(&agent.stats.samples_in) > 0 {
            return;
        }
    }
    panic!("the agent never received a sample");
}

/// Publishes `exhaust` values (below its limit) until the second line's source `plc2` has
/// ingested one (its subscription is live).
pub async fn wait_until_second_line_sample(agent: &pdtf_agent::Agent, publisher: &Publisher) {
    let plc2 = agent.stats.source("plc2");
    for _ in 0..500 {
        publisher.send("coat/exhaust", "20").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if pdtf_connectors::Stats::get(&plc2.samples) > 0 {
            return;
        }
    }
    panic!("the second line never received a sample");
}

/// A line whose upstream is behind `proxy_port` with no alerts sink, backlogged above 100
/// records and then drained at `drain_per_s`.
pub fn backlog_config(dir: &Path, port: u16, proxy_port: u16, drain_per_s: u64) -> Config {
    let mut c = agent_config(dir, port, proxy_port);
    c.sinks.alerts = None;
    let u = c
        .sinks
        .upstream
        .as_mut()
        .expect("test config has an upstream");
    u.max_drain_records_per_s = Some(drain_per_s);
    u.backlog_threshold_records = 100;
    c
}

/// Freezes the agent's last seq, waits until upstream acknowledged it and the historian holds
/// it, and asserts the historian has every seq `1..=last`. Returns (last, duplicates).
pub async fn assert_upstream_complete(
    agent: &pdtf_agent::Agent,
    historian: &Consumer,
    timeout: Duration,
    what: &str,
) -> (u64, usize) {
    use pdtf_connectors::Stats;
    let last = Stats::get(&agent.stats.last_seq);
    wait_until(&format!("{what}: upstream acknowledged"), timeout, || {
        Stats::get(&agent.stats.upstream_acked_seq) >= last
    })
    .await;
    wait_until(&format!("{what}: historian has it"), timeout, || {
        upstream_seqs(&historian.snapshot()).0.last() >= Some(&last)
    })
    .await;
    let (seqs, dups) = upstream_seqs(&historian.snapshot());
    assert_eq!(
        seqs[..last as usize],
        (1..=last).collect::<Vec<_>>()[..],
        "{what}: a hole upstream"
    );
    (last, dups)
}

/// Minimal HTTP GET on loopback: (status code, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let code = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// Every record seq seen upstream, after de-duplication, plus the number of duplicates.
pub fn upstream_seqs(messages: &[Message]) -> (Vec<u64>, usize) {
    let mut seqs = Vec::new();
    for m in messages.iter().filter(|m| m.topic.ends_with("/records")) {
        let v = m.json();
        let records = v["records"].as_array().expect("records array");
        let first = v["first_seq"].as_u64().unwrap();
        let last = v["last_seq"].as_u64().unwrap();
        assert_eq!(v["agent_id"], "test-agent");
        assert_eq!(records.first().unwrap()["seq"].as_u64(), Some(first));
        assert_eq!(records.last().unwrap()["seq"].as_u64(), Some(last));
        assert_eq!(
            records.len() as u64,
            last - first + 1,
            "a message holds a contiguous range"
        );
        seqs.extend(records.iter().map(|r| r["seq"].as_u64().unwrap()));
    }
    let total = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    let dups = total - seqs.len();
    (seqs, dups)
}

/// Distinct `flow` values (whole numbers) among the samples the historian received.
pub fn upstream_flow_values(h: &Consumer) -> std::collections::BTreeSet<u64> {
    h.snapshot()
        .iter()
        .filter(|m| m.topic.ends_with("/records"))
        .flat_map(|m| m.json()["records"].as_array().unwrap().clone())
        .filter(|r| r["body"]["sample"]["tag"] == 1)
        .filter_map(|r| r["body"]["sample"]["value"].as_f64())
        .map(|v| v as u64)
        .collect()
}

/// Malformed records among `bodies`.
pub fn malformed_of(bodies: &[pdtf_models::RecordBody]) -> Vec<&pdtf_models::Malformed> {
    bodies
        .iter()
        .filter_map(|b| match b {
            pdtf_models::RecordBody::Malformed(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// Every record body in the agent's journal, from seq 1.
pub fn journal_bodies(agent: &pdtf_agent::Agent) -> Vec<pdtf_models::RecordBody> {
    agent
        .journal
        .read_from(pdtf_models::Seq(1), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.body)
        .collect()
}

/// Publishes `payload` until a reply for `id` arrives (the command link may still be
/// subscribing: a command sent before that is not delivered, and the same request id is
/// answered once and applied once however often it is sent). Returns the replies for `id`.
pub async fn until_answered(
    p: &Publisher,
    replies: &Consumer,
    cmd_topic: &str,
    id: &str,
    payload: &str,
) -> serde_json::Value {
    let prefix = cmd_topic.rsplit_once('/').map_or("", |(p, _)| p);
    let topic = format!("{prefix}/reply/{id}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        p.send(cmd_topic, payload.to_owned()).await;
        for _ in 0..10 {
            if let Some(m) = replies.snapshot().into_iter().find(|m| m.topic == topic) {
                return m.json();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(tokio::time::Instant::now() < deadline, "no reply for {id}");
    }
}
