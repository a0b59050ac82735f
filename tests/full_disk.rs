//! A full disk, end to end: the journal's filesystem is a real tmpfs driven to ENOSPC under
//! load, then space is freed. Real MQTT on loopback, the real journal, nothing mocked.

use pdtf_agent::Agent;
use pdtf_connectors::Stats;
use pdtf_e2e::*;
use pdtf_models::RecordBody;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// Publishes distinct `flow` values from `*next` until `done` holds (or 200,000 were sent).
async fn load_until(publisher: &Publisher, next: &mut u64, what: &str, done: impl Fn() -> bool) {
    let limit = *next + 200_000;
    while !done() {
        for _ in 0..200 {
            publisher.send("line/flow", format!("{next}")).await;
            *next += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(*next < limit, "never happened: {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_intake_alarms_at_once_and_recovers_by_itself_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = small_fs(
        dir.path(),
        "a_full_disk_stops_intake_alarms_at_once_and_recovers_by_itself_when_space_returns",
    ) else {
        return;
    };
    let port = broker();
    let c = agent_config_with(
        dir.path(),
        port,
        port,
        "[health]\nlisten = \"127.0.0.1:0\"\n",
        "",
    );
    // Subscribed before the agent starts: upstream holds every record from seq 1.
    let historian = Consumer::start(port, "historian", "pdtf/s1/a1/l1/records").await;
    let scada = Consumer::start(port, "scada", "pdtf/s1/a1/l1/alarms/_agent/journal_full").await;
    let agent = Agent::start(&c).unwrap();
    let addr = agent.health_addr.expect("health endpoint bound");
    let publisher = Publisher::start(port, "plc-sim");
    wait_until_sample(&agent, &publisher).await;
    wait_until("ready", WAIT, || Stats::flag(&agent.stats.store_verified)).await;
    assert_eq!(http_get(addr, "/readyz").await.0, 200);

    // The disk fills under load.
    fill_leaving(&fs, "filler", 1 << 20);
    let first_value = 1_000_000u64;
    let mut next = first_value;
    load_until(&publisher, &mut next, "a failed commit", || {
        Stats::flag(&agent.stats.store_failed)
    })
    .await;
    // At once: not ready, the metrics say so, the critical alarm is out.
    let (code, why) = http_get(addr, "/readyz").await;
    assert_eq!(code, 503, "not ready while the journal cannot be written");
    assert!(why.contains("filesystem is full"), "{why}");
    let metrics = http_get(addr, "/metrics").await.1;
    assert!(
        metrics.contains("\npdtf_journal_full{line=\"l1\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\npdtf_journal_write_failed{line=\"l1\"} 1\n"));
    scada
        .wait_last_state("active", "journal_full raised for SCADA")
        .await;
    // Load goes on while the disk stays full: intake waits between the commits a nearly full
    // disk still lets through, and retries go on (each after closing and reopening the
    // journal). The outage stays one outage.
    let frozen = Stats::get(&agent.stats.last_seq);
    let errors = Stats::get(&agent.stats.commit_errors);
    let until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < until {
        for _ in 0..50 {
            publisher.send("line/flow", format!("{next}")).await;
            next += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(Stats::get(&agent.stats.commit_errors) > errors, "retried");
    assert!(Stats::flag(&agent.stats.store_failed), "still not writable");

    // Space returns: recovery is automatic and complete.
    fs.free("filler");
    wait_until("journal writable again", WAIT, || {
        !Stats::flag(&agent.stats.store_failed)
    })
    .await;
    assert!(Stats::get(&agent.stats.store_reopens) >= 1, "reopened");
    wait_until(
        "every sample sent, before, during and after, upstream",
        WAIT,
        || {
            upstream_flow_values(&historian)
                .range(first_value..)
                .count() as u64
                == next - first_value
        },
    )
    .await;
    let (last, _dups) = assert_upstream_complete(&agent, &historian, WAIT, "after recovery").await;
    assert!(last > frozen);
    eprintln!(
        "full disk: {} samples sent, {} records upstream, {} failed commits, {} reopens",
        next - first_value,
        last,
        Stats::get(&agent.stats.commit_errors),
        Stats::get(&agent.stats.store_reopens)
    );
    scada
        .wait_last_state("inactive", "journal_full cleared for SCADA")
        .await;
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    let recovered: Vec<String> = agent
        .journal
        .read_from(pdtf_models::Seq(1), usize::MAX)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.body {
            RecordBody::Audit(a) if a.event == "storage_recovered" => Some(a.detail),
            _ => None,
        })
        .collect();
    assert_eq!(recovered.len(), 1, "one outage, one audit record");
    assert!(
        recovered[0].contains("filesystem full") && recovered[0].contains("reopened and verified"),
        "{}",
        recovered[0]
    );

    // Full again, and told to stop while full: the stop still ends, in bounded time.
    fill_leaving(&fs, "filler", 256 << 10);
    load_until(&publisher, &mut next, "a second failed commit", || {
        Stats::flag(&agent.stats.store_failed)
    })
    .await;
    let asked = Instant::now();
    tokio::time::timeout(
        pdtf_agent::pipeline::STOP_GIVE_UP + Duration::from_secs(8),
        agent.shutdown(Duration::from_secs(1)),
    )
    .await
    .expect("a stop on a full disk ends within systemd's TimeoutStopSec");
    eprintln!("stop on a full disk took {:?}", asked.elapsed());
    drop(publisher);

    // What was committed is intact: verify passes once space is back.
    fs.free("filler");
    let r = pdtf_agent::journal::verify_offline(&dir.path().join("state"), |_| {})
        .expect("the journal verifies after two full-disk outages");
    assert!(r.last >= last, "{r:?}");
}
