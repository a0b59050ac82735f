use super::*;
use crate::lifecycle::{AlarmStatus, Input, Lifecycle};
use crate::TagId;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

fn alarm(tag: u32, ms: i64, state: AlarmState, value: f64, batch: Option<&str>) -> AlarmEvent {
    AlarmEvent {
        condition: Condition::tag_limit(TagId(tag)),
        state,
        previous: None,
        value,
        limit: 80.0,
        severity: 500,
        time: at(ms),
        batch_id: batch.map(str::to_owned),
        phase: Some("spraying".into()),
    }
}

fn sample(tag: u32, ms: i64, v: f64) -> Sample {
    Sample::new(TagId(tag), v, Quality::Good, None, at(ms))
}

const HI: AlarmState = AlarmState::Active(Level::Hi);

#[test]
fn a_critical_limit_inside_a_batch_opens_a_deviation_with_its_peak_and_time_beyond() {
    // Tag 0 critical, tag 1 not.
    let mut t = Tracker::new("l1", vec![true, false]);
    assert!(
        t.on_alarm(&alarm(1, 0, HI, 85.0, Some("B-1"))).is_empty(),
        "not critical"
    );
    assert!(
        t.on_alarm(&alarm(0, 0, HI, 85.0, None)).is_empty(),
        "outside a batch"
    );
    t.on_alarm(&alarm(0, 500, AlarmState::Inactive, 70.0, None));
    let opened = t.on_alarm(&alarm(0, 1_000, HI, 81.0, Some("B-1")));
    assert_eq!(opened.len(), 1);
    assert_eq!(
        (
            opened[0].id.as_str(),
            opened[0].is_open(),
            opened[0].phase.as_deref()
        ),
        ("B-1-D1", true, Some("spraying"))
    );
    // 81 at 1.0 s, 88 at 2.0 s, 79 at 3.0 s (back inside), 82 at 4.0 s, 70 at 5.0 s.
    for (ms, v) in [(2_000, 88.0), (3_000, 79.0), (4_000, 82.0), (5_000, 70.0)] {
        t.on_sample(&sample(0, ms, v));
    }
    // An escalation and another tag's alarm inside it are listed, an operator's ack too.
    assert!(t
        .on_alarm(&alarm(
            0,
            2_000,
            AlarmState::Active(Level::HiHi),
            88.0,
            Some("B-1")
        ))
        .is_empty());
    t.on_alarm(&alarm(1, 2_500, HI, 99.0, Some("B-1")));
    t.on_action(&LifecycleEvent {
        condition: Condition::tag_limit(TagId(0)),
        line: "l1".into(),
        input: Input::Ack,
        previous: AlarmStatus::UnackActive,
        lifecycle: Lifecycle::new(false, true),
        time: at(2_600),
        user: Some("alice".into()),
        request_id: Some("r-1".into()),
        reason: Some("seen".into()),
        batch_id: Some("B-1".into()),
        phase: None,
    });
    let closed = t.on_alarm(&alarm(0, 5_000, AlarmState::Inactive, 70.0, Some("B-1")));
    let d = &closed[0];
    assert_eq!((d.peak, d.peak_at), (88.0, at(2_000)));
    assert_eq!(
        d.beyond_limit_ms, 3_000,
        "1→2, 2→3 and 4→5 s beyond the limit"
    );
    assert_eq!(d.duration_ms(at(99_999)), 4_000);
    assert_eq!(d.closed_by.as_deref(), Some("alarm_cleared"));
    assert_eq!(d.alarms.len(), 4, "{:?}", d.alarms);
    assert_eq!(d.actions[0].user.as_deref(), Some("alice"));
    assert!(t.is_idle());
    let again = t.on_alarm(&alarm(0, 6_000, HI, 81.0, Some("B-1")));
    assert_eq!(again[0].id, "B-1-D2", "numbered within the batch");
}

#[test]
fn a_deviation_open_at_the_batch_end_closes_with_it_and_a_restart_keeps_the_numbering() {
    let mut t = Tracker::new("l1", vec![true]);
    let opened = t.on_alarm(&alarm(0, 0, HI, 81.0, Some("B-7")));
    assert!(t.on_batch(Some("B-7"), at(500)).is_empty(), "still running");
    let closed = t.on_batch(None, at(1_000));
    assert_eq!(closed[0].closed_by.as_deref(), Some("batch_ended"));
    assert_eq!(closed[0].beyond_limit_ms, 1_000);

    let mut restarted = Tracker::new("l1", vec![true]);
    restarted.restore(&opened[0]);
    assert_eq!(restarted.open().count(), 1, "open in its last record");
    let mut next = Tracker::new("l1", vec![true]);
    next.restore(&closed[0]);
    assert!(next.is_idle());
    assert_eq!(
        next.on_alarm(&alarm(0, 2_000, HI, 81.0, Some("B-7")))[0].id,
        "B-7-D2"
    );
}

#[test]
fn a_low_limit_deviation_tracks_the_lowest_value_and_bounds_its_lists() {
    let mut t = Tracker::new("l1", vec![true, false]);
    let lo = AlarmState::Active(Level::Lo);
    let mut a = alarm(0, 0, lo, 19.0, Some("B-1"));
    a.limit = 20.0;
    t.on_alarm(&a);
    for (ms, v) in [(1_000, 15.0), (2_000, 17.0), (3_000, 25.0)] {
        t.on_sample(&sample(0, ms, v));
    }
    for i in 0..100 {
        t.on_alarm(&alarm(1, 3_000 + i, HI, 90.0, Some("B-1")));
    }
    let mut clear = alarm(0, 4_000, AlarmState::Inactive, 25.0, Some("B-1"));
    clear.limit = 20.0;
    let d = &t.on_alarm(&clear)[0];
    assert_eq!((d.peak, d.beyond_limit_ms), (15.0, 3_000));
    assert_eq!(d.alarms.len(), MAX_LISTED);
    assert_eq!(d.unlisted, 101 + 1 - MAX_LISTED as u64);
}

fn by(decision: &str, user: &str, request: &str) -> Disposition {
    Disposition {
        time: at(9_000),
        decision: decision.into(),
        user: user.into(),
        reason: "batch record reviewed".into(),
        request_id: request.into(),
    }
}

#[test]
fn qa_dispositions_a_closed_deviation_once_finally_after_any_investigations() {
    let mut t = Tracker::new("l1", vec![true]);
    let open = t.on_alarm(&alarm(0, 0, HI, 81.0, Some("B-3"))).remove(0);
    assert_eq!(open.disposition(), "pending");
    let refused = open.dispose(by("accept", "qa", "r1")).unwrap_err();
    assert!(refused.contains("still open"), "{refused}");

    let closed = t
        .on_alarm(&alarm(0, 1_000, AlarmState::Inactive, 70.0, Some("B-3")))
        .remove(0);
    let unknown = closed.dispose(by("approve", "qa", "r2")).unwrap_err();
    assert!(unknown.contains("investigate, accept, reject"), "{unknown}");

    let looked = closed.dispose(by("investigate", "qa", "r3")).unwrap();
    assert_eq!(looked.disposition(), "investigate");
    let accepted = looked.dispose(by("accept", "qa.lead", "r4")).unwrap();
    assert_eq!(accepted.disposition(), "accept");
    assert_eq!(accepted.dispositions.len(), 2, "the history is kept");
    assert_eq!(
        (accepted.dispositions[1].user.as_str(), accepted.id.as_str()),
        ("qa.lead", "B-3-D1")
    );
    let again = accepted.dispose(by("reject", "qa", "r5")).unwrap_err();
    assert!(
        again.contains("already dispositioned: accept by \"qa.lead\""),
        "{again}"
    );
    // Bincode round trip of the record body (format 6).
    let body = crate::RecordBody::Deviation(Box::new(accepted.clone()));
    let bytes = bincode::serde::encode_to_vec(&body, bincode::config::standard()).unwrap();
    let (back, _): (crate::RecordBody, usize) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
    assert_eq!(back, body);
}
