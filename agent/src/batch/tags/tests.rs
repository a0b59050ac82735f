use super::*;
use pdtf_models::batch::BatchEvent;
use pdtf_models::Timestamp;

const ID: TagId = TagId(0);
const PHASE: TagId = TagId(1);
const STATE: TagId = TagId(2);

fn recipes() -> Vec<Recipe> {
    vec![crate::batch::test_recipe(1, &["preheat", "spraying"])]
}

fn tags(with_state: bool) -> BatchTags {
    BatchTags {
        batch_id: Some(ID),
        phase: Some(PHASE),
        state: with_state.then_some(STATE),
        recipe: Some("gran".into()),
        phase_markers: vec![
            ("gran".into(), Marker::Number(1.0), "preheat".into()),
            (
                "gran".into(),
                Marker::Text("SPRAY".into()),
                "spraying".into(),
            ),
        ],
        state_values: vec![
            (Marker::Number(1.0), ProcState::Running),
            (Marker::Number(3.0), ProcState::Held),
        ],
        ..Default::default()
    }
}

fn sample(tag: TagId, value: Value, s: i64) -> Sample {
    let t = Timestamp::from_unix_millis(1_700_000_000_000 + s * 1_000);
    Sample {
        tag,
        value,
        quality: Quality::Good,
        status: 0,
        source_time: Some(t),
        server_time: None,
        agent_time: t,
    }
}

/// Feeds one value; applies a plan and returns its events (empty for nothing or a note).
fn feed(t: &mut BatchTags, twin: &mut BatchTwin, tag: TagId, v: Value, s: i64) -> TagOutcome {
    let out = t.on_sample(twin, &recipes(), &sample(tag, v, s));
    if let TagOutcome::Plan(p) = &out {
        twin.clone_from(&p.next);
    }
    out
}

fn events(o: &TagOutcome) -> Vec<&BatchEvent> {
    match o {
        TagOutcome::Plan(p) => p.events.iter().collect(),
        _ => vec![],
    }
}

#[test]
fn the_equipment_drives_batches_and_phases_by_its_tags() {
    let (mut t, mut twin) = (tags(false), BatchTwin::new("gran1", true));
    let o = feed(&mut t, &mut twin, ID, Value::Text("B-1".into()), 0);
    assert!(matches!(events(&o)[0].change, BatchChange::Started { .. }));
    assert!(matches!(events(&o)[0].by, Actor::Tag(ID)));
    assert_eq!((twin.batch_id(), twin.phase()), (Some("B-1"), None));
    feed(&mut t, &mut twin, PHASE, Value::Num(1.0), 1);
    assert_eq!(twin.phase(), Some("preheat"));
    // The same value again changes nothing; a text marker matches exactly.
    assert_eq!(
        feed(&mut t, &mut twin, PHASE, Value::Num(1.0), 2),
        TagOutcome::Nothing
    );
    feed(&mut t, &mut twin, PHASE, Value::Text("SPRAY".into()), 3);
    assert_eq!(twin.phase(), Some("spraying"));
    // An unmapped phase value: one note, then quiet until something else happens.
    let note = feed(&mut t, &mut twin, PHASE, Value::Num(7.0), 4);
    assert_eq!(
        note,
        TagOutcome::Note("phase tag value 7 marks no phase of recipe \"gran\"".into())
    );
    assert_eq!(
        feed(&mut t, &mut twin, PHASE, Value::Num(7.0), 5),
        TagOutcome::Nothing
    );
    // A new batch id: the open batch completes (with its summary), the new one starts.
    let o = feed(&mut t, &mut twin, ID, Value::Num(1002.0), 6);
    let kinds: Vec<&str> = events(&o)
        .iter()
        .map(|e| match &e.change {
            BatchChange::State { .. } => "state",
            BatchChange::Ended(_) => "ended",
            BatchChange::Started { .. } => "started",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["state", "ended", "state", "started"],
        "complete, summary, reset, start"
    );
    assert_eq!(twin.batch_id(), Some("1002"), "a numeric batch id as text");
    // An empty id ends the batch; a Bad value is ignored.
    let mut bad = sample(ID, Value::Text("B-9".into()), 7);
    bad.quality = Quality::Bad;
    assert_eq!(t.on_sample(&twin, &recipes(), &bad), TagOutcome::Nothing);
    feed(&mut t, &mut twin, ID, Value::Num(0.0), 8);
    assert_eq!(twin.state, ProcState::Complete, "0 is a PLC's no batch");
}

#[test]
fn with_a_state_tag_the_twin_follows_it_and_an_unannounced_end_is_irregular() {
    let (mut t, mut twin) = (tags(true), BatchTwin::new("gran1", false));
    feed(&mut t, &mut twin, ID, Value::Text("B-1".into()), 0);
    feed(&mut t, &mut twin, STATE, Value::Num(3.0), 1);
    assert_eq!(twin.state, ProcState::Held);
    feed(&mut t, &mut twin, STATE, Value::Num(1.0), 2);
    assert_eq!(twin.state, ProcState::Running);
    assert!(matches!(
        feed(&mut t, &mut twin, STATE, Value::Num(42.0), 3),
        TagOutcome::Note(n) if n == "state tag value 42 is in no state_values"
    ));
    let o = feed(&mut t, &mut twin, ID, Value::Text("B-2".into()), 4);
    let irregular = events(&o).iter().any(|e| {
        matches!(
            e.change,
            BatchChange::State {
                irregular: true,
                ..
            }
        )
    });
    assert!(
        irregular,
        "the id changed while the state tag still said running"
    );
    assert_eq!(twin.batch_id(), Some("B-2"));
}

#[test]
fn no_batch_on_the_tag_ends_only_a_batch_the_tag_named() {
    let mut t = tags(false);
    // An MES command started B-1; the PLC's first value (an OPC UA initial value) says "no
    // batch": B-1 goes on.
    let mut twin = BatchTwin::new("l", true)
        .start(
            "B-1",
            &recipes()[0],
            Timestamp::from_unix_millis(0),
            Actor::Agent,
            true,
        )
        .unwrap()
        .next;
    assert_eq!(
        feed(&mut t, &mut twin, ID, Value::Text(String::new()), 1),
        TagOutcome::Nothing
    );
    assert_eq!(twin.batch_id(), Some("B-1"));
    assert_eq!(twin.state, ProcState::Running);
    // The PLC names its own batch: B-1 ends, B-2 starts; its "no batch" then ends B-2.
    feed(&mut t, &mut twin, ID, Value::Text("B-2".into()), 2);
    assert_eq!(
        (twin.batch_id(), twin.state),
        (Some("B-2"), ProcState::Running)
    );
    let o = feed(&mut t, &mut twin, ID, Value::Num(0.0), 3);
    assert!(!events(&o).is_empty());
    assert_eq!(
        (twin.batch_id(), twin.state),
        (Some("B-2"), ProcState::Complete)
    );
}
