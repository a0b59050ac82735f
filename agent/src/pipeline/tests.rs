use super::*;
use crate::clock::SyncState;
use pdtf_models::Gap;

fn pipeline(dir: &std::path::Path) -> LinePipeline {
    let journal = Arc::new(crate::journal::RedbJournal::open(dir).unwrap());
    LinePipeline::new(
        LineTwin::new(2),
        Vec::new(),
        Vec::new(),
        journal,
        None,
        watch::channel(0).0,
        Arc::new(Stats::default()),
        FullPolicy::StopSamples,
    )
}

fn audits(p: &LinePipeline) -> Vec<(String, String)> {
    p.journal
        .read_from(Seq(1), usize::MAX)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.body {
            RecordBody::Audit(a) => Some((a.event, a.detail)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn an_unsynchronised_host_clock_is_recorded_at_the_first_tick_and_its_return_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path());
    p.clocks.read_sync = || {
        Some(SyncState {
            synchronized: false,
            max_error_us: 16_000_000,
        })
    };
    p.control(Control::Tick).await;
    p.control(Control::Tick).await;
    assert_eq!(Stats::get(&p.stats.clock_synchronized), 0);
    p.clocks.read_sync = || {
        Some(SyncState {
            synchronized: true,
            max_error_us: 30,
        })
    };
    p.control(Control::Tick).await;
    assert_eq!(Stats::get(&p.stats.clock_synchronized), 1);
    let events: Vec<String> = audits(&p).into_iter().map(|(e, _)| e).collect();
    assert_eq!(events, vec!["clock_unsynchronized", "clock_synchronized"]);
}

#[tokio::test]
async fn a_crash_while_over_quota_leaves_each_lines_refused_count_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path());
    // A second line on the same journal, with its own cursors: the counts never mix.
    let mut q = LinePipeline::new(
        LineTwin::new(3),
        Vec::new(),
        Vec::new(),
        p.journal.clone(),
        None,
        p.committed.clone(),
        p.stats.clone(),
        FullPolicy::StopSamples,
    );
    q.primary = false;
    q.refused_cursors = refusal_cursors(1, "coating");
    Stats::set_flag(&p.stats.store_full, true);
    let t = now();
    for (line, tag, n) in [(&mut p, TagId(1), 7), (&mut q, TagId(2), 3)] {
        let samples: Vec<Sample> = (0..n)
            .map(|i| Sample::new(tag, f64::from(i), pdtf_models::Quality::Good, None, t))
            .collect();
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        line.track_full(&mut out);
        line.apply(SourceMsg::Samples(samples), &mut out, &mut scratch)
            .await;
        line.commit(out).await;
        line.control(Control::Tick).await;
    }
    let last = p.journal.last_seq().unwrap().0;
    drop((p, q)); // the crash: no end of the spans, no stop record
    let j = crate::journal::RedbJournal::open(dir.path()).unwrap();
    let refusals = vec![
        (refusal_cursors(0, "granulation"), vec![TagId(1)]),
        (refusal_cursors(1, "coating"), vec![TagId(2)]),
    ];
    let records =
        crate::startup::startup_records(&j, last, &[TagId(1)], &refusals, "x".into()).unwrap();
    let gaps: Vec<Gap> = records
        .iter()
        .filter_map(|e| match &e.body {
            RecordBody::Gap(g) if g.source == "journal" => Some(g.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(gaps.len(), 2, "one refused span per line: {gaps:?}");
    assert!(
        gaps[0].reason.contains("at least 7 samples"),
        "{}",
        gaps[0].reason
    );
    assert_eq!(gaps[0].tags, vec![TagId(1)]);
    assert!(
        gaps[1].reason.contains("at least 3 samples"),
        "{}",
        gaps[1].reason
    );
    assert_eq!(gaps[1].tags, vec![TagId(2)]);
    assert!(gaps.iter().all(|g| g.start <= g.end));
    assert!(records
        .iter()
        .any(|e| matches!(&e.body, RecordBody::Audit(a) if a.event == "storage_full_at_crash")));
    j.append(records).unwrap();
    crate::startup::clear_refusal_cursors(&j, refusals.iter().map(|(c, _)| c)).unwrap();
    let again =
        crate::startup::startup_records(&j, last, &[TagId(1)], &refusals, "x".into()).unwrap();
    assert!(!again
        .iter()
        .any(|e| matches!(&e.body, RecordBody::Gap(g) if g.source == "journal")));
}
