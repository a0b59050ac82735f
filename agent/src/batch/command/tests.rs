use super::*;
use pdtf_models::batch::{BatchChange, MaterialPlan, ProcState, SeenRequest};

const TOPIC: &str = "pdtf/s/a/gran1/cmd/batch";

fn recipe(version: u32) -> Recipe {
    let mut r = crate::batch::test_recipe(version, &["preheat", "spraying"]);
    r.materials.push(MaterialPlan {
        material: "API".into(),
        planned: 10.0,
        unit: "kg".into(),
        tolerance_pct: 1.0,
    });
    r
}

fn at(s: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_700_000_000_000 + s * 1_000)
}

fn run(twin: &BatchTwin, seen: &RequestWindow, policy: &Policy, json: &str) -> Decision {
    decide(
        twin,
        &[recipe(1), recipe(3)],
        policy,
        seen,
        TOPIC,
        json.as_bytes(),
        at(0),
    )
}

fn refusal(d: &Decision) -> &str {
    match &d.record.outcome {
        CommandOutcome::Refused(r) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_start_is_accepted_against_the_highest_version_and_recorded_with_its_signature() {
    let twin = BatchTwin::new("gran1", true);
    let d = run(
        &twin,
        &RequestWindow::default(),
        &Policy::default(),
        r#"{"request_id":"r-1","user":"alice","reason":"shift start","command":"start",
            "batch_id":"B-1","recipe":"gran",
            "signature":{"printed_name":"Alice Example","time":"2026-12-03T18:00:00Z","meaning":"performed"}}"#,
    );
    assert_eq!(d.record.outcome, CommandOutcome::Accepted);
    assert_eq!(d.reply_to.as_deref(), Some("r-1"));
    assert_eq!(
        (
            d.record.user.as_deref(),
            d.record.reason.as_deref(),
            d.record.command.as_deref()
        ),
        (Some("alice"), Some("shift start"), Some("start"))
    );
    assert_eq!(d.record.signature.as_ref().unwrap().meaning, "performed");
    assert!(
        d.record.payload.contains("\"batch_id\":\"B-1\""),
        "kept verbatim"
    );
    let plan = d.plan.unwrap();
    let BatchChange::Started { recipe } = &plan.events[0].change else {
        panic!("first event is the start")
    };
    assert_eq!(recipe.version, 3, "no version given: the highest");
    assert_eq!(
        plan.next.phase(),
        Some("preheat"),
        "a commanded start enters the first phase"
    );
    let reply: serde_json::Value =
        serde_json::from_slice(&reply(&d.record, 41, &plan.next, None)).unwrap();
    assert_eq!(
        reply,
        serde_json::json!({"request_id":"r-1","accepted":true,"reason":null,"duplicate":false,
            "seq":41,"batch_id":"B-1","state":"running","phase":"preheat"})
    );
}

#[test]
fn bad_commands_are_refused_with_the_reason_and_never_planned() {
    let twin = BatchTwin::new("gran1", true);
    let seen = RequestWindow::default();
    let open = Policy::default();
    let cases: &[(&str, &str)] = &[
        ("not json", "the command is not JSON"),
        ("[1,2]", "does not match the schema"),
        (
            r#"{"request_id":"r","user":"u","reason":"x"}"#,
            "missing field `command`",
        ),
        (
            r#"{"request_id":"r","user":"u","reason":"x","command":"start","colour":"red"}"#,
            "unknown field `colour`",
        ),
        (
            r#"{"request_id":"r","user":"u","reason":"x","command":"start","quantity":"ten"}"#,
            "invalid type",
        ),
        (
            r#"{"request_id":"r","user":" ","reason":"x","command":"hold"}"#,
            "user must not be empty",
        ),
        (
            r#"{"request_id":"r","user":"u","reason":"x","command":"launch"}"#,
            "unknown command \"launch\"",
        ),
        (
            r#"{"request_id":"r","user":"u","reason":"x","command":"start","recipe":"gran"}"#,
            "start needs \"batch_id\"",
        ),
        (
            r#"{"request_id":"r","user":"u","reason":"x","command":"start","batch_id":"B","recipe":"coat"}"#,
            "no recipe \"coat\" (configured: gran)",
        ),
        (
            r#"{"request_id":"r","user":"u","reason":"x","command":"start","batch_id":"B","recipe":"gran","version":2}"#,
            "recipe \"gran\" has no version 2",
        ),
        (
            r#"{"request_id":"r","user":"u","reason":"x","command":"restart"}"#,
            "restart needs a batch",
        ),
    ];
    for (json, why) in cases {
        let d = run(&twin, &seen, &open, json);
        assert!(d.plan.is_none(), "{json}");
        assert!(refusal(&d).contains(why), "{json}: {}", refusal(&d));
    }
    // Oversized: refused unread, with an excerpt only.
    let huge = format!(r#"{{"request_id":"r","text":"{}"}}"#, "x".repeat(20_000));
    let d = run(&twin, &seen, &open, &huge);
    assert!(refusal(&d).contains("over the 16384-byte limit"));
    assert_eq!(
        d.record.payload.len(),
        pdtf_models::command::REFUSED_EXCERPT_BYTES
    );
    assert_eq!(d.reply_to, None, "an unread command has no reply topic");
    // Random bytes never panic.
    let mut rng = fastrand::Rng::with_seed(3);
    for _ in 0..2_000 {
        let n = rng.usize(0..64);
        let bytes: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
        let d = decide(&twin, &[], &open, &seen, TOPIC, &bytes, at(0));
        assert!(d.plan.is_none());
    }
}

#[test]
fn a_request_id_that_cannot_name_a_topic_is_refused_without_a_reply() {
    let twin = BatchTwin::new("gran1", true);
    for id in ["a/b", "x+", "#", ""] {
        let json = format!(r#"{{"request_id":"{id}","user":"u","reason":"x","command":"hold"}}"#);
        let d = run(&twin, &RequestWindow::default(), &Policy::default(), &json);
        assert_eq!(d.reply_to, None, "{id:?}");
        assert!(d.plan.is_none());
    }
}

#[test]
fn a_duplicate_is_recorded_answered_as_the_first_and_not_applied() {
    let twin = BatchTwin::new("gran1", true);
    let mut seen = RequestWindow::default();
    seen.insert(SeenRequest {
        request_id: "r-1".into(),
        seq: 7,
        refused: None,
    });
    let d = run(
        &twin,
        &seen,
        &Policy::default(),
        r#"{"request_id":"r-1","user":"alice","reason":"again","command":"start","batch_id":"B-1","recipe":"gran"}"#,
    );
    assert_eq!(d.record.outcome, CommandOutcome::Duplicate { first_seq: 7 });
    assert!(d.plan.is_none(), "never a second batch");
    let first = seen.get("r-1").map(|s| s.refused.clone());
    let reply: serde_json::Value =
        serde_json::from_slice(&reply(&d.record, 12, &twin, first.as_ref())).unwrap();
    assert_eq!(
        (
            reply["accepted"].as_bool(),
            reply["duplicate"].as_bool(),
            reply["seq"].as_u64()
        ),
        (Some(true), Some(true), Some(7))
    );
}

#[test]
fn the_allow_list_restricts_a_command_to_its_users() {
    let mut twin = BatchTwin::new("gran1", true);
    let start = twin
        .start("B", &recipe(1), at(0), Actor::Agent, true)
        .unwrap();
    twin = start.next;
    let policy = Policy {
        allow_users: BTreeMap::from([("abort".to_owned(), vec!["qa-lead".to_owned()])]),
    };
    let seen = RequestWindow::default();
    let abort = |user: &str| {
        format!(r#"{{"request_id":"r-{user}","user":"{user}","reason":"x","command":"abort"}}"#)
    };
    let d = run(&twin, &seen, &policy, &abort("operator"));
    assert_eq!(
        refusal(&d),
        "user \"operator\" is not allowed to send abort"
    );
    let d = run(&twin, &seen, &policy, &abort("qa-lead"));
    assert_eq!(d.plan.unwrap().next.state, ProcState::Aborted);
    // Other commands stay open to everyone.
    let hold = r#"{"request_id":"h","user":"operator","reason":"x","command":"hold"}"#;
    assert!(run(&twin, &seen, &policy, hold).plan.is_some());
}

#[test]
fn material_phase_and_comment_commands_reach_the_twin() {
    let mut twin = BatchTwin::new("gran1", true);
    twin = twin
        .start("B", &recipe(1), at(0), Actor::Agent, true)
        .unwrap()
        .next;
    let seen = RequestWindow::default();
    let open = Policy::default();
    let d = run(
        &twin,
        &seen,
        &open,
        r#"{"request_id":"m","user":"u","reason":"charge","command":"material","material":"API","lot":"L-1","quantity":10.0,"unit":"kg"}"#,
    );
    twin = d.plan.unwrap().next;
    assert_eq!(twin.batch.as_ref().unwrap().charges.len(), 1);
    let d = run(
        &twin,
        &seen,
        &open,
        r#"{"request_id":"m2","user":"u","reason":"charge","command":"material","material":"API","lot":"L-1","unit":"kg"}"#,
    );
    assert_eq!(refusal(&d), "material needs \"quantity\"");
    let d = run(
        &twin,
        &seen,
        &open,
        r#"{"request_id":"p","user":"u","reason":"next","command":"phase"}"#,
    );
    twin = d.plan.unwrap().next;
    assert_eq!(twin.phase(), Some("spraying"));
    let d = run(
        &twin,
        &seen,
        &open,
        r#"{"request_id":"c","user":"u","reason":"note","command":"comment","text":"ok"}"#,
    );
    assert!(matches!(
        d.plan.unwrap().events[0].change,
        BatchChange::Comment(_)
    ));
}
