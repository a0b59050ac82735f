//! The ISA-18.2 alarm lifecycle end to end over real MQTT on loopback (embedded rumqttd):
//! operator actions on `P/cmd/alarm` are committed before they take effect and answered on
//! `P/cmd/reply/{request_id}`; the retained alarm message carries the lifecycle; a timed
//! shelf expires by itself; every transition is a journal record with its user and reason;
//! after a restart the retained state and the lifecycle are what they were.

use pdtf_agent::Agent;
use pdtf_e2e::*;
use pdtf_models::command::CommandOutcome;
use pdtf_models::lifecycle::{AlarmStatus, Input};
use pdtf_models::RecordBody;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const CMD: &str = "pdtf/s1/a1/l1/cmd/alarm";
const TEMP: &str = "pdtf/s1/a1/l1/alarms/temp";

fn config(dir: &std::path::Path, port: u16) -> pdtf_agent::config::Config {
    let text = format!("{}{TEST_TAGS}", agent_toml(dir, port, port, "")).replace(
        "[sinks.alerts]\nbroker = \"upstream\"\n",
        "[sinks.alerts]\nbroker = \"upstream\"\ncommands = true\nmax_shelve_s = 600\n",
    );
    pdtf_agent::config::load_str(&text, &dir.join("agent.toml"), &|_| None).unwrap()
}

const DEVIATION_CMD: &str = "pdtf/s1/a1/l1/cmd/deviation";

fn disposition(id: &str, deviation: &str, decision: &str) -> String {
    format!(
        r#"{{"request_id":"{id}","user":"qa.lead","reason":"batch record reviewed","deviation":"{deviation}","decision":"{decision}"}}"#
    )
}

fn action(id: &str, action: &str, extra: &str) -> String {
    format!(
        r#"{{"request_id":"{id}","user":"alice","reason":"seen on the HMI","action":"{action}","tag":"temp"{extra}}}"#
    )
}

/// The last retained-topic message for `temp`'s limit alarm.
fn last_temp(scada: &Consumer) -> Option<serde_json::Value> {
    scada
        .snapshot()
        .into_iter()
        .rev()
        .find(|m| m.topic == TEMP)
        .map(|m| m.json())
}

async fn until_temp(scada: &Consumer, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    wait_until(what, WAIT, || last_temp(scada).is_some_and(|m| check(&m))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_is_acknowledged_by_command_returns_to_normal_and_a_timed_shelf_expires() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), port);
    let agent = Agent::start(&c).unwrap();
    let plc = Publisher::start(port, "plc-sim");
    let hmi = Publisher::start(port, "hmi");
    let replies = Consumer::start(port, "hmi-replies", "pdtf/s1/a1/l1/cmd/reply/#").await;
    let scada = Consumer::start(port, "scada", "pdtf/s1/a1/l1/alarms/#").await;
    wait_until_sample(&agent, &plc).await;

    plc.send("line/temp", r#"{"v":85.0,"ts":1763800000000}"#)
        .await;
    until_temp(&scada, "raised, unacknowledged", |m| {
        m["state"] == "active" && m["alarm_state"] == "unack_active" && m["acked"] == false
    })
    .await;
    let raised = last_temp(&scada).unwrap();
    assert_eq!(raised["condition_id"], "temp/limit");
    assert_eq!(raised["annunciated"], true);
    assert!(
        raised["message"]
            .as_str()
            .unwrap()
            .contains("temp hi limit"),
        "{raised}"
    );

    // No user: refused and recorded, nothing changes.
    let no_user = r#"{"request_id":"n-1","reason":"x","action":"ack","tag":"temp"}"#;
    let r = until_answered(&hmi, &replies, CMD, "n-1", no_user).await;
    assert_eq!(r["accepted"], false, "{r}");
    assert!(r["reason"].as_str().unwrap().contains("user"), "{r}");
    // Unknown condition: refused.
    let r = until_answered(
        &hmi,
        &replies,
        CMD,
        "u-1",
        &action("u-1", "ack", r#","condition":"rate""#),
    )
    .await;
    assert!(
        r["reason"].as_str().unwrap().contains("unknown condition"),
        "{r}"
    );

    let ack = until_answered(&hmi, &replies, CMD, "a-1", &action("a-1", "ack", "")).await;
    assert_eq!(
        (ack["accepted"].as_bool(), ack["alarm_state"].as_str()),
        (Some(true), Some("ack_active")),
        "{ack}"
    );
    until_temp(&scada, "acknowledged", |m| {
        m["alarm_state"] == "ack_active" && m["last_action"]["user"] == "alice"
    })
    .await;
    let again = until_answered(&hmi, &replies, CMD, "a-2", &action("a-2", "ack", "")).await;
    assert!(
        again["reason"]
            .as_str()
            .unwrap()
            .contains("already acknowledged"),
        "{again}"
    );

    plc.send("line/temp", r#"{"v":20.0,"ts":1763800001000}"#)
        .await;
    until_temp(&scada, "returned to normal", |m| {
        m["state"] == "inactive" && m["alarm_state"] == "normal" && m["annunciated"] == false
    })
    .await;

    // Raised again and cleared before anyone looks: it stays visible, returned-unacknowledged.
    plc.send("line/temp", r#"{"v":85.0,"ts":1763800002000}"#)
        .await;
    until_temp(&scada, "raised again", |m| m["state"] == "active").await;
    plc.send("line/temp", r#"{"v":20.0,"ts":1763800003000}"#)
        .await;
    until_temp(&scada, "returned unacknowledged", |m| {
        m["state"] == "inactive" && m["alarm_state"] == "returned_unack" && m["annunciated"] == true
    })
    .await;

    // A timed shelf: hidden, then back by itself at the tick after it runs out.
    let shelve = action("s-1", "shelve", r#","duration_s":2"#);
    let r = until_answered(&hmi, &replies, CMD, "s-1", &shelve).await;
    assert_eq!(r["shelved"], true, "{r}");
    until_temp(&scada, "shelved", |m| {
        m["shelved"] == true && m["annunciated"] == false
    })
    .await;
    until_temp(&scada, "shelf expired", |m| {
        m["shelved"] == false && m["annunciated"] == true
    })
    .await;

    // Every action is a command record; every lifecycle change a record with who and why.
    let bodies = journal_bodies(&agent);
    let commands: Vec<(Option<String>, bool)> = bodies
        .iter()
        .filter_map(|b| match b {
            RecordBody::Command(c) if c.topic == CMD => Some((
                c.request_id.clone(),
                matches!(c.outcome, CommandOutcome::Accepted),
            )),
            _ => None,
        })
        .collect();
    for (id, accepted) in [
        ("n-1", false),
        ("u-1", false),
        ("a-1", true),
        ("a-2", false),
        ("s-1", true),
    ] {
        assert!(
            commands.contains(&(Some(id.to_owned()), accepted)),
            "{id}: {commands:?}"
        );
    }
    let lifecycle: Vec<(&'static str, AlarmStatus, Option<String>)> = bodies
        .iter()
        .filter_map(|b| match b {
            RecordBody::Lifecycle(l) => Some((l.input.name(), l.lifecycle.status, l.user.clone())),
            _ => None,
        })
        .collect();
    let alice = Some("alice".to_owned());
    assert_eq!(
        lifecycle,
        vec![
            ("activate", AlarmStatus::UnackActive, None),
            ("ack", AlarmStatus::AckActive, alice.clone()),
            ("clear", AlarmStatus::Normal, None),
            ("activate", AlarmStatus::UnackActive, None),
            ("clear", AlarmStatus::ReturnedUnack, None),
            ("shelve", AlarmStatus::ReturnedUnack, alice.clone()),
            ("tick", AlarmStatus::ReturnedUnack, None),
        ]
    );
    let shelf = bodies.iter().find_map(|b| match b {
        RecordBody::Lifecycle(l) if matches!(l.input, Input::Shelve(_)) => Some(l.clone()),
        _ => None,
    });
    assert_eq!(shelf.unwrap().reason.as_deref(), Some("seen on the HMI"));
    agent.shutdown(Duration::from_secs(1)).await;
    drop(scada);

    // After a restart: the retained message is the lifecycle as it was, and the book too
    // (an ack is accepted: the alarm is still returned-unacknowledged).
    let agent = Agent::start(&c).unwrap();
    let scada = Consumer::start(port, "scada-2", "pdtf/s1/a1/l1/alarms/#").await;
    until_temp(&scada, "retained after the restart", |m| {
        m["alarm_state"] == "returned_unack" && m["shelved"] == false
    })
    .await;
    let ack = until_answered(&hmi, &replies, CMD, "a-3", &action("a-3", "ack", "")).await;
    assert_eq!(
        (ack["accepted"].as_bool(), ack["alarm_state"].as_str()),
        (Some(true), Some("normal")),
        "{ack}"
    );
    until_temp(&scada, "acknowledged after the restart", |m| {
        m["alarm_state"] == "normal" && m["annunciated"] == false
    })
    .await;
    agent.shutdown(Duration::from_secs(1)).await;
}

/// A critical limit exceeded inside a batch opens a GMP deviation: retained on
/// `P/deviations/{id}` while open (its peak growing), deleted from the retained store when it
/// closes, dispositioned by QA on `P/cmd/deviation` once closed (refused while open, for an
/// unknown deviation, and after a final decision), and listed with its peak, time beyond the
/// limit, the alarms and actions inside it and the disposition by `GET /batches/{id}/deviations`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_limit_exceeded_in_a_batch_opens_a_deviation_that_closes_with_its_alarm() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let sections =
        format!("[health]\nlisten = \"127.0.0.1:0\"\n\n[batch]\ncommands = true\n{GRAN_RECIPE}");
    let text = format!(
        "{}{TEST_TAGS}",
        agent_toml(dir.path(), port, port, &sections)
    )
    .replace(
        "[sinks.alerts]\nbroker = \"upstream\"\n",
        "[sinks.alerts]\nbroker = \"upstream\"\ncommands = true\n",
    )
    .replace("deadband = 1.0 }", "deadband = 1.0, critical = true }");
    let c = pdtf_agent::config::load_str(&text, &dir.path().join("agent.toml"), &|_| None).unwrap();
    let agent = Agent::start(&c).unwrap();
    let plc = Publisher::start(port, "plc-sim");
    let mes = Publisher::start(port, "mes");
    let replies = Consumer::start(port, "mes-replies", "pdtf/s1/a1/l1/cmd/reply/#").await;
    let qa = Consumer::start(port, "qa", "pdtf/s1/a1/l1/deviations/#").await;
    wait_until_sample(&agent, &plc).await;
    let start = r#"{"request_id":"b-1","user":"alice","reason":"shift","command":"start","batch_id":"B-1","recipe":"gran"}"#;
    let r = until_answered(&mes, &replies, "pdtf/s1/a1/l1/cmd/batch", "b-1", start).await;
    assert_eq!(r["accepted"], true, "{r}");

    plc.send("line/temp", r#"{"v":85.0,"ts":1763800000000}"#)
        .await;
    let topic = "pdtf/s1/a1/l1/deviations/B-1-D1";
    wait_until("deviation open", WAIT, || {
        qa.snapshot()
            .iter()
            .any(|m| m.topic == topic && !m.payload.is_empty() && m.json()["status"] == "open")
    })
    .await;
    let too_soon = disposition("q-0", "B-1-D1", "accept");
    let r = until_answered(&mes, &replies, DEVIATION_CMD, "q-0", &too_soon).await;
    assert_eq!(r["accepted"], false, "{r}");
    assert!(r["reason"].as_str().unwrap().contains("still open"), "{r}");
    let ack = action("a-1", "ack", "");
    until_answered(&plc, &replies, CMD, "a-1", &ack).await;
    plc.send("line/temp", r#"{"v":88.0,"ts":1763800001000}"#)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    plc.send("line/temp", r#"{"v":70.0,"ts":1763800002000}"#)
        .await;
    wait_until("retained deviation deleted at its close", WAIT, || {
        qa.snapshot()
            .last()
            .is_some_and(|m| m.topic == topic && m.payload.is_empty())
    })
    .await;

    // QA dispositions the closed deviation: once finally, attributed; unknown ones refused.
    let unknown = disposition("q-1", "B-1-D9", "accept");
    let r = until_answered(&mes, &replies, DEVIATION_CMD, "q-1", &unknown).await;
    assert!(
        r["reason"].as_str().unwrap().contains("no deviation"),
        "{r}"
    );
    let accept = disposition("q-2", "B-1-D1", "accept");
    let r = until_answered(&mes, &replies, DEVIATION_CMD, "q-2", &accept).await;
    assert_eq!(
        (r["accepted"].as_bool(), r["disposition"].as_str()),
        (Some(true), Some("accept")),
        "{r}"
    );
    let again = disposition("q-3", "B-1-D1", "reject");
    let r = until_answered(&mes, &replies, DEVIATION_CMD, "q-3", &again).await;
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("already dispositioned"),
        "{r}"
    );

    let addr = agent.health_addr.expect("health endpoint bound");
    let (code, body) = http_get(addr, "/batches/B-1/deviations").await;
    assert_eq!(code, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let d = &list[0];
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(
        (
            d["id"].as_str(),
            d["status"].as_str(),
            d["closed_by"].as_str()
        ),
        (Some("B-1-D1"), Some("closed"), Some("alarm_cleared"))
    );
    assert_eq!(
        (d["peak"].as_f64(), d["limit"].as_f64()),
        (Some(88.0), Some(80.0))
    );
    assert_eq!(d["phase"], "preheat");
    assert!(d["beyond_limit_s"].as_f64().unwrap() > 0.2, "{d}");
    assert_eq!(d["actions"][0]["user"], "alice", "the ack inside it: {d}");
    assert_eq!(
        (
            d["disposition"].as_str(),
            d["dispositions"][0]["user"].as_str()
        ),
        (Some("accept"), Some("qa.lead")),
        "{d}"
    );
    assert!(
        d["alarms"].as_array().unwrap().len() >= 2,
        "raise and clear: {d}"
    );
    let (_, detail) = http_get(addr, "/batches/B-1").await;
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["deviations"][0]["id"], "B-1-D1");
    let records = journal_bodies(&agent)
        .into_iter()
        .filter(|b| matches!(b, RecordBody::Deviation(_)))
        .count();
    assert_eq!(records, 3, "opened, closed and dispositioned");
    agent.shutdown(Duration::from_secs(1)).await;
}

/// A chattering alarm: every transition is recorded and on `P/events`, the retained message
/// is held to one update per `chatter_republish_s` (the holding is an audit record), the
/// last state still reaches SCADA, and the KPIs (`GET /alarms`, the metrics) show the rate
/// and the chattering alarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chattering_alarm_is_recorded_in_full_republished_at_a_limited_rate_and_counted() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}{TEST_TAGS}",
        agent_toml(
            dir.path(),
            port,
            port,
            "[health]\nlisten = \"127.0.0.1:0\"\n"
        )
    )
    .replace(
        "[sinks.alerts]\nbroker = \"upstream\"\n",
        "[sinks.alerts]\nbroker = \"upstream\"\nchatter_republish_s = 2\n",
    );
    let c = pdtf_agent::config::load_str(&text, &dir.path().join("agent.toml"), &|_| None).unwrap();
    let agent = Agent::start(&c).unwrap();
    let plc = Publisher::start(port, "plc-sim");
    let scada = Consumer::start(port, "scada", "pdtf/s1/a1/l1/alarms/#").await;
    wait_until_sample(&agent, &plc).await;
    for i in 0..6 {
        plc.send(
            "line/temp",
            format!(r#"{{"v":85.0,"ts":{}}}"#, 1_763_800_000_000i64 + i),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(40)).await;
        plc.send(
            "line/temp",
            format!(r#"{{"v":20.0,"ts":{}}}"#, 1_763_800_000_500i64 + i),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let alarm_records = || {
        journal_bodies(&agent)
            .into_iter()
            .filter(|b| matches!(b, RecordBody::Alarm(a) if a.tag().is_some()))
            .count()
    };
    wait_until("every transition recorded", WAIT, || alarm_records() == 12).await;
    // The last state reaches SCADA once the hold runs out (at a tick).
    until_temp(&scada, "the final state published", |m| {
        m["state"] == "inactive" && m["alarm_state"] == "returned_unack"
    })
    .await;
    let published = scada.snapshot().iter().filter(|m| m.topic == TEMP).count();
    assert!(
        published < 12,
        "held back: {published} retained updates for 12 transitions"
    );
    let audits: Vec<String> = journal_bodies(&agent)
        .into_iter()
        .filter_map(|b| match b {
            RecordBody::Audit(a) if a.event.starts_with("alarm_republish") => Some(a.event),
            _ => None,
        })
        .collect();
    assert!(
        audits.contains(&"alarm_republish_held".to_owned()),
        "{audits:?}"
    );
    wait_until("the release recorded", WAIT, || {
        journal_bodies(&agent)
            .iter()
            .any(|b| matches!(b, RecordBody::Audit(a) if a.event == "alarm_republish_released"))
    })
    .await;

    let addr = agent.health_addr.expect("health endpoint bound");
    let (_, body) = http_get(addr, "/alarms").await;
    let kpis: serde_json::Value = serde_json::from_str(&body).unwrap();
    let l1 = &kpis[0];
    assert_eq!(l1["line"], "l1", "{kpis}");
    assert_eq!(l1["rate_10min"], 6, "{kpis}");
    assert_eq!(l1["peak_10min"], 6, "{kpis}");
    assert_eq!(l1["chattering"][0], "temp/limit", "{kpis}");
    let (_, metrics) = http_get(addr, "/metrics").await;
    assert!(
        metrics.contains("pdtf_alarms_chattering{line=\"l1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pdtf_alarm_rate_10min{line=\"l1\"} 6"),
        "{metrics}"
    );
    agent.shutdown(Duration::from_secs(1)).await;
}
