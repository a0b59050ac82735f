use super::*;
use crate::{AlarmState, Level, TagId};

fn at(s: f64) -> Timestamp {
    Timestamp::from_unix_nanos((s * 1e9) as i64 + 1_800_000_000_000_000_000)
}

fn ev(tag: u32, s: f64, raise: bool, previous: Option<Level>) -> AlarmEvent {
    AlarmEvent {
        condition: Condition::tag_limit(TagId(tag)),
        state: if raise {
            AlarmState::Active(Level::Hi)
        } else {
            AlarmState::Inactive
        },
        previous,
        value: 1.0,
        limit: 0.5,
        severity: 500,
        time: at(s),
        batch_id: None,
        phase: None,
    }
}

#[test]
fn the_rate_counts_activations_of_the_last_ten_minutes_and_keeps_its_peak() {
    let mut k = Kpis::default();
    for i in 0..5 {
        k.on_alarm(&ev(i, 10.0 + f64::from(i), true, None));
    }
    // An escalation is no new activation; a clear is none either.
    k.on_alarm(&ev(0, 20.0, true, Some(Level::Hi)));
    k.on_alarm(&ev(1, 21.0, false, Some(Level::Hi)));
    assert_eq!(k.snapshot(at(30.0)).rate_10min, 5);
    assert_eq!(
        k.snapshot(at(609.0)).rate_10min,
        5,
        "10 s .. 14 s still inside"
    );
    assert_eq!(k.snapshot(at(612.5)).rate_10min, 2, "10, 11, 12 fell out");
    let s = k.snapshot(at(700.0));
    assert_eq!(
        (s.rate_10min, s.peak_10min, s.peak_at),
        (0, 5, Some(at(14.0)))
    );
    assert_eq!(s.activations, 5);
    // After a long quiet spell the ring is clean.
    k.on_alarm(&ev(7, 5_000.0, true, None));
    assert_eq!(k.snapshot(at(5_000.5)).rate_10min, 1);
}

#[test]
fn three_activations_within_a_minute_chatter_and_an_alarm_active_for_a_day_is_stale() {
    let mut k = Kpis::default();
    for s in [0.0, 20.0, 40.0] {
        k.on_alarm(&ev(0, s, true, None));
        k.on_alarm(&ev(0, s + 1.0, false, Some(Level::Hi)));
    }
    let c0 = Condition::tag_limit(TagId(0));
    assert_eq!(k.snapshot(at(50.0)).chattering, vec![c0.clone()]);
    assert!(k.is_chattering(&c0, at(60.0)));
    assert!(
        !k.is_chattering(&c0, at(61.0)),
        "the first fell out of the minute"
    );
    for s in [0.0, 70.0, 140.0] {
        k.on_alarm(&ev(1, s, true, None));
        k.on_alarm(&ev(1, s + 1.0, false, Some(Level::Hi)));
    }
    assert!(
        k.snapshot(at(150.0)).chattering.is_empty(),
        "tag 1: 70 s apart"
    );

    k.on_alarm(&ev(2, 200.0, true, None));
    assert!(k.snapshot(at(200.0 + 86_000.0)).stale.is_empty());
    let s = k.snapshot(at(200.0 + 86_401.0));
    assert_eq!(s.stale, vec![(Condition::tag_limit(TagId(2)), at(200.0))]);
    k.on_alarm(&ev(2, 90_000.0, false, Some(Level::Hi)));
    assert!(k.snapshot(at(90_001.0)).stale.is_empty(), "cleared");
    assert!(k.recent.is_empty(), "old activation times are forgotten");
}
