//! Tag-map reload in a running agent under load: tags added (in a file that sorts first),
//! changed and removed; an invalid edit and a change outside the tags refused with the old
//! configuration still running; nothing lost, every step on the record.

use pdtf_agent::reload::Outcome;
use pdtf_agent::Agent;
use pdtf_connectors::Stats;
use pdtf_e2e::*;
use pdtf_models::{AlarmState, RecordBody, TagId};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn temp(v: f64) -> String {
    format!(r#"{{"v":{v},"ts":1763800000000}}"#)
}

const LEVEL: &str = "\n[[tags]]\nname = \"level\"\nsource = \"plc\"\ntopic = \"line/level\"\nlimits = { hi = 50.0 }\n";
const PRESSURE: &str = "[[tags]]\nname = \"pressure\"\nunit = \"bar\"\nsource = \"plc\"\ntopic = \"line/pressure\"\nlimits = { hi = 5.0 }\n";

/// The last retained state on `pdtf/s1/a1/l1/alarms/{tag}`.
fn last_on(scada: &Consumer, tag: &str) -> Option<serde_json::Value> {
    let topic = format!("pdtf/s1/a1/l1/alarms/{tag}");
    scada
        .snapshot()
        .iter()
        .rev()
        .find(|m| m.topic == topic)
        .map(Message::json)
}

/// An agent file in `dir` that includes `tags/*.toml`, with its brokers on `port`:
/// (agent file, tags directory, the agent file's text after the include line).
fn layout(dir: &std::path::Path, port: u16) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let agent_file = dir.join("agent.toml");
    let tags_dir = dir.join("tags");
    std::fs::create_dir_all(&tags_dir).unwrap();
    let text = agent_toml(dir, port, port, "");
    std::fs::write(&agent_file, format!("include = [\"tags/*.toml\"]\n{text}")).unwrap();
    (agent_file, tags_dir, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_added_changed_and_removed_live_under_load() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let (agent_file, tags_dir, text) = layout(dir.path(), port);
    std::fs::write(tags_dir.join("m.toml"), format!("{TEST_TAGS}{LEVEL}")).unwrap();

    let scada = Consumer::start(port, "scada", "pdtf/s1/a1/l1/alarms/#").await;
    let historian = Consumer::start(port, "historian", "pdtf/s1/a1/l1/records").await;
    let mut agent = Agent::start(&pdtf_agent::config::load(&agent_file).unwrap()).unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    wait_until_sample(&agent, &publisher).await;

    // Load throughout: `flow` values 10_000, 10_001, … about 2,000 a second.
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let load = {
        let (stop, sent) = (stop.clone(), sent.clone());
        let p = Publisher::start(port, "plc-load");
        tokio::spawn(async move {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                p.send("line/flow", format!("{}", 10_000 + k)).await;
                k += 1;
                sent.store(k, Ordering::Relaxed);
                if k.is_multiple_of(20) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            // Let the client's queue reach the broker before it is dropped.
            tokio::time::sleep(Duration::from_millis(500)).await;
        })
    };

    publisher.send("line/level", "60").await;
    wait_until("level alarm raised", WAIT, || {
        Stats::get(&agent.stats.alarms_active) == 1
    })
    .await;

    // The edit: `pressure` in a file that sorts first, `temp`'s limits moved, `level` gone.
    std::fs::write(tags_dir.join("a.toml"), PRESSURE).unwrap();
    let moved = TEST_TAGS.replace("hi = 80.0, hihi = 90.0", "hi = 85.0, hihi = 95.0");
    assert_ne!(moved, TEST_TAGS);
    std::fs::write(tags_dir.join("m.toml"), &moved).unwrap();
    let applied = agent.reload(&agent_file).await;
    let Outcome::Applied { seq, diff } = &applied else {
        panic!("reload not applied: {applied:?}");
    };
    assert_eq!(
        diff,
        "added: [pressure]; removed: [level]; changed: [temp (limits)]"
    );
    assert!(*seq > 0);
    let name = |id: u32| agent.registry.name(TagId(id)).map(str::to_owned);
    assert_eq!(
        (name(0), name(1), name(2), name(3)),
        (
            Some("temp".into()),
            Some("flow".into()),
            Some("level".into()),
            Some("pressure".into())
        ),
        "ids stay with their names; the new tag gets the next one"
    );

    // The removed tag's active alarm is cleared, on the record and on its retained topic.
    wait_until("level alarm cleared", WAIT, || {
        Stats::get(&agent.stats.alarms_active) == 0
            && last_on(&scada, "level").is_some_and(|v| v["state"] == "inactive")
    })
    .await;
    // The new limits judge `temp`: 82 is fine now (it was over the old 80), 88 is over 85.
    publisher.send("line/temp", temp(82.0)).await;
    publisher.send("line/temp", temp(88.0)).await;
    // The new tag's topic is subscribed on the live connection (once its SUBACK is back:
    // the broker drops what it gets before that, as for any new subscriber).
    for _ in 0..200 {
        publisher.send("line/pressure", "7").await;
        tokio::time::sleep(Duration::from_millis(25)).await;
        if Stats::get(&agent.stats.alarms_active) == 2 {
            break;
        }
    }
    wait_until("temp and pressure alarms", WAIT, || {
        Stats::get(&agent.stats.alarms_active) == 2
            && last_on(&scada, "pressure").is_some_and(|v| v["state"] == "active")
            && last_on(&scada, "temp").is_some_and(|v| v["state"] == "active")
    })
    .await;
    let t = last_on(&scada, "temp").unwrap();
    assert_eq!(
        (t["value"].as_f64(), t["limit"].as_f64()),
        (Some(88.0), Some(85.0))
    );
    let p = last_on(&scada, "pressure").unwrap();
    assert_eq!(
        (p["tag"].as_str(), p["unit"].as_str()),
        (Some("pressure"), Some("bar"))
    );

    // An invalid edit is refused with its file and TOML path; the running tags stay.
    std::fs::write(
        tags_dir.join("m.toml"),
        moved.replace("hi = 85.0, hihi = 95.0", "hi = \"high\""),
    )
    .unwrap();
    let refused = agent.reload(&agent_file).await;
    let Outcome::Refused(errors) = &refused else {
        panic!("an invalid edit was applied: {refused:?}");
    };
    assert!(
        errors
            .iter()
            .any(|e| e.contains("m.toml") && e.contains("tags[0].limits.hi")),
        "{errors:?}"
    );
    // A change outside the tags is refused too: only a restart applies it.
    std::fs::write(tags_dir.join("m.toml"), &moved).unwrap();
    std::fs::write(
        &agent_file,
        format!(
            "include = [\"tags/*.toml\"]\n{}",
            text.replace("flush_interval_ms = 5", "flush_interval_ms = 6")
        ),
    )
    .unwrap();
    let refused = agent.reload(&agent_file).await;
    let Outcome::Refused(errors) = &refused else {
        panic!("a source change was applied live: {refused:?}");
    };
    assert!(
        errors.iter().any(|e| e.contains("[sources] changed")),
        "{errors:?}"
    );
    // Still the applied configuration: pressure's limit is 5, so 1 clears its alarm.
    publisher.send("line/pressure", "1").await;
    wait_until("pressure alarm cleared", WAIT, || {
        Stats::get(&agent.stats.alarms_active) == 1
    })
    .await;
    assert_eq!(Stats::get(&agent.stats.config_reloads), 1);
    assert_eq!(Stats::get(&agent.stats.config_reloads_refused), 2);

    // Nothing lost: every `flow` value sent before, during and after the reloads is in the
    // journal, and upstream holds every record in order.
    wait_until("the load ran a while", WAIT, || {
        sent.load(Ordering::Relaxed) >= 1_000
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let sent = sent.load(Ordering::Relaxed);
    let flows = || {
        journal_bodies(&agent)
            .into_iter()
            .filter_map(|b| match b {
                RecordBody::Sample(s) if s.tag == TagId(1) => s.number(),
                _ => None,
            })
            .filter(|v| *v >= 10_000.0)
            .map(|v| v as u64 - 10_000)
            .collect::<std::collections::BTreeSet<u64>>()
    };
    wait_until("every flow value recorded", WAIT, || {
        flows().len() as u64 == sent
    })
    .await;
    assert_eq!(flows(), (0..sent).collect());
    assert_upstream_complete(&agent, &historian, WAIT, "after the reloads").await;
    let named_pressure = historian
        .snapshot()
        .iter()
        .any(|m| m.topic.ends_with("/records") && m.json()["tags"]["3"] == "pressure");
    assert!(named_pressure, "upstream names the new tag");

    let bodies = journal_bodies(&agent);
    let audits = |event: &str| -> Vec<String> {
        bodies
            .iter()
            .filter_map(|b| match b {
                RecordBody::Audit(a) if a.event == event => Some(a.detail.clone()),
                _ => None,
            })
            .collect()
    };
    let reloads = audits("config_reload");
    assert_eq!(reloads.len(), 1, "{reloads:?}");
    assert!(
        reloads[0].contains(diff) && reloads[0].contains("config_sha256="),
        "{reloads:?}"
    );
    let refusals = audits("config_reload_refused");
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(refusals[0].contains("tags[0].limits.hi"), "{refusals:?}");
    let level_clear = bodies.iter().any(|b| {
        matches!(b, RecordBody::Alarm(a) if a.tag() == Some(TagId(2)) && a.state == AlarmState::Inactive)
    });
    assert!(level_clear, "the removed tag's alarm clear is recorded");
    agent.shutdown(Duration::from_secs(2)).await;
}

/// The watcher sees an edit of a tag-map file (also written the way editors do: a new file
/// renamed over the old one) and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_sees_tag_map_edits() {
    let dir = tempfile::tempdir().unwrap();
    let (agent_file, tags_dir, _) = layout(dir.path(), 1);
    std::fs::write(tags_dir.join("m.toml"), TEST_TAGS).unwrap();
    let c = pdtf_agent::config::load(&agent_file).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let _w = pdtf_agent::reload::watch(&c, tx).unwrap();
    let next = |rx: &mut tokio::sync::mpsc::Receiver<()>| {
        let got = rx.try_recv().is_ok();
        while rx.try_recv().is_ok() {}
        got
    };

    std::fs::write(tags_dir.join("notes.txt"), "not configuration").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!next(&mut rx), "a non-TOML file is not a reload");

    std::fs::write(tags_dir.join("m.toml"), format!("{TEST_TAGS}{LEVEL}")).unwrap();
    wait_until("in-place write seen", WAIT, || next(&mut rx)).await;

    let tmp = tags_dir.join(".m.toml.swp");
    std::fs::write(&tmp, TEST_TAGS).unwrap();
    std::fs::rename(&tmp, tags_dir.join("m.toml")).unwrap();
    wait_until("write-and-rename seen", WAIT, || next(&mut rx)).await;
}

/// A reload that changes more subscriptions than the client's request queue holds (64): the
/// changes go out as the queue drains, the source keeps reading its link meanwhile, and every
/// new topic delivers while no removed one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moving_hundreds_of_topics_subscribes_them_all() {
    let port = broker();
    let dir = tempfile::tempdir().unwrap();
    let (agent_file, tags_dir, _) = layout(dir.path(), port);
    let bulk = |prefix: &str| -> String {
        (0..150)
            .map(|i| format!("[[tags]]\nname = \"{prefix}{i}\"\nsource = \"plc\"\ntopic = \"line/{prefix}{i}\"\n"))
            .collect()
    };
    std::fs::write(tags_dir.join("m.toml"), TEST_TAGS).unwrap();
    std::fs::write(tags_dir.join("bulk.toml"), bulk("old")).unwrap();
    let mut agent = Agent::start(&pdtf_agent::config::load(&agent_file).unwrap()).unwrap();
    let publisher = Publisher::start(port, "plc-sim");
    wait_until_sample(&agent, &publisher).await;

    std::fs::write(tags_dir.join("bulk.toml"), bulk("new")).unwrap();
    let outcome = agent.reload(&agent_file).await;
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    // Each new topic, until all 150 delivered (a topic's first messages may precede its SUBACK).
    let seen = |agent: &Agent| -> std::collections::BTreeSet<u32> {
        journal_bodies(agent)
            .into_iter()
            .filter_map(|b| match b {
                RecordBody::Sample(s) => agent
                    .registry
                    .name(s.tag)
                    .and_then(|n| n.strip_prefix("new"))
                    .and_then(|i| i.parse().ok()),
                _ => None,
            })
            .collect()
    };
    for _ in 0..100 {
        for i in 0..150 {
            publisher.send(&format!("line/new{i}"), "1").await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if seen(&agent).len() == 150 {
            break;
        }
    }
    assert_eq!(seen(&agent).len(), 150, "every new topic delivers");
    // Removed topics deliver nothing any more.
    let before = Stats::get(&agent.stats.samples_in);
    for i in 0..150 {
        publisher.send(&format!("line/old{i}"), "1").await;
    }
    publisher.send("line/flow", "2").await;
    wait_until("the marker arrived", WAIT, || {
        Stats::get(&agent.stats.samples_in) > before
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        Stats::get(&agent.stats.samples_in),
        before + 1,
        "only the marker: the removed topics are unsubscribed"
    );
    agent.shutdown(Duration::from_secs(1)).await;
}
