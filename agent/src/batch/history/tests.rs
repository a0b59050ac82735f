use super::*;
use crate::config::Engine;
use pdtf_models::batch::{Actor, BatchTwin, ProcCommand};
use pdtf_models::Entry;

fn t(s: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_800_000_000_000 + s * 1000)
}

fn batch_entries(events: Vec<pdtf_models::batch::BatchEvent>, at: Timestamp) -> Vec<Entry> {
    crate::batch::event_entries(events, at).collect()
}

fn samples(n: usize, at: Timestamp) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry {
            time: at,
            body: RecordBody::Sample(pdtf_models::Sample::new(
                pdtf_models::TagId(0),
                i as f64,
                pdtf_models::Quality::Good,
                None,
                at,
            )),
        })
        .collect()
}

/// Two batches on line `l` among samples: B-1 runs both phases and completes (then is
/// reset), B-2 starts and stays open.
fn journal(engine: Engine, dir: &std::path::Path) -> std::sync::Arc<dyn crate::journal::Store> {
    let j = crate::journal::open(engine, dir).unwrap();
    let recipe = crate::batch::test_recipe(1, &["preheat", "spraying"]);
    let twin = BatchTwin::new("l", true);
    let p = twin
        .start("B-1", &recipe, t(0), Actor::Agent, true)
        .unwrap();
    j.append(batch_entries(p.events, t(0))).unwrap();
    j.append(samples(500, t(1))).unwrap();
    let p2 = p.next.phase_to(None, t(10), Actor::Agent).unwrap();
    j.append(batch_entries(p2.events, t(10))).unwrap();
    j.append(samples(500, t(11))).unwrap();
    let p3 = p2.next.phase_to(None, t(20), Actor::Agent).unwrap();
    j.append(batch_entries(p3.events, t(20))).unwrap();
    let p4 = p3
        .next
        .command(ProcCommand::Reset, t(21), Actor::Agent)
        .unwrap();
    j.append(batch_entries(p4.events, t(21))).unwrap();
    let p5 = p4
        .next
        .start("B-2", &recipe, t(30), Actor::Agent, true)
        .unwrap();
    j.append(batch_entries(p5.events, t(30))).unwrap();
    j
}

#[test]
fn batches_fold_from_their_records_alone_with_phases_outcome_and_summary() {
    for engine in [Engine::Redb]
        .into_iter()
        .chain(cfg!(feature = "sled").then_some(Engine::Sled))
    {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(engine, dir.path());
        let mut calls = 0;
        let records = batch_records(j.as_ref(), &mut |_, _| calls += 1).unwrap();
        assert!(records
            .iter()
            .all(|r| matches!(r.body, RecordBody::Batch(_))));
        if engine == Engine::Redb {
            assert_eq!(calls, 0, "redb's index: no scan of the samples");
        } else {
            assert!(calls > 0, "sled: a scan, with progress");
        }
        let all = fold(&records);
        assert_eq!(
            all.iter()
                .map(|b| (b.batch_id.as_str(), b.state.as_str(), b.is_open()))
                .collect::<Vec<_>>(),
            [("B-1", "complete", false), ("B-2", "running", true)],
            "{engine:?}: the reset after B-1's end keeps its outcome"
        );
        let b1 = &all[0];
        assert_eq!(
            b1.phases
                .iter()
                .map(|p| (p.name.as_str(), p.end.is_some()))
                .collect::<Vec<_>>(),
            [("preheat", true), ("spraying", true)]
        );
        assert_eq!(b1.summary.as_ref().unwrap().phases.len(), 2);
        assert_eq!(b1.recipe.as_ref().unwrap().id, "gran");
        let late = Filter {
            from: Some(t(25)),
            ..Filter::default()
        };
        assert_eq!(
            all.iter()
                .filter(|b| late.keeps(b))
                .map(|b| b.batch_id.as_str())
                .collect::<Vec<_>>(),
            ["B-2"],
            "B-1 ended before 25 s"
        );
        let early = Filter {
            to: Some(t(5)),
            line: Some("l".into()),
            ..Filter::default()
        };
        assert_eq!(all.iter().filter(|b| early.keeps(b)).count(), 1);
        assert_eq!(
            find(&all, "B-2", Some("l")).map(|b| b.first_seq),
            Some(all[1].first_seq)
        );
        assert!(find(&all, "B-2", Some("other")).is_none());
    }
}

#[test]
fn a_batchs_alarms_are_the_alarm_records_with_its_id_between_its_records() {
    use pdtf_models::{AlarmEvent, AlarmState, Condition, Level};
    let dir = tempfile::tempdir().unwrap();
    let j = journal(Engine::Redb, dir.path());
    let alarm = |batch: Option<&str>| Entry {
        time: t(40),
        body: RecordBody::Alarm(AlarmEvent {
            condition: Condition::tag_limit(pdtf_models::TagId(0)),
            state: AlarmState::Active(Level::Hi),
            previous: None,
            value: 90.0,
            limit: 80.0,
            severity: 500,
            time: t(40),
            batch_id: batch.map(str::to_owned),
            phase: Some("preheat".into()),
        }),
    };
    j.append(vec![alarm(Some("B-2")), alarm(None), alarm(Some("B-2"))])
        .unwrap();
    let all = fold(&batch_records(j.as_ref(), &mut |_, _| {}).unwrap());
    let (listed, count) = batch_alarms(j.as_ref(), &all[1]).unwrap();
    assert_eq!((listed.len(), count), (2, 2));
    let (_, none) = batch_alarms(j.as_ref(), &all[0]).unwrap();
    assert_eq!(none, 0, "B-1 had none");
    let v = detail(&all[1], &listed, count, &[]);
    assert_eq!(v["alarm_count"], 2);
    assert_eq!(v["alarms"][0]["phase"], "preheat");
    assert_eq!(v["batch_id"], "B-2");
}
