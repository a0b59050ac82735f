use super::*;
use crate::batch::recipe::{MaterialPlan, QualitySpec, RecipePhase};
use crate::batch::record::RecipeRef;
use crate::TagId;

fn at(s: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_700_000_000_000 + s * 1_000)
}

fn recipe() -> Recipe {
    let phase = |name: &str, lo, hi| RecipePhase {
        name: name.into(),
        min_duration_s: lo,
        max_duration_s: hi,
    };
    Recipe {
        reference: RecipeRef {
            id: "gran".into(),
            version: 2,
            product: "Granulate".into(),
            product_code: "G-1".into(),
        },
        phases: vec![
            phase("preheat", Some(60), Some(120)),
            phase("spraying", Some(100), None),
            phase("drying", None, Some(50)),
        ],
        materials: vec![MaterialPlan {
            material: "API".into(),
            planned: 50.0,
            unit: "kg".into(),
            tolerance_pct: 2.0,
        }],
        quality: vec![QualitySpec {
            name: "lod".into(),
            unit: "%".into(),
            lo: Some(1.0),
            hi: Some(3.0),
            tag: Some(TagId(4)),
        }],
    }
}

fn cmd(id: &str) -> Actor {
    Actor::Command {
        request_id: id.into(),
        user: "alice".into(),
    }
}

/// Applies an accepted plan and returns its events.
fn apply(
    t: &mut BatchTwin,
    op: impl FnOnce(&BatchTwin) -> Result<Plan, String>,
) -> Vec<BatchEvent> {
    let plan = op(t).unwrap_or_else(|e| panic!("refused: {e}"));
    *t = plan.next;
    plan.events
}

fn changes(events: &[BatchEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match &e.change {
            BatchChange::Started { .. } => "started".to_owned(),
            BatchChange::State { from, .. } => format!("{}->{}", from.name(), e.state.name()),
            BatchChange::Phase { .. } => format!("phase {}", e.phase.as_deref().unwrap_or("-")),
            BatchChange::Material(_) => "material".into(),
            BatchChange::Comment(_) => "comment".into(),
            BatchChange::Downtime { .. } => "downtime".into(),
            BatchChange::Ended(s) => format!("ended {}", s.outcome.name()),
        })
        .collect()
}

#[test]
fn a_command_driven_batch_runs_its_phases_to_complete_with_a_summary() {
    let mut t = BatchTwin::new("gran1", true);
    let ev = apply(&mut t, |t| {
        t.start("B-1", &recipe(), at(0), cmd("r1"), true)
    });
    assert_eq!(changes(&ev), ["started", "phase preheat"]);
    assert_eq!((t.batch_id(), t.phase()), (Some("B-1"), Some("preheat")));
    assert!(ev.iter().all(|e| e.line == "gran1" && e.batch_id == "B-1"));
    t.alarm_raised();
    let ev = apply(&mut t, |t| t.phase_to(None, at(90), cmd("r2")));
    assert_eq!(changes(&ev), ["phase spraying"]);
    assert!(matches!(&ev[0].change, BatchChange::Phase { from: Some(f) } if f == "preheat"));
    // Hold and restart inside spraying: Holding and Held at once (no state tag).
    let ev = apply(&mut t, |t| t.command(ProcCommand::Hold, at(100), cmd("r3")));
    assert_eq!(changes(&ev), ["running->holding", "holding->held"]);
    let ev = apply(&mut t, |t| {
        t.command(ProcCommand::Restart, at(130), cmd("r4"))
    });
    assert_eq!(changes(&ev), ["held->restarting", "restarting->running"]);
    let charge = Charge {
        material: "API".into(),
        lot: "L-7".into(),
        quantity: 50.5,
        unit: "kg".into(),
    };
    apply(&mut t, |t| t.material(charge, at(140), cmd("r5")));
    t.alarm_raised();
    t.alarm_raised();
    apply(&mut t, |t| t.phase_to(Some("drying"), at(250), cmd("r6")));
    t.quality_value(0, 2.2);
    let ev = apply(&mut t, |t| t.phase_to(None, at(320), cmd("r7")));
    assert_eq!(changes(&ev), ["running->complete", "ended complete"]);
    assert_eq!(t.phase(), None, "the last phase closed with the batch");
    let BatchChange::Ended(s) = &ev[1].change else {
        unreachable!()
    };
    let durations: Vec<(&str, u64, u64, bool, u32)> = s
        .phases
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.duration_ms,
                p.held_ms,
                p.within_expected,
                p.alarms,
            )
        })
        .collect();
    assert_eq!(
        durations,
        [
            ("preheat", 90_000, 0, true, 1),
            // 160 s in the phase, 30 s of it held: 130 s running, >= 100 s expected.
            ("spraying", 130_000, 30_000, true, 2),
            // 70 s against at most 50 s.
            ("drying", 70_000, 0, false, 0),
        ]
    );
    assert_eq!(s.materials[0].charged, 50.5);
    assert!(s.materials[0].within_tolerance, "50.5 of 50 +- 2 %");
    assert_eq!(s.quality[0].within_spec, Some(true));
    assert_eq!(
        (s.started, s.ended, s.outcome),
        (at(0), at(320), ProcState::Complete)
    );
    // Ended: further changes are refused, a reset clears the line.
    assert!(t
        .material(
            Charge {
                material: "API".into(),
                lot: "L-8".into(),
                quantity: 1.0,
                unit: "kg".into()
            },
            at(330),
            cmd("r8")
        )
        .unwrap_err()
        .contains("has ended"));
    let ev = apply(&mut t, |t| {
        t.command(ProcCommand::Reset, at(340), cmd("r9"))
    });
    assert_eq!(changes(&ev), ["complete->idle"]);
    assert_eq!(ev[0].batch_id, "B-1", "the reset names the batch it clears");
    assert_eq!((t.state, t.batch_id()), (ProcState::Idle, None));
}

#[test]
fn refusals_change_nothing_and_say_why() {
    let mut t = BatchTwin::new("l", true);
    let before = t.clone();
    assert!(t
        .command(ProcCommand::Hold, at(0), cmd("a"))
        .unwrap_err()
        .contains("needs a batch"));
    assert!(t.phase_to(None, at(0), cmd("a")).is_err());
    assert!(t.start(" ", &recipe(), at(0), cmd("a"), true).is_err());
    assert_eq!(t, before);
    apply(&mut t, |t| {
        t.start("B-1", &recipe(), at(0), cmd("a"), false)
    });
    let e = t
        .command(ProcCommand::Restart, at(1), cmd("b"))
        .unwrap_err();
    assert_eq!(
        e,
        "restart is not accepted while the batch is running; it is accepted only in held"
    );
    let e = t
        .start("B-2", &recipe(), at(1), cmd("c"), true)
        .unwrap_err();
    assert!(
        e.starts_with("start is not accepted while the batch is running"),
        "{e}"
    );
    let e = t.phase_to(Some("coating"), at(1), cmd("d")).unwrap_err();
    assert_eq!(
        e,
        "recipe \"gran\" has no phase \"coating\" (phases: preheat, spraying, drying)"
    );
    apply(&mut t, |t| t.command(ProcCommand::Hold, at(2), cmd("e")));
    let e = t.phase_to(None, at(3), cmd("f")).unwrap_err();
    assert!(e.contains("only while the batch is running"), "{e}");
    let bad = Charge {
        material: "API".into(),
        lot: "L".into(),
        quantity: -1.0,
        unit: "kg".into(),
    };
    assert!(t.material(bad, at(3), cmd("g")).is_err());
}

#[test]
fn stop_and_abort_end_the_batch_with_their_outcome() {
    for (c, steps, outcome) in [
        (
            ProcCommand::Stop,
            ["running->stopping", "stopping->stopped"],
            ProcState::Stopped,
        ),
        (
            ProcCommand::Abort,
            ["running->aborting", "aborting->aborted"],
            ProcState::Aborted,
        ),
    ] {
        let mut t = BatchTwin::new("l", true);
        apply(&mut t, |t| t.start("B", &recipe(), at(0), cmd("a"), true));
        let ev = apply(&mut t, |t| t.command(c, at(10), cmd("b")));
        let want: Vec<String> = steps
            .iter()
            .map(|s| s.to_string())
            .chain([format!("ended {}", outcome.name())])
            .collect();
        assert_eq!(changes(&ev), want);
        assert_eq!(t.summary().unwrap().phases[0].end, at(10));
    }
}

#[test]
fn with_a_state_tag_the_equipment_completes_transient_states() {
    let mut t = BatchTwin::new("l", false);
    let tag = Actor::Tag(TagId(2));
    apply(&mut t, |t| {
        t.start("B", &recipe(), at(0), tag.clone(), false)
    });
    assert_eq!(t.phase(), None, "tag-driven: the phase tag starts phases");
    apply(&mut t, |t| t.command(ProcCommand::Hold, at(5), cmd("h")));
    assert_eq!(
        t.state,
        ProcState::Holding,
        "the equipment has not said Held yet"
    );
    let ev = apply(&mut t, |t| t.complete(at(6), tag.clone()));
    assert_eq!(changes(&ev), ["holding->held"]);
    // The state tag jumps from Held to Running: by the table, Restart then completion.
    let ev = apply(&mut t, |t| {
        t.follow_state(ProcState::Running, at(9), tag.clone())
    });
    assert_eq!(changes(&ev), ["held->restarting", "restarting->running"]);
    assert!(ev.iter().all(|e| matches!(
        e.change,
        BatchChange::State {
            irregular: false,
            ..
        }
    )));
    // Aborted reported straight from Running: Abort, then Aborting completes.
    let ev = apply(&mut t, |t| {
        t.follow_state(ProcState::Aborted, at(12), tag.clone())
    });
    assert_eq!(
        changes(&ev),
        ["running->aborting", "aborting->aborted", "ended aborted"]
    );
    // A new batch id from the equipment resets the ended batch implicitly.
    let ev = apply(&mut t, |t| {
        t.start("B2", &recipe(), at(20), tag.clone(), false)
    });
    assert_eq!(changes(&ev), ["aborted->idle", "started"]);
    assert_eq!(ev[0].batch_id, "B");
    assert_eq!(ev[1].batch_id, "B2");
}

#[test]
fn a_state_the_table_cannot_reach_is_followed_and_marked_irregular() {
    let mut t = BatchTwin::new("l", false);
    let tag = Actor::Tag(TagId(2));
    apply(&mut t, |t| {
        t.start("B", &recipe(), at(0), tag.clone(), false)
    });
    apply(&mut t, |t| {
        t.follow_state(ProcState::Aborted, at(1), tag.clone())
    });
    // Aborted -> Complete: no path without Reset and Start.
    let ev = apply(&mut t, |t| t.follow_state(ProcState::Complete, at(2), tag));
    assert!(matches!(
        ev[0].change,
        BatchChange::State {
            from: ProcState::Aborted,
            irregular: true,
            ..
        }
    ));
    assert_eq!(t.state, ProcState::Complete);
}

#[test]
fn a_tag_driven_phase_change_is_followed_while_held_and_keeps_held_time_apart() {
    let mut t = BatchTwin::new("l", false);
    let tag = Actor::Tag(TagId(3));
    apply(&mut t, |t| {
        t.start("B", &recipe(), at(0), tag.clone(), false)
    });
    apply(&mut t, |t| t.phase_to(Some("preheat"), at(0), tag.clone()));
    apply(&mut t, |t| {
        t.follow_state(ProcState::Held, at(10), tag.clone())
    });
    apply(&mut t, |t| {
        t.phase_to(Some("spraying"), at(40), tag.clone())
    });
    apply(&mut t, |t| {
        t.follow_state(ProcState::Running, at(50), tag.clone())
    });
    let b = t.batch.as_ref().unwrap();
    assert_eq!((b.phases[0].held_ms, b.phases[1].held_ms), (30_000, 10_000));
    // A command may not change the phase outside Running; the equipment may.
    apply(&mut t, |t| t.command(ProcCommand::Hold, at(60), cmd("h")));
    assert!(t.phase_to(Some("drying"), at(61), cmd("p")).is_err());
    assert!(t.phase_to(Some("drying"), at(61), tag).is_ok());
}

#[test]
fn reconciliation_flags_unplanned_materials_wrong_units_and_out_of_tolerance() {
    let mut t = BatchTwin::new("l", true);
    apply(&mut t, |t| t.start("B", &recipe(), at(0), cmd("a"), true));
    for (m, q, u, lot) in [
        ("API", 30.0, "kg", "L1"),
        ("API", 18.0, "kg", "L2"),
        ("Talc", 1.0, "kg", "T1"),
    ] {
        let c = Charge {
            material: m.into(),
            lot: lot.into(),
            quantity: q,
            unit: u.into(),
        };
        apply(&mut t, |t| t.material(c, at(1), cmd(lot)));
    }
    apply(&mut t, |t| t.command(ProcCommand::Stop, at(5), cmd("s")));
    let s = t.summary().unwrap();
    let api = &s.materials[0];
    assert_eq!(
        (api.charged, api.within_tolerance),
        (48.0, false),
        "48 of 50 +- 1"
    );
    assert_eq!(api.lots, ["L1", "L2"]);
    let talc = &s.materials[1];
    assert_eq!((talc.planned, talc.within_tolerance), (None, false));
    assert_eq!(s.quality[0].within_spec, None, "no value, no verdict");

    let mut t = BatchTwin::new("l", true);
    apply(&mut t, |t| t.start("B", &recipe(), at(0), cmd("a"), true));
    let grams = Charge {
        material: "API".into(),
        lot: "L".into(),
        quantity: 50_000.0,
        unit: "g".into(),
    };
    apply(&mut t, |t| t.material(grams, at(1), cmd("g")));
    apply(&mut t, |t| t.command(ProcCommand::Stop, at(5), cmd("s")));
    let api = &t.summary().unwrap().materials[0];
    assert_eq!(
        (api.charged, api.within_tolerance),
        (0.0, false),
        "another unit is not added"
    );
}

#[test]
fn downtime_inside_a_batch_is_an_event_and_counted() {
    let mut t = BatchTwin::new("l", true);
    assert!(t.downtime(at(0), at(5)).is_none(), "no batch, no batch gap");
    apply(&mut t, |t| t.start("B", &recipe(), at(0), cmd("a"), true));
    let plan = t.downtime(at(10), at(40)).unwrap();
    assert_eq!(changes(&plan.events), ["downtime"]);
    assert!(matches!(plan.events[0].by, Actor::Agent));
    t = plan.next;
    apply(&mut t, |t| t.command(ProcCommand::Stop, at(50), cmd("s")));
    assert_eq!(t.summary().unwrap().downtime_ms, 30_000);
}

#[test]
fn the_twin_round_trips_through_its_stored_form() {
    let mut t = BatchTwin::new("l", true);
    apply(&mut t, |t| t.start("B", &recipe(), at(0), cmd("a"), true));
    apply(&mut t, |t| t.command(ProcCommand::Hold, at(3), cmd("b")));
    let cfg = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(&t, cfg).unwrap();
    let (back, _): (BatchTwin, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
    assert_eq!(back, t);
    // Held time keeps counting across the round trip.
    let mut back = back;
    apply(&mut back, |back| {
        back.command(ProcCommand::Restart, at(13), cmd("c"))
    });
    assert_eq!(back.batch.unwrap().phases[0].held_ms, 10_000);
}
