//! Retention, quota and health end to end: real MQTT on loopback, the real journal.

use pdtf_agent::Agent;
use pdtf_connectors::Stats;
use pdtf_e2e::*;
use pdtf_models::{RecordBody, Seq};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

async fn feed_until(agent: &Agent, publisher: &Publisher, n: u64) {
    for i in 0..50_000u64 {
        publisher.send("line/flow", format!("{}", i % 97)).await;
        if i % 200 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if Stats::get(&agent.stats.samples_in) >= n {
            return;
        }
    }
}

/// Publishes distinct `flow` values in bursts while `more` holds (at most 400,000).
async fn feed_while(publisher: &Publisher, what: &str, mut more: impl FnMut() -> bool) {
    let mut i = 0u64;
    while more() {
        for _ in 0..500 {
            publisher
                .send("line/flow", format!("{}.{i}", i % 1000))
                .await;
            i += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(i < 400_000, "never happened: {what}");
    }
}

fn audits(bodies: &[RecordBody], event: &str) -> usize {
    bodies
        .iter()
        .filter(|b| matches!(b, RecordBody::Audit(a) if a.event == event))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_compressed_samples() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let c = agent_config_with(
        dir.path(),
        port,
        port,
        "[health]\nlisten = \"127.0.0.1:0\"\n",
        "compression = { mode = \"swinging_door\", error = 5.0 }\n",
    );
    let agent = Agent::start(&c).unwrap();
    let addr = agent.health_addr.expect("health endpoint bound");
    assert_eq!(http_get(addr, "/healthz").await, (200, "ok\n".to_owned()));
    wait_until("store verified", WAIT, || {
        Stats::flag(&agent.stats.store_verified)
    })
    .await;
    assert_eq!(http_get(addr, "/readyz").await.0, 200);

    // A slow ramp: swinging door keeps only its ends (and the max-interval samples).
    let publisher = Publisher::start(port, "plc-sim");
    wait_until_sample(&agent, &publisher).await;
    let before = Stats::get(&agent.stats.samples_in);
    for i in 0..400 {
        publisher
            .send("line/flow", format!("{}", f64::from(i) * 0.1))
            .await;
    }
    wait_until("samples in", WAIT, || {
        Stats::get(&agent.stats.samples_in) >= before + 400
    })
    .await;
    // A sample of an uncompressed tag after the ramp: once it is committed, so is (or is
    // held by the compressor) every ramp sample before it, whatever the machine's load.
    publisher
        .send("line/temp", r#"{"v":50.0,"ts":1763800000000}"#)
        .await;
    wait_until("the marker after the ramp committed", WAIT, || {
        journal_bodies(&agent)
            .iter()
            .any(|b| matches!(b, RecordBody::Sample(s) if s.tag.0 == 0))
    })
    .await;
    let (code, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200);
    let exported: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pdtf_source_samples_total{line=\"l1\",source=\"plc\"} "))
        .and_then(|v| v.parse().ok())
        .expect("samples metric exported");
    assert_eq!(exported, Stats::get(&agent.stats.samples_in), "{metrics}");
    assert!(exported >= 400);
    assert!(metrics.contains("# TYPE pdtf_journal_commit_duration_seconds histogram"));
    // The source's link and freshness, the upstream mode, the build.
    assert!(
        metrics.contains("\npdtf_source_connected{line=\"l1\",source=\"plc\"} 1\n"),
        "{metrics}"
    );
    let age: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("pdtf_source_last_sample_age_seconds{line=\"l1\",source=\"plc\"} ")
        })
        .and_then(|v| v.parse().ok())
        .expect("last-sample age exported");
    assert!((0.0..30.0).contains(&age), "{age}");
    assert!(
        metrics.contains("\npdtf_upstream_mode{line=\"l1\"} "),
        "{metrics}"
    );
    assert!(
        metrics.contains("\npdtf_upstream_live_events_dropped_total{line=\"l1\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "\npdtf_build_info{{line=\"l1\",version=\"{}\",commit=\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{metrics}"
    );
    let recorded = journal_bodies(&agent)
        .iter()
        .filter(|b| matches!(b, RecordBody::Sample(s) if s.tag.0 == 1))
        .count();
    assert!(
        recorded < 40,
        "{recorded} of 400 ramp samples recorded; compression is not applied"
    );
    assert!(recorded >= 1);
    assert_eq!(http_get(addr, "/nope").await.0, 404);
    agent.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_past_retention_are_purged_and_audited() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let c = agent_config_with(
        dir.path(),
        port,
        port,
        "[journal]\nretention_hours = 0\nhousekeeping_interval_s = 1\n",
        "",
    );
    let agent = Agent::start(&c).unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    feed_until(&agent, &publisher, 500).await;
    wait_until("records purged", WAIT, || {
        Stats::get(&agent.stats.records_purged) >= 400
    })
    .await;
    let acked = Stats::get(&agent.stats.upstream_acked_seq);
    let first = agent.journal.first_seq().unwrap().0;
    assert!(
        first > 1 && first <= acked + 1,
        "purged up to {first}, acked {acked}: only acknowledged records go"
    );
    let b = journal_bodies(&agent);
    assert!(audits(&b, "purge") >= 1, "each purge is audited");
    let report = agent.journal.verify(&mut |_| {}).unwrap();
    assert_eq!(
        report.first, first,
        "the remaining chain verifies from the new anchor"
    );
    agent.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_refuses_samples_keeps_alarms_and_recovers_with_a_gap() {
    let port = broker();
    let proxy = Proxy::start(port).await;
    let dir = tempfile::tempdir().unwrap();
    // Upstream (and so purging) unreachable: the journal can only grow.
    proxy.cut();
    let c = agent_config_with(
        dir.path(),
        port,
        proxy.port,
        "[journal]\nretention_hours = 0\nhousekeeping_interval_s = 1\nmax_size_bytes = 1048576\n\n[health]\nlisten = \"127.0.0.1:0\"\n",
        "",
    );
    let mut c = c;
    c.sinks.alerts.as_mut().unwrap().broker = "plant".into(); // SCADA stays reachable
    let agent = Agent::start(&c).unwrap();
    let addr = agent.health_addr.unwrap();
    let scada = Consumer::start(port, "scada", "pdtf/s1/a1/l1/alarms/#").await;
    let publisher = Publisher::start(port, "plc-sim");
    feed_until(&agent, &publisher, 1).await;
    // Fill past 1 MiB of record data.
    feed_while(&publisher, "journal reports full", || {
        !Stats::flag(&agent.stats.store_full)
    })
    .await;
    wait_until("samples refused", WAIT, || {
        let _ = publisher
            .client
            .try_publish("line/flow", rumqttc::QoS::AtLeastOnce, false, "1");
        Stats::get(&agent.stats.samples_refused) > 0
    })
    .await;
    let (code, why) = http_get(addr, "/readyz").await;
    assert_eq!(code, 503);
    assert!(why.contains("over quota"), "{why}");
    wait_until("critical alarm retained", WAIT, || {
        scada
            .snapshot()
            .iter()
            .any(|m| m.topic.ends_with("/_agent/journal_full") && m.json()["state"] == "active")
    })
    .await;
    // Alarms still get in while samples do not.
    publisher
        .send("line/temp", r#"{"v":95.0,"ts":1763800000000}"#)
        .await;
    wait_until("alarm recorded while full", WAIT, || {
        Stats::get(&agent.stats.alarms_raised) >= 1
    })
    .await;
    let b = journal_bodies(&agent);
    assert_eq!(audits(&b, "storage_full"), 1);
    assert!(
        b.iter().any(|x| matches!(x, RecordBody::Alarm(_))),
        "alarm recorded while full"
    );

    // Upstream comes back: acknowledged records are purged, the journal drops below quota.
    // (Retention 0 purges what upstream has, so the rest is checked on the upstream side.)
    let historian = Consumer::start(port, "historian", "pdtf/s1/a1/l1/records").await;
    proxy.restore();
    wait_until("journal below quota again", Duration::from_secs(60), || {
        !Stats::flag(&agent.stats.store_full)
    })
    .await;
    let upstream_body = |h: &Consumer, pred: &dyn Fn(&serde_json::Value) -> bool| {
        h.snapshot()
            .iter()
            .flat_map(|m| m.json()["records"].as_array().unwrap().clone())
            .find(|r| pred(&r["body"]))
    };
    wait_until("recovery recorded upstream", WAIT, || {
        let _ = publisher
            .client
            .try_publish("line/flow", rumqttc::QoS::AtLeastOnce, false, "3");
        upstream_body(&historian, &|b| b["audit"]["event"] == "storage_ok").is_some()
    })
    .await;
    let gap = upstream_body(&historian, &|b| b["gap"]["source"] == "journal")
        .expect("the refused span is a gap record");
    let reason = gap["body"]["gap"]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("samples not recorded"), "{reason}");
    assert!(!reason.starts_with("journal over quota: 0 "), "{reason}");
    wait_until("critical alarm cleared", WAIT, || {
        scada
            .snapshot()
            .iter()
            .rev()
            .find(|m| m.topic.ends_with("/_agent/journal_full"))
            .is_some_and(|m| m.json()["state"] == "inactive")
    })
    .await;
    assert!(
        agent.journal.first_seq().unwrap() > Seq(1),
        "acknowledged records were purged"
    );
    agent.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_at_the_configured_rate_and_live_alarms_overtake_it() {
    let port = broker();
    let proxy = Proxy::start(port).await;
    let dir = tempfile::tempdir().unwrap();
    proxy.cut();
    let c = backlog_config(dir.path(), port, proxy.port, 400);
    let agent = Agent::start(&c).unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    feed_until(&agent, &publisher, 3_000).await;
    wait_until("backlog committed", WAIT, || {
        Stats::get(&agent.stats.last_seq) >= 3_000
    })
    .await;

    let events = Consumer::start(port, "ops-events", "pdtf/s1/a1/l1/events").await;
    let records = Consumer::start(port, "historian", "pdtf/s1/a1/l1/records").await;
    proxy.restore();
    wait_until("backlogged mode", WAIT, || {
        Stats::get(&agent.stats.upstream_mode) == pdtf_connectors::upstream::MODE_BACKLOGGED
    })
    .await;
    publisher
        .send("line/temp", r#"{"v":95.0,"ts":1763800000000}"#)
        .await;
    wait_until("live alarm upstream", WAIT, || {
        !events.snapshot().is_empty()
    })
    .await;
    let ev = events.snapshot()[0].json();
    let alarm = &ev["records"][0];
    assert!(
        alarm["body"]["alarm"]["state"]["active"].is_string(),
        "{ev}"
    );
    let alarm_seq = alarm["seq"].as_u64().unwrap();
    let acked = Stats::get(&agent.stats.upstream_acked_seq);
    assert!(
        acked < alarm_seq,
        "the alarm came ahead of the ordered stream (acked {acked} < {alarm_seq})"
    );

    // The drain rate holds: at 400 records/s, 3000 records cannot be through in under ~6 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (seqs, _) = upstream_seqs(&records.snapshot());
    assert!(
        seqs.len() < 2_000,
        "{} records drained in 2 s at a 400/s limit",
        seqs.len()
    );
    assert!(seqs.len() >= 400, "backlog is draining: {}", seqs.len());
    agent.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_agent_mid_drain_gives_duplicates_only() {
    let port = broker();
    let proxy = Proxy::start(port).await;
    let dir = tempfile::tempdir().unwrap();
    proxy.cut();
    let c = backlog_config(dir.path(), port, proxy.port, 1_000);
    let historian = Consumer::start(port, "historian", "pdtf/s1/a1/l1/records").await;
    let first = Agent::start(&c).unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    feed_until(&first, &publisher, 3_000).await;
    wait_until("backlog committed", WAIT, || {
        Stats::get(&first.stats.last_seq) >= 3_000
    })
    .await;
    proxy.restore();
    wait_until("draining", WAIT, || {
        Stats::get(&first.stats.upstream_acked_seq) >= 500
    })
    .await;
    let mid = Stats::get(&first.stats.upstream_acked_seq);
    assert!(mid < Stats::get(&first.stats.last_seq), "stopped mid-drain");
    first.shutdown(Duration::ZERO).await;

    let second = Agent::start(&c).unwrap();
    let (last, dups) = assert_upstream_complete(
        &second,
        &historian,
        Duration::from_secs(60),
        "nothing lost across the restart",
    )
    .await;
    eprintln!("mid-drain restart: {last} records, {dups} duplicates (dropped by seq)");
    second.shutdown(Duration::from_secs(1)).await;
}

/// `full_policy = "block"`: the quota fills while upstream is away, intake is held back (the
/// sources wait), then upstream acknowledges, retention purges through the control path, and
/// intake resumes — every sample sent, also those sent while held back, reaches upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_policy_holds_intake_until_a_purge_frees_space_and_loses_nothing() {
    let port = broker();
    let proxy = Proxy::start(port).await;
    let dir = tempfile::tempdir().unwrap();
    proxy.cut();
    let mut c = agent_config_with(
        dir.path(),
        port,
        proxy.port,
        "[journal]\nretention_hours = 0\nhousekeeping_interval_s = 1\nmax_size_bytes = 1048576\nfull_policy = \"block\"\n",
        "",
    );
    c.sinks.alerts = None;
    let agent = Agent::start(&c).unwrap();
    let historian = Consumer::start(port, "historian", "pdtf/s1/a1/l1/records").await;
    let publisher = Publisher::start(port, "plc-sim");
    wait_until_sample(&agent, &publisher).await;
    let mut sent = 1_000_000u64; // values above the warm-up ones
    let first_value = sent;
    while !Stats::flag(&agent.stats.store_full) {
        for _ in 0..200 {
            publisher.send("line/flow", format!("{sent}")).await;
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(sent < first_value + 200_000, "journal never reported full");
    }
    // Held back: what arrives now is not committed until space is freed. (The commit under
    // way when the quota was reached may still finish.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held_from = Stats::get(&agent.stats.last_seq);
    for _ in 0..300 {
        publisher.send("line/flow", format!("{sent}")).await;
        sent += 1;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        Stats::get(&agent.stats.last_seq),
        held_from,
        "intake held back while over quota under the block policy"
    );
    proxy.restore();
    wait_until("quota freed by purges", Duration::from_secs(60), || {
        !Stats::flag(&agent.stats.store_full)
    })
    .await;
    wait_until("every sample upstream", Duration::from_secs(60), || {
        upstream_flow_values(&historian)
            .range(first_value..)
            .count() as u64
            == sent - first_value
    })
    .await;
    assert!(
        agent.journal.first_seq().unwrap() > Seq(1),
        "space came from purged, acknowledged records"
    );
    tokio::time::timeout(WAIT, agent.shutdown(Duration::from_secs(2)))
        .await
        .expect("a clean stop");
}

/// A long upstream outage while alarms keep firing on two lines, a large backlog, and alarms
/// firing all through the drain: every record of both lines reaches upstream in order, live
/// copies go out on their own connection, and the agent still stops when told to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_with_alarms_firing_drains_completely_and_stops_cleanly() {
    let port = broker();
    let proxy = Proxy::start(port).await;
    let dir = tempfile::tempdir().unwrap();
    let historian = Consumer::start(port, "historian", "pdtf/s1/a1/l1/records").await;
    let events = Consumer::start(port, "ops-events", "pdtf/s1/a1/l1/events").await;
    let mut c = two_line_config(dir.path(), port, proxy.port);
    c.sinks.alerts.as_mut().unwrap().broker = "plant".into(); // SCADA stays reachable
    let agent = Agent::start(&c).unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    wait_until_sample(&agent, &publisher).await;
    wait_until_second_line_sample(&agent, &publisher).await;

    let mut i = 0u64;
    let mut feed = |n: u64| {
        let start = i;
        i += n;
        start..i
    };
    proxy.cut();
    for k in feed(30_000) {
        let (topic, payload) = two_line_flood_message(k);
        publisher.send(topic, payload).await;
    }
    wait_until("backlog committed", WAIT, || {
        Stats::get(&agent.stats.last_seq) >= 29_000
    })
    .await;
    let backlog = Stats::get(&agent.stats.last_seq);
    proxy.restore();
    // Alarms keep firing while the backlog drains.
    for k in feed(10_000) {
        let (topic, payload) = two_line_flood_message(k);
        publisher.send(topic, payload).await;
    }
    wait_until("the run went on during the drain", WAIT, || {
        Stats::get(&agent.stats.samples_in) >= i
            && Stats::get(&agent.stats.last_seq) > backlog + 9_000
    })
    .await;
    let (last, dups) =
        assert_upstream_complete(&agent, &historian, Duration::from_secs(120), "drained").await;
    assert!(
        Stats::get(&agent.stats.alarms_raised) >= 1_000,
        "alarms fired throughout"
    );
    wait_until("live copies on .../events", WAIT, || {
        !events.snapshot().is_empty()
    })
    .await;
    eprintln!(
        "long outage: backlog {backlog}, {last} records, {dups} duplicates, {} live copies, {} dropped",
        events.snapshot().len(),
        Stats::get(&agent.stats.live_events_dropped)
    );
    tokio::time::timeout(
        Duration::from_secs(10),
        agent.shutdown(Duration::from_secs(2)),
    )
    .await
    .expect("the agent stops within its stop timeout");
}

/// What validation cannot see (a health port in use) is found before anything connects and
/// named by its key, not as a journal error after the links started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_problem_is_named_plainly_before_anything_connects() {
    let broker = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = broker.local_addr().unwrap().port();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = agent_config_with(
        dir.path(),
        port,
        port,
        &format!("[health]\nlisten = \"{}\"\n", taken.local_addr().unwrap()),
        "",
    );
    let err = Agent::start(&c).err().expect("refused");
    assert!(
        matches!(err, pdtf_agent::runtime::StartError::Health { .. }),
        "{err}"
    );
    assert!(err.to_string().starts_with("health.listen = "), "{err}");
    let connected = tokio::time::timeout(Duration::from_millis(300), broker.accept()).await;
    assert!(
        connected.is_err(),
        "nothing connects before the checks pass"
    );
}

/// Quota recovery across a restart tells the truth: stopping while over quota records the
/// refused span with its count, and a restart under a raised quota clears the retained
/// `journal_full` alarm at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_a_raised_quota_clears_journal_full_and_keeps_the_count() {
    let port = broker();
    let proxy = Proxy::start(port).await;
    let dir = tempfile::tempdir().unwrap();
    proxy.cut(); // no upstream, so no purge: the journal only grows
    let config = |quota: u64| {
        let mut c = agent_config_with(
            dir.path(),
            port,
            proxy.port,
            &format!("[journal]\nhousekeeping_interval_s = 1\nmax_size_bytes = {quota}\n"),
            "",
        );
        c.sinks.alerts.as_mut().unwrap().broker = "plant".into();
        c
    };
    let first = Agent::start(&config(1 << 20)).unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    feed_until(&first, &publisher, 1).await;
    feed_while(&publisher, "a sample refused", || {
        Stats::get(&first.stats.samples_refused) == 0
    })
    .await;
    first.shutdown(Duration::ZERO).await;
    let j = pdtf_agent::journal::open(pdtf_agent::config::Engine::Redb, &dir.path().join("state"))
        .unwrap();
    let last = j.read_back(Seq(u64::MAX), 10).unwrap();
    let gap = last
        .iter()
        .find_map(|r| match &r.body {
            RecordBody::Gap(g) if g.source == "journal" => Some(g.reason.clone()),
            _ => None,
        })
        .expect("the refused span is recorded at stop");
    assert!(
        gap.contains("samples not recorded") && !gap.contains(": 0 "),
        "{gap}"
    );
    assert!(last
        .iter()
        .any(|r| matches!(&r.body, RecordBody::Audit(a) if a.event == "storage_full_at_stop")));
    drop(j);

    let scada = Consumer::start(port, "scada", "pdtf/s1/a1/l1/alarms/_agent/journal_full").await;
    wait_until("the stale retained alarm is seen", WAIT, || {
        scada
            .snapshot()
            .iter()
            .any(|m| m.json()["state"] == "active")
    })
    .await;
    let second = Agent::start(&config(64 << 20)).unwrap();
    scada
        .wait_last_state("inactive", "retained journal_full cleared")
        .await;
    assert!(!Stats::flag(&second.stats.store_full));
    second.shutdown(Duration::ZERO).await;
}
