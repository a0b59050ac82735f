//! End to end over real MQTT on loopback: tags in through the agent's source, records and
//! alarm state out through its sinks, with outages injected by a TCP proxy.

use pdtf_agent::Agent;
use pdtf_connectors::Stats;
use pdtf_e2e::*;
use pdtf_models::RecordBody;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn temp(v: f64) -> String {
    format!(r#"{{"v":{v},"ts":1763800000000}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_in_give_retained_alarm_that_clears() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&agent_config(dir.path(), port, port)).unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    // Wait for the source's subscription: the first sample to arrive proves it.
    wait_until_sample(&agent, &publisher).await;

    publisher.send("line/temp", temp(85.0)).await;
    wait_until("hi alarm raised", WAIT, || {
        Stats::get(&agent.stats.alarms_active) == 1
    })
    .await;
    // A subscriber that arrives later sees the current state at once (retained).
    let topic = "pdtf/s1/a1/l1/alarms/temp";
    let scada = Consumer::start(port, "scada-1", topic).await;
    wait_until("retained alarm delivered", WAIT, || {
        !scada.snapshot().is_empty()
    })
    .await;
    let m = &scada.snapshot()[0];
    assert!(m.retain, "alarm state must be retained");
    let v = m.json();
    assert_eq!(
        (v["state"].as_str(), v["level"].as_str()),
        (Some("active"), Some("hi"))
    );
    assert_eq!(
        (
            v["value"].as_f64(),
            v["limit"].as_f64(),
            v["severity"].as_u64()
        ),
        (Some(85.0), Some(80.0), Some(500))
    );
    assert_eq!(
        (
            v["tag"].as_str(),
            v["unit"].as_str(),
            v["agent_id"].as_str()
        ),
        (Some("temp"), Some("degC"), Some("test-agent"))
    );
    drop(scada);

    // Inside the deadband the alarm holds; below it, it clears and the retained state follows.
    publisher.send("line/temp", temp(79.5)).await;
    publisher.send("line/temp", temp(70.0)).await;
    wait_until("alarm cleared", WAIT, || {
        Stats::get(&agent.stats.alarms_active) == 0
    })
    .await;
    let late = Consumer::start(port, "scada-2", topic).await;
    wait_until("cleared state retained", WAIT, || {
        late.snapshot()
            .iter()
            .any(|m| m.retain && m.json()["state"] == "inactive")
    })
    .await;
    let cleared = late.snapshot().last().unwrap().json();
    assert_eq!(cleared["value"].as_f64(), Some(70.0));
    assert!(cleared["cleared_at"].is_string() && cleared["raised_at"].is_string());

    let alarms: Vec<_> = journal_bodies(&agent)
        .into_iter()
        .filter(|b| matches!(b, RecordBody::Alarm(_)))
        .collect();
    assert_eq!(
        alarms.len(),
        2,
        "one raise and one clear are recorded: {alarms:?}"
    );
    agent.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_receives_every_record_in_sequence_and_malformed_is_recorded() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let historian = Consumer::start(port, "historian", "pdtf/s1/a1/l1/records").await;
    let agent = Agent::start(&agent_config(dir.path(), port, port)).unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    wait_until_sample(&agent, &publisher).await;

    for i in 0..300 {
        publisher
            .send("line/flow", format!("{}", 10.0 + f64::from(i) * 0.01))
            .await;
        if i == 150 {
            publisher.send("line/flow", "not-a-number").await;
            publisher.send("line/temp", r#"{"v":"hot"}"#).await;
        }
    }
    wait_until("all flow samples in", WAIT, || {
        Stats::get(&agent.stats.samples_in) >= 301
    })
    .await;
    wait_until("malformed counted", WAIT, || {
        Stats::get(&agent.stats.malformed_in) == 2
    })
    .await;
    // Every ingested sample committed (plus agent_start and the two malformed records).
    wait_until("all committed", WAIT, || {
        let s = &agent.stats;
        Stats::get(&s.records_committed) > Stats::get(&s.samples_in) + Stats::get(&s.malformed_in)
    })
    .await;
    let last = Stats::get(&agent.stats.last_seq);
    wait_until("upstream caught up", WAIT, || {
        Stats::get(&agent.stats.upstream_acked_seq) >= last
            && upstream_seqs(&historian.snapshot()).0.last() >= Some(&last)
    })
    .await;
    let (seqs, dups) = upstream_seqs(&historian.snapshot());
    let top = *seqs.last().unwrap();
    assert_eq!(
        seqs,
        (1..=top).collect::<Vec<_>>(),
        "every record, in order, none missing"
    );
    assert_eq!(dups, 0, "no duplicates without an outage");
    // Messages arrive in sequence order, not just complete.
    let firsts: Vec<u64> = historian
        .snapshot()
        .iter()
        .map(|m| m.json()["first_seq"].as_u64().unwrap())
        .collect();
    assert!(
        firsts.windows(2).all(|w| w[0] < w[1]),
        "messages out of order: {firsts:?}"
    );

    let bodies = journal_bodies(&agent);
    let malformed: Vec<_> = malformed_of(&bodies);
    assert_eq!(malformed.len(), 2);
    // Two topics: MQTT orders messages per topic only, so find each by its address.
    let flow = malformed
        .iter()
        .find(|m| m.address == "line/flow")
        .expect("flow malformed");
    let temp = malformed
        .iter()
        .find(|m| m.address == "line/temp")
        .expect("temp malformed");
    assert_eq!(flow.excerpt, "not-a-number");
    assert!(
        temp.reason.contains("expected a number, found a string"),
        "{}",
        temp.reason
    );
    // Skipped, not stalled: the samples after the bad payloads were all committed.
    let flows = bodies
        .iter()
        .filter(|b| matches!(b, RecordBody::Sample(s) if s.tag.0 == 1))
        .count();
    assert!(flows >= 301, "only {flows} flow samples committed");
    agent.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_outages_mid_run_lose_no_accepted_record() {
    let port = broker();
    let proxy = Proxy::start(port).await;
    let dir = tempfile::tempdir().unwrap();
    let historian = Consumer::start(port, "historian", "pdtf/s1/a1/l1/records").await;
    let agent = Agent::start(&agent_config(dir.path(), port, proxy.port)).unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    wait_until_sample(&agent, &publisher).await;

    let mut sent = 0u32;
    for round in 0..3 {
        for _ in 0..200 {
            publisher.send("line/flow", format!("{sent}")).await;
            sent += 1;
            if sent.is_multiple_of(20) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        // A partition first: the agent's publishes "succeed" into a link that swallows them
        // (and their PUBACKs), then the link dies. The agent keeps committing throughout.
        proxy.blackhole();
        for _ in 0..100 {
            publisher.send("line/flow", format!("{sent}")).await;
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(200 + 100 * round)).await;
        proxy.restore();
    }
    wait_until("all samples committed", WAIT, || {
        Stats::get(&agent.stats.samples_in) >= u64::from(sent)
    })
    .await;
    let (last, dups) = assert_upstream_complete(&agent, &historian, WAIT, "after replay").await;
    assert!(
        Stats::get(&agent.stats.upstream_reconnects) >= 3,
        "each cut forced a reconnect"
    );
    eprintln!("outage test: {last} records, {dups} duplicates dropped by seq");
    agent.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_outage_becomes_a_gap_record() {
    let port = broker();
    let proxy = Proxy::start(port).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&agent_config(dir.path(), proxy.port, port)).unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    wait_until_sample(&agent, &publisher).await;

    proxy.cut();
    wait_until("source noticed the outage", WAIT, || {
        Stats::get(&agent.stats.source_reconnects) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    wait_until("gap recorded", WAIT, || Stats::get(&agent.stats.gaps) == 1).await;
    let before = Stats::get(&agent.stats.samples_in);
    wait_until("data flows again", WAIT, || {
        let _ = publisher
            .client
            .try_publish("line/flow", rumqttc::QoS::AtLeastOnce, false, "2.0");
        Stats::get(&agent.stats.samples_in) > before
    })
    .await;
    let bodies = journal_bodies(&agent);
    agent.shutdown(Duration::from_secs(2)).await;
    let gaps: Vec<_> = bodies
        .into_iter()
        .filter_map(|b| match b {
            RecordBody::Gap(g) => Some(g),
            _ => None,
        })
        .collect();
    assert_eq!(gaps.len(), 1);
    let g = &gaps[0];
    assert_eq!(g.source, "plc");
    assert!(
        g.end.millis_since(g.start) >= 300,
        "gap spans the outage: {g:?}"
    );
    assert_eq!(g.tags.len(), 2, "both tags of the source are in the gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_active_at_restart_clears_after_it() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let c = agent_config(dir.path(), port, port);
    let publisher = Publisher::start(port, "plc-sim");
    let first = Agent::start(&c).unwrap();
    wait_until_sample(&first, &publisher).await;
    publisher.send("line/temp", temp(85.0)).await;
    wait_until("raised", WAIT, || {
        Stats::get(&first.stats.alarms_active) == 1
    })
    .await;
    first.shutdown(Duration::from_secs(2)).await;

    // The value went back to normal while the agent was down; the restarted agent must know
    // the alarm was active, so the first normal value clears it.
    let second = Agent::start(&c).unwrap();
    assert_eq!(
        Stats::get(&second.stats.alarms_active),
        1,
        "active alarm restored from the journal"
    );
    wait_until_sample(&second, &publisher).await;
    publisher.send("line/temp", temp(70.0)).await;
    wait_until("cleared after restart", WAIT, || {
        Stats::get(&second.stats.alarms_active) == 0
    })
    .await;
    let scada = Consumer::start(port, "scada-late", "pdtf/s1/a1/l1/alarms/temp").await;
    scada
        .wait_last_state("inactive", "retained state is inactive")
        .await;
    let last_alarm = journal_bodies(&second)
        .into_iter()
        .filter_map(|b| match b {
            RecordBody::Alarm(a) => Some(a),
            _ => None,
        })
        .next_back()
        .unwrap();
    assert_eq!(last_alarm.state, pdtf_models::AlarmState::Inactive);
    assert_eq!(last_alarm.previous, Some(pdtf_models::Level::Hi));
    second.shutdown(Duration::from_secs(1)).await;
}

/// Tag identity is durable: after an earlier-sorting tag file is added and a tag removed, a
/// restart keeps every id on its name — the restored alarm, the retained topics and every
/// replayed upstream record name the tags they were recorded for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_ids_survive_a_reordered_configuration_across_a_restart() {
    let port = broker();
    let proxy = Proxy::start(port).await;
    let dir = tempfile::tempdir().unwrap();
    let agent_file = dir.path().join("agent.toml");
    let tags_dir = dir.path().join("tags");
    std::fs::create_dir_all(&tags_dir).unwrap();
    // Tags come from files; the upstream is behind the proxy, so run 1 builds a backlog.
    let text = agent_toml(dir.path(), port, proxy.port, "");
    std::fs::write(&agent_file, format!("include = [\"tags/*.toml\"]\n{text}")).unwrap();
    std::fs::write(tags_dir.join("m.toml"), TEST_TAGS).unwrap();
    let load = || pdtf_agent::config::load(&agent_file).expect("valid config");

    // Run 1: flow samples and a raised `temp` alarm, upstream away (they stay backlogged).
    proxy.cut();
    let publisher = Publisher::start(port, "plc-sim");
    let first = Agent::start(&load()).unwrap();
    wait_until_sample(&first, &publisher).await;
    for i in 0..50 {
        publisher.send("line/flow", format!("{}", 1000 + i)).await;
    }
    publisher.send("line/temp", temp(95.0)).await;
    wait_until("alarm raised, flows in", WAIT, || {
        Stats::get(&first.stats.alarms_active) == 1 && Stats::get(&first.stats.samples_in) >= 51
    })
    .await;
    first.shutdown(Duration::ZERO).await;

    // The configuration changes: a file that sorts first adds `aaa`; `flow` is removed.
    std::fs::write(
        tags_dir.join("a.toml"),
        "[[tags]]\nname = \"aaa\"\nunit = \"bar\"\nsource = \"plc\"\ntopic = \"line/aaa\"\nlimits = { hi = 10.0 }\n",
    )
    .unwrap();
    let only_temp = TEST_TAGS.split("[[tags]]\nname = \"flow\"").next().unwrap();
    std::fs::write(tags_dir.join("m.toml"), only_temp).unwrap();

    let scada = Consumer::start(port, "scada", "pdtf/s1/a1/l1/alarms/#").await;
    let historian = Consumer::start(port, "historian", "pdtf/s1/a1/l1/records").await;
    let second = Agent::start(&load()).unwrap();
    assert_eq!(
        Stats::get(&second.stats.alarms_active),
        1,
        "the alarm is restored"
    );
    let name = |id: pdtf_models::TagId| second.registry.name(id).unwrap().to_owned();
    assert_eq!(
        second.tag_ids.iter().map(|&i| name(i)).collect::<Vec<_>>(),
        ["aaa", "temp"]
    );
    assert_eq!(
        name(pdtf_models::TagId(1)),
        "flow",
        "a removed tag keeps its id"
    );
    proxy.restore();
    assert_upstream_complete(&second, &historian, WAIT, "backlog replayed").await;

    // Every replayed record names the tag it was recorded for.
    let (mut flows, mut temps) = (0, 0);
    for m in historian.snapshot() {
        let v = m.json();
        for r in v["records"].as_array().unwrap() {
            let (tag, value) = match (&r["body"]["sample"], &r["body"]["alarm"]) {
                (s, _) if s.is_object() => (&s["tag"], s["value"].as_f64()),
                (_, a) if a.is_object() => (&a["condition"]["source"]["tag"], Some(95.0)),
                _ => continue,
            };
            let named = v["tags"][tag.to_string()].as_str().unwrap();
            match value {
                Some(x) if x >= 1000.0 || x == 1.0 => {
                    assert_eq!(named, "flow", "{r}");
                    flows += 1;
                }
                Some(95.0) => {
                    assert_eq!(named, "temp", "{r}");
                    temps += 1;
                }
                _ => {}
            }
        }
    }
    assert!(flows >= 50 && temps >= 2, "flows {flows}, temps {temps}");
    // The retained alarm is the right tag's; the new tag raised nothing.
    wait_until("retained alarm of temp is active", WAIT, || {
        scada
            .snapshot()
            .iter()
            .any(|m| m.topic.ends_with("/alarms/temp") && m.json()["state"] == "active")
    })
    .await;
    assert!(
        !scada
            .snapshot()
            .iter()
            .any(|m| m.topic.ends_with("/alarms/aaa")),
        "no alarm was restored onto the new tag"
    );
    // And it clears on the right tag.
    publisher.send("line/temp", temp(70.0)).await;
    wait_until("cleared", WAIT, || {
        Stats::get(&second.stats.alarms_active) == 0
    })
    .await;
    let registry_audits = journal_bodies(&second)
        .into_iter()
        .filter_map(|b| match b {
            RecordBody::Audit(a) if a.event == "tag_registry" => Some(a.detail),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(
        registry_audits.len(),
        2,
        "one per start: {registry_audits:?}"
    );
    assert!(
        registry_audits[1].contains("added: [aaa=#2]")
            && registry_audits[1].contains("removed: [flow=#1]"),
        "{}",
        registry_audits[1]
    );
    second.shutdown(Duration::from_secs(1)).await;
}

/// A source timestamp an hour behind agent time is recorded as sent (never replaced) and one
/// `source_clock_skew` audit record says so; a timestamp close to agent time again gets one
/// `source_clock_ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_source_timestamp_is_kept_as_sent_and_recorded_once() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&agent_config(dir.path(), port, port)).unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    wait_until_sample(&agent, &publisher).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let hour_ago = now_ms - 3_600_000;
    for ts in [hour_ago, hour_ago + 100, now_ms, now_ms + 100] {
        publisher
            .send("line/temp", format!(r#"{{"v":20.0,"ts":{ts}}}"#))
            .await;
    }
    let audit = |bodies: &[RecordBody], event: &str| {
        bodies
            .iter()
            .filter_map(|b| match b {
                RecordBody::Audit(a) if a.event == event => Some(a.detail.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    wait_until("the clock came back", WAIT, || {
        audit(&journal_bodies(&agent), "source_clock_ok").len() == 1
    })
    .await;
    let bodies = journal_bodies(&agent);
    let skew = audit(&bodies, "source_clock_skew");
    assert_eq!(skew.len(), 1, "{skew:?}");
    assert!(
        skew[0].contains("tag temp") && skew[0].contains("not replaced"),
        "{skew:?}"
    );
    let kept: Vec<i64> = bodies
        .iter()
        .filter_map(|b| match b {
            RecordBody::Sample(s) if s.tag.0 == 0 => {
                s.source_time.map(|t| t.as_nanos() / 1_000_000)
            }
            _ => None,
        })
        .collect();
    assert_eq!(kept, vec![hour_ago, hour_ago + 100, now_ms, now_ms + 100]);
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lines_on_one_agent_alarm_under_their_own_topics_and_share_one_record_stream() {
    use pdtf_models::{AlarmEvent, ConditionSource};
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let historian = Consumer::start(port, "historian", "pdtf/s1/a1/l1/records").await;
    let scada = Consumer::start(port, "scada", "pdtf/s1/a1/+/alarms/#").await;
    let mut c = two_line_config(dir.path(), port, port);
    c.health = Some(pdtf_agent::config::HealthConfig {
        listen: "127.0.0.1:0".into(),
    });
    let agent = Agent::start(&c).unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    wait_until_sample(&agent, &publisher).await;
    wait_until_second_line_sample(&agent, &publisher).await;
    let (plc, plc2) = (agent.stats.source("plc"), agent.stats.source("plc2"));
    let before = (Stats::get(&plc.samples), Stats::get(&plc2.samples));

    // Both lines raise and clear throughout a flood that is mostly the first line's; the
    // flood ends with both cleared, then the second line alone raises once more.
    for k in 0..2_000 {
        let (topic, payload) = two_line_flood_message(k);
        publisher.send(topic, payload).await;
    }
    publisher.send("coat/exhaust", "95").await;
    wait_until("every sample of both lines in", WAIT, || {
        (Stats::get(&plc.samples), Stats::get(&plc2.samples)) == (before.0 + 1_800, before.1 + 201)
    })
    .await;
    wait_until("the second line's last raise published", WAIT, || {
        let snapshot = scada.snapshot();
        let last = snapshot
            .iter()
            .rfind(|m| m.topic == "pdtf/s1/a1/coat/alarms/exhaust");
        last.is_some_and(|m| m.json()["state"] == "active")
    })
    .await;

    // Each line's alarms are under its own topic prefix, and nowhere else; the agent's own
    // conditions are under the agent's line.
    let alarms = scada.snapshot();
    let topics: Vec<&str> = alarms.iter().map(|m| m.topic.as_str()).collect();
    let on = |topic: &str| topics.iter().filter(|t| **t == topic).count();
    assert!(on("pdtf/s1/a1/coat/alarms/exhaust") >= 2, "{topics:?}");
    assert!(on("pdtf/s1/a1/l1/alarms/temp") >= 2, "{topics:?}");
    let agent_level = topics
        .iter()
        .filter(|t| t.starts_with("pdtf/s1/a1/l1/alarms/_agent/"))
        .count();
    assert_eq!(
        on("pdtf/s1/a1/coat/alarms/exhaust") + on("pdtf/s1/a1/l1/alarms/temp") + agent_level,
        topics.len(),
        "an alarm under the wrong line: {topics:?}"
    );
    for m in alarms.iter().filter(|m| !m.topic.contains("/_agent/")) {
        let v = m.json();
        assert_eq!(m.topic.rsplit('/').next(), v["tag"].as_str(), "{}", m.topic);
    }

    // Every transition of both lines is in the one journal: temp 100 raises and 100 clears,
    // exhaust (tag id 2) the same plus the last raise.
    let alarm_counts = || {
        let mut per_tag = std::collections::BTreeMap::new();
        for b in journal_bodies(&agent) {
            if let RecordBody::Alarm(AlarmEvent {
                condition:
                    pdtf_models::Condition {
                        source: ConditionSource::Tag(t),
                        ..
                    },
                ..
            }) = b
            {
                *per_tag.entry(t.index()).or_insert(0) += 1;
            }
        }
        per_tag
    };
    wait_until("every transition of both lines committed", WAIT, || {
        alarm_counts() == std::collections::BTreeMap::from([(0, 200), (2, 201)])
    })
    .await;
    assert_eq!(Stats::get(&agent.stats.alarms_active), 1, "exhaust alone");

    // One record stream for the agent: contiguous seq over both lines' records.
    let (last, _) = assert_upstream_complete(&agent, &historian, WAIT, "two lines").await;
    assert!(last > 2_000, "{last}");

    // Metrics say which line a source feeds.
    let addr = agent.health_addr.expect("health endpoint bound");
    let (code, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for want in [
        "\npdtf_source_connected{line=\"l1\",source=\"plc\"} 1\n",
        "\npdtf_source_connected{line=\"coat\",source=\"plc2\"} 1\n",
    ] {
        assert!(metrics.contains(want), "{want} missing from {metrics}");
    }
    agent.shutdown(Duration::from_secs(2)).await;
}
