//! `Type=notify` without systemd: the test listens on a datagram socket as systemd would
//! (`NOTIFY_SOCKET`, `WATCHDOG_USEC`) and checks what a child `pdtf-agent run` says there:
//! `READY=1` only after the journal verified, `WATCHDOG=1` while the pipeline beats, a
//! `STATUS=` line, and `STOPPING=1` on SIGTERM before a clean exit.

#[path = "../../tests/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../../tests/smallfs.rs"]
mod smallfs;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn messages_until(sock: &UnixDatagram, want: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = m.lines().any(|l| l == want);
            got.push(m);
            if done {
                return got;
            }
        }
    }
    panic!("no {want} within {limit:?}; got {got:?}");
}

/// `pdtf-agent run --config config` logging at info to `dir/agent.log`, with the socket it
/// notifies as systemd's.
fn run_logged(dir: &Path, config: &Path) -> (Child, UnixDatagram) {
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pdtf-agent"))
        .args(["run", "--config"])
        .arg(config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    (child, sock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_watchdog_status_and_stopping_reach_the_notify_socket() {
    let port = harness::broker();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "{agent}\n[brokers.plant]\nhost = \"127.0.0.1\"\nport = {port}\n\n[[sources]]\nid = \"plc\"\nkind = \"mqtt\"\nbroker = \"plant\"\n\n[sinks.upstream]\nbroker = \"plant\"\n{tags}",
            agent = harness::agent_section(dir.path()),
            tags = harness::TEST_TAGS
        ),
    )
    .unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pdtf-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let start = messages_until(&sock, "READY=1", Duration::from_secs(20));
    let ready = start.last().unwrap();
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=seq ")),
        "{ready}"
    );
    // Fed twice per 2 s interval while the (idle) pipeline beats on its ticks.
    let t0 = Instant::now();
    messages_until(&sock, "WATCHDOG=1", Duration::from_secs(5));
    messages_until(&sock, "WATCHDOG=1", Duration::from_secs(5));
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    messages_until(&sock, "STOPPING=1", Duration::from_secs(10));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// `SIGHUP` (what `systemctl reload` sends) and an edited file both reload the tag map of a
/// running `pdtf-agent run`, each framed by `RELOADING=1` … `READY=1` for systemd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_an_edited_file_reload_the_tag_map() {
    let port = harness::broker();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    let text = format!(
        "{agent}\n[brokers.plant]\nhost = \"127.0.0.1\"\nport = {port}\n\n[[sources]]\nid = \"plc\"\nkind = \"mqtt\"\nbroker = \"plant\"\n{tags}",
        agent = harness::agent_section(dir.path()),
        tags = harness::TEST_TAGS
    );
    std::fs::write(&config, &text).unwrap();
    let (mut child, sock) = run_logged(dir.path(), &config);
    let pid = child.id().to_string();
    messages_until(&sock, "READY=1", Duration::from_secs(20));

    // SIGHUP with nothing changed: reloaded, nothing to apply.
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let got = messages_until(&sock, "READY=1", Duration::from_secs(10));
    assert!(
        got.iter()
            .any(|m| m.contains("RELOADING=1") && m.contains("MONOTONIC_USEC=")),
        "{got:?}"
    );

    // An edited file, no signal: the watcher reloads it and the new tag is applied.
    std::fs::write(
        &config,
        format!("{text}\n[[tags]]\nname = \"extra\"\nsource = \"plc\"\ntopic = \"line/extra\"\n"),
    )
    .unwrap();
    let got = messages_until(&sock, "READY=1", Duration::from_secs(10));
    assert!(got.iter().any(|m| m.contains("RELOADING=1")), "{got:?}");

    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(child.wait().unwrap().success());
    let logged = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(
        logged.contains("SIGHUP: reloading the configuration."),
        "{logged}"
    );
    assert!(logged.contains("the tags are unchanged"), "{logged}");
    assert!(
        logged.contains("Configuration files changed: reloading."),
        "{logged}"
    );
    let journal =
        pdtf_agent::journal::open(pdtf_agent::config::Engine::Redb, &dir.path().join("state"))
            .unwrap();
    let reloads: Vec<String> = journal
        .read_from(pdtf_models::Seq(1), usize::MAX)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.body {
            pdtf_models::RecordBody::Audit(a) if a.event == "config_reload" => Some(a.detail),
            _ => None,
        })
        .collect();
    assert_eq!(reloads.len(), 1, "{reloads:?}");
    assert!(
        reloads[0].contains("added: [extra]; removed: []; changed: []"),
        "{reloads:?}"
    );
}

/// A reload waits for the pipeline to commit the new tag map. With the journal's disk full
/// that wait has no end, and a `systemctl stop` (SIGTERM) sent meanwhile must still stop the
/// agent well inside systemd's `TimeoutStopSec` (30 s) instead of ending in SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_reload_that_waits_on_a_full_disk_is_heard() {
    const NAME: &str = "a_stop_during_a_reload_that_waits_on_a_full_disk_is_heard";
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = smallfs::small_fs(dir.path(), NAME) else {
        return;
    };
    let port = harness::broker();
    let config = dir.path().join("agent.toml");
    let text = format!(
        "{}{}",
        harness::agent_toml(dir.path(), port, port, ""),
        harness::TEST_TAGS
    );
    std::fs::write(&config, &text).unwrap();
    let scada =
        harness::Consumer::start(port, "scada", "pdtf/s1/a1/l1/alarms/_agent/journal_full").await;
    let (mut child, sock) = run_logged(dir.path(), &config);
    messages_until(&sock, "READY=1", Duration::from_secs(20));

    // The disk fills under load, and stays full.
    smallfs::fill_leaving(&fs, "filler", 1 << 20);
    let publisher = harness::Publisher::start(port, "plc-sim");
    let flood = tokio::spawn(async move {
        for i in 0u64.. {
            publisher.send("line/flow", format!("{i}")).await;
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    scada
        .wait_last_state("active", "journal_full raised for SCADA")
        .await;
    // Not a byte left. A commit still gets through now and then (redb reuses freed pages
    // after a reopen), and with it a waiting reload: edit again until one is still waiting.
    fs.fill("rest", u64::MAX);
    // A reload either applies, is refused (its own journal write met the full disk), or
    // waits for the journal: only the last is what this test is after.
    let applied = |log: &str| {
        log.matches("Tag map reloaded and applied").count()
            + log.matches("Configuration reload refused").count()
    };
    let log_path = dir.path().join("agent.log");
    let mut applied_before = 0;
    for extra in 0..5 {
        std::fs::write(
            &config,
            format!("{text}\n[[tags]]\nname = \"extra{extra}\"\nsource = \"plc\"\ntopic = \"line/extra{extra}\"\n"),
        )
        .unwrap();
        messages_until(&sock, "RELOADING=1", Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(500)).await;
        applied_before = applied(&std::fs::read_to_string(&log_path).unwrap());
        if applied_before == extra {
            break;
        }
    }
    let asked = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if asked.elapsed() > Duration::from_secs(25) {
            child.kill().unwrap();
            panic!("SIGTERM during a reload on a full disk was not heard within 25 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    flood.abort();
    let logged = std::fs::read_to_string(&log_path).unwrap();
    // Unless a commit let the reload finish (or fail) in the instant between the check and
    // the signal, the stop was heard while it waited.
    if applied(&logged) == applied_before {
        assert!(
            logged.contains("Shutting down during a reload"),
            "the reload was still waiting when the stop came: {logged}"
        );
    }
    eprintln!(
        "stop during a reload on a full disk: {status:?} after {:?}",
        asked.elapsed()
    );
    // What was committed is intact once space is back.
    fs.free("rest");
    fs.free("filler");
    pdtf_agent::journal::verify_offline(&dir.path().join("state"), |_| {})
        .expect("the journal verifies after the stop");
}

/// Under systemd (stderr is the stream `JOURNAL_STREAM` names) every log line starts with its
/// syslog priority and carries no timestamp of its own; `PDTF_LOG_FORMAT=json` gives JSON.
#[test]
fn logs_under_the_journal_carry_priorities_and_no_timestamps() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    // A broker port nobody listens on: the source's connection failures are warnings.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "{agent}\n[brokers.plant]\nhost = \"127.0.0.1\"\nport = {closed}\nbackoff_initial_ms = 50\nbackoff_max_ms = 100\n\n[[sources]]\nid = \"plc\"\nkind = \"mqtt\"\nbroker = \"plant\"\n{tags}",
            agent = harness::agent_section(dir.path()),
            tags = harness::TEST_TAGS
        ),
    )
    .unwrap();
    let run = |format: Option<&str>, log: &Path| -> String {
        let file = std::fs::File::create(log).unwrap();
        let m = file.metadata().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pdtf-agent"));
        cmd.args(["run", "--config"])
            .arg(&config)
            .env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))
            .env("RUST_LOG", "info")
            .env_remove("PDTF_LOG_FORMAT")
            .stdout(Stdio::null())
            .stderr(file);
        if let Some(f) = format {
            cmd.env("PDTF_LOG_FORMAT", f);
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let text = loop {
            let text = std::fs::read_to_string(log).unwrap();
            let warned = text.contains("<4>") || text.contains("\"level\":\"WARN\"");
            if warned || Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success());
        text
    };

    let text = run(None, &dir.path().join("journal.log"));
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.iter().any(|l| l.starts_with("<6>")), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("<4>")), "{text}");
    for l in &lines {
        let rest = l.get(3..).unwrap_or_default();
        assert!(
            l.starts_with('<') && !rest.starts_with(|c: char| c.is_ascii_digit()),
            "a line without its priority, or with a timestamp: {l}"
        );
    }

    let text = run(Some("json"), &dir.path().join("json.log"));
    for l in text.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
}
