//! The demo's MES: starts the first batch with a command on `P/cmd/batch` and records a
//! material charge in it, as an MES would, each resent until the line's batch state shows it
//! (a command sent before the agent's command link subscribed goes nowhere; a resend of the
//! same `request_id` is answered as the first and applied once).

use rumqttc::QoS;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The batch the MES starts (the PLC runs the later ones itself).
pub const FIRST_BATCH: &str = "GR-2026-0141";

fn state(live: &crate::batch::Live, line: &str) -> serde_json::Value {
    live.lock()
        .ok()
        .and_then(|m| m.get(line).and_then(|b| serde_json::from_slice(b).ok()))
        .unwrap_or_default()
}

/// Whether the line's batch state shows a step done.
type Done = fn(&serde_json::Value) -> bool;

fn started(v: &serde_json::Value) -> bool {
    v["batch_id"] == FIRST_BATCH
}

/// Charged, or the batch is gone already (a short demo run ends first).
fn charged(v: &serde_json::Value) -> bool {
    v["batch_id"] != FIRST_BATCH
        || v["materials"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["charged"].as_f64() > Some(0.0)))
}

pub async fn run(
    port: u16,
    prefix: String,
    line: String,
    live: crate::batch::Live,
    stop: CancellationToken,
) {
    let (client, pump) = super::sim::client("pdtf-demo-mes", port, 16);
    let topic = format!("{prefix}/cmd/batch");
    let start = format!(
        r#"{{"request_id":"demo-start-1","user":"demo-operator","reason":"demo batch","command":"start","batch_id":"{FIRST_BATCH}","recipe":"gran-demo","signature":{{"printed_name":"Demo Operator","time":"2026-12-01T06:00:00Z","meaning":"performed"}}}}"#
    );
    let charge = r#"{"request_id":"demo-charge-1","user":"demo-operator","reason":"binder charged","command":"material","material":"binder solution","lot":"BND-2611-07","quantity":12.2,"unit":"kg"}"#;
    let steps: [(&str, Done); 2] = [(start.as_str(), started), (charge, charged)];
    for (payload, done) in steps {
        while !done(&state(&live, &line)) {
            let _queued = client
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload.to_owned())
                .await;
            tokio::select! {
                _ = stop.cancelled() => {
                    pump.abort();
                    return;
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
    stop.cancelled().await;
    pump.abort();
}
