use super::super::{cursors_after_start, prepare};
use super::*;
use crate::config::{test_config, Engine};
use pdtf_models::batch::{Actor, BatchChange, ProcState};
use pdtf_models::command::CommandRecord;
use pdtf_models::record::Audit;
use pdtf_models::Entry;

const BATCH: &str = r#"
[sinks.alerts]
broker = "b"
[batch]
commands = true
[[recipes]]
id = "gran"
version = 1
product = "G"
product_code = "G1"
[[recipes.phases]]
name = "preheat"
[[recipes.phases]]
name = "spraying"
"#;

fn t(s: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_800_000_000_000 + s * 1000)
}

fn command(line: &str, id: &str, outcome: CommandOutcome) -> RecordBody {
    RecordBody::Command(Box::new(CommandRecord {
        line: line.into(),
        topic: format!("p/{line}/cmd/batch"),
        command: Some("start".into()),
        request_id: Some(id.into()),
        user: Some("alice".into()),
        reason: Some("test".into()),
        signature: None,
        payload: "{}".into(),
        outcome,
    }))
}

fn entries(at: Timestamp, bodies: Vec<RecordBody>) -> Vec<Entry> {
    bodies
        .into_iter()
        .map(|body| Entry { time: at, body })
        .collect()
}

#[test]
fn a_start_restores_the_open_batch_and_its_window_from_one_snapshot_and_a_short_scan() {
    let dir = tempfile::tempdir().unwrap();
    let j = crate::journal::open(Engine::Redb, dir.path()).unwrap();
    let c = test_config("", BATCH);
    let ids = |_: &str| None;

    // A first start: nothing to restore; the start's commit moves `through`.
    let (lines, out) = prepare(&c, &ids, j.as_ref(), 0, t(0)).unwrap();
    assert!(out.is_empty(), "nothing restored, nothing recorded");
    let opened = j
        .append(entries(
            t(0),
            vec![RecordBody::Audit(Audit {
                event: "agent_start".into(),
                detail: String::new(),
            })],
        ))
        .unwrap();
    cursors_after_start(j.as_ref(), &lines, &opened, 1).unwrap();
    let b = lines[0].as_ref().expect("the line tracks batches");
    assert_eq!(b.twin.state, ProcState::Idle);

    // The pipeline starts a batch (snapshot first, then the command and its events) and
    // answers a refused command; the agent dies before any cursor moves. Another line's
    // command is not this line's.
    let plan = b
        .twin
        .start("B-1", &b.recipes[0], t(1), Actor::Agent, true)
        .unwrap();
    let mut bodies = vec![
        snapshot(&plan.next, &b.seen, None, t(1)),
        command("l", "r-1", CommandOutcome::Accepted),
    ];
    bodies.extend(
        plan.events
            .iter()
            .map(|e| RecordBody::Batch(Box::new(e.clone()))),
    );
    let first = j.append(entries(t(1), bodies)).unwrap();
    let refused = j
        .append(entries(
            t(2),
            vec![
                command("l", "r-2", CommandOutcome::Refused("no".into())),
                command("other", "r-x", CommandOutcome::Accepted),
            ],
        ))
        .unwrap();
    let last = refused.last().unwrap().seq.0;

    let (lines, out) = prepare(&c, &ids, j.as_ref(), last, t(100)).unwrap();
    let b = lines[0].as_ref().unwrap();
    assert_eq!(
        (b.twin.batch_id(), b.twin.state, b.twin.phase()),
        (Some("B-1"), ProcState::Running, Some("preheat"))
    );
    assert_eq!(
        b.seen.get("r-1").map(|s| s.seq),
        Some(first[1].seq.0),
        "an accepted request keeps the seq of its record"
    );
    assert_eq!(
        b.seen.get("r-2").and_then(|s| s.refused.clone()),
        Some("no".into())
    );
    assert!(b.seen.get("r-x").is_none(), "another line's request");
    // The downtime: from the journal's last record to now, inside the batch.
    let downtime: Vec<_> = out
        .iter()
        .filter_map(|e| match &e.body {
            RecordBody::Batch(ev) => match ev.change {
                BatchChange::Downtime { from, to } => Some((from, to)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(downtime, [(t(2), t(100))]);
    assert_eq!(b.twin.batch.as_ref().unwrap().downtime_ms, 98_000);
    assert!(matches!(
        out.last().map(|e| &e.body),
        Some(RecordBody::BatchSnapshot(_))
    ));

    // The start's commit holds the fresh snapshot: the next start reads it and scans nothing.
    let opened = j.append(out).unwrap();
    let last = opened.last().unwrap().seq.0;
    cursors_after_start(j.as_ref(), &lines, &opened, last).unwrap();
    let found = find(j.as_ref(), "l", last).unwrap();
    assert_eq!(
        found.scanned, 0,
        "the snapshot is the journal's last record"
    );
    assert_eq!(found.seen.len(), 2);
    let twin = found.snapshot.unwrap().twin;
    assert_eq!(twin.batch.as_ref().unwrap().downtime_ms, 98_000);

    // A newer snapshot whose cursor was never written (a crash right after its commit) is
    // found by the scan and wins.
    let mut held = twin.clone();
    held.state = ProcState::Held;
    j.append(entries(
        t(101),
        vec![snapshot(&held, &RequestWindow::default(), None, t(101))],
    ))
    .unwrap();
    let found = find(j.as_ref(), "l", last + 1).unwrap();
    assert_eq!(found.scanned, 1);
    assert_eq!(found.snapshot.unwrap().twin.state, ProcState::Held);
}

#[test]
fn a_journal_without_cursors_starts_the_line_idle_without_reading_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let j = crate::journal::open(Engine::Redb, dir.path()).unwrap();
    let c = test_config("", BATCH);
    let twin = pdtf_models::batch::BatchTwin::new("l", true);
    let recs = j
        .append(entries(
            t(0),
            vec![snapshot(&twin, &RequestWindow::default(), None, t(0))],
        ))
        .unwrap();
    let (lines, out) = prepare(&c, &|_| None, j.as_ref(), recs[0].seq.0, t(5)).unwrap();
    assert!(out.is_empty());
    assert!(lines[0].as_ref().unwrap().seen.is_empty());
    assert_eq!(find(j.as_ref(), "l", recs[0].seq.0).unwrap().scanned, 0);
}

#[test]
fn trajectories_come_back_from_the_latest_periodic_snapshot_of_the_same_batch() {
    use pdtf_models::batch::{Trajectories, TrajectorySpec};
    let dir = tempfile::tempdir().unwrap();
    let j = crate::journal::open(Engine::Redb, dir.path()).unwrap();
    let recipe = crate::batch::test_recipe(1, &["a", "b"]);
    let running = pdtf_models::batch::BatchTwin::new("l", true)
        .start("B-1", &recipe, t(0), Actor::Agent, true)
        .unwrap()
        .next;
    let spec = TrajectorySpec {
        resolution_ms: 1000,
        max_points: 10,
        max_phases: 4,
    };
    let mut traj = Trajectories::new(spec, &[pdtf_models::TagId(0)]);
    traj.begin_phase("a", t(0));
    traj.add(&pdtf_models::Sample::new(
        pdtf_models::TagId(0),
        7.0,
        pdtf_models::Quality::Good,
        None,
        t(1),
    ));
    let w = RequestWindow::default();
    // A periodic snapshot (with trajectories), then an event snapshot (without).
    let periodic = j
        .append(entries(
            t(1),
            vec![snapshot(&running, &w, Some(&traj), t(1))],
        ))
        .unwrap();
    let next = running.phase_to(None, t(2), Actor::Agent).unwrap().next;
    let event = j
        .append(entries(t(2), vec![snapshot(&next, &w, None, t(2))]))
        .unwrap();
    let (snap, through) = cursors("l");
    j.set_cursor(&snap, event[0].seq).unwrap();
    j.set_cursor(&through, event[0].seq).unwrap();
    j.set_cursor(&trajectory_cursor("l"), periodic[0].seq)
        .unwrap();
    let found = find(j.as_ref(), "l", event[0].seq.0).unwrap();
    assert_eq!(found.trajectories.as_ref(), Some(&traj));
    assert!(
        found.snapshot.as_ref().unwrap().trajectories.is_none(),
        "kept once, in `trajectories`"
    );

    // Another batch's trajectories are not this one's.
    let other = pdtf_models::batch::BatchTwin::new("l", true)
        .start("B-2", &recipe, t(5), Actor::Agent, true)
        .unwrap()
        .next;
    let later = j
        .append(entries(t(5), vec![snapshot(&other, &w, None, t(5))]))
        .unwrap();
    let found = find(j.as_ref(), "l", later[0].seq.0).unwrap();
    assert_eq!(found.snapshot.unwrap().twin.batch_id(), Some("B-2"));
    assert!(found.trajectories.is_none());
}
