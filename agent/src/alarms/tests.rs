use super::*;
use pdtf_models::lifecycle::{AlarmStatus, Shelf};
use pdtf_models::{AlarmEvent, AlarmState, Level, TagId};

fn at(s: i64) -> Timestamp {
    Timestamp::from_unix_millis(s * 1000)
}

fn alarm(raise: bool) -> RecordBody {
    alarm_on(0, raise)
}

/// A limit alarm record of tag `tag`, raised (hi) or cleared.
pub(crate) fn alarm_on(tag: u32, raise: bool) -> RecordBody {
    RecordBody::Alarm(AlarmEvent {
        condition: Condition::tag_limit(TagId(tag)),
        state: if raise {
            AlarmState::Active(Level::Hi)
        } else {
            AlarmState::Inactive
        },
        previous: None,
        value: 1.0,
        limit: 0.5,
        severity: 500,
        time: at(0),
        batch_id: None,
        phase: None,
    })
}

fn book(settings: AlarmConfig) -> AlarmBook {
    AlarmBook::new("l1", vec![Some(Arc::new(settings))])
}

/// The lifecycle records `follow` adds after one alarm record: (input, status after).
fn follow(b: &mut AlarmBook, twin: &LineTwin, raise: bool) -> Vec<(&'static str, AlarmStatus)> {
    let mut bodies = vec![alarm(raise)];
    b.follow(&mut bodies, twin, at(1));
    assert!(matches!(bodies[0], RecordBody::Alarm(_)), "the alarm first");
    bodies[1..]
        .iter()
        .map(|body| match body {
            RecordBody::Lifecycle(l) => (l.input.name(), l.lifecycle.status),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn operator() -> Operator {
    Operator {
        user: "alice".into(),
        request_id: "r-1".into(),
        reason: "seen".into(),
    }
}

#[test]
fn each_process_transition_is_followed_by_its_lifecycle_record() {
    let twin = LineTwin::new(1);
    let mut b = book(AlarmConfig::default());
    assert_eq!(
        follow(&mut b, &twin, true),
        [("activate", AlarmStatus::UnackActive)]
    );
    assert_eq!(
        follow(&mut b, &twin, true),
        [],
        "a level change is no lifecycle change"
    );
    assert_eq!(
        follow(&mut b, &twin, false),
        [("clear", AlarmStatus::ReturnedUnack)]
    );
    let c = Condition::tag_limit(TagId(0));
    let ack = b.decide(&c, Input::Ack, &operator(), &twin, at(2)).unwrap();
    assert_eq!(ack.user.as_deref(), Some("alice"));
    b.apply(&ack);
    assert!(b.is_empty(), "normal again: nothing kept");
    let mut none = vec![RecordBody::Audit(pdtf_models::record::Audit {
        event: "x".into(),
        detail: String::new(),
    })];
    b.follow(&mut none, &twin, at(3));
    assert_eq!(none.len(), 1, "no alarm, nothing added");
}

#[test]
fn a_latching_alarm_waits_for_ack_and_reset() {
    let twin = LineTwin::new(1);
    let mut b = book(AlarmConfig {
        latching: true,
        ..AlarmConfig::default()
    });
    let c = Condition::tag_limit(TagId(0));
    follow(&mut b, &twin, true);
    b.apply(&b.decide(&c, Input::Ack, &operator(), &twin, at(2)).unwrap());
    assert_eq!(
        follow(&mut b, &twin, false),
        [("clear", AlarmStatus::AckActive)]
    );
    assert!(b.lifecycle(&c).latched);
    let reset = b
        .decide(&c, Input::Reset, &operator(), &twin, at(3))
        .unwrap();
    assert_eq!(reset.lifecycle.status, AlarmStatus::Normal);
}

#[test]
fn design_suppression_follows_the_phase_and_a_timed_shelf_expires_at_the_tick() {
    let mut twin = LineTwin::new(1);
    let mut b = book(AlarmConfig {
        suppress_in_phases: vec!["discharge".into()],
        ..AlarmConfig::default()
    });
    let c = Condition::tag_limit(TagId(0));
    twin.set_batch(Some("B-1"), Some("gran"), Some("discharge"));
    let mut bodies = vec![alarm(true)];
    b.follow(&mut bodies, &twin, at(1));
    let inputs: Vec<&str> = bodies
        .iter()
        .filter_map(|x| match x {
            RecordBody::Lifecycle(l) => Some(l.input.name()),
            _ => None,
        })
        .collect();
    assert_eq!(inputs, ["suppress", "activate"]);
    assert!(b.lifecycle(&c).suppressed && !b.lifecycle(&c).annunciated());
    twin.set_batch(Some("B-1"), Some("gran"), Some("cooling"));
    let out = b.tick(at(2), &twin);
    assert!(
        matches!(&out[..], [RecordBody::Lifecycle(l)] if l.input == Input::Suppress(false) && l.batch_id.as_deref() == Some("B-1")),
        "{out:?}"
    );
    assert!(b.lifecycle(&c).annunciated());

    let shelf = Input::Shelve(Shelf::Until(at(10)));
    b.apply(&b.decide(&c, shelf, &operator(), &twin, at(3)).unwrap());
    assert!(b.tick(at(9), &twin).is_empty(), "not yet");
    let out = b.tick(at(10), &twin);
    assert!(
        matches!(&out[..], [RecordBody::Lifecycle(l)] if l.user.is_none() && l.lifecycle.shelved.is_none()),
        "{out:?}"
    );
}

#[test]
fn refusals_change_nothing_and_a_restore_takes_todays_settings() {
    let twin = LineTwin::new(1);
    let mut b = book(AlarmConfig {
        shelvable: false,
        ..AlarmConfig::default()
    });
    let c = Condition::tag_limit(TagId(0));
    let ack = b.decide(&c, Input::Ack, &operator(), &twin, at(1));
    assert!(ack.unwrap_err().why.contains("not active"));
    follow(&mut b, &twin, true);
    let shelve = b.decide(&c, Input::Shelve(Shelf::OneShot), &operator(), &twin, at(2));
    assert!(shelve.unwrap_err().why.contains("not shelvable"));
    let comment = b
        .decide(&c, Input::Comment, &operator(), &twin, at(2))
        .unwrap();
    assert_eq!(
        comment.lifecycle,
        b.lifecycle(&c),
        "a comment changes nothing"
    );

    let oos = b
        .decide(&c, Input::OutOfService, &operator(), &twin, at(3))
        .unwrap();
    let mut restarted = book(AlarmConfig::default());
    restarted.restore(&oos);
    let l = restarted.lifecycle(&c);
    assert!(l.out_of_service && l.shelvable, "{l:?}");
    assert!(
        restarted.seen.get("r-1").is_some(),
        "the request id is remembered"
    );
}
