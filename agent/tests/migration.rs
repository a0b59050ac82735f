//! Format 4 → 5 (the release before this one) on a generated journal of 1,000,000 records, through the real binary
//! (`pdtf-agent migrate`), in its own process so its peak memory is its own: the migration
//! streams, so the peak stays bounded whatever the journal's size. The migrated journal
//! then verifies end to end and reads back what was written.

use pdtf_models::record::Audit;
use pdtf_models::{AlarmEvent, AlarmState, Condition, Level, Quality, Record, RecordBody};
use pdtf_models::{Sample, Seq, TagId, Timestamp};
use std::process::Command;

const RECORDS: u64 = 1_000_000;
/// The bound asserted. A whole-table migration holds every row (and redb every dirty page
/// of the one transaction) at once: far above this for a million records.
const PEAK_RSS_LIMIT_KIB: u64 = 96 * 1024;

fn record(i: u64) -> Record {
    let t = Timestamp::from_unix_millis(1_763_000_000_000 + i as i64);
    let body = match i % 100 {
        0 => RecordBody::Alarm(AlarmEvent {
            condition: Condition::tag_limit(TagId(1)),
            state: AlarmState::Active(Level::Hi),
            previous: None,
            value: 81.0,
            limit: 80.0,
            severity: 500,
            time: t,
            batch_id: None,
            phase: None,
        }),
        1 => RecordBody::Audit(Audit {
            event: "e".into(),
            detail: i.to_string(),
        }),
        _ => RecordBody::Sample(Sample::new(
            TagId((i % 7) as u32),
            i as f64 * 0.5,
            Quality::Good,
            Some(t),
            t,
        )),
    };
    Record {
        seq: Seq(i),
        time: t,
        body,
    }
}

#[test]
fn a_million_record_format_4_journal_migrates_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let n =
        pdtf_agent::journal::write_older_store(&state, 4, (1..=RECORDS).map(record), [3; 32], None)
            .unwrap();
    assert_eq!(n, RECORDS);
    let out = Command::new(env!("CARGO_BIN_EXE_pdtf-agent"))
        .args(["migrate", "--state-dir"])
        .arg(&state)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("seq 1..={RECORDS}")), "{stdout}");
    let peak: u64 = stdout
        .split("peak RSS ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {stdout}"));
    eprintln!("migration of {RECORDS} records: {stdout}");
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "peak RSS {peak} KiB over {PEAK_RSS_LIMIT_KIB} KiB"
    );

    let j = pdtf_agent::journal::open(pdtf_agent::config::Engine::Redb, &state).unwrap();
    let report = j.verify(&mut |_| {}).unwrap();
    assert_eq!(
        (report.first, report.last, report.records),
        (1, RECORDS, RECORDS)
    );
    for seq in [1, 100, 101, 500_000, RECORDS] {
        assert_eq!(
            j.read_from(Seq(seq), 1).unwrap()[0],
            record(seq),
            "seq {seq}"
        );
    }
}
