use super::*;
use crate::journal::migrate::Progress;
use crate::journal::tests::entries;
use pdtf_models::{record::Audit, record::GENESIS, RecordBody, Timestamp};

#[test]
fn seqs_are_contiguous_across_reopen_and_cursors_persist() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = RedbJournal::open(dir.path()).unwrap();
        assert_eq!(j.last_seq().unwrap(), Seq(0));
        let a = j.append(entries(3)).unwrap();
        assert_eq!(a.iter().map(|r| r.seq.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(j.append(vec![]).unwrap().is_empty());
        j.set_cursor("upstream", Seq(2)).unwrap();
    }
    let j = RedbJournal::open(dir.path()).unwrap();
    assert_eq!(j.last_seq().unwrap(), Seq(3));
    let b = j.append(entries(2)).unwrap();
    assert_eq!(b[0].seq, Seq(4));
    let all = j.read_from(Seq(1), 100).unwrap();
    assert_eq!(
        all.iter().map(|r| r.seq.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(j.read_from(Seq(4), 1).unwrap().len(), 1);
    assert_eq!(j.cursor("upstream").unwrap(), Seq(2));
    assert_eq!(j.cursor("never").unwrap(), Seq(0));
    let report = j.verify(|_| {}).unwrap();
    assert_eq!((report.first, report.last, report.records), (1, 5, 5));
}

#[test]
fn a_reopen_in_place_keeps_the_records_and_refuses_a_store_that_disagrees_with_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let j = RedbJournal::open(dir.path()).unwrap();
    j.append(entries(3)).unwrap();
    let what = j.reopen().unwrap().expect("redb reopens");
    assert!(what.contains("3 records (seq 1..=3)"), "{what}");
    assert_eq!(j.append(entries(2)).unwrap()[0].seq, Seq(4));
    assert_eq!(j.read_from(Seq(1), 10).unwrap().len(), 5);
    // A store that does not end where the writer's last commit did is not taken back.
    j.head.lock().unwrap().next = 9;
    match j.reopen() {
        Err(JournalError::Corrupt { seq: 5, reason }) => {
            assert!(reason.contains("seq 8"), "{reason}")
        }
        other => panic!("a disagreeing store was reopened: {other:?}"),
    }
}

/// Rewrites record `seq` in place with `edit` applied to its stored bytes.
fn tamper(dir: &Path, seq: u64, edit: impl FnOnce(&mut Vec<u8>)) {
    let db = Database::open(dir.join("journal.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_table(RECORDS).unwrap();
        let mut bytes = t.get(seq).unwrap().unwrap().value().to_vec();
        edit(&mut bytes);
        t.insert(seq, bytes.as_slice()).unwrap();
    }
    tx.commit().unwrap();
}

fn verify_err(dir: &Path) -> (u64, String) {
    let j = RedbJournal::open(dir).err();
    if let Some(JournalError::Corrupt { seq, reason }) = j {
        return (seq, reason); // the last record is checked at open
    }
    match RedbJournal::open(dir).unwrap().verify(|_| {}) {
        Err(JournalError::Corrupt { seq, reason }) => (seq, reason),
        other => panic!("tampering not detected: {other:?}"),
    }
}

#[test]
fn a_flipped_byte_is_reported_with_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    RedbJournal::open(dir.path())
        .unwrap()
        .append(entries(10))
        .unwrap();
    tamper(dir.path(), 4, |b| {
        let n = b.len() - 1;
        b[n] ^= 0x01;
    });
    let (seq, reason) = verify_err(dir.path());
    assert_eq!(seq, 4);
    assert!(reason.contains("checksum"), "{reason}");
}

#[test]
fn a_consistent_edit_is_caught_by_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    RedbJournal::open(dir.path())
        .unwrap()
        .append(entries(10))
        .unwrap();
    // Re-encode record 6 with other content, valid CRC and the right prev: only the chain
    // link held by record 7 can tell.
    tamper(dir.path(), 6, |b| {
        let s = Record::decode(b).unwrap();
        let mut r = s.record;
        r.body = RecordBody::Audit(Audit {
            event: "test".into(),
            detail: "forged".into(),
        });
        *b = r.encode(&s.prev).0;
    });
    let (seq, reason) = verify_err(dir.path());
    assert_eq!(seq, 6, "{reason}");
    assert!(reason.contains("chain"), "{reason}");
}

#[test]
fn an_edit_of_the_last_record_is_caught_by_the_head() {
    let dir = tempfile::tempdir().unwrap();
    RedbJournal::open(dir.path())
        .unwrap()
        .append(entries(3))
        .unwrap();
    tamper(dir.path(), 3, |b| {
        let s = Record::decode(b).unwrap();
        let mut r = s.record;
        r.time = Timestamp::from_unix_millis(77);
        *b = r.encode(&s.prev).0;
    });
    assert_eq!(verify_err(dir.path()).0, 3);
}

#[test]
fn a_removed_record_is_reported_missing() {
    let dir = tempfile::tempdir().unwrap();
    RedbJournal::open(dir.path())
        .unwrap()
        .append(entries(5))
        .unwrap();
    {
        let db = Database::open(dir.path().join("journal.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(RECORDS).unwrap().remove(2).unwrap();
        tx.commit().unwrap();
    }
    let (seq, reason) = verify_err(dir.path());
    assert_eq!(seq, 2);
    assert!(reason.contains("missing"), "{reason}");
}

/// A store as an older release wrote it (see `write_older_store`), purged before seq 1 in
/// the chained formats (anchor `[5; 32]`). `break_at` edits the link of that index.
fn write_old_store(dir: &Path, version: u8, n: usize, break_at: Option<usize>) {
    let records = entries(n).into_iter().enumerate().map(|(i, e)| Record {
        seq: Seq(i as u64 + 1),
        time: e.time,
        body: e.body,
    });
    write_older_store(
        dir,
        version,
        records,
        [5; 32],
        break_at.map(|i| i as u64 + 1),
    )
    .unwrap();
}

#[test]
fn format_1_to_4_stores_are_migrated_explicitly_and_a_newer_one_refused() {
    for version in [1, 2, 3, 4] {
        let dir = tempfile::tempdir().unwrap();
        write_old_store(dir.path(), version, 4, None);
        let j = RedbJournal::open(dir.path()).unwrap();
        assert_eq!(j.read_from(Seq(1), 10).unwrap().len(), 4, "v{version}");
        assert_eq!(j.verify(|_| {}).unwrap().records, 4, "v{version}");
        j.append(entries(1)).unwrap();
        assert_eq!(j.verify(|_| {}).unwrap().last, 5);
        drop(j);
        {
            let db = Database::open(dir.path().join("journal.redb")).unwrap();
            let tx = db.begin_write().unwrap();
            meta_set(&tx, "format", &[9]).unwrap();
            tx.commit().unwrap();
        }
        let err = RedbJournal::open(dir.path())
            .err()
            .expect("newer format refused");
        assert!(err.to_string().contains("newer than this agent"), "{err}");
    }
}

#[test]
fn a_format_3_alarm_becomes_its_tags_limit_condition() {
    use pdtf_models::{AlarmEvent, AlarmState, Condition, Level, TagId};
    let dir = tempfile::tempdir().unwrap();
    let t = Timestamp::from_unix_millis(5);
    let alarm = AlarmEvent {
        condition: Condition::tag_limit(TagId(7)),
        state: AlarmState::Active(Level::Hi),
        previous: None,
        value: 81.0,
        limit: 80.0,
        severity: 500,
        time: t,
        batch_id: None,
        phase: None,
    };
    let r = Record {
        seq: Seq(1),
        time: t,
        body: RecordBody::Alarm(alarm.clone()),
    };
    write_older_store(dir.path(), 3, std::iter::once(r), GENESIS, None).unwrap();
    let j = RedbJournal::open(dir.path()).unwrap();
    assert_eq!(
        j.read_from(Seq(1), 1).unwrap()[0].body,
        RecordBody::Alarm(alarm)
    );
}

/// A migration interrupted after some chunks (as a crash leaves it: those records new, a
/// marker, the rest old) finishes at the next open, and the chain verifies end to end.
#[test]
fn an_interrupted_migration_resumes_from_its_marker() {
    let dir = tempfile::tempdir().unwrap();
    write_old_store(dir.path(), 3, 50, None);
    {
        let db = Database::open(dir.path().join("journal.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        let rows: Vec<(u64, Vec<u8>)> = {
            let t = tx.open_table(RECORDS).unwrap();
            let rows = t.range(1..=20).unwrap();
            rows.map(|i| {
                let (k, v) = i.unwrap();
                (k.value(), v.value().to_vec())
            })
            .collect()
        };
        let mut p = Progress::start(3);
        let new = p.convert(&rows).unwrap();
        {
            let mut t = tx.open_table(RECORDS).unwrap();
            for (seq, b) in &new {
                t.insert(*seq, b.as_slice()).unwrap();
            }
        }
        meta_set(&tx, "migration", &p.encode()).unwrap();
        tx.commit().unwrap();
    }
    let j = RedbJournal::open(dir.path()).unwrap();
    let r = j.verify(|_| {}).unwrap();
    assert_eq!((r.first, r.last, r.records), (1, 50, 50));
    assert_eq!(j.read_from(Seq(1), 100).unwrap().len(), 50);
}

#[test]
fn a_format_2_store_with_a_broken_chain_is_not_migrated() {
    let dir = tempfile::tempdir().unwrap();
    write_old_store(dir.path(), 2, 5, Some(3));
    let err = RedbJournal::open(dir.path()).err().expect("refused");
    assert!(err.to_string().contains("chain is broken"), "{err}");
}

#[test]
fn purge_keeps_the_chain_verifiable_and_never_passes_the_upstream_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let j = RedbJournal::open(dir.path()).unwrap();
    j.append(entries(10)).unwrap();
    j.set_cursor(UPSTREAM_CURSOR, Seq(6)).unwrap();
    let audit = || entries(1).pop().unwrap();
    let err = j.purge_through(Seq(7), audit()).unwrap_err();
    assert!(
        err.to_string()
            .contains("past the upstream acknowledgement"),
        "{err}"
    );
    let a = j.purge_through(Seq(4), audit()).unwrap();
    assert_eq!(
        a[0].seq,
        Seq(11),
        "the purge's audit record continues the sequence"
    );
    assert_eq!(j.first_seq().unwrap(), Seq(5));
    assert_eq!(j.read_from(Seq(1), 100).unwrap()[0].seq, Seq(5));
    let r = j.verify(|_| {}).unwrap();
    assert_eq!((r.first, r.last, r.records), (5, 11, 7));
    assert!(j.stored_bytes().unwrap() > 0);
    drop(j);
    let j = RedbJournal::open(dir.path()).unwrap();
    assert_eq!(j.verify(|_| {}).unwrap().first, 5, "anchor survives reopen");
    j.append(entries(1)).unwrap();
    assert_eq!(j.verify(|_| {}).unwrap().last, 12);
}

/// A crash during the very first start leaves at most a half-made `journal.redb.creating`
/// (never a half-made `journal.redb`): the next start discards it and creates the journal.
#[test]
fn a_half_created_journal_file_does_not_block_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("journal.redb.creating"), b"red").unwrap();
    let j = RedbJournal::open(dir.path()).unwrap();
    j.append(entries(1)).unwrap();
    assert!(!dir.path().join("journal.redb.creating").exists());
    assert!(dir.path().join("journal.redb").is_file());
}

/// `verify` on a journal an earlier release wrote (not migrated yet) checks it in its own
/// format instead of calling every record corrupt; a broken old chain is still found.
#[test]
fn verify_reads_an_unmigrated_older_store_in_its_own_format() {
    for version in [1, 2, 3, 4] {
        let dir = tempfile::tempdir().unwrap();
        write_old_store(dir.path(), version, 6, None);
        let r = verify_state_dir(dir.path(), |_| {}).unwrap();
        assert_eq!((r.first, r.last, r.older_format), (1, 6, Some(version)));
    }
    let dir = tempfile::tempdir().unwrap();
    write_old_store(dir.path(), 3, 6, Some(3));
    match verify_state_dir(dir.path(), |_| {}) {
        Err(JournalError::Corrupt { seq, .. }) => assert_eq!(seq, 3),
        other => panic!("broken chain not found: {other:?}"),
    }
}

#[test]
fn verify_after_checks_only_the_tail_and_falls_back_to_the_whole_store() {
    let dir = tempfile::tempdir().unwrap();
    RedbJournal::open(dir.path())
        .unwrap()
        .append(entries(10))
        .unwrap();
    tamper(dir.path(), 3, |b| {
        let n = b.len() - 1;
        b[n] ^= 0x01;
    });
    let j = RedbJournal::open(dir.path()).unwrap();
    assert!(matches!(
        j.verify(|_| {}),
        Err(JournalError::Corrupt { seq: 3, .. })
    ));
    // Through the checkpoint the store is trusted: only 6..=10 are read.
    let mut seen = Vec::new();
    let r = j.verify_after(5, |s| seen.push(s)).unwrap();
    assert_eq!((r.first, r.last, r.records), (6, 10, 5));
    assert_eq!(seen, vec![6, 7, 8, 9, 10]);
    // A checkpoint that is not stored: the whole store, which finds the flipped byte.
    assert!(matches!(
        j.verify_after(99, |_| {}),
        Err(JournalError::Corrupt { seq: 3, .. })
    ));
    drop(j);
    // A consistent edit in the tail is caught by the chain, anchored on the checkpoint.
    tamper(dir.path(), 8, |b| {
        let s = Record::decode(b).unwrap();
        let mut r = s.record;
        r.time = Timestamp::from_unix_millis(77);
        *b = r.encode(&s.prev).0;
    });
    let j = RedbJournal::open(dir.path()).unwrap();
    match j.verify_after(5, |_| {}) {
        Err(JournalError::Corrupt { seq: 8, reason }) => {
            assert!(reason.contains("chain"), "{reason}")
        }
        other => panic!("a tail edit was not found: {other:?}"),
    }
}

#[test]
fn the_alarm_index_keeps_each_conditions_last_transition_and_is_backfilled_once() {
    use pdtf_models::{AlarmEvent, AlarmState, Condition, Level, TagId};
    let alarm = |tag: u32, state: AlarmState| Entry {
        time: Timestamp::from_unix_millis(5),
        body: RecordBody::Alarm(AlarmEvent {
            condition: Condition::tag_limit(TagId(tag)),
            state,
            previous: None,
            value: 81.0,
            limit: 80.0,
            severity: 500,
            time: Timestamp::from_unix_millis(5),
            batch_id: None,
            phase: None,
        }),
    };
    let last = |j: &RedbJournal| -> Vec<(u64, AlarmState)> {
        let (since, records) = j.last_alarm_transitions().unwrap().expect("redb keeps one");
        assert_eq!(since, Seq(1));
        let mut v: Vec<_> = records
            .iter()
            .map(|r| match &r.body {
                RecordBody::Alarm(a) => (r.seq.0, a.state),
                other => panic!("not an alarm: {other:?}"),
            })
            .collect();
        v.sort_by_key(|x| x.0);
        v
    };
    let dir = tempfile::tempdir().unwrap();
    let j = RedbJournal::open(dir.path()).unwrap();
    j.append(entries(3)).unwrap();
    j.append(vec![
        alarm(1, AlarmState::Active(Level::Hi)), // seq 4
        alarm(2, AlarmState::Active(Level::Hi)), // seq 5
    ])
    .unwrap();
    j.append(entries(2)).unwrap();
    j.append(vec![alarm(1, AlarmState::Inactive)]).unwrap(); // seq 8
    let want = vec![
        (5, AlarmState::Active(Level::Hi)),
        (8, AlarmState::Inactive),
    ];
    assert_eq!(last(&j), want);
    drop(j);
    assert_eq!(
        last(&RedbJournal::open(dir.path()).unwrap()),
        want,
        "kept across a reopen"
    );

    // A store from before the index: no table, no marker. Its first open fills it in.
    {
        let db = Database::open(dir.path().join("journal.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.delete_table(ALARMS).unwrap();
        tx.open_table(META)
            .unwrap()
            .remove("alarm_index_since")
            .unwrap();
        tx.commit().unwrap();
    }
    assert_eq!(
        last(&RedbJournal::open(dir.path()).unwrap()),
        want,
        "backfilled"
    );
}

#[test]
fn stored_bytes_is_a_counter_kept_through_commits_purges_and_a_first_open() {
    let dir = tempfile::tempdir().unwrap();
    let j = RedbJournal::open(dir.path()).unwrap();
    assert_eq!(j.stored_bytes().unwrap(), 0);
    j.append(entries(10)).unwrap();
    let sum = |j: &RedbJournal| -> u64 {
        let db = j.db().unwrap();
        let rtx = db.begin_read().unwrap();
        let t = rtx.open_table(RECORDS).unwrap();
        t.iter()
            .unwrap()
            .map(|i| 8 + i.unwrap().1.value().len() as u64)
            .sum()
    };
    assert_eq!(j.stored_bytes().unwrap(), sum(&j));
    let before = j.stored_bytes().unwrap();
    j.set_cursor("upstream", Seq(6)).unwrap();
    j.purge_through(Seq(6), entries(1).remove(0)).unwrap();
    let after = j.stored_bytes().unwrap();
    assert!(after < before, "{after} < {before}");
    assert_eq!(after, sum(&j));
    drop(j);
    // A store from before the counter: its first open counts the records once.
    {
        let db = Database::open(dir.path().join("journal.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META).unwrap().remove("record_bytes").unwrap();
        tx.commit().unwrap();
    }
    let j = RedbJournal::open(dir.path()).unwrap();
    assert_eq!(j.stored_bytes().unwrap(), after);
}

#[test]
fn a_reopen_verifies_after_the_checkpoint_and_still_refuses_a_short_store() {
    let dir = tempfile::tempdir().unwrap();
    let j = RedbJournal::open(dir.path()).unwrap();
    j.append(entries(5)).unwrap();
    j.set_cursor(crate::verified::CURSOR, Seq(4)).unwrap();
    let what = j.reopen().unwrap().expect("redb reopens");
    assert!(
        what.contains("1 records (seq 5..=5)") && what.contains("after the verified checkpoint"),
        "{what}"
    );
    // Checkpoint at the end, nothing after it: a store that ends before the writer's last
    // commit is still refused.
    j.set_cursor(crate::verified::CURSOR, Seq(5)).unwrap();
    j.head.lock().unwrap().next = 9;
    match j.reopen() {
        Err(JournalError::Corrupt { reason, .. }) => assert!(reason.contains("seq 8"), "{reason}"),
        other => panic!("a short store was reopened: {other:?}"),
    }
}
