//! Malformed, oversized and unmappable input end to end: real MQTT on loopback, the real
//! journal. Bad input is counted, recorded (in full or in exact summaries) and skipped, and the
//! good input around it is not lost.

use pdtf_agent::Agent;
use pdtf_connectors::Stats;
use pdtf_e2e::*;
use pdtf_models::{RecordBody, Seq};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A flood of malformed input keeps the truth without flooding the journal: the first of
/// each kind in full, the rest in summaries whose counts are exact; good samples in between
/// all get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_flood_is_summarised_with_exact_counts() {
    use pdtf_connectors::malformed::{summarised_count, FULL_PER_WINDOW};
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&agent_config(dir.path(), port, port)).unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    wait_until_sample(&agent, &publisher).await;
    let good_before = Stats::get(&agent.stats.samples_in);
    for i in 0..3_000u32 {
        publisher.send("line/flow", "ERR").await;
        publisher.send("line/temp", "{not json").await;
        if i % 10 == 0 {
            publisher.send("line/flow", format!("{i}")).await;
        }
    }
    wait_until("every input seen", WAIT, || {
        Stats::get(&agent.stats.malformed_in) == 6_000
            && Stats::get(&agent.stats.samples_in) >= good_before + 300
    })
    .await;
    agent.shutdown(Duration::from_secs(1)).await; // a stopping source summarises at once
    let j = pdtf_agent::journal::open(pdtf_agent::config::Engine::Redb, &dir.path().join("state"))
        .unwrap();
    let records = j.read_from(Seq(1), usize::MAX).unwrap();
    let malformed: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Malformed(m) => Some(m),
            _ => None,
        })
        .collect();
    let summarised: u64 = malformed.iter().filter_map(|m| summarised_count(m)).sum();
    let full = malformed
        .iter()
        .filter(|m| summarised_count(m).is_none())
        .count() as u64;
    assert_eq!(
        full + summarised,
        6_000,
        "every malformed input accounted for"
    );
    assert!(
        full <= 2 * u64::from(FULL_PER_WINDOW) * 3,
        "{full} recorded one by one"
    );
    assert!(
        malformed.len() < 100,
        "{} malformed records",
        malformed.len()
    );
    let good = records
        .iter()
        .filter(|r| matches!(&r.body, RecordBody::Sample(s) if s.tag.0 == 1))
        .count();
    assert!(good >= 301, "good samples among the flood: {good}");
}

/// An oversized publish (2 MiB: over the default `max_payload_bytes` and over the broker
/// connection's `max_packet_bytes`, where the MQTT client used to tear the link down) is
/// recorded as malformed with its topic and size, and nothing around it is lost: no
/// reconnect, no gap, every good QoS 1 sample before and after it is in the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_payload_is_recorded_as_malformed_and_loses_nothing_around_it() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&agent_config(dir.path(), port, port)).unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    wait_until_sample(&agent, &publisher).await;
    let big = vec![b'7'; 2 << 20];
    for i in 0..600u32 {
        publisher.send("line/flow", format!("{}", 10_000 + i)).await;
        if i % 200 == 100 {
            publisher.send("line/flow", big.clone()).await;
        }
    }
    wait_until("every input seen", WAIT, || {
        Stats::get(&agent.stats.malformed_in) == 3
    })
    .await;
    wait_until("every good sample committed", WAIT, || {
        let flow: std::collections::BTreeSet<u64> = journal_bodies(&agent)
            .into_iter()
            .filter_map(|b| match b {
                RecordBody::Sample(s) if s.tag.0 == 1 => s.value.as_f64().map(|v| v as u64),
                _ => None,
            })
            .collect();
        flow.range(10_000..).count() == 600
    })
    .await;
    let bodies = journal_bodies(&agent);
    let oversized: Vec<_> = malformed_of(&bodies);
    assert_eq!(oversized.len(), 3);
    for m in oversized {
        assert_eq!(m.address, "line/flow");
        assert!(
            m.reason.contains("2097152 bytes") && m.reason.contains("max_payload_bytes"),
            "{}",
            m.reason
        );
        assert!(m.excerpt.len() < 1024, "an excerpt, not the payload");
    }
    assert_eq!(
        Stats::get(&agent.stats.source_reconnects),
        0,
        "the link stayed up"
    );
    assert!(!bodies.iter().any(|b| matches!(b, RecordBody::Gap(_))));
    agent.shutdown(Duration::from_secs(1)).await;
}

/// 20,000 messages, each on a topic never seen before, under a `line/#` filter: every one is
/// counted, exactly, in a handful of records, and nothing is kept per topic (the growth the
/// fault-injection run measured was one record per unmapped message; RSS is measured in
/// `agent/benches/memory.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_unmapped_topics_are_counted_in_a_bounded_number_of_records() {
    use pdtf_connectors::malformed::summarised_count;
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let mut c = agent_config(dir.path(), port, port);
    let pdtf_agent::config::SourceSpec::Mqtt(m) = &mut c.sources[0].spec else {
        panic!("the test config's first source is MQTT")
    };
    m.topics = vec!["line/#".into()];
    let agent = Agent::start(&c).unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    wait_until_sample(&agent, &publisher).await;
    for i in 0..20_000u32 {
        publisher.send(&format!("line/unmapped/{i}"), "1").await;
    }
    wait_until("every input seen", WAIT, || {
        Stats::get(&agent.stats.malformed_in) == 20_000
    })
    .await;
    agent.shutdown(Duration::from_secs(1)).await;
    let j = pdtf_agent::journal::open(pdtf_agent::config::Engine::Redb, &dir.path().join("state"))
        .unwrap();
    let bodies: Vec<RecordBody> = j
        .read_from(Seq(1), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.body)
        .collect();
    let malformed = malformed_of(&bodies);
    let summarised: u64 = malformed.iter().filter_map(|m| summarised_count(m)).sum();
    let full = malformed
        .iter()
        .filter(|m| summarised_count(m).is_none())
        .count() as u64;
    assert_eq!(full + summarised, 20_000, "every input accounted for");
    assert!(malformed.len() < 50, "{} records", malformed.len());
}
