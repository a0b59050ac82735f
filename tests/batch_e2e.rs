//! Command-driven batches over real MQTT on loopback (embedded rumqttd): commands on
//! `P/cmd/batch` are answered on `P/cmd/reply/{request_id}` only after their records are
//! committed; a duplicate is answered as the first and applied once; an illegal or malformed
//! command is refused and recorded; alarms inside the batch carry its batch and phase.

use pdtf_agent::Agent;
use pdtf_connectors::Stats;
use pdtf_e2e::*;
use pdtf_models::batch::{BatchChange, ProcState};
use pdtf_models::command::CommandOutcome;
use pdtf_models::RecordBody;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const CMD: &str = "pdtf/s1/a1/l1/cmd/batch";

const BATCH: &str = r#"
[health]
listen = "127.0.0.1:0"

[batch]
commands = true
allow_users = { abort = ["qa-lead"] }
"#;

const MATERIALS: &str = r#"
[[recipes.materials]]
material = "API"
planned = 50.0
unit = "kg"
tolerance_pct = 1.0
"#;

/// `[batch]` and the tags in `batch`, then recipe `gran` (phases preheat, spraying, marked
/// 1 and 2 for a phase tag), then `recipe_extra` (tables of the recipe, e.g. materials).
fn batch_config(batch: &str, recipe_extra: &str) -> String {
    format!("{batch}{GRAN_RECIPE}{recipe_extra}")
}

/// The test agent, on the embedded broker at `port`, with `batch_config(batch, recipe_extra)`.
fn start(dir: &std::path::Path, port: u16, batch: &str, recipe_extra: &str) -> Agent {
    let sections = batch_config(batch, recipe_extra);
    Agent::start(&agent_config_with(dir, port, port, &sections, "")).unwrap()
}

/// Waits until the agent has `n` active alarms.
async fn until_active(agent: &Agent, n: u64, what: &str) {
    wait_until(what, WAIT, || Stats::get(&agent.stats.alarms_active) == n).await;
}

fn cmd(id: &str, command: &str, extra: &str) -> String {
    format!(
        r#"{{"request_id":"{id}","user":"alice","reason":"test","command":"{command}"{extra}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_driven_batch_runs_to_complete_with_every_command_recorded_and_answered() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path(), port, BATCH, MATERIALS);
    let publisher = Publisher::start(port, "mes");
    let replies = Consumer::start(port, "mes-replies", "pdtf/s1/a1/l1/cmd/reply/#").await;
    wait_until_sample(&agent, &publisher).await;

    let start = cmd("r-1", "start", r#","batch_id":"B-1","recipe":"gran""#);
    let r = until_answered(&publisher, &replies, CMD, "r-1", &start).await;
    assert_eq!(r["accepted"], true, "{r}");
    assert_eq!(
        (r["batch_id"].as_str(), r["phase"].as_str()),
        (Some("B-1"), Some("preheat"))
    );
    // The same request again (an MES retry): answered as the first, no second batch.
    publisher.send(CMD, start.clone()).await;
    wait_until("the duplicate answered", WAIT, || {
        replies
            .snapshot()
            .iter()
            .filter(|m| m.topic.ends_with("/r-1"))
            .count()
            >= 2
    })
    .await;
    let dup = replies
        .snapshot()
        .into_iter()
        .filter(|m| m.topic.ends_with("/r-1"))
        .nth(1)
        .unwrap()
        .json();
    assert_eq!(
        (dup["duplicate"].as_bool(), dup["seq"].clone()),
        (Some(true), r["seq"].clone())
    );

    // A barrage of malformed commands leaves the line taking commands.
    for junk in [
        "",
        "{",
        "[]",
        "\u{0}\u{1}\u{2}",
        r#"{"request_id":5}"#,
        &format!(r#"{{"request_id":"big","text":"{}"}}"#, "x".repeat(40_000)),
    ] {
        publisher.send(CMD, junk.to_owned()).await;
    }
    let illegal =
        until_answered(&publisher, &replies, CMD, "r-2", &cmd("r-2", "restart", "")).await;
    assert_eq!(illegal["accepted"], false);
    assert!(
        illegal["reason"]
            .as_str()
            .unwrap()
            .contains("accepted only in held"),
        "{illegal}"
    );
    let denied = until_answered(&publisher, &replies, CMD, "r-3", &cmd("r-3", "abort", "")).await;
    assert_eq!(
        denied["reason"],
        "user \"alice\" is not allowed to send abort"
    );

    // An alarm in the batch carries batch and phase on its retained message.
    until_answered(&publisher, &replies, CMD, "r-4", &cmd("r-4", "phase", "")).await;
    publisher
        .send("line/temp", r#"{"v":85.0,"ts":1763800000000}"#)
        .await;
    until_active(&agent, 1, "alarm raised").await;
    let scada = Consumer::start(port, "scada", "pdtf/s1/a1/l1/alarms/temp").await;
    wait_until("retained alarm", WAIT, || !scada.snapshot().is_empty()).await;
    let alarm = scada.snapshot()[0].json();
    assert_eq!(
        (alarm["batch_id"].as_str(), alarm["phase"].as_str()),
        (Some("B-1"), Some("spraying"))
    );

    let charge = cmd(
        "r-5",
        "material",
        r#","material":"API","lot":"L-1","quantity":50.2,"unit":"kg""#,
    );
    assert_eq!(
        until_answered(&publisher, &replies, CMD, "r-5", &charge).await["accepted"],
        true
    );
    let done = until_answered(&publisher, &replies, CMD, "r-6", &cmd("r-6", "phase", "")).await;
    assert_eq!(
        done["state"], "complete",
        "past the last phase the batch completes"
    );

    let bodies = journal_bodies(&agent);
    let starts = bodies.iter().filter(|b| matches!(b, RecordBody::Batch(e) if matches!(e.change, BatchChange::Started { .. }))).count();
    assert_eq!(starts, 1, "one batch, however often r-1 was sent");
    let commands: Vec<&CommandOutcome> = bodies
        .iter()
        .filter_map(|b| match b {
            RecordBody::Command(c) => Some(&c.outcome),
            _ => None,
        })
        .collect();
    let refused = commands
        .iter()
        .filter(|o| matches!(o, CommandOutcome::Refused(_)))
        .count();
    assert!(
        refused >= 8,
        "the six malformed, the illegal and the denied are recorded: {refused}"
    );
    let summary = bodies
        .iter()
        .find_map(|b| match b {
            RecordBody::Batch(e) => match &e.change {
                BatchChange::Ended(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        })
        .expect("the end-of-batch summary");
    assert_eq!(summary.outcome, ProcState::Complete);
    assert_eq!(
        summary
            .phases
            .iter()
            .map(|p| (p.name.as_str(), p.alarms))
            .collect::<Vec<_>>(),
        [("preheat", 0), ("spraying", 1)]
    );
    assert!(
        summary.materials[0].within_tolerance,
        "50.2 of 50 kg +- 1 %"
    );
    // The alarm record itself carries the batch context too.
    let ctx = bodies.iter().find_map(|b| match b {
        RecordBody::Alarm(a) => Some((a.batch_id.clone(), a.phase.clone())),
        _ => None,
    });
    assert_eq!(ctx, Some((Some("B-1".into()), Some("spraying".into()))));
    // SCADA subscribing now sees the line's batch at once: retained P/batch.
    let mes = Consumer::start(port, "mes-batch", "pdtf/s1/a1/l1/batch").await;
    wait_until("retained batch state", WAIT, || {
        mes.snapshot()
            .iter()
            .any(|m| m.retain && m.json()["state"] == "complete")
    })
    .await;
    let state = mes.snapshot().last().unwrap().json();
    assert_eq!(state["batch_id"], "B-1");
    assert_eq!(state["recipe"]["id"], "gran");
    assert_eq!(state["phases"].as_array().map(Vec::len), Some(2));
    assert_eq!(state["materials"][0]["charged"].as_f64(), Some(50.2));

    // The HTTP API: the line now, the batches from the journal, one batch in full.
    let addr = agent.health_addr.expect("health endpoint bound");
    let get = |path: &'static str| async move {
        let (code, body) = http_get(addr, path).await;
        (
            code,
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };
    let (code, lines) = get("/lines").await;
    assert_eq!(code, 200);
    assert_eq!(lines[0]["line"], "l1");
    assert_eq!(lines[0]["batch"]["state"], "complete");
    let (code, now) = get("/lines/l1/batch").await;
    assert_eq!((code, now["batch_id"].as_str()), (200, Some("B-1")));
    assert_eq!(get("/lines/nope/batch").await.0, 404);
    let (code, list) = get("/batches?line=l1&from=2000-01-01T00%3A00%3A00Z").await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["state"], "complete");
    assert_eq!(
        get("/batches?to=2000-01-01T00:00:00Z").await.1,
        serde_json::json!([])
    );
    assert_eq!(get("/batches?from=yesterday").await.0, 400);
    let (code, one) = get("/batches/B-1").await;
    assert_eq!(code, 200);
    assert_eq!(one["alarm_count"], 1);
    assert_eq!(one["alarms"][0]["phase"], "spraying");
    assert_eq!(one["summary"]["materials"][0]["within_tolerance"], true);
    assert_eq!(
        one["summary"]["chain_head"].as_str().map(str::len),
        Some(64)
    );
    assert_eq!(get("/batches/B-404").await.0, 404);
    agent.shutdown(Duration::from_secs(2)).await;
}

const TAG_DRIVEN: &str = r#"
[batch]
batch_id_tag = "batch_id"
phase_tag = "phase"
recipe = "gran"

[[tags]]
name = "batch_id"
source = "plc"
topic = "line/batch"
value_pointer = "/v"
text = true

[[tags]]
name = "phase"
source = "plc"
topic = "line/phase"
value_pointer = "/v"

"#;

/// The batch events in the journal so far, as (change kind, batch, phase after).
fn batch_events(agent: &Agent) -> Vec<(String, String, Option<String>)> {
    journal_bodies(agent)
        .into_iter()
        .filter_map(|b| match b {
            RecordBody::Batch(e) => {
                let kind = match &e.change {
                    BatchChange::Started { .. } => "started".to_owned(),
                    BatchChange::Phase { .. } => "phase".to_owned(),
                    BatchChange::State { .. } => format!("state {}", e.state.name()),
                    BatchChange::Ended(_) => "ended".to_owned(),
                    _ => "other".to_owned(),
                };
                Some((kind, e.batch_id.clone(), e.phase.clone()))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_driven_batch_follows_the_equipments_batch_id_and_phase_tags_to_complete() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path(), port, TAG_DRIVEN, "");
    let plc = Publisher::start(port, "plc-sim");
    wait_until_sample(&agent, &plc).await;
    let step = |n: usize| {
        let agent = &agent;
        async move {
            wait_until("batch events", WAIT, || batch_events(agent).len() >= n).await;
        }
    };
    // The batch id as text (`text = true`).
    plc.send("line/batch", r#"{"v":"GR-1001"}"#).await;
    step(1).await;
    plc.send("line/phase", r#"{"v":1}"#).await;
    step(2).await;
    plc.send("line/temp", r#"{"v":85.0,"ts":1763800000000}"#)
        .await;
    until_active(&agent, 1, "alarm raised").await;
    plc.send("line/phase", r#"{"v":2}"#).await;
    step(3).await;
    // The equipment clears the batch id at the end of the batch.
    plc.send("line/batch", r#"{"v":""}"#).await;
    step(5).await;
    let ev = batch_events(&agent);
    let b = Some("GR-1001".to_owned());
    assert_eq!(
        ev.iter()
            .map(|(k, id, p)| (k.as_str(), id.clone(), p.clone()))
            .collect::<Vec<_>>(),
        [
            ("started", b.clone().unwrap(), None),
            ("phase", b.clone().unwrap(), Some("preheat".to_owned())),
            ("phase", b.clone().unwrap(), Some("spraying".to_owned())),
            ("state complete", b.clone().unwrap(), None),
            ("ended", b.clone().unwrap(), None),
        ]
    );
    let alarm = journal_bodies(&agent).into_iter().find_map(|r| match r {
        RecordBody::Alarm(a) => Some((a.batch_id, a.phase)),
        _ => None,
    });
    assert_eq!(alarm, Some((b, Some("preheat".to_owned()))));
    agent.shutdown(Duration::from_secs(2)).await;
}

/// The command link never waits for a stalled line: with the intake full, further commands
/// are dropped and counted while the connection stays up and replies still go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_command_intake_drops_and_counts_commands_and_keeps_replying() {
    use pdtf_connectors::command::CommandLink;
    use std::sync::Arc;
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let c = agent_config(dir.path(), port, port);
    let link = CommandLink {
        agent_id: "t".into(),
        broker: c.brokers["upstream"].clone(),
        topics: vec![(CMD.to_owned(), 0)],
    };
    let stats = Arc::new(Stats::default());
    let stop = tokio_util::sync::CancellationToken::new();
    // An intake of one that nobody reads: the line is stalled.
    let (in_tx, _stalled) = tokio::sync::mpsc::channel(1);
    let (reply_tx, reply_rx) = tokio::sync::mpsc::channel(4);
    let task = tokio::spawn(link.run(in_tx, reply_rx, stats.clone(), stop.clone()));
    let mes = Publisher::start(port, "mes");
    // Until the link has subscribed, commands go nowhere: send until one is dropped.
    let deadline = tokio::time::Instant::now() + WAIT;
    while Stats::get(&stats.commands_dropped) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no command reached the link"
        );
        mes.send(CMD, cmd("x", "comment", "")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..300 {
        mes.send(CMD, cmd(&format!("f-{i}"), "comment", "")).await;
    }
    wait_until("the flood counted", WAIT, || {
        Stats::get(&stats.commands_dropped) >= 290
    })
    .await;
    // The link is still serving: a reply handed to it now is published.
    let replies = Consumer::start(port, "mes-replies", "pdtf/s1/a1/l1/cmd/reply/#").await;
    reply_tx
        .send(("pdtf/s1/a1/l1/cmd/reply/late".into(), b"{}".to_vec()))
        .await
        .unwrap();
    wait_until("the reply published", WAIT, || {
        !replies.snapshot().is_empty()
    })
    .await;
    stop.cancel();
    task.await.unwrap();
}

/// A recipe's phase limits replace the tag's own while the phase runs: `temp` alarms above
/// 50 in spraying (its own hi is 80), and the alarm clears once the batch leaves spraying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phases_limits_apply_only_while_the_phase_runs() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let spraying_limits = "[recipes.phases.limits]\ntemp = { hi = 50.0, deadband = 1.0 }\n";
    let agent = start(dir.path(), port, BATCH, spraying_limits);
    let publisher = Publisher::start(port, "mes");
    let replies = Consumer::start(port, "mes-replies", "pdtf/s1/a1/l1/cmd/reply/#").await;
    wait_until_sample(&agent, &publisher).await;
    let start = cmd("p-1", "start", r#","batch_id":"B-9","recipe":"gran""#);
    until_answered(&publisher, &replies, CMD, "p-1", &start).await;
    // Preheat: 60 is fine by temp's own limits.
    publisher
        .send("line/temp", r#"{"v":60.0,"ts":1763800000000}"#)
        .await;
    until_answered(&publisher, &replies, CMD, "p-2", &cmd("p-2", "phase", "")).await;
    publisher
        .send("line/temp", r#"{"v":60.0,"ts":1763800001000}"#)
        .await;
    until_active(&agent, 1, "spraying's hi alarm").await;
    let done = until_answered(&publisher, &replies, CMD, "p-3", &cmd("p-3", "phase", "")).await;
    assert_eq!(done["state"], "complete");
    publisher
        .send("line/temp", r#"{"v":60.0,"ts":1763800002000}"#)
        .await;
    until_active(&agent, 0, "cleared after the phase").await;
    let alarms: Vec<(bool, f64, Option<String>)> = journal_bodies(&agent)
        .into_iter()
        .filter_map(|b| match b {
            RecordBody::Alarm(a) => Some((a.is_raise(), a.limit, a.phase)),
            _ => None,
        })
        .collect();
    assert_eq!(alarms.len(), 2, "{alarms:?}");
    assert_eq!(alarms[0], (true, 50.0, Some("spraying".into())));
    assert!(!alarms[1].0);
    agent.shutdown(Duration::from_secs(2)).await;
}
