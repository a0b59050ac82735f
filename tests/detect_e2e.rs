//! Detectors beyond limits (`[tags.detect]`) end to end over real MQTT on loopback.

use pdtf_agent::Agent;
use pdtf_e2e::*;
use pdtf_models::RecordBody;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Detectors beyond limits (`[tags.detect]`) over real MQTT: a rate alarm on a fast rise and
/// a stale alarm when the transmitter goes quiet, each on its own retained topic beside the
/// tag's limit alarm, each clearing on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_stale_alarms_raise_and_clear_on_their_own_topics() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let detect = "detect = { stale_ms = 1500, rate = { window_ms = 1000, rising = 20.0 } }\n";
    let agent = Agent::start(&agent_config_with(dir.path(), port, port, "", detect)).unwrap();
    let plc = Publisher::start(port, "plc-sim");
    wait_until_sample(&agent, &plc).await;
    let scada = Consumer::start(port, "scada", "pdtf/s1/a1/l1/alarms/flow/#").await;
    let last_state = |topic: &str| {
        scada
            .snapshot()
            .iter()
            .rev()
            .find(|m| m.topic == topic)
            .map(|m| m.json()["state"].as_str().unwrap_or_default().to_owned())
    };
    // 10 → 100 m³/h within a second: faster than 20 per second.
    for (i, v) in [10.0, 10.0, 40.0, 70.0, 100.0].into_iter().enumerate() {
        plc.send("line/flow", format!("{v}")).await;
        if i < 4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    wait_until("rate alarm", WAIT, || {
        last_state("pdtf/s1/a1/l1/alarms/flow/rate").as_deref() == Some("active")
    })
    .await;
    // Steady values: the rate clears; then silence: stale, judged at the tick.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1_600) {
        plc.send("line/flow", "100").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until("rate cleared", WAIT, || {
        last_state("pdtf/s1/a1/l1/alarms/flow/rate").as_deref() == Some("inactive")
    })
    .await;
    wait_until("stale alarm", WAIT, || {
        last_state("pdtf/s1/a1/l1/alarms/flow/stale").as_deref() == Some("active")
    })
    .await;
    let stale = scada
        .snapshot()
        .into_iter()
        .rev()
        .find(|m| m.topic.ends_with("/stale"))
        .unwrap()
        .json();
    assert_eq!(stale["condition"], "stale");
    assert!(stale["value"].as_f64().unwrap() > 1.5, "{stale}");
    plc.send("line/flow", "100").await;
    wait_until("stale cleared", WAIT, || {
        last_state("pdtf/s1/a1/l1/alarms/flow/stale").as_deref() == Some("inactive")
    })
    .await;
    // Every transition is a record of its own condition.
    let kinds: Vec<String> = journal_bodies(&agent)
        .into_iter()
        .filter_map(|b| match b {
            RecordBody::Alarm(a) => Some(a.condition.kind.name().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "rate").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "stale").count(),
        2,
        "{kinds:?}"
    );
    agent.shutdown(Duration::from_secs(2)).await;
}
