use super::*;
use crate::{Quality, TagId};

fn spec() -> LimitSpec {
    LimitSpec {
        lolo: Some(10.0),
        lo: Some(20.0),
        hi: Some(80.0),
        hihi: Some(90.0),
        deadband: 2.0,
        on_delay_ms: 0,
    }
}

fn sample(value: f64, ms: i64, quality: Quality) -> Sample {
    Sample::new(
        TagId(0),
        value,
        quality,
        None,
        Timestamp::from_unix_millis(ms),
    )
}

fn run(det: &mut LimitDetector, values: &[(f64, i64)]) -> Vec<AlarmState> {
    let twin = LineTwin::new(1);
    let mut out = Vec::new();
    for &(v, ms) in values {
        det.on_sample(&sample(v, ms, Quality::Good), &twin, &mut out);
    }
    out.into_iter()
        .map(|r| match r {
            RecordBody::Alarm(a) => a.state,
            other => panic!("unexpected record {other:?}"),
        })
        .collect()
}

#[test]
fn raises_escalates_and_clears_with_deadband() {
    let mut det = LimitDetector::new(vec![Some(spec())]);
    let states = run(
        &mut det,
        &[
            (50.0, 0),
            (81.0, 1),
            (79.0, 2),
            (91.0, 3),
            (89.0, 4),
            (87.9, 5),
            (77.9, 6),
        ],
    );
    assert_eq!(
        states,
        vec![
            AlarmState::Active(Level::Hi),
            AlarmState::Active(Level::HiHi),
            AlarmState::Active(Level::Hi),
            AlarmState::Inactive
        ]
    );
}

#[test]
fn low_side_mirrors_high_side() {
    let mut det = LimitDetector::new(vec![Some(spec())]);
    let states = run(
        &mut det,
        &[(19.0, 0), (9.0, 1), (11.0, 2), (12.5, 3), (22.5, 4)],
    );
    assert_eq!(
        states,
        vec![
            AlarmState::Active(Level::Lo),
            AlarmState::Active(Level::LoLo),
            AlarmState::Active(Level::Lo),
            AlarmState::Inactive
        ]
    );
}

#[test]
fn on_delay_filters_short_spikes() {
    let mut s = spec();
    s.on_delay_ms = 1_000;
    let mut det = LimitDetector::new(vec![Some(s)]);
    // A 500 ms spike never raises; a condition held for 1 s does.
    let spike = run(&mut det, &[(85.0, 0), (85.0, 500), (50.0, 600)]);
    assert!(spike.is_empty(), "{spike:?}");
    let held = run(&mut det, &[(85.0, 2_000), (85.0, 2_500), (85.0, 3_000)]);
    assert_eq!(held, vec![AlarmState::Active(Level::Hi)]);
}

#[test]
fn bad_quality_and_nan_neither_raise_nor_clear() {
    let mut det = LimitDetector::new(vec![Some(spec())]);
    let twin = LineTwin::new(1);
    let mut out = Vec::new();
    det.on_sample(&sample(95.0, 0, Quality::Bad), &twin, &mut out);
    assert!(out.is_empty());
    det.on_sample(&sample(95.0, 1, Quality::Good), &twin, &mut out);
    det.on_sample(&sample(50.0, 2, Quality::Bad), &twin, &mut out);
    det.on_sample(&sample(f64::NAN, 3, Quality::Good), &twin, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(det.active(TagId(0)), Some(Level::HiHi));
}

#[test]
fn a_restored_alarm_clears_when_the_value_returns() {
    let mut det = LimitDetector::new(vec![Some(spec())]);
    det.restore_level(TagId(0), Some(Level::HiHi));
    assert_eq!(det.active_count(), 1);
    assert_eq!(run(&mut det, &[(50.0, 0)]), vec![AlarmState::Inactive]);
}

#[test]
fn tags_without_limits_are_ignored() {
    let mut det = LimitDetector::new(vec![None]);
    assert!(run(&mut det, &[(1e9, 0)]).is_empty());
    assert_eq!(det.active_count(), 0);
}

#[test]
fn restore_takes_only_its_own_conditions() {
    let mut det = LimitDetector::new(vec![Some(spec()), None]);
    let ev = |condition| AlarmEvent {
        condition,
        state: AlarmState::Active(Level::Hi),
        previous: None,
        value: 85.0,
        limit: 80.0,
        severity: 500,
        time: Timestamp::from_unix_millis(0),
        batch_id: None,
        phase: None,
    };
    let rate = Condition {
        source: ConditionSource::Tag(TagId(0)),
        kind: ConditionKind::Rate,
    };
    assert!(
        !det.restore(&ev(rate)),
        "a rate condition is not a limit detector's"
    );
    assert!(
        !det.restore(&ev(Condition::tag_limit(TagId(1)))),
        "tag 1 has no limits"
    );
    assert!(det.restore(&ev(Condition::tag_limit(TagId(0)))));
    assert_eq!(det.active_count(), 1);
    assert_eq!(det.conditions(), vec![Condition::tag_limit(TagId(0))]);
}

fn table(limits: Vec<Option<LimitSpec>>) -> TagTable {
    TagTable::new(
        limits
            .into_iter()
            .map(|limits| {
                Some(crate::TagSpec {
                    name: "t".into(),
                    unit: String::new(),
                    limits,
                    signals: Default::default(),
                })
            })
            .collect(),
    )
}

#[test]
fn reconfigure_keeps_live_conditions_and_clears_orphaned_ones() {
    let mut det = LimitDetector::new(vec![Some(spec()), Some(spec())]);
    let mut twin = LineTwin::new(2);
    let mut out = Vec::new();
    for tag in [TagId(0), TagId(1)] {
        let s = Sample::new(
            tag,
            85.0,
            Quality::Good,
            None,
            Timestamp::from_unix_millis(1),
        );
        twin.update(&s);
        det.on_sample(&s, &twin, &mut out);
    }
    assert_eq!(det.active_count(), 2);
    out.clear();
    // Tag 0 gets wider limits (still active until judged), tag 1 loses its limits, a
    // third tag is registered.
    let wider = LimitSpec {
        hi: Some(95.0),
        hihi: Some(99.0),
        ..spec()
    };
    let at = Timestamp::from_unix_millis(2);
    det.reconfigure(
        &table(vec![Some(wider), None, Some(spec())]),
        at,
        &twin,
        &mut out,
    );
    let cleared: Vec<_> = out
        .iter()
        .map(|r| match r {
            RecordBody::Alarm(a) => (a.condition.clone(), a.state, a.previous, a.value, a.limit),
            other => panic!("unexpected record {other:?}"),
        })
        .collect();
    assert_eq!(
        cleared,
        vec![(
            Condition::tag_limit(TagId(1)),
            AlarmState::Inactive,
            Some(Level::Hi),
            85.0,
            80.0
        )]
    );
    assert_eq!(det.active_count(), 1);
    assert_eq!(det.conditions().len(), 2);
    // The new limits judge tag 0's next sample; the new tag 2 is evaluated at all.
    out.clear();
    twin.grow(3);
    for tag in [TagId(0), TagId(2)] {
        let s = Sample::new(
            tag,
            85.0,
            Quality::Good,
            None,
            Timestamp::from_unix_millis(3),
        );
        det.on_sample(&s, &twin, &mut out);
    }
    let states: Vec<_> = out
        .iter()
        .map(|r| match r {
            RecordBody::Alarm(a) => (a.condition.tag(), a.state),
            other => panic!("unexpected record {other:?}"),
        })
        .collect();
    assert_eq!(
        states,
        vec![
            (Some(TagId(0)), AlarmState::Inactive),
            (Some(TagId(2)), AlarmState::Active(Level::Hi))
        ]
    );
}

#[test]
fn a_phases_limits_replace_the_tags_own_while_it_runs_and_clear_after_it() {
    let mut spraying = spec();
    spraying.hi = Some(50.0);
    let only_in_phase = LimitSpec {
        lolo: None,
        lo: None,
        hi: Some(12.0),
        hihi: None,
        deadband: 0.0,
        on_delay_ms: 0,
    };
    // Tag 0 has its own limits (hi 80) and spraying's (hi 50); tag 1 only spraying's.
    let mut det = LimitDetector::new(vec![Some(spec()), None]).with_phases(vec![PhaseLimits {
        recipe: "gran".into(),
        phase: "spraying".into(),
        specs: vec![Some(spraying), Some(only_in_phase)],
    }]);
    assert_eq!(det.conditions().len(), 2, "both tags are watched");
    let mut twin = LineTwin::new(2);
    let mut out = Vec::new();
    let moist = |v: f64, ms: i64| {
        Sample::new(
            TagId(1),
            v,
            Quality::Good,
            None,
            Timestamp::from_unix_millis(ms),
        )
    };
    // Outside the phase: tag 0 judged on its own limits, tag 1 not at all.
    det.on_sample(&sample(60.0, 0, Quality::Good), &twin, &mut out);
    det.on_sample(&moist(15.0, 0), &twin, &mut out);
    assert!(out.is_empty());
    twin.set_batch(Some("B-1"), Some("gran"), Some("spraying"));
    det.on_sample(&sample(60.0, 1, Quality::Good), &twin, &mut out);
    det.on_sample(&moist(15.0, 1), &twin, &mut out);
    assert_eq!(
        det.active(TagId(0)),
        Some(Level::Hi),
        "60 > spraying's hi 50"
    );
    assert_eq!(det.active(TagId(1)), Some(Level::Hi));
    let RecordBody::Alarm(a) = &out[0] else {
        unreachable!()
    };
    assert_eq!((a.limit, a.phase.as_deref()), (50.0, Some("spraying")));
    // Another recipe's phase of the same name is not this one.
    twin.set_batch(Some("B-2"), Some("coat"), Some("spraying"));
    det.on_sample(&sample(60.0, 2, Quality::Good), &twin, &mut out);
    assert_eq!(det.active(TagId(0)), None, "back to its own hi 80");
    // The phase ends: tag 1's alarm clears, it has no limits of its own.
    twin.set_batch(Some("B-1"), Some("gran"), Some("drying"));
    det.on_sample(&moist(15.0, 3), &twin, &mut out);
    assert_eq!(det.active(TagId(1)), None);
    det.on_sample(&moist(30.0, 4), &twin, &mut out);
    assert_eq!(det.active(TagId(1)), None, "not judged outside the phase");
}
