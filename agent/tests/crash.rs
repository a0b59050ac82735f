//! Crash suite: a child `pdtf-agent run` ingests at full rate and is killed with SIGKILL at
//! random moments, `PDTF_CRASH_ITERATIONS` times (default 200). After every kill the journal
//! must reopen with contiguous seqs and never lose an accepted record; periodically and at
//! the end the whole audit chain is verified. Finally a clean run drains upstream, and the
//! historian (after de-duplication by seq) must hold exactly the journal's records, in
//! content identical to what the journal holds.

#[path = "../../tests/harness.rs"]
#[allow(dead_code)]
mod harness;

use harness::{broker, upstream_seqs, wait_until, Consumer, Publisher};
use pdtf_agent::config::Engine;
use pdtf_models::{RecordBody, Seq};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `PDTF_CRASH_ENGINE=sled` runs the suite on sled (needs `--features sled`).
fn engine() -> Engine {
    match std::env::var("PDTF_CRASH_ENGINE").as_deref() {
        Ok("sled") => Engine::Sled,
        _ => Engine::Redb,
    }
}

fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("agent.toml");
    let text = format!(
        r#"
{agent}
[brokers.plant]
host = "127.0.0.1"
port = {port}
backoff_initial_ms = 20
backoff_max_ms = 200

[[sources]]
id = "plc"
kind = "mqtt"
broker = "plant"
flush_interval_ms = 5

[sinks.upstream]
broker = "plant"
max_batch_records = 200

[journal]
engine = "{engine}"
{second_line}
{tags}{second_line_tags}"#,
        engine = if engine() == Engine::Sled {
            "sled"
        } else {
            "redb"
        },
        agent = harness::agent_section(dir),
        tags = harness::TEST_TAGS,
        second_line = harness::SECOND_LINE,
        second_line_tags = harness::SECOND_LINE_TAGS,
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Highest `last_seq` a consumer has seen, parsing only messages that arrived since.
struct UpstreamHigh {
    parsed: usize,
    high: u64,
}

impl UpstreamHigh {
    fn update(&mut self, h: &Consumer) -> u64 {
        let msgs = h.messages.lock().unwrap();
        for m in &msgs[self.parsed..] {
            self.high = self.high.max(m.json()["last_seq"].as_u64().unwrap());
        }
        self.parsed = msgs.len();
        self.high
    }
}

fn spawn_agent(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_pdtf-agent"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn pdtf-agent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_accepted_record() {
    let iterations: u32 = std::env::var("PDTF_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed = std::env::var("PDTF_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash suite: {iterations} kills, seed {seed} (PDTF_CRASH_SEED={seed} reproduces the timing)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), port);
    let log = dir.path().join("agent.log");
    let state = dir.path().join("state");
    let historian = Consumer::start(port, "historian", "pdtf/s1/a1/l1/records").await;
    let events = Consumer::start(port, "scada-events", "pdtf/s1/a1/l1/events").await;

    // Full rate: the publisher is limited only by QoS 1 flow control. Two lines: every 10th
    // message moves `temp` (line l1) across its limits and every 10th, offset by 5, moves
    // `exhaust` (line coat), so alarms of both lines (and their live copies on `.../events`,
    // on their own connection) fire throughout, and their records share one seq.
    let publisher = Publisher::start(port, "plc-flood");
    let flood = tokio::spawn(async move {
        let mut i = 0u64;
        loop {
            let (topic, payload) = harness::two_line_flood_message(i);
            publisher.send(topic, payload).await;
            i += 1;
        }
    });

    let mut up = UpstreamHigh { parsed: 0, high: 0 };
    let mut live = UpstreamHigh { parsed: 0, high: 0 };
    let mut last_seen = 0u64;
    let mut kills_with_progress = 0u32;
    for i in 0..iterations {
        let mut child = spawn_agent(&config, &log);
        let check_verify = i % 25 == 24 && engine() == Engine::Redb;
        tokio::time::sleep(Duration::from_millis(rng.u64(20..400))).await;
        if check_verify {
            // The check below needs a kill while the journal is open. Under a loaded CI
            // machine the agent may not have opened it yet after 20 ms, and then the file is
            // the clean one the previous reopen left. A live alarm copy (sent right after its
            // commit, never behind the upstream backlog) with a seq beyond the last one the
            // journal held can only come from this agent's commits.
            let before = last_seen;
            wait_until(
                "a live alarm copy from the new agent",
                Duration::from_secs(30),
                || live.update(&events) > before,
            )
            .await;
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        if check_verify {
            // QA's check right after a crash, before anything has repaired the file.
            let out = Command::new(env!("CARGO_BIN_EXE_pdtf-agent"))
                .args(["verify", "--state-dir"])
                .arg(&state)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "iteration {i}: verify after a kill: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                text.contains("needed recovery") && text.contains("OK: "),
                "{text}"
            );
        }
        let j = pdtf_agent::journal::open(engine(), &state)
            .unwrap_or_else(|e| panic!("iteration {i}: journal does not reopen: {e}"));
        let last = j.last_seq().unwrap().0;
        assert!(
            last >= last_seen,
            "iteration {i}: accepted records vanished: last seq {last} < {last_seen}"
        );
        // Everything that reached upstream was accepted, so it must be in the journal.
        let max_up = up.update(&historian);
        assert!(
            max_up <= last,
            "iteration {i}: upstream has seq {max_up}, journal only {last}"
        );
        if last > last_seen {
            kills_with_progress += 1;
        }
        last_seen = last;
        if i % 25 == 24 {
            let r = j
                .verify(&mut |_| {})
                .unwrap_or_else(|e| panic!("iteration {i}: chain broken: {e}"));
            assert_eq!((r.first, r.last), (1, last));
            eprintln!(
                "iteration {i}: last seq {last}, flood running: {}",
                !flood.is_finished()
            );
        }
    }
    flood.abort();

    // A clean final run drains the backlog upstream and stops with SIGTERM.
    let mut child = spawn_agent(&config, &log);
    let target = last_seen;
    wait_until(
        "upstream drained after the kills",
        Duration::from_secs(300),
        || up.update(&historian) > target,
    )
    .await;
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        panic!(
            "clean stop failed: {status:?}; agent log, newest first:\n{}",
            tail.join("\n")
        );
    }

    let j = pdtf_agent::journal::open(engine(), &state).unwrap();
    let report = j
        .verify(&mut |_| {})
        .expect("audit chain intact after all kills");
    let records = j.read_from(Seq(1), usize::MAX).unwrap();
    assert_eq!(records.len() as u64, report.last);
    wait_until(
        "historian has the final records",
        Duration::from_secs(30),
        || up.update(&historian) >= report.last,
    )
    .await;
    let (seqs, dups) = upstream_seqs(&historian.snapshot());
    assert_eq!(
        seqs,
        (1..=report.last).collect::<Vec<_>>(),
        "upstream after de-duplication == journal"
    );
    // Same content, not just the same seqs: what left the agent is what it kept.
    let mut upstream = std::collections::BTreeMap::new();
    for m in historian.snapshot() {
        for r in m.json()["records"].as_array().unwrap() {
            upstream.insert(r["seq"].as_u64().unwrap(), r.clone());
        }
    }
    for r in &records {
        assert_eq!(
            upstream[&r.seq.0],
            serde_json::to_value(r).unwrap(),
            "seq {} differs upstream",
            r.seq.0
        );
    }
    let recoveries = records
        .iter()
        .filter(|r| matches!(&r.body, RecordBody::Audit(a) if a.event == "crash_recovery"))
        .count();
    let samples = records
        .iter()
        .filter(|r| matches!(r.body, RecordBody::Sample(_)))
        .count();
    let alarms_of = |tag: u32| {
        records
            .iter()
            .filter(|r| matches!(&r.body, RecordBody::Alarm(a) if a.condition == pdtf_models::Condition::tag_limit(pdtf_models::TagId(tag))))
            .count()
    };
    // temp is tag 0 (line l1), exhaust tag 2 (line coat).
    let (alarms, second_line_alarms) = (alarms_of(0), alarms_of(2));
    assert!(
        alarms > 0 && second_line_alarms > 0,
        "alarms fired on both lines: {alarms}, {second_line_alarms}"
    );
    eprintln!(
        "crash suite: {iterations} kills ({kills_with_progress} after new commits), {} records ({samples} samples, {alarms} + {second_line_alarms} alarm transitions on two lines), {recoveries} crash recoveries recorded, {dups} upstream duplicates dropped",
        report.last
    );
    assert!(
        recoveries as u32 >= kills_with_progress / 2,
        "kills must be recorded as crash recoveries"
    );
}

/// Publishes `payload` on `cmd` until the reply for request `id` arrives (the agent may still
/// be subscribing); returns it.
async fn answered(
    p: &Publisher,
    replies: &Consumer,
    cmd: &str,
    id: &str,
    payload: &str,
) -> serde_json::Value {
    let topic = format!("pdtf/s1/a1/l1/cmd/reply/{id}");
    let seen = replies.snapshot().len();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        p.send(cmd, payload.to_owned()).await;
        for _ in 0..10 {
            let got = replies.snapshot()[seen..]
                .iter()
                .find(|m| m.topic == topic)
                .map(|m| m.json());
            if let Some(v) = got {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(std::time::Instant::now() < deadline, "no reply for {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_restores_the_batch_its_duplicate_window_and_records_the_downtime() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    let historian = Consumer::start(port, "historian", "pdtf/s1/a1/l1/records").await;
    // A free port for the HTTP API (the agent is a child process).
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = harness::agent_toml(
        dir.path(),
        port,
        port,
        &format!(
            r#"
[health]
listen = "{http}"

[journal]
engine = "{engine}"
"#,
            engine = if engine() == Engine::Sled {
                "sled"
            } else {
                "redb"
            }
        ),
    );
    let text = text
        + "\n[batch]\ncommands = true\nsnapshot_interval_s = 1\n"
        + harness::GRAN_RECIPE
        + r#"
[recipes.trajectories]
tags = ["temp"]
resolution_ms = 100
"#;
    std::fs::write(&config, format!("{text}{}", harness::TEST_TAGS)).unwrap();
    let log = dir.path().join("agent.log");
    let state = dir.path().join("state");
    let cmd = "pdtf/s1/a1/l1/cmd/batch";
    let mes = Publisher::start(port, "mes");
    let replies = Consumer::start(port, "mes-replies", "pdtf/s1/a1/l1/cmd/reply/#").await;
    let req = |id: &str, command: &str, extra: &str| {
        format!(
            r#"{{"request_id":"{id}","user":"alice","reason":"t","command":"{command}"{extra}}}"#
        )
    };
    let start = req("r-1", "start", r#","batch_id":"B-1","recipe":"gran""#);
    // A temperature now (the tag takes its source time from `ts`).
    let temp = |v: f64| {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        format!(r#"{{"v":{v},"ts":{ms}}}"#)
    };

    let mut child = spawn_agent(&config, &log);
    let first = answered(&mes, &replies, cmd, "r-1", &start).await;
    assert_eq!(first["accepted"], true, "{first}");
    // Preheat values, kept by a periodic snapshot (every second) before the kill.
    for v in [40.0, 41.0, 42.0] {
        mes.send("line/temp", temp(v)).await;
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let phase = answered(&mes, &replies, cmd, "r-2", &req("r-2", "phase", "")).await;
    assert_eq!(phase["phase"], "spraying");
    // Killed right after the answer: the snapshot's cursor may not be written yet.
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let mut child = spawn_agent(&config, &log);
    // The MES resends its first command (QoS 1 after the reconnect): the restored window
    // answers it as before, and no second batch starts.
    let again = answered(&mes, &replies, cmd, "r-1", &start).await;
    assert_eq!(
        (again["duplicate"].as_bool(), &again["seq"]),
        (Some(true), &first["seq"]),
        "{again}"
    );
    for v in [60.0, 61.0] {
        mes.send("line/temp", temp(v)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // The batch went on where it was: the next phase command completes it.
    let done = answered(&mes, &replies, cmd, "r-3", &req("r-3", "phase", "")).await;
    assert_eq!(
        (done["accepted"].as_bool(), done["state"].as_str()),
        (Some(true), Some("complete")),
        "{done}"
    );
    // Upstream gets the whole batch, the span the kill left unacknowledged included.
    let ended_upstream = |h: &Consumer| {
        h.snapshot().iter().find_map(|m| {
            m.json()["records"].as_array().and_then(|rs| {
                rs.iter()
                    .find(|r| !r["body"]["batch"]["change"]["ended"].is_null())
                    .and_then(|r| r["seq"].as_u64())
            })
        })
    };
    wait_until("the batch's end upstream", Duration::from_secs(30), || {
        ended_upstream(&historian).is_some()
    })
    .await;
    let ended_seq = ended_upstream(&historian).unwrap();
    let (code, over_http) = harness::http_get(http, "/batches/B-1").await;
    assert_eq!(code, 200, "{over_http}");
    let over_http: serde_json::Value = serde_json::from_str(&over_http).unwrap();
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(child.wait().unwrap().success());

    let j = pdtf_agent::journal::open(engine(), &state).unwrap();
    let (upstream, _) = upstream_seqs(&historian.snapshot());
    assert_eq!(
        upstream[..ended_seq as usize],
        (1..=ended_seq).collect::<Vec<_>>()[..],
        "a hole upstream before the batch's end"
    );
    let bodies: Vec<RecordBody> = j
        .read_from(Seq(1), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.body)
        .collect();
    use pdtf_models::batch::BatchChange;
    let changes: Vec<&BatchChange> = bodies
        .iter()
        .filter_map(|b| match b {
            RecordBody::Batch(e) => Some(&e.change),
            _ => None,
        })
        .collect();
    let starts = changes
        .iter()
        .filter(|c| matches!(c, BatchChange::Started { .. }))
        .count();
    assert_eq!(starts, 1);
    let downtime = changes
        .iter()
        .filter(|c| matches!(c, BatchChange::Downtime { .. }))
        .count();
    assert_eq!(downtime, 1, "the restart is a gap inside the batch");
    let summary = changes
        .iter()
        .find_map(|c| match c {
            BatchChange::Ended(s) => Some(s),
            _ => None,
        })
        .expect("the batch ended with its summary");
    assert!(summary.downtime_ms > 0);
    assert_eq!(
        summary
            .phases
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["preheat", "spraying"]
    );
    assert_eq!(
        summary.chain_head.len(),
        64,
        "the chain head before the summary"
    );
    // The trajectories kept the preheat values from before the kill and the spraying ones
    // after it, in one batch's trajectories.
    let trajectories = bodies
        .iter()
        .rev()
        .find_map(|b| match b {
            RecordBody::BatchSnapshot(s) => s.trajectories.clone(),
            _ => None,
        })
        .expect("a snapshot with trajectories");
    let lasts: Vec<(String, Vec<f64>)> = trajectories
        .phases
        .iter()
        .map(|p| {
            (
                p.phase.clone(),
                p.series(0).iter().map(|pt| pt.last).collect(),
            )
        })
        .collect();
    assert_eq!(lasts.len(), 2, "{lasts:?}");
    assert_eq!(lasts[0].0, "preheat");
    assert!(lasts[0].1.contains(&42.0), "{lasts:?}");
    assert!(lasts[1].1.contains(&61.0), "{lasts:?}");
    drop(j);

    // QA reads the batch back from the stopped agent's journal.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_pdtf-agent"))
            .arg("batch")
            .args(args)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, list) = cli(&["list"]);
    assert_eq!(code, Some(0));
    assert!(list.contains("B-1") && list.contains("complete"), "{list}");
    let (code, show) = cli(&["show", "B-1", "--format", "json"]);
    assert_eq!(code, Some(0), "{show}");
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v, over_http, "the CLI and the HTTP API give the same batch");
    assert_eq!(v["state"], "complete");
    assert!(v["downtime_ms"].as_u64().unwrap() > 0);
    assert_eq!(
        v["summary"]["chain_head"].as_str(),
        Some(summary.chain_head.as_str())
    );
    assert_eq!(cli(&["show", "B-2"]).0, Some(1), "no such batch");
    let (code, export) = cli(&["export", "B-1"]);
    assert_eq!(code, Some(0));
    assert!(export.lines().count() as u64 >= v["events"].as_u64().unwrap());
}
