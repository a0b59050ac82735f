use super::*;
use crate::{Quality, TagSpec};

fn at(ms: u64) -> Timestamp {
    Timestamp::from_unix_millis(1_800_000_000_000 + ms as i64)
}

fn sample(tag: u32, v: f64, ms: u64) -> Sample {
    Sample::new(TagId(tag), v, Quality::Good, Some(at(ms)), at(ms))
}

/// (kind, active after) of each alarm record.
fn alarms(out: &[RecordBody]) -> Vec<(ConditionKind, Option<Level>)> {
    out.iter()
        .filter_map(|b| match b {
            RecordBody::Alarm(a) => Some((
                a.condition.kind,
                match a.state {
                    AlarmState::Active(l) => Some(l),
                    AlarmState::Inactive => None,
                },
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn stale_raises_at_the_tick_and_clears_with_the_next_value() {
    let mut d = SignalDetector::new(vec![SignalSpec {
        stale_ms: Some(5_000),
        ..SignalSpec::default()
    }]);
    let twin = LineTwin::new(1);
    let mut out = vec![];
    d.on_sample(&sample(0, 1.0, 0), &twin, &mut out);
    d.on_tick(at(4_000), &twin, &mut out);
    assert!(out.is_empty());
    d.on_tick(at(6_000), &twin, &mut out);
    assert_eq!(alarms(&out), [(ConditionKind::Stale, Some(Level::Hi))]);
    let RecordBody::Alarm(a) = &out[0] else {
        unreachable!()
    };
    assert_eq!((a.value, a.limit), (6.0, 5.0), "seconds since, allowed");
    assert_eq!(d.active_count(), 1);
    d.on_tick(at(7_000), &twin, &mut out);
    assert_eq!(out.len(), 1, "no repeat while stale");
    d.on_sample(&sample(0, 1.0, 8_000), &twin, &mut out);
    assert_eq!(alarms(&out)[1], (ConditionKind::Stale, None));
}

#[test]
fn each_configured_detector_is_its_own_condition_on_the_tag() {
    let spec = SignalSpec {
        frozen: Some((0.001, 5_000)),
        rate: Some(RateSpec {
            window_ms: 4_000,
            rising: Some(1.0),
            falling: None,
        }),
        cusum: Some(Shift {
            target: 50.0,
            sigma: 1.0,
            a: 0.5,
            b: 4.0,
        }),
        spc: Some(SpcSpec {
            target: 50.0,
            sigma: 1.0,
            rules: vec![Rule::We1],
        }),
        ..SignalSpec::default()
    };
    let mut d = SignalDetector::new(vec![spec.clone()]);
    assert_eq!(
        d.conditions().iter().map(|c| c.kind).collect::<Vec<_>>(),
        [
            ConditionKind::Frozen,
            ConditionKind::Rate,
            ConditionKind::Cusum,
            ConditionKind::Spc
        ]
    );
    let twin = LineTwin::new(1);
    let mut out = vec![];
    // A jump to 55 (5 σ): SPC at once, CUSUM after a sum over 4, the rate while the window
    // sees the step; then held flat: frozen after 5 s.
    d.on_sample(&sample(0, 50.0, 0), &twin, &mut out);
    for s in 1..=8 {
        d.on_sample(&sample(0, 55.0, s * 1000), &twin, &mut out);
    }
    let kinds = alarms(&out);
    for k in [
        ConditionKind::Spc,
        ConditionKind::Cusum,
        ConditionKind::Rate,
        ConditionKind::Frozen,
    ] {
        assert!(
            kinds.contains(&(k, Some(Level::Hi))),
            "{k:?} raised: {kinds:?}"
        );
    }
    assert!(
        kinds.contains(&(ConditionKind::Rate, None)),
        "the rate clears once the step left the window: {kinds:?}"
    );
    // Restore takes its own conditions only.
    let RecordBody::Alarm(cusum) = out
        .iter()
        .find(|b| matches!(b, RecordBody::Alarm(a) if a.condition.kind == ConditionKind::Cusum))
        .unwrap()
        .clone()
    else {
        unreachable!()
    };
    let mut fresh = SignalDetector::new(vec![spec]);
    assert!(fresh.restore(&cusum));
    assert_eq!(fresh.active_count(), 1);
    let mut limit = cusum.clone();
    limit.condition.kind = ConditionKind::Limit;
    assert!(!fresh.restore(&limit));
}

#[test]
fn a_reload_that_drops_a_detector_clears_its_active_alarm() {
    let spec = SignalSpec {
        stale_ms: Some(1_000),
        ..SignalSpec::default()
    };
    let mut d = SignalDetector::new(vec![spec]);
    let twin = LineTwin::new(1);
    let mut out = vec![];
    d.on_tick(at(0), &twin, &mut out);
    d.on_tick(at(2_000), &twin, &mut out);
    assert_eq!(d.active_count(), 1);
    let table = TagTable::new(vec![Some(TagSpec {
        name: "t".into(),
        unit: String::new(),
        limits: None,
        signals: SignalSpec::default(),
    })]);
    d.reconfigure(&table, at(3_000), &twin, &mut out);
    assert_eq!(alarms(&out).last(), Some(&(ConditionKind::Stale, None)));
    assert_eq!(d.active_count(), 0);
    assert!(d.is_empty());
}

#[test]
fn a_phases_centre_line_replaces_the_tags_target_and_a_new_phase_starts_afresh() {
    let spec = SignalSpec {
        cusum: Some(Shift {
            target: 50.0,
            sigma: 1.0,
            a: 0.5,
            b: 4.0,
        }),
        ..SignalSpec::default()
    };
    let phases = vec![PhaseTargets {
        recipe: "gran".into(),
        phase: "spraying".into(),
        targets: vec![Some(40.0)],
    }];
    let mut d = SignalDetector::new(vec![spec.clone()]).with_phase_targets(phases.clone());
    let mut twin = LineTwin::new(1);
    let mut out = vec![];
    twin.set_batch(Some("B"), Some("gran"), Some("spraying"));
    for s in 0..50 {
        d.on_sample(&sample(0, 40.0, s * 1000), &twin, &mut out);
    }
    assert!(out.is_empty(), "40 is spraying's centre line");
    // Drying has no centre line of its own: the tag's 50 applies, 40 is far below it.
    twin.set_batch(Some("B"), Some("gran"), Some("drying"));
    for s in 50..60 {
        d.on_sample(&sample(0, 40.0, s * 1000), &twin, &mut out);
    }
    assert_eq!(alarms(&out), [(ConditionKind::Cusum, Some(Level::Lo))]);
    // Back in spraying: the sums start again from zero, and clear.
    twin.set_batch(Some("B"), Some("gran"), Some("spraying"));
    d.on_sample(&sample(0, 40.0, 61_000), &twin, &mut out);
    assert_eq!(alarms(&out).last(), Some(&(ConditionKind::Cusum, None)));
    // The same phase name in another recipe is not this one.
    let mut d = SignalDetector::new(vec![spec]).with_phase_targets(phases);
    let mut out = vec![];
    twin.set_batch(Some("B"), Some("coat"), Some("spraying"));
    for s in 0..10 {
        d.on_sample(&sample(0, 40.0, s * 1000), &twin, &mut out);
    }
    assert_eq!(alarms(&out), [(ConditionKind::Cusum, Some(Level::Lo))]);
}

#[test]
fn a_discrete_state_alarms_only_in_the_phases_it_names() {
    let spec = SignalSpec {
        state: Some(StateSpec {
            values: vec![Value::Bool(true), Value::Text("OPEN".into())],
            phases: vec!["spraying".into()],
        }),
        ..SignalSpec::default()
    };
    let mut d = SignalDetector::new(vec![spec]);
    let mut twin = LineTwin::new(1);
    let mut out = vec![];
    let door = |v: Value, ms: u64| {
        let mut s = sample(0, 0.0, ms);
        s.value = v;
        s
    };
    d.on_sample(&door(Value::Bool(true), 0), &twin, &mut out);
    assert!(out.is_empty(), "open outside spraying is allowed");
    twin.set_batch(Some("B"), Some("gran"), Some("spraying"));
    d.on_sample(&door(Value::Bool(true), 1), &twin, &mut out);
    assert_eq!(alarms(&out), [(ConditionKind::State, Some(Level::Hi))]);
    d.on_sample(&door(Value::Bool(false), 2), &twin, &mut out);
    d.on_sample(&door(Value::Text("OPEN".into()), 3), &twin, &mut out);
    // A JSON boolean over MQTT arrives as 0/1.
    d.on_sample(&door(Value::Num(0.0), 4), &twin, &mut out);
    d.on_sample(&door(Value::Num(1.0), 5), &twin, &mut out);
    assert_eq!(
        alarms(&out)
            .iter()
            .map(|a| a.1.is_some())
            .collect::<Vec<_>>(),
        [true, false, true, false, true]
    );
    // The phase ends: the next value clears it.
    twin.set_batch(Some("B"), Some("gran"), Some("drying"));
    d.on_sample(&door(Value::Bool(true), 6), &twin, &mut out);
    assert_eq!(alarms(&out).last(), Some(&(ConditionKind::State, None)));
}
