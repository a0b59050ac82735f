use super::*;
use crate::clock::SyncState;
use pdtf_models::Gap;

fn pipeline(dir: &std::path::Path) -> LinePipeline {
    let journal = Arc::new(crate::journal::RedbJournal::open(dir).unwrap());
    LinePipeline::new(
        LineTwin::new(2),
        Vec::new(),
        Vec::new(),
        journal,
        None,
        watch::channel(0).0,
        Arc::new(Stats::default()),
        FullPolicy::StopSamples,
    )
}

fn audits(p: &LinePipeline) -> Vec<(String, String)> {
    p.journal
        .read_from(Seq(1), usize::MAX)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.body {
            RecordBody::Audit(a) => Some((a.event, a.detail)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn an_unsynchronised_host_clock_is_recorded_at_the_first_tick_and_its_return_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path());
    p.clocks.read_sync = || {
        Some(SyncState {
            synchronized: false,
            max_error_us: 16_000_000,
        })
    };
    p.control(Control::Tick).await;
    p.control(Control::Tick).await;
    assert_eq!(Stats::get(&p.stats.clock_synchronized), 0);
    p.clocks.read_sync = || {
        Some(SyncState {
            synchronized: true,
            max_error_us: 30,
        })
    };
    p.control(Control::Tick).await;
    assert_eq!(Stats::get(&p.stats.clock_synchronized), 1);
    let events: Vec<String> = audits(&p).into_iter().map(|(e, _)| e).collect();
    assert_eq!(events, vec!["clock_unsynchronized", "clock_synchronized"]);
}

#[tokio::test]
async fn a_crash_while_over_quota_leaves_each_lines_refused_count_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path());
    // A second line on the same journal, with its own cursors: the counts never mix.
    let mut q = LinePipeline::new(
        LineTwin::new(3),
        Vec::new(),
        Vec::new(),
        p.journal.clone(),
        None,
        p.committed.clone(),
        p.stats.clone(),
        FullPolicy::StopSamples,
    );
    q.primary = false;
    q.refused_cursors = refusal_cursors(1, "coating");
    Stats::set_flag(&p.stats.store_full, true);
    let t = now();
    for (line, tag, n) in [(&mut p, TagId(1), 7), (&mut q, TagId(2), 3)] {
        let samples: Vec<Sample> = (0..n)
            .map(|i| Sample::new(tag, f64::from(i), pdtf_models::Quality::Good, None, t))
            .collect();
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        line.track_full(&mut out);
        line.apply(SourceMsg::Samples(samples), &mut out, &mut scratch)
            .await;
        line.commit(out).await;
        line.control(Control::Tick).await;
    }
    let last = p.journal.last_seq().unwrap().0;
    drop((p, q)); // the crash: no end of the spans, no stop record
    let j = crate::journal::RedbJournal::open(dir.path()).unwrap();
    let refusals = vec![
        (refusal_cursors(0, "granulation"), vec![TagId(1)]),
        (refusal_cursors(1, "coating"), vec![TagId(2)]),
    ];
    let records =
        crate::startup::startup_records(&j, last, &[TagId(1)], &refusals, "x".into()).unwrap();
    let gaps: Vec<Gap> = records
        .iter()
        .filter_map(|e| match &e.body {
            RecordBody::Gap(g) if g.source == "journal" => Some(g.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(gaps.len(), 2, "one refused span per line: {gaps:?}");
    assert!(
        gaps[0].reason.contains("at least 7 samples"),
        "{}",
        gaps[0].reason
    );
    assert_eq!(gaps[0].tags, vec![TagId(1)]);
    assert!(
        gaps[1].reason.contains("at least 3 samples"),
        "{}",
        gaps[1].reason
    );
    assert_eq!(gaps[1].tags, vec![TagId(2)]);
    assert!(gaps.iter().all(|g| g.start <= g.end));
    assert!(records
        .iter()
        .any(|e| matches!(&e.body, RecordBody::Audit(a) if a.event == "storage_full_at_crash")));
    j.append(records).unwrap();
    crate::startup::clear_refusal_cursors(&j, refusals.iter().map(|(c, _)| c)).unwrap();
    let again =
        crate::startup::startup_records(&j, last, &[TagId(1)], &refusals, "x".into()).unwrap();
    assert!(!again
        .iter()
        .any(|e| matches!(&e.body, RecordBody::Gap(g) if g.source == "journal")));
}

/// A line with a batch twin (one recipe, two phases) and a high limit on tag 0.
fn batch_pipeline(dir: &std::path::Path) -> (LinePipeline, mpsc::Receiver<crate::batch::Reply>) {
    use pdtf_models::batch::BatchTwin;
    use pdtf_models::detect::LimitDetector;
    use pdtf_models::LimitSpec;
    let mut p = pipeline(dir);
    p.line = "gran1".into();
    let hi = LimitSpec {
        lolo: None,
        lo: None,
        hi: Some(80.0),
        hihi: None,
        deadband: 0.0,
        on_delay_ms: 0,
    };
    p.detectors = vec![Box::new(LimitDetector::new(vec![Some(hi), None]))];
    let (tx, rx) = mpsc::channel(8);
    p.batch = Some(crate::batch::LineBatch {
        twin: BatchTwin::new("gran1", true),
        recipes: vec![crate::batch::test_recipe(1, &["preheat", "spraying"])],
        policy: Default::default(),
        seen: Default::default(),
        tags: Default::default(),
        reply_prefix: "pdtf/s/a/gran1/cmd/reply".into(),
        state_topic: "pdtf/s/a/gran1/batch".into(),
        replies: Some(tx),
        snap: crate::batch::Snapshots::new("gran1", std::time::Duration::from_secs(60)),
        live: None,
        feed: Default::default(),
    });
    (p, rx)
}

/// Tag 0 takes `value` now; returns the entries the pipeline made of it (not committed).
async fn feed(p: &mut LinePipeline, value: f64) -> Vec<Entry> {
    let s = Sample::new(TagId(0), value, pdtf_models::Quality::Good, None, now());
    let mut out = Vec::new();
    p.apply(SourceMsg::Samples(vec![s]), &mut out, &mut Vec::new())
        .await;
    out
}

fn command(json: &str) -> Control {
    Control::BatchCommand {
        topic: "pdtf/s/a/gran1/cmd/batch".into(),
        payload: json.as_bytes().to_vec(),
    }
}

#[tokio::test]
async fn a_batch_command_is_committed_before_it_applies_and_is_answered_once_applied_once() {
    use pdtf_models::batch::{BatchChange, ProcState};
    use pdtf_models::command::CommandOutcome;
    let dir = tempfile::tempdir().unwrap();
    let (mut p, mut replies) = batch_pipeline(dir.path());
    let start = r#"{"request_id":"r-1","user":"alice","reason":"go","command":"start","batch_id":"B-1","recipe":"gran"}"#;
    p.control(command(start)).await;
    let (topic, body) = replies.try_recv().expect("answered");
    assert_eq!(topic, "pdtf/s/a/gran1/cmd/reply/r-1");
    let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["accepted"], true);
    let records = p.journal.read_from(Seq(1), usize::MAX).unwrap();
    // In one commit: the snapshot of the batch state it leads to (restored after a crash),
    // the command record, then its batch events.
    assert!(
        matches!(&records[0].body, RecordBody::BatchSnapshot(s) if s.twin.batch_id() == Some("B-1"))
    );
    assert!(
        matches!(&records[1].body, RecordBody::Command(c) if c.outcome == CommandOutcome::Accepted)
    );
    assert_eq!(reply["seq"].as_u64(), Some(records[1].seq.0));
    assert!(
        matches!(&records[2].body, RecordBody::Batch(e) if matches!(e.change, BatchChange::Started { .. }))
    );
    assert_eq!(p.twin.batch_id(), Some("B-1"));
    assert_eq!(p.twin.phase(), Some("preheat"));

    // The QoS 1 redelivery: recorded, answered as the first, no second batch.
    p.control(command(start)).await;
    let (_, body) = replies.try_recv().expect("answered again");
    let again: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (again["duplicate"].as_bool(), again["seq"].as_u64()),
        (Some(true), Some(records[1].seq.0))
    );
    // An illegal command: recorded with the reason, answered, nothing changes.
    p.control(command(
        r#"{"request_id":"r-2","user":"bob","reason":"x","command":"restart"}"#,
    ))
    .await;
    let (_, body) = replies.try_recv().unwrap();
    let refused: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(refused["accepted"], false);
    assert!(refused["reason"]
        .as_str()
        .unwrap()
        .contains("accepted only in held"));
    assert_eq!(p.batch.as_ref().unwrap().twin.state, ProcState::Running);
    // Random bytes: recorded as refused, never answered (no request id), never a panic.
    p.control(command("\u{1}\u{2}garbage")).await;
    assert!(replies.try_recv().is_err());

    // An alarm inside the batch is counted in the phase (once: the second value is no raise).
    feed(&mut p, 95.0).await;
    feed(&mut p, 96.0).await;
    let records = p.journal.read_from(Seq(1), usize::MAX).unwrap();
    let starts = records
        .iter()
        .filter(|r| matches!(&r.body, RecordBody::Batch(e) if matches!(e.change, BatchChange::Started { .. })))
        .count();
    assert_eq!(starts, 1, "the duplicate started nothing");
    let outcomes: Vec<&CommandOutcome> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Command(c) => Some(&c.outcome),
            _ => None,
        })
        .collect();
    assert_eq!(outcomes.len(), 4, "every command is a record");
    assert!(matches!(outcomes[1], CommandOutcome::Duplicate { .. }));
    assert!(matches!(outcomes[3], CommandOutcome::Refused(r) if r.contains("not JSON")));
    let b = p.batch.as_ref().unwrap().twin.batch.as_ref().unwrap();
    assert_eq!(b.phases[0].alarms, 1, "one raise, counted in preheat");
}

#[tokio::test]
async fn an_alarm_record_carries_the_batch_context() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, _replies) = batch_pipeline(dir.path());
    p.control(command(r#"{"request_id":"r-1","user":"alice","reason":"go","command":"start","batch_id":"B-7","recipe":"gran"}"#)).await;
    p.control(command(
        r#"{"request_id":"r-2","user":"alice","reason":"next","command":"phase"}"#,
    ))
    .await;
    let out = feed(&mut p, 95.0).await;
    p.commit(out).await;
    let alarm = p
        .journal
        .read_from(Seq(1), usize::MAX)
        .unwrap()
        .into_iter()
        .find_map(|r| match r.body {
            RecordBody::Alarm(a) => Some(a),
            _ => None,
        })
        .expect("the limit alarm");
    assert_eq!(
        (alarm.batch_id.as_deref(), alarm.phase.as_deref()),
        (Some("B-7"), Some("spraying"))
    );
}

#[tokio::test]
async fn the_tick_writes_snapshot_cursors_and_snapshots_an_open_batch_with_its_window() {
    use crate::batch::restore;
    let dir = tempfile::tempdir().unwrap();
    let (mut p, _replies) = batch_pipeline(dir.path());
    let (snap, through) = restore::cursors("gran1");
    let spec = pdtf_models::batch::TrajectorySpec {
        resolution_ms: 1000,
        max_points: 100,
        max_phases: 4,
    };
    p.batch.as_mut().unwrap().feed =
        crate::batch::feed::Feed::new(vec![("gran".into(), spec, vec![TagId(0)])]);
    p.control(command(r#"{"request_id":"r-1","user":"alice","reason":"go","command":"start","batch_id":"B-1","recipe":"gran"}"#)).await;
    assert_eq!(
        p.journal.cursor(&snap).unwrap(),
        Seq(0),
        "not before the tick"
    );
    p.control(Control::Tick).await;
    let first = p.journal.cursor(&snap).unwrap();
    assert!(matches!(
        &p.journal.read_from(first, 1).unwrap()[0].body,
        RecordBody::BatchSnapshot(s) if s.requests.is_empty()
    ));
    assert_eq!(p.journal.cursor(&through).unwrap(), first);

    // Due: the open batch is snapshotted with the request it answered since.
    p.batch.as_mut().unwrap().snap.every = std::time::Duration::ZERO;
    p.control(Control::Tick).await;
    let second = p.journal.cursor(&snap).unwrap();
    assert!(second > first);
    let RecordBody::BatchSnapshot(s) = &p.journal.read_from(second, 1).unwrap()[0].body else {
        panic!("the cursor names a snapshot");
    };
    assert_eq!(
        s.requests
            .iter()
            .map(|r| r.request_id.as_str())
            .collect::<Vec<_>>(),
        ["r-1"]
    );
    // A value of the trajectory tag lands in the batch's trajectories; the next periodic
    // snapshot holds them, and its own cursor names it.
    feed(&mut p, 42.0).await;
    p.control(Control::Tick).await;
    let with = p
        .journal
        .cursor(&restore::trajectory_cursor("gran1"))
        .unwrap();
    let RecordBody::BatchSnapshot(s) = &p.journal.read_from(with, 1).unwrap()[0].body else {
        panic!("the trajectory cursor names a snapshot");
    };
    let t = s
        .trajectories
        .as_ref()
        .expect("trajectories in the periodic snapshot");
    assert_eq!(t.phases[0].phase, "preheat");
    assert_eq!(t.phases[0].series(0)[0].last, 42.0);

    // After the batch is reset the idle line writes no more snapshots; `through` moves on.
    for (id, c) in [("r-2", "stop"), ("r-3", "reset")] {
        let json =
            format!(r#"{{"request_id":"{id}","user":"alice","reason":"x","command":"{c}"}}"#);
        p.control(command(&json)).await;
    }
    p.control(Control::Tick).await; // the window changed: one more snapshot
    let third = p.journal.cursor(&snap).unwrap();
    p.audit("marker", String::new()).await;
    p.control(Control::Tick).await;
    assert_eq!(p.journal.cursor(&snap).unwrap(), third, "no new snapshot");
    assert_eq!(
        p.journal.cursor(&through).unwrap(),
        p.journal.last_seq().unwrap(),
        "an idle line's records need no scan"
    );
}
