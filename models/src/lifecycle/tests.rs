use super::*;
use AlarmStatus::{AckActive as AA, Normal as N, ReturnedUnack as RU, UnackActive as UA};

/// (latching, status, latched, input) → `Some((status, latched))` after it, `None` for no
/// change; absent: refused.
type Row = (
    bool,
    AlarmStatus,
    bool,
    &'static str,
    Option<(AlarmStatus, bool)>,
);

const TABLE: &[Row] = &[
    // Not latching.
    (false, N, false, "activate", Some((UA, false))),
    (false, N, false, "clear", None),
    (false, UA, false, "activate", None),
    (false, UA, false, "clear", Some((RU, false))),
    (false, UA, false, "ack", Some((AA, false))),
    (false, AA, false, "activate", None),
    (false, AA, false, "clear", Some((N, false))),
    (false, RU, false, "activate", Some((UA, false))),
    (false, RU, false, "clear", None),
    (false, RU, false, "ack", Some((N, false))),
    // Latching: a cleared condition stays until ack (unacknowledged) or reset.
    (true, N, false, "activate", Some((UA, false))),
    (true, N, false, "clear", None),
    (true, UA, false, "activate", None),
    (true, UA, false, "clear", Some((UA, true))),
    (true, UA, false, "ack", Some((AA, false))),
    (true, UA, true, "activate", Some((UA, false))),
    (true, UA, true, "clear", None),
    (true, UA, true, "ack", Some((N, false))),
    (true, AA, false, "activate", None),
    (true, AA, false, "clear", Some((AA, true))),
    (true, AA, true, "activate", Some((AA, false))),
    (true, AA, true, "clear", None),
    (true, AA, true, "reset", Some((N, false))),
    (true, RU, false, "activate", Some((UA, false))),
    (true, RU, false, "clear", None),
    (true, RU, false, "ack", Some((N, false))),
];

fn input(name: &str) -> Input {
    match name {
        "activate" => Input::Activate,
        "clear" => Input::Clear,
        "ack" => Input::Ack,
        _ => Input::Reset,
    }
}

#[test]
fn every_alarm_state_and_input_follows_the_table() {
    let mut accepted = 0;
    for latching in [false, true] {
        for status in AlarmStatus::ALL {
            for latched in [false, true] {
                if latched && (!latching || !matches!(status, UA | AA)) {
                    continue; // only a latching alarm's active states latch
                }
                for name in ["activate", "clear", "ack", "reset"] {
                    let lc = Lifecycle {
                        status,
                        latched,
                        ..Lifecycle::new(latching, true)
                    };
                    let want = TABLE
                        .iter()
                        .find(|r| (r.0, r.1, r.2, r.3) == (latching, status, latched, name));
                    let got = lc.apply(input(name));
                    let what = format!("latching {latching}, {status:?} latched {latched}, {name}");
                    match (got, want) {
                        (Ok(next), Some(row)) => {
                            assert_eq!(next.map(|n| (n.status, n.latched)), row.4, "{what}");
                            accepted += 1;
                        }
                        (Err(r), None) => assert_eq!(r.input, name, "{what}"),
                        (got, want) => panic!("{what}: got {got:?}, table says {want:?}"),
                    }
                }
            }
        }
    }
    assert_eq!(accepted, TABLE.len());
}

#[test]
fn refusals_say_why() {
    let normal = Lifecycle::new(false, true);
    assert_eq!(
        normal.apply(Input::Ack).unwrap_err().to_string(),
        "ack refused: the alarm is not active (nothing to acknowledge)"
    );
    let acked = Lifecycle {
        status: AA,
        ..normal.clone()
    };
    assert!(acked
        .apply(Input::Ack)
        .unwrap_err()
        .why
        .contains("already acknowledged"));
    let safety = Lifecycle::new(false, false);
    assert!(safety
        .apply(Input::Shelve(Shelf::OneShot))
        .unwrap_err()
        .why
        .contains("not shelvable"));
    assert!(normal.apply(Input::Unshelve).is_err());
    assert!(normal.apply(Input::InService).is_err());
}

fn step(lc: &mut Lifecycle, i: Input) {
    if let Some(n) = lc.apply(i).unwrap() {
        *lc = n;
    }
}

#[test]
fn a_return_to_normal_while_unacknowledged_stays_visible_until_acknowledged() {
    let mut lc = Lifecycle::new(false, true);
    step(&mut lc, Input::Activate);
    step(&mut lc, Input::Clear);
    assert_eq!(lc.status, RU);
    assert!(
        lc.annunciated(),
        "a short alarm is not lost: it waits for the operator"
    );
    step(&mut lc, Input::Ack);
    assert_eq!(lc.status, N);
    assert!(!lc.annunciated());
}

#[test]
fn a_timed_shelf_expires_by_itself_and_a_one_shot_shelf_at_the_next_normal() {
    let t = |s: i64| Timestamp::from_unix_millis(1_800_000_000_000 + s * 1000);
    let mut lc = Lifecycle::new(false, true);
    step(&mut lc, Input::Activate);
    step(&mut lc, Input::Shelve(Shelf::Until(t(600))));
    assert!(!lc.annunciated(), "shelved");
    assert_eq!(lc.apply(Input::Tick(t(599))).unwrap(), None);
    step(&mut lc, Input::Tick(t(600)));
    assert_eq!(lc.shelved, None);
    assert!(
        lc.annunciated(),
        "back when the shelf expired, still active"
    );

    let mut lc = Lifecycle::new(false, true);
    step(&mut lc, Input::Activate);
    step(&mut lc, Input::Shelve(Shelf::OneShot));
    step(&mut lc, Input::Clear); // returned, unacknowledged: still shelved
    assert_eq!((lc.status, lc.shelved), (RU, Some(Shelf::OneShot)));
    step(&mut lc, Input::Ack); // Normal: the one-shot shelf is used up
    assert_eq!((lc.status, lc.shelved), (N, None));
    step(&mut lc, Input::Activate);
    assert!(lc.annunciated(), "the next occurrence is shown");
}

#[test]
fn suppression_by_phase_hides_without_forgetting_and_out_of_service_refuses_shelving() {
    let mut lc = Lifecycle::new(false, true);
    step(&mut lc, Input::Suppress(true)); // e.g. the batch entered a phase the design excludes
    step(&mut lc, Input::Activate);
    assert_eq!(
        lc.status, UA,
        "the transition is still followed (and recorded)"
    );
    assert!(!lc.annunciated());
    step(&mut lc, Input::Suppress(false));
    assert!(
        lc.annunciated(),
        "shown once the phase ends, if still unacknowledged"
    );

    step(&mut lc, Input::Shelve(Shelf::OneShot));
    step(&mut lc, Input::OutOfService);
    assert_eq!(lc.shelved, None, "out of service replaces the shelf");
    assert!(!lc.annunciated());
    assert!(lc.apply(Input::Shelve(Shelf::OneShot)).is_err());
    assert!(lc.apply(Input::OutOfService).is_err());
    step(&mut lc, Input::InService);
    assert!(lc.annunciated());
}
