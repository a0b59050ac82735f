//! TLS on the MQTT links, with certificates generated per test: mutual TLS works; an
//! untrusted, expired or wrongly named server certificate, or a missing client certificate,
//! fails closed (nothing sent, a health problem reported, no plaintext attempt).

use pdtf_agent::config::load_str;
use pdtf_agent::Agent;
use pdtf_connectors::Stats;
use pdtf_e2e::tls::{Issued, Pki, TlsProxy};
use pdtf_e2e::*;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Source plain on `plain_port`; upstream over TLS to `tls_port` with `tls` keys.
fn tls_config(dir: &Path, plain_port: u16, tls_port: u16, tls: &str) -> pdtf_agent::config::Config {
    let text = format!(
        r#"
{agent}
[health]
listen = "127.0.0.1:0"

[brokers.plant]
host = "127.0.0.1"
port = {plain_port}

[brokers.site]
host = "127.0.0.1"
port = {tls_port}
backoff_initial_ms = 50
backoff_max_ms = 200
[brokers.site.tls]
{tls}

[[sources]]
id = "plc"
kind = "mqtt"
broker = "plant"

[sinks.upstream]
broker = "site"
{TEST_TAGS}"#,
        agent = agent_section(dir)
    );
    load_str(&text, &dir.join("agent.toml"), &|_| None).unwrap_or_else(|e| panic!("{e:?}"))
}

fn keys(ca: &Path, client: Option<&Issued>) -> String {
    let mut s = format!("ca_file = \"{}\"\n", ca.display());
    if let Some(c) = client {
        s += &format!(
            "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            c.cert.display(),
            c.key.display()
        );
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_flow_over_mutual_tls() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "site");
    let server = pki.issue("broker", &["127.0.0.1", "localhost"], false, false);
    let client = pki.issue("gw", &["gw-01"], true, false);
    let proxy = TlsProxy::start(port, &server, Some(&pki.ca_file())).await;
    let historian = Consumer::start(port, "historian", "pdtf/s1/a1/l1/records").await;
    let agent = Agent::start(&tls_config(
        dir.path(),
        port,
        proxy.port,
        &keys(&pki.ca_file(), Some(&client)),
    ))
    .unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    // Publish until 50 samples are in: the source may not be subscribed yet at first.
    wait_until("50 samples in", WAIT, || {
        let _ = publisher
            .client
            .try_publish("line/flow", rumqttc::QoS::AtLeastOnce, false, "1");
        Stats::get(&agent.stats.samples_in) >= 50
    })
    .await;
    let last = Stats::get(&agent.stats.last_seq);
    wait_until("records over TLS", WAIT, || {
        Stats::get(&agent.stats.upstream_acked_seq) >= last
    })
    .await;
    wait_until("historian got them", WAIT, || {
        upstream_seqs(&historian.snapshot()).0.len() as u64 >= last
    })
    .await;
    assert!(proxy.handshake_errors.lock().unwrap().is_empty());
    assert!(
        agent.stats.problems().is_empty(),
        "{:?}",
        agent.stats.problems()
    );
    agent.shutdown(Duration::from_secs(1)).await;
}

async fn assert_fails_closed(
    case: &str,
    server: Issued,
    trust: &Path,
    client: Option<&Issued>,
    require: Option<&Path>,
) {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let proxy = TlsProxy::start(port, &server, require).await;
    let historian = Consumer::start(port, "historian", "pdtf/s1/a1/l1/records").await;
    let agent = Agent::start(&tls_config(
        dir.path(),
        port,
        proxy.port,
        &keys(trust, client),
    ))
    .unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    publisher.send("line/flow", "1").await;
    wait_until(&format!("{case}: several refused attempts"), WAIT, || {
        Stats::get(&agent.stats.upstream_reconnects) >= 3
    })
    .await;
    assert_eq!(
        Stats::get(&agent.stats.upstream_acked_seq),
        0,
        "{case}: something was delivered"
    );
    assert!(
        historian.snapshot().is_empty(),
        "{case}: records reached the broker"
    );
    let errors = proxy.handshake_errors.lock().unwrap().clone();
    assert!(
        !errors
            .iter()
            .any(|e| e.to_lowercase().contains("content type")
                || e.to_lowercase().contains("corrupt")),
        "{case}: a plaintext attempt reached the TLS port: {errors:?}"
    );
    if require.is_none() {
        let problems = agent.stats.problems();
        assert!(
            problems
                .iter()
                .any(|(k, v)| k == "upstream" && v.contains("TLS")),
            "{case}: no TLS problem reported: {problems:?}"
        );
        let (code, body) = http_get(agent.health_addr.unwrap(), "/readyz").await;
        assert_eq!(code, 503, "{case}");
        assert!(body.contains("TLS"), "{case}: {body}");
    }
    agent.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_expired_misnamed_and_anonymous_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let site = Pki::new(dir.path(), "site");
    let rogue = Pki::new(dir.path(), "rogue");
    let ca = site.ca_file();
    assert_fails_closed(
        "untrusted issuer",
        rogue.issue("broker", &["127.0.0.1"], false, false),
        &ca,
        None,
        None,
    )
    .await;
    assert_fails_closed(
        "expired",
        site.issue("old", &["127.0.0.1"], false, true),
        &ca,
        None,
        None,
    )
    .await;
    assert_fails_closed(
        "wrong name",
        site.issue("other", &["other.invalid"], false, false),
        &ca,
        None,
        None,
    )
    .await;
    let server = site.issue("broker", &["127.0.0.1"], false, false);
    assert_fails_closed("no client certificate", server, &ca, None, Some(&ca)).await;
}

#[test]
fn unusable_tls_files_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let text = |tls: &str| {
        format!(
            "[agent]\nid=\"a\"\nsite=\"s\"\narea=\"a\"\nline=\"l\"\nstate_dir=\"/tmp/x\"\n\
             [brokers.site]\nhost=\"h\"\n[brokers.site.tls]\n{tls}\n[sinks.upstream]\nbroker=\"site\"\n"
        )
    };
    let path = dir.path().join("agent.toml");
    let errs = load_str(&text("ca_file = \"missing-ca.pem\""), &path, &|_| None).unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.path == "brokers.site.tls.ca_file" && e.message.contains("cannot read")),
        "{errs:?}"
    );
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    let errs = load_str(&text("ca_file = \"junk.pem\""), &path, &|_| None).unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.path == "brokers.site.tls.ca_file" && e.message.contains("no certificate")),
        "{errs:?}"
    );
    let pki = Pki::new(dir.path(), "x");
    let ca = pki.ca_file();
    let errs = load_str(
        &text(&format!(
            "ca_file = \"{}\"\nclient_cert_file = \"{}\"",
            ca.display(),
            ca.display()
        )),
        &path,
        &|_| None,
    )
    .unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.path == "brokers.site.tls.client_key_file"),
        "{errs:?}"
    );
}
