//! Modbus TCP end to end: the agent against tokio-modbus's server in process, on loopback
//! (and, for the mismatched reply, a raw socket that answers with the wrong transaction id).

use pdtf_agent::config;
use pdtf_agent::modbus_sim::{ModbusSim, SimState};
use pdtf_agent::Agent;
use pdtf_connectors::modbus::exception_status;
use pdtf_connectors::Stats;
use pdtf_e2e::*;
use pdtf_models::{Quality, RecordBody, Sample, Value};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

fn device(name: &str, port: u16) -> String {
    format!(
        "[modbus_devices.{name}]\ntransport = \"tcp\"\nhost = \"127.0.0.1\"\nport = {port}\ntimeout_ms = 200\nretry_initial_ms = 50\nretry_max_ms = 200\n\n[[sources]]\nid = \"{name}\"\nkind = \"modbus\"\ndevice = \"{name}\"\n\n"
    )
}

fn tag(name: &str, source: &str, modbus: &str) -> String {
    format!("[[tags]]\nname = \"{name}\"\nsource = \"{source}\"\nmodbus = {{ {modbus}, poll_interval_ms = 100 }}\n\n")
}

fn load(dir: &Path, body: &str) -> config::Config {
    let text = format!("{}\n{body}", agent_section(dir));
    config::load_str(&text, &dir.join("agent.toml"), &|_| None)
        .unwrap_or_else(|e| panic!("test config invalid: {e:#?}"))
}

/// Samples of tag `name` in the journal, oldest first.
fn samples(agent: &Agent, name: &str) -> Vec<Sample> {
    let i = agent
        .registry
        .names()
        .iter()
        .position(|n| n == name)
        .expect("a configured tag");
    let id = pdtf_models::TagId(i as u32);
    journal_bodies(agent)
        .into_iter()
        .filter_map(|b| match b {
            RecordBody::Sample(s) if s.tag == id => Some(s),
            _ => None,
        })
        .collect()
}

fn last(agent: &Agent, name: &str) -> Option<Sample> {
    samples(agent, name).pop()
}

/// Every data type, in both word and both byte orders, on one device.
const TYPED_TAGS: &[(&str, &str)] = &[
    ("u16", "table = \"holding\", address = 0, type = \"u16\""),
    ("i16", "table = \"holding\", address = 1, type = \"i16\", scale = 0.1"),
    ("u32", "table = \"holding\", address = 2, type = \"u32\""),
    ("i32_cdab", "table = \"holding\", address = 4, type = \"i32\", word_order = \"little\""),
    ("f32", "table = \"holding\", address = 6, type = \"f32\""),
    ("f64_badc", "table = \"holding\", address = 8, type = \"f64\", byte_order = \"little\""),
    ("u64", "table = \"holding\", address = 12, type = \"u64\""),
    ("i64_dcba", "table = \"holding\", address = 16, type = \"i64\", word_order = \"little\", byte_order = \"little\""),
    ("lot", "table = \"holding\", address = 20, type = \"string\", length = 4"),
    ("door", "table = \"holding\", address = 24, type = \"bit\", bit = 3"),
    ("weight", "table = \"input\", address = 0, type = \"f32\", scale = 2.0, offset = 1.0"),
    ("pump", "table = \"coil\", address = 0, type = \"bool\""),
    ("alarm_in", "table = \"discrete_input\", address = 5, type = \"bool\""),
];

fn fill(s: &SimState) {
    let w = |b: &[u8]| -> Vec<u16> {
        b.chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    };
    s.set_holding(0, &[54_321]);
    s.set_holding(1, &[(-655i16) as u16]);
    s.set_holding(2, &w(&4_000_000_000u32.to_be_bytes()));
    let mut cdab = w(&(-70_000i32).to_be_bytes());
    cdab.reverse();
    s.set_holding(4, &cdab);
    s.set_holding(6, &w(&21.5f32.to_be_bytes()));
    let badc: Vec<u16> = w(&(-0.125f64).to_be_bytes())
        .iter()
        .map(|x| x.swap_bytes())
        .collect();
    s.set_holding(8, &badc);
    s.set_holding(12, &w(&(1u64 << 40).to_be_bytes()));
    let mut dcba: Vec<u16> = w(&(-12_345_678i64).to_be_bytes())
        .iter()
        .map(|x| x.swap_bytes())
        .collect();
    dcba.reverse();
    s.set_holding(16, &dcba);
    s.set_holding(20, &w(b"LOT-42\0\0"));
    s.set_holding(24, &[0b1000]);
    s.set_input(0, &w(&3.25f32.to_be_bytes()));
    s.coils.lock().unwrap()[0] = true;
    s.discrete.lock().unwrap()[5] = true;
}

fn expected(name: &str) -> Value {
    match name {
        "u16" => Value::Num(54_321.0),
        "i16" => Value::Num(-655.0 * 0.1),
        "u32" => Value::Num(4e9),
        "i32_cdab" => Value::Num(-70_000.0),
        "f32" => Value::Num(21.5),
        "f64_badc" => Value::Num(-0.125),
        "u64" => Value::Num((1u64 << 40) as f64),
        "i64_dcba" => Value::Num(-12_345_678.0),
        "lot" => Value::Text("LOT-42".into()),
        "door" | "pump" | "alarm_in" => Value::Bool(true),
        "weight" => Value::Num(3.25 * 2.0 + 1.0),
        other => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_decodes_in_four_coalesced_reads_per_cycle_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let sim = ModbusSim::start(0, Arc::default()).await.unwrap();
    fill(&sim.state);
    let mut body = device("scale", sim.port);
    for (name, spec) in TYPED_TAGS {
        body += &tag(name, "scale", spec);
    }
    let agent = Agent::start(&load(dir.path(), &body)).unwrap();
    wait_until("every tag has a sample", WAIT, || {
        TYPED_TAGS.iter().all(|(n, _)| last(&agent, n).is_some())
    })
    .await;
    // Let a few more cycles pass, then compare requests with cycles.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (name, _) in TYPED_TAGS {
        let s = last(&agent, name).unwrap();
        assert_eq!(
            (s.quality, &s.value),
            (Quality::Good, &expected(name)),
            "{name}"
        );
    }
    let cycles = samples(&agent, "u16").len() as u64;
    let requests = sim.state.requests.load(Relaxed);
    // Holding 0..25 in one read, then input, coil and discrete input: 4 per cycle (one
    // cycle may be on the wire while the journal is read).
    assert!(
        requests >= 4 * cycles && requests <= 4 * (cycles + 2),
        "{requests} requests for {cycles} cycles"
    );
    assert!(cycles >= 5, "polled every 100 ms: {cycles} cycles");
    assert_eq!(sim.state.writes.load(Relaxed), 0, "read-only by design");
    agent.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_is_bad_with_its_code_a_silent_device_is_a_gap_and_the_other_device_keeps_its_pace(
) {
    let dir = tempfile::tempdir().unwrap();
    let a = ModbusSim::start(0, Arc::default()).await.unwrap();
    let b = ModbusSim::start(0, Arc::default()).await.unwrap();
    a.state.set_holding(0, &[11]);
    a.state.set_input(10, &[12]);
    b.state.set_holding(0, &[21]);
    let body = format!(
        "{}{}{}{}{}",
        device("dryer", a.port),
        device("chiller", b.port),
        tag(
            "dryer_rh",
            "dryer",
            "table = \"holding\", address = 0, type = \"u16\""
        ),
        tag(
            "dryer_t",
            "dryer",
            "table = \"input\", address = 10, type = \"u16\""
        ),
        tag(
            "chiller_t",
            "chiller",
            "table = \"holding\", address = 0, type = \"u16\""
        ),
    );
    let agent = Agent::start(&load(dir.path(), &body)).unwrap();
    wait_until("both devices polled", WAIT, || {
        last(&agent, "dryer_rh").is_some() && last(&agent, "chiller_t").is_some()
    })
    .await;

    // The device says no (busy) for the holding registers: those tags Bad with code 6, the
    // input register still Good, and the link stays up.
    *a.state.refuse.lock().unwrap() = Some((0, 1, tokio_modbus::ExceptionCode::ServerDeviceBusy));
    wait_until("the exception recorded", WAIT, || {
        last(&agent, "dryer_rh").is_some_and(|s| s.status == exception_status(6))
    })
    .await;
    let refused = last(&agent, "dryer_rh").unwrap();
    assert_eq!(
        (refused.quality, refused.value),
        (Quality::Bad, Value::Empty)
    );
    let input = last(&agent, "dryer_t").unwrap();
    assert_eq!(
        (input.quality, input.value),
        (Quality::Good, Value::Num(12.0))
    );
    assert_eq!(
        Stats::get(&agent.stats.source_reconnects),
        0,
        "an exception is not a link problem"
    );
    *a.state.refuse.lock().unwrap() = None;
    wait_until("good again once the device accepts", WAIT, || {
        last(&agent, "dryer_rh").is_some_and(|s| s.quality == Quality::Good)
    })
    .await;

    // The dryer stops answering for 1.5 s; the chiller's polling keeps its 100 ms pace.
    let chiller_before = samples(&agent, "chiller_t").len();
    let went_silent = Instant::now();
    a.state.silent.store(true, Relaxed);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let chiller_during = samples(&agent, "chiller_t").len() - chiller_before;
    a.state.silent.store(false, Relaxed);
    assert!(
        chiller_during >= 10,
        "the chiller polled {chiller_during} times in 1.5 s while the dryer was silent"
    );
    wait_until("a gap for the dryer's outage", WAIT, || {
        journal_bodies(&agent)
            .iter()
            .any(|b| matches!(b, RecordBody::Gap(g) if g.source == "dryer"))
    })
    .await;
    let gap = journal_bodies(&agent)
        .into_iter()
        .find_map(|b| match b {
            RecordBody::Gap(g) if g.source == "dryer" => Some(g),
            _ => None,
        })
        .unwrap();
    assert!(
        gap.reason.contains("no reply within 200 ms"),
        "{}",
        gap.reason
    );
    let secs = gap.end.millis_since(gap.start) as f64 / 1e3;
    assert!(
        (1.0..=went_silent.elapsed().as_secs_f64()).contains(&secs),
        "gap {secs} s"
    );
    assert!(
        !journal_bodies(&agent)
            .iter()
            .any(|b| matches!(b, RecordBody::Gap(g) if g.source == "chiller")),
        "the chiller had no outage"
    );
    let n = samples(&agent, "dryer_rh").len();
    wait_until("the dryer polled again, no restart", WAIT, || {
        samples(&agent, "dryer_rh").len() > n + 2
    })
    .await;
    assert_eq!(last(&agent, "dryer_rh").unwrap().value, Value::Num(11.0));
    agent.shutdown(Duration::from_secs(2)).await;
}

/// A device (or a gateway) that answers each read of holding register 0 with the right
/// data but another transaction's id.
async fn mismatching_device() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut req = [0u8; 12];
                while sock.read_exact(&mut req).await.is_ok() {
                    let tid = u16::from_be_bytes([req[0], req[1]]).wrapping_add(7);
                    let mut reply = tid.to_be_bytes().to_vec();
                    // Protocol 0, length 5, unit, function 3, 2 bytes, value 999.
                    reply.extend([0, 0, 0, 5, req[6], 3, 2, 0x03, 0xE7]);
                    if sock.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_another_request_is_discarded_never_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let port = mismatching_device().await;
    let body = format!(
        "{}{}",
        device("gw", port),
        tag(
            "gw_value",
            "gw",
            "table = \"holding\", address = 0, type = \"u16\""
        )
    );
    let agent = Agent::start(&load(dir.path(), &body)).unwrap();
    let own = agent.stats.source("gw");
    wait_until("mismatched replies counted", WAIT, || {
        Stats::get(&own.modbus.mismatched) >= 3
    })
    .await;
    assert!(
        samples(&agent, "gw_value")
            .iter()
            .all(|s| s.quality != Quality::Good),
        "a reply with another transaction id never becomes a value"
    );
    assert!(Stats::get(&agent.stats.source_reconnects) >= 1);
    agent.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_device_overruns_its_interval_and_requests_never_pile_up() {
    let dir = tempfile::tempdir().unwrap();
    let sim = ModbusSim::start(0, Arc::default()).await.unwrap();
    sim.state.set_holding(0, &[7]);
    // Every reply takes 150 ms; the tag asks for one every 100 ms (timeout 200 ms: no link
    // problem, just a device slower than its poll interval).
    sim.state.delay_ms.store(150, Relaxed);
    let body = format!(
        "{}{}",
        device("slow", sim.port),
        tag(
            "slow_value",
            "slow",
            "table = \"holding\", address = 0, type = \"u16\""
        )
    );
    let agent = Agent::start(&load(dir.path(), &body)).unwrap();
    wait_until("the slow device polled", WAIT, || {
        last(&agent, "slow_value").is_some()
    })
    .await;
    let requests0 = sim.state.requests.load(Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let requests = sim.state.requests.load(Relaxed) - requests0;
    let own = agent.stats.source("slow");
    // One request at a time, one per 150 ms at most: about 20 in 3 s, never the 30 the
    // interval asks for, and no backlog of queued polls.
    assert!((10..=22).contains(&requests), "{requests} requests in 3 s");
    assert!(Stats::get(&own.modbus.overruns) >= 10, "overruns counted");
    assert_eq!(Stats::get(&own.modbus.timeouts), 0);
    let s = last(&agent, "slow_value").unwrap();
    assert_eq!((s.quality, s.value), (Quality::Good, Value::Num(7.0)));
    agent.shutdown(Duration::from_secs(2)).await;
}
