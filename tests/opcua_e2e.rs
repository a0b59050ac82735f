//! OPC UA end to end: the agent against async-opcua's server in process, on loopback.

use opcua::types::{StatusCode, Variant};
use pdtf_agent::config;
use pdtf_agent::opcua_sim::{SimOptions, SimServer};
use pdtf_agent::Agent;
use pdtf_connectors::Stats;
use pdtf_e2e::*;
use pdtf_models::{status, Quality, Record, RecordBody, Sample, Value};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(40);

fn vars() -> Vec<(String, Variant)> {
    vec![
        ("Temp".into(), Variant::Double(20.0)),
        ("Running".into(), Variant::Boolean(false)),
        ("Batch".into(), Variant::String("B-1".into())),
        ("Spectrum".into(), Variant::from(vec![0.1f64, 0.2, 0.3])),
        ("Count".into(), Variant::Int32(7)),
    ]
}

fn options(port: u16, pki: &Path, secure: bool) -> SimOptions {
    SimOptions {
        port,
        pki_dir: pki.to_path_buf(),
        folder: "Line1".into(),
        variables: vars(),
        secure,
        password: Some("s3cret".into()),
        namespaces_before: vec![],
    }
}

async fn sim(port: u16, pki: &Path, secure: bool) -> SimServer {
    SimServer::start(options(port, pki, secure)).await.unwrap()
}

/// The agent, the server and source `plc` on it, with `security` in the server's table.
fn head(dir: &Path, endpoint: &str, security: &str) -> String {
    format!(
        r#"
{agent}
[opcua_servers.line]
endpoint = "{endpoint}"
retry_initial_ms = 100
retry_max_ms = 500
keep_alive_ms = 500
{security}

[[sources]]
id = "plc"
kind = "opcua"
server = "line"
publishing_interval_ms = 100
create_chunk_size = 2
flush_interval_ms = 10
"#,
        agent = agent_section(dir)
    )
}

/// Tag `temp` (Line1.Temp, hi 80) and tag `batch` (Line1.Batch, text).
const TEMP_TAG: &str = r#"[[tags]]
name = "temp"
source = "plc"
node = "nsu=urn:pdtf:sim;s=Line1.Temp"
limits = { hi = 80.0 }
"#;
const BATCH_TAG: &str = r#"[[tags]]
name = "batch"
source = "plc"
node = "nsu=urn:pdtf:sim;s=Line1.Batch"
value_type = "string"
"#;

fn agent_config(dir: &Path, endpoint: &str, security: &str) -> config::Config {
    let text = format!(
        r#"{head}
{TEMP_TAG}
[[tags]]
name = "running"
source = "plc"
node = "ns=2;s=Line1.Running"
value_type = "bool"

{BATCH_TAG}
[[tags]]
name = "spectrum"
source = "plc"
node = "nsu=urn:pdtf:sim;s=Line1.Spectrum"
value_type = "number_array"

[[tags]]
name = "count_as_bool"
source = "plc"
node = "nsu=urn:pdtf:sim;s=Line1.Count"
value_type = "bool"

[[tags]]
name = "missing"
source = "plc"
node = "nsu=urn:pdtf:sim;s=Line1.NoSuchNode"
"#,
        head = head(dir, endpoint, security)
    );
    config::load_str(&text, &dir.join("agent.toml"), &|k| {
        (k == "OPCUA_PW").then(|| "s3cret".to_owned())
    })
    .unwrap_or_else(|e| panic!("test config invalid: {e:?}"))
}

fn records(agent: &Agent) -> Vec<Record> {
    agent
        .journal
        .read_from(agent.journal.first_seq().unwrap(), usize::MAX)
        .unwrap()
}

fn samples(agent: &Agent, tag: u32) -> Vec<Sample> {
    records(agent)
        .into_iter()
        .filter_map(|r| match r.body {
            RecordBody::Sample(s) if s.tag.0 == tag => Some(s),
            _ => None,
        })
        .collect()
}

async fn wait_for_sample(
    agent: &Agent,
    tag: u32,
    what: &str,
    f: impl Fn(&Sample) -> bool,
) -> Sample {
    let mut found = None;
    wait_until(what, WAIT, || {
        found = samples(agent, tag).into_iter().rev().find(|s| f(s));
        found.is_some()
    })
    .await;
    found.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_status_codes_and_recovery_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server_pki = dir.path().join("server-pki");
    let server = sim(0, &server_pki, false).await;
    let agent = Agent::start(&agent_config(dir.path(), &server.endpoint, "")).unwrap();

    // Initial values of every type arrive through the subscription.
    let t = wait_for_sample(&agent, 0, "temp", |s| s.value == Value::Num(20.0)).await;
    assert_eq!((t.quality, t.status), (Quality::Good, 0));
    assert!(t.source_time.is_some() && t.server_time.is_some(), "{t:?}");
    wait_for_sample(&agent, 1, "running", |s| s.value == Value::Bool(false)).await;
    wait_for_sample(&agent, 2, "batch", |s| s.value == Value::Text("B-1".into())).await;
    wait_for_sample(&agent, 3, "spectrum", |s| {
        s.value == Value::Array(vec![0.1, 0.2, 0.3])
    })
    .await;
    // An Int32 where the map says bool is Bad, not coerced.
    let c = wait_for_sample(&agent, 4, "count mismatch", |_| true).await;
    assert_eq!(
        (c.value, c.quality, c.status),
        (Value::Empty, Quality::Bad, status::BAD_TYPE_MISMATCH)
    );
    // The unknown node is recorded (refused item, or a Bad value saying why); the others work.
    wait_until("unknown node recorded", WAIT, || {
        records(&agent).iter().any(|r| match &r.body {
            RecordBody::Malformed(m) => m.address.contains("NoSuchNode"),
            RecordBody::Sample(s) => {
                s.tag.0 == 5 && s.status == StatusCode::BadNodeIdUnknown.bits()
            }
            _ => false,
        })
    })
    .await;

    // Changes, with Uncertain and Bad status codes kept.
    server.set("Temp", Variant::Double(85.5), StatusCode::Good);
    wait_for_sample(&agent, 0, "85.5", |s| s.value == Value::Num(85.5)).await;
    wait_until("hi alarm", WAIT, || {
        Stats::get(&agent.stats.alarms_raised) >= 1
    })
    .await;
    let u = StatusCode::UncertainSensorNotAccurate;
    server.set("Temp", Variant::Double(21.0), u);
    let s = wait_for_sample(&agent, 0, "uncertain", |s| s.status == u.bits()).await;
    assert_eq!((s.quality, s.value), (Quality::Uncertain, Value::Num(21.0)));
    let b = StatusCode::BadSensorFailure;
    server.set("Temp", Variant::Double(22.0), b);
    let s = wait_for_sample(&agent, 0, "bad", |s| s.status == b.bits()).await;
    assert_eq!(s.quality, Quality::Bad);
    server.set("Temp", Variant::Double(23.0), StatusCode::Good);
    wait_for_sample(&agent, 0, "good again", |s| {
        s.value == Value::Num(23.0) && s.quality == Quality::Good
    })
    .await;

    // Restart the server on the same port: the agent recovers by itself, with a gap.
    let port = server.port;
    server.stop().await;
    wait_until("outage seen", WAIT, || {
        agent
            .stats
            .problems()
            .iter()
            .any(|(c, _)| c == "source plc")
    })
    .await;
    let server = sim(port, &server_pki, false).await;
    server.set("Temp", Variant::Double(30.0), StatusCode::Good);
    wait_for_sample(&agent, 0, "value after restart", |s| {
        s.value == Value::Num(30.0)
    })
    .await;
    let all = records(&agent);
    let gap = all
        .iter()
        .find_map(|r| match &r.body {
            RecordBody::Gap(g) if g.source == "plc" => Some(g.clone()),
            _ => None,
        })
        .expect("the outage is a gap record");
    assert!(gap.start < gap.end, "{gap:?}");
    assert_eq!(gap.tags.len(), 6, "every tag of the source: {gap:?}");
    // Nothing was presented as Good during the outage.
    for r in &all {
        if let RecordBody::Sample(s) = &r.body {
            let inside = s.agent_time > gap.start && s.agent_time < gap.end;
            assert!(
                !(inside && s.quality == Quality::Good),
                "stale good value in the gap: {s:?}"
            );
        }
    }
    assert!(
        agent
            .stats
            .problems()
            .iter()
            .all(|(c, _)| c != "source plc"),
        "problem cleared"
    );
    agent.shutdown(Duration::from_secs(1)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_and_encrypt_refuses_an_untrusted_server_until_it_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let server = sim(0, &dir.path().join("server-pki"), true).await;
    let security = r#"security_policy = "Basic256Sha256"
security_mode = "SignAndEncrypt"
pki_dir = "pki"
identity = { kind = "user_password", user = "operator", password = "${OPCUA_PW}" }"#;
    let c = agent_config(dir.path(), &server.endpoint, security);
    let pki = dir.path().join("pki");
    let agent = Agent::start(&c).unwrap();

    // Unknown server certificate: refused, saved in rejected/, and the error says what to do.
    let mut problem = String::new();
    wait_until("untrusted refusal", WAIT, || {
        problem = agent
            .stats
            .problems()
            .into_iter()
            .find(|(c, _)| c == "source plc")
            .map(|(_, p)| p)
            .unwrap_or_default();
        problem.contains("not trusted")
    })
    .await;
    assert!(
        problem.contains(&pki.join("rejected").display().to_string()),
        "{problem}"
    );
    assert!(
        problem.contains(&pki.join("trusted").display().to_string()),
        "{problem}"
    );
    let rejected: Vec<_> = std::fs::read_dir(pki.join("rejected")).unwrap().collect();
    assert_eq!(
        rejected.len(),
        1,
        "the server's certificate is kept for review"
    );
    assert!(
        samples(&agent, 0).is_empty(),
        "no data from an untrusted server"
    );

    // What `pdtf-agent opcua trust --yes` does; the agent connects at its next retry.
    let clients =
        pdtf_connectors::opcua::client::clients(&c.opcua_servers["line"], &pki, "t", 1).unwrap();
    let cert = pdtf_connectors::opcua::client::server_cert(&clients, &c.opcua_servers["line"])
        .await
        .unwrap();
    pdtf_connectors::opcua::client::trust(&pki, &cert).unwrap();
    server.set("Temp", Variant::Double(42.0), StatusCode::Good);
    wait_for_sample(&agent, 0, "value over SignAndEncrypt", |s| {
        s.value == Value::Num(42.0)
    })
    .await;
    assert_eq!(std::fs::read_dir(pki.join("rejected")).unwrap().count(), 0);
    agent.shutdown(Duration::from_secs(1)).await;
    server.stop().await;
}

/// More changes in one publishing interval than the OPC UA library decodes by default (1,000
/// per array), and a 4,096-point spectrum: before the decoding limits were raised and the
/// subscription asked for bounded publish responses, the client dropped the connection on
/// every such response and reconnected forever, delivering nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_subscription_and_a_long_array_arrive_without_reconnects() {
    const ITEMS: usize = 2_500;
    const POINTS: usize = 4_096;
    let dir = tempfile::tempdir().unwrap();
    let mut variables: Vec<(String, Variant)> = (0..ITEMS)
        .map(|i| (format!("V{i}"), Variant::Double(0.0)))
        .collect();
    variables.push(("Nir".into(), Variant::from(vec![0.0f64; POINTS])));
    let server = SimServer::start(SimOptions {
        port: 0,
        pki_dir: dir.path().join("server-pki"),
        folder: "Big".into(),
        variables,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut text = format!(
        "{}\n[opcua_servers.big]\nendpoint = \"{}\"\n\n[[sources]]\nid = \"plc\"\nkind = \"opcua\"\nserver = \"big\"\npublishing_interval_ms = 100\n",
        agent_section(dir.path()),
        server.endpoint
    );
    for i in 0..ITEMS {
        text.push_str(&format!(
            "[[tags]]\nname = \"v{i}\"\nsource = \"plc\"\nnode = \"{}\"\n",
            server.node(&format!("V{i}"))
        ));
    }
    text.push_str(&format!(
        "[[tags]]\nname = \"nir\"\nsource = \"plc\"\nnode = \"{}\"\nvalue_type = \"number_array\"\n",
        server.node("Nir")
    ));
    let cfg = config::load_str(&text, &dir.path().join("agent.toml"), &|_| None).unwrap();
    let agent = Agent::start(&cfg).unwrap();

    for round in 1..=3 {
        let v = round as f64;
        let names: Vec<String> = (0..ITEMS).map(|i| format!("V{i}")).collect();
        let mut updates: Vec<(&str, Variant, StatusCode)> = names
            .iter()
            .map(|n| (n.as_str(), Variant::Double(v), StatusCode::Good))
            .collect();
        updates.push(("Nir", Variant::from(vec![v; POINTS]), StatusCode::Good));
        server.set_many(updates);
        wait_until(
            &format!("round {round}: every item's new value"),
            WAIT,
            || {
                let mut seen = vec![false; ITEMS + 1];
                for r in records(&agent) {
                    if let RecordBody::Sample(s) = r.body {
                        let hit = match &s.value {
                            Value::Num(x) => *x == v,
                            Value::Array(a) => a.len() == POINTS && a[0] == v,
                            _ => false,
                        };
                        seen[s.tag.0 as usize] |= hit;
                    }
                }
                seen.iter().all(|&s| s)
            },
        )
        .await;
    }
    assert_eq!(Stats::get(&agent.stats.source_reconnects), 0);
    assert_eq!(Stats::get(&agent.stats.gaps), 0);
    agent.shutdown(Duration::from_secs(1)).await;
    server.stop().await;
}

/// A server that restarts with another namespace registered first moves `urn:pdtf:sim` from
/// index 2 to 3. The library recreates the monitored items on the new session with the old
/// indices; the agent notices the changed table and subscribes again, so an `nsu=` tag keeps
/// its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsu_tags_follow_a_namespace_table_reordered_by_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("server-pki");
    let server = sim(0, &pki, false).await;
    assert!(server.node("Temp").starts_with("ns=2;"));
    let agent = Agent::start(&agent_config(dir.path(), &server.endpoint, "")).unwrap();
    wait_for_sample(&agent, 0, "temp", |s| s.value == Value::Num(20.0)).await;

    let port = server.port;
    server.stop().await;
    let mut o = options(port, &pki, false);
    o.namespaces_before = vec!["urn:pdtf:test:other".into()];
    let server = SimServer::start(o).await.unwrap();
    assert!(server.node("Temp").starts_with("ns=3;"));
    server.set("Temp", Variant::Double(31.0), StatusCode::Good);
    let s = wait_for_sample(&agent, 0, "value from the moved namespace", |s| {
        s.value == Value::Num(31.0)
    })
    .await;
    assert_eq!(s.quality, Quality::Good);
    agent.shutdown(Duration::from_secs(1)).await;
    server.stop().await;
}

/// A server that is down when the agent starts is a visible problem at once (not a silent
/// retry inside the endpoint discovery), and the source connects when it comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_at_start_is_reported_and_joined_when_it_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("opc.tcp://127.0.0.1:{port}/");
    let agent = Agent::start(&agent_config(dir.path(), &endpoint, "")).unwrap();
    wait_until("the unreachable server is a health problem", WAIT, || {
        agent
            .stats
            .problems()
            .iter()
            .any(|(c, p)| c == "source plc" && p.contains("GetEndpoints"))
    })
    .await;
    let server = sim(port, &dir.path().join("server-pki"), false).await;
    wait_for_sample(&agent, 0, "temp once the server is up", |s| {
        s.value == Value::Num(20.0) && s.quality == Quality::Good
    })
    .await;
    wait_until("problem cleared", WAIT, || {
        agent
            .stats
            .problems()
            .iter()
            .all(|(c, _)| c != "source plc")
    })
    .await;
    agent.shutdown(Duration::from_secs(1)).await;
    server.stop().await;
}

/// A tag-map reload on a live OPC UA session: a new subscription with the new items is made
/// before the old one is deleted, so the added item reports, the removed one stops, changed
/// limits judge at once, and nothing reconnects or leaves a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_monitored_items_without_reconnecting() {
    let dir = tempfile::tempdir().unwrap();
    let server = sim(0, &dir.path().join("server-pki"), false).await;
    let file = dir.path().join("agent.toml");
    let text = |tags: &str| {
        format!(
            "{agent}\n[opcua_servers.line]\nendpoint = \"{endpoint}\"\nretry_initial_ms = 100\nretry_max_ms = 500\n\n[[sources]]\nid = \"plc\"\nkind = \"opcua\"\nserver = \"line\"\npublishing_interval_ms = 100\nflush_interval_ms = 10\n{tags}",
            agent = agent_section(dir.path()),
            endpoint = server.endpoint
        )
    };
    let temp = |hi: f64| {
        format!("\n[[tags]]\nname = \"temp\"\nsource = \"plc\"\nnode = \"nsu=urn:pdtf:sim;s=Line1.Temp\"\nlimits = {{ hi = {hi:.1} }}\n")
    };
    let running = "\n[[tags]]\nname = \"running\"\nsource = \"plc\"\nnode = \"nsu=urn:pdtf:sim;s=Line1.Running\"\nvalue_type = \"bool\"\n";
    let count = "\n[[tags]]\nname = \"count\"\nsource = \"plc\"\nnode = \"nsu=urn:pdtf:sim;s=Line1.Count\"\n";
    std::fs::write(&file, text(&format!("{}{running}", temp(80.0)))).unwrap();
    let mut agent = Agent::start(&config::load(&file).unwrap()).unwrap();
    wait_for_sample(&agent, 0, "temp", |s| s.value == Value::Num(20.0)).await;
    wait_for_sample(&agent, 1, "running", |s| s.value == Value::Bool(false)).await;
    let reconnects = Stats::get(&agent.stats.source_reconnects);

    std::fs::write(&file, text(&format!("{}{count}", temp(25.0)))).unwrap();
    let outcome = agent.reload(&file).await;
    assert!(
        matches!(&outcome, pdtf_agent::reload::Outcome::Applied { diff, .. }
            if diff == "added: [count]; removed: [running]; changed: [temp (limits)]"),
        "{outcome:?}"
    );
    wait_for_sample(&agent, 2, "the added item's first value", |s| {
        s.value == Value::Num(7.0)
    })
    .await;
    server.set("Running", Variant::Boolean(true), StatusCode::Good);
    server.set("Temp", Variant::Double(30.0), StatusCode::Good);
    wait_until("temp over the new limit raises", WAIT, || {
        Stats::get(&agent.stats.alarms_active) == 1
    })
    .await;
    // The removed item's subscription is gone: its change after the reload never arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        samples(&agent, 1)
            .iter()
            .all(|s| s.value == Value::Bool(false)),
        "a removed item still reports"
    );
    assert_eq!(Stats::get(&agent.stats.source_reconnects), reconnects);
    assert!(
        !records(&agent)
            .iter()
            .any(|r| matches!(&r.body, RecordBody::Gap(g) if g.source == "plc")),
        "a reload is not an outage"
    );
    agent.shutdown(Duration::from_secs(1)).await;
    server.stop().await;
}

/// A tag-driven batch over OPC UA: the PLC's String batch id and Int32 phase number drive
/// the batch twin, and an alarm inside it carries its batch and phase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plcs_batch_id_and_phase_over_opc_ua_drive_a_batch_to_complete() {
    use pdtf_models::batch::{BatchChange, ProcState};
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(0, &dir.path().join("server-pki"), false);
    opts.variables = vec![
        ("Temp".into(), Variant::Double(20.0)),
        ("Batch".into(), Variant::String("".into())),
        ("Phase".into(), Variant::Int32(0)),
    ];
    let server = SimServer::start(opts).await.unwrap();
    let text = format!(
        r#"{head}
[batch]
batch_id_tag = "batch"
phase_tag = "phase"
recipe = "gran"
{GRAN_RECIPE}
{TEMP_TAG}
{BATCH_TAG}
[[tags]]
name = "phase"
source = "plc"
node = "nsu=urn:pdtf:sim;s=Line1.Phase"
"#,
        head = head(dir.path(), &server.endpoint, "")
    );
    let c = config::load_str(&text, &dir.path().join("agent.toml"), &|_| None).unwrap();
    let agent = Agent::start(&c).unwrap();
    wait_for_sample(&agent, 0, "temp", |_| true).await;
    let changes = |agent: &Agent| -> Vec<(String, Option<String>, ProcState)> {
        records(agent)
            .into_iter()
            .filter_map(|r| match r.body {
                RecordBody::Batch(e) => {
                    let kind = match e.change {
                        BatchChange::Started { .. } => "started",
                        BatchChange::Phase { .. } => "phase",
                        BatchChange::State { .. } => "state",
                        BatchChange::Ended(_) => "ended",
                        _ => "other",
                    };
                    Some((format!("{kind} {}", e.batch_id), e.phase, e.state))
                }
                _ => None,
            })
            .collect()
    };
    let until = |n: usize, what: &'static str| {
        let agent = &agent;
        async move { wait_until(what, WAIT, || changes(agent).len() >= n).await }
    };
    server.set("Batch", Variant::String("GR-7".into()), StatusCode::Good);
    until(1, "the batch started").await;
    server.set("Phase", Variant::Int32(1), StatusCode::Good);
    until(2, "preheat").await;
    server.set("Temp", Variant::Double(85.0), StatusCode::Good);
    wait_until("alarm raised", WAIT, || {
        Stats::get(&agent.stats.alarms_active) == 1
    })
    .await;
    server.set("Phase", Variant::Int32(2), StatusCode::Good);
    until(3, "spraying").await;
    server.set("Batch", Variant::String("".into()), StatusCode::Good);
    until(5, "the batch ended").await;
    let p = |s: &str| Some(s.to_owned());
    assert_eq!(
        changes(&agent),
        [
            ("started GR-7".into(), None, ProcState::Running),
            ("phase GR-7".into(), p("preheat"), ProcState::Running),
            ("phase GR-7".into(), p("spraying"), ProcState::Running),
            ("state GR-7".into(), None, ProcState::Complete),
            ("ended GR-7".into(), None, ProcState::Complete),
        ]
    );
    let alarm = records(&agent).into_iter().find_map(|r| match r.body {
        RecordBody::Alarm(a) => Some((a.batch_id, a.phase)),
        _ => None,
    });
    assert_eq!(alarm, Some((p("GR-7"), p("preheat"))));
    agent.shutdown(Duration::from_secs(2)).await;
    server.stop().await;
}
