//! The verified checkpoint: housekeeping moves it over what was committed; a start verifies
//! only the tail after it and is ready; the whole chain is verified in the background, so a
//! record damaged before the checkpoint still makes the agent not-ready, naming the record.

#[path = "../../tests/harness.rs"]
#[allow(dead_code)]
mod harness;

use pdtf_agent::Agent;
use pdtf_connectors::Stats;
use redb::ReadableTable;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_verifies_the_tail_and_the_whole_chain_in_the_background() {
    let port = harness::broker();
    let dir = tempfile::tempdir().unwrap();
    let c = harness::agent_config_with(
        dir.path(),
        port,
        port,
        "[journal]\nhousekeeping_interval_s = 1\n",
        "",
    );
    let agent = Agent::start(&c).unwrap();
    let publisher = harness::Publisher::start(port, "plc-sim");
    harness::wait_until_sample(&agent, &publisher).await;
    for i in 0..200 {
        publisher.send("line/flow", format!("{i}")).await;
    }
    // Committed, not just received: the checkpoint must end up past record 5, which is
    // forged below (waiting on `samples_in` let a fast machine take the checkpoint while only
    // the start-up records were committed, and the tail then held record 5).
    harness::wait_until("samples committed", WAIT, || {
        Stats::get(&agent.stats.last_seq) >= 200
    })
    .await;
    let committed = Stats::get(&agent.stats.last_seq);
    harness::wait_until("housekeeping moved the checkpoint", WAIT, || {
        agent
            .journal
            .cursor(pdtf_agent::verified::CURSOR)
            .unwrap()
            .0
            >= committed
    })
    .await;
    agent.shutdown(Duration::ZERO).await;

    // Forge a record long before the checkpoint: other content, a valid checksum and the
    // right link to the record before; only the chain (record 6's link) can tell.
    {
        let db = redb::Database::open(dir.path().join("state/journal.redb")).unwrap();
        let records: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("records");
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(records).unwrap();
            let stored = pdtf_models::Record::decode(t.get(5).unwrap().unwrap().value()).unwrap();
            let mut r = stored.record;
            r.time = pdtf_models::Timestamp::from_unix_millis(77);
            let bytes = r.encode(&stored.prev).0;
            t.insert(5, bytes.as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let agent = Agent::start(&c).unwrap();
    harness::wait_until("the background pass finds it", WAIT, || {
        pdtf_agent::health::not_ready(&agent.stats)
            .is_some_and(|why| why.contains("record 5 is corrupt"))
    })
    .await;
    assert!(
        Stats::flag(&agent.stats.store_verified),
        "the tail after the checkpoint verified (that is what made the start ready)"
    );
    let why = pdtf_agent::health::not_ready(&agent.stats).unwrap();
    assert!(!why.contains("not verified yet"), "{why}");
    agent.shutdown(Duration::ZERO).await;
}
