use super::*;
use crate::alarms::tests::alarm_on;
use crate::config::AlarmConfig;
use pdtf_models::command::CommandOutcome;
use pdtf_models::command::MAX_COMMAND_BYTES;
use pdtf_models::RecordBody;
use std::sync::Arc;

const TOPIC: &str = "pdtf/s/a/l1/cmd/alarm";

fn at(s: i64) -> Timestamp {
    Timestamp::from_unix_millis(s * 1000)
}

/// A book whose `temp` (tag 0) limit alarm is raised and unacknowledged; `flow` (tag 1) is
/// not shelvable.
fn raised() -> AlarmBook {
    let mut b = AlarmBook::new(
        "l1",
        vec![
            None,
            Some(Arc::new(AlarmConfig {
                shelvable: false,
                ..AlarmConfig::default()
            })),
        ],
    );
    let mut bodies: Vec<RecordBody> = [0, 1].map(|t| alarm_on(t, true)).into();
    b.follow(&mut bodies, &LineTwin::new(2), at(0));
    b
}

fn decide_with(book: &AlarmBook, policy: &Policy, payload: &str) -> Decision {
    let known: BTreeSet<Condition> = [0, 1].map(|t| Condition::tag_limit(TagId(t))).into();
    let names = ["temp".to_owned(), "flow".to_owned()];
    let twin = LineTwin::new(2);
    let cx = Context {
        book,
        known: &known,
        names: &names,
        policy,
        max_shelve_s: 3600,
        twin: &twin,
    };
    decide(&cx, TOPIC, payload.as_bytes(), at(5))
}

fn refused(d: &Decision) -> &str {
    match &d.record.outcome {
        CommandOutcome::Refused(why) => why,
        other => panic!("not refused: {other:?}"),
    }
}

fn cmd(action: &str, extra: &str) -> String {
    format!(
        r#"{{"request_id":"r-1","user":"alice","reason":"seen","action":"{action}","tag":"temp"{extra}}}"#
    )
}

#[test]
fn an_ack_is_decided_with_who_and_why() {
    let d = decide_with(&raised(), &Policy::default(), &cmd("ack", ""));
    let ev = d.event.expect("accepted");
    assert_eq!(
        ev.lifecycle.status,
        pdtf_models::lifecycle::AlarmStatus::AckActive
    );
    assert_eq!(
        (
            ev.user.as_deref(),
            ev.reason.as_deref(),
            ev.request_id.as_deref()
        ),
        (Some("alice"), Some("seen"), Some("r-1"))
    );
    assert_eq!(d.record.command.as_deref(), Some("ack"));
    assert_eq!(d.reply_to.as_deref(), Some("r-1"));
    let reply: serde_json::Value =
        serde_json::from_slice(&reply(&d.record, 7, Some(&ev), None)).unwrap();
    assert_eq!(
        (reply["seq"].as_u64(), reply["acked"].as_bool()),
        (Some(7), Some(true))
    );
}

#[test]
fn every_refusal_names_its_reason() {
    let book = raised();
    let p = Policy::default();
    let cases = [
        (
            r#"{"request_id":"r-1","reason":"x","action":"ack","tag":"temp"}"#.to_owned(),
            "user",
        ),
        (
            cmd("ack", "").replace("\"seen\"", "\" \""),
            "reason must not be empty",
        ),
        (cmd("wave", ""), "unknown action"),
        (cmd("ack", r#","condition":"rate""#), "unknown condition"),
        (
            cmd("ack", r#","condition":"nope""#),
            "unknown condition kind",
        ),
        (cmd("ack", "").replace("temp", "nope"), "no tag \"nope\""),
        (
            cmd("ack", r#","model":"m""#),
            "exactly one of tag and model",
        ),
        (cmd("shelve", r#","duration_s":7200"#), "max_shelve_s"),
        (cmd("shelve", r#","duration_s":0"#), "at least 1"),
        (cmd("ack", r#","duration_s":5"#), "duration_s is for shelve"),
        (cmd("unshelve", ""), "not shelved"),
        (cmd("in_service", ""), "in service"),
        (cmd("shelve", "").replace("temp", "flow"), "not shelvable"),
        (cmd("ack", r#","colour":"red""#), "unknown field"),
        ("not json".to_owned(), "not JSON"),
    ];
    for (payload, why) in cases {
        let d = decide_with(&book, &p, &payload);
        assert!(d.event.is_none(), "{payload}");
        assert!(refused(&d).contains(why), "{payload}: {}", refused(&d));
    }
    let big = format!(r#"{{"reason":"{}"}}"#, "x".repeat(MAX_COMMAND_BYTES));
    assert!(refused(&decide_with(&book, &p, &big)).contains("byte limit"));
    let only_bob = Policy {
        allow_users: [("out_of_service".to_owned(), vec!["bob".to_owned()])].into(),
    };
    let d = decide_with(&book, &only_bob, &cmd("out_of_service", ""));
    assert!(refused(&d).contains("not allowed"), "{}", refused(&d));
}

#[test]
fn a_repeated_request_is_a_duplicate_and_an_acked_alarm_refuses_a_second_ack() {
    let mut book = raised();
    let d = decide_with(&book, &Policy::default(), &cmd("ack", ""));
    book.apply(d.event.as_ref().unwrap());
    book.seen.insert(pdtf_models::batch::SeenRequest {
        request_id: "r-1".into(),
        seq: 11,
        refused: None,
    });
    let again = decide_with(&book, &Policy::default(), &cmd("ack", ""));
    assert_eq!(
        again.record.outcome,
        CommandOutcome::Duplicate { first_seq: 11 }
    );
    assert!(again.event.is_none());
    let other = cmd("ack", "").replace("r-1", "r-2");
    let d = decide_with(&book, &Policy::default(), &other);
    assert!(refused(&d).contains("already acknowledged"));
    let shelve = cmd("shelve", r#","duration_s":60"#).replace("r-1", "r-3");
    let d = decide_with(&book, &Policy::default(), &shelve);
    assert!(matches!(
        d.event.unwrap().lifecycle.shelved,
        Some(pdtf_models::lifecycle::Shelf::Until(t)) if t == at(65)
    ));
}
