//! The batch index: the seqs of every batch record and of every alarm and deviation record
//! inside a batch,
//! kept beside the records (see the layout in `redb_store.rs`), so the HTTP API finds batches
//! and their alarms without reading the samples.

use super::{meta_get, meta_set, storage, u64_from, META};
use pdtf_models::{JournalError, Record, RecordBody, Seq};
use redb::{Database, ReadableDatabase, TableDefinition, WriteTransaction};

const EVENTS: TableDefinition<u64, ()> = TableDefinition::new("batch_events");
const ALARMS: TableDefinition<u64, ()> = TableDefinition::new("batch_alarms");

/// At open: the tables exist, and a store without the index starts it at `next`.
pub(super) fn open(tx: &WriteTransaction, next: u64) -> Result<(), JournalError> {
    tx.open_table(EVENTS).map_err(storage)?;
    tx.open_table(ALARMS).map_err(storage)?;
    if meta_get(tx, "batch_index_since")?.is_none() {
        meta_set(tx, "batch_index_since", &next.to_le_bytes())?;
    }
    Ok(())
}

/// In the append's transaction: indexes `records`.
pub(super) fn index(tx: &WriteTransaction, records: &[Record]) -> Result<(), JournalError> {
    let events: Vec<u64> = records
        .iter()
        .filter(|r| matches!(r.body, RecordBody::Batch(_)))
        .map(|r| r.seq.0)
        .collect();
    let alarms: Vec<u64> = records
        .iter()
        .filter(|r| match &r.body {
            RecordBody::Alarm(a) => a.batch_id.is_some(),
            RecordBody::Deviation(_) => true,
            _ => false,
        })
        .map(|r| r.seq.0)
        .collect();
    for (table, seqs) in [(EVENTS, events), (ALARMS, alarms)] {
        if seqs.is_empty() {
            continue;
        }
        let mut t = tx.open_table(table).map_err(storage)?;
        for s in seqs {
            t.insert(s, ()).map_err(storage)?;
        }
    }
    Ok(())
}

/// In the purge's transaction: drops what `through` purged.
pub(super) fn purge(tx: &WriteTransaction, through: Seq) -> Result<(), JournalError> {
    for table in [EVENTS, ALARMS] {
        tx.open_table(table)
            .map_err(storage)?
            .retain_in(..=through.0, |_, _| false)
            .map_err(storage)?;
    }
    Ok(())
}

/// Up to `max` indexed seqs `>= from` (`alarms`: of in-batch alarms), and where the index
/// starts.
pub(super) fn read(
    db: &Database,
    alarms: bool,
    from: Seq,
    max: usize,
) -> Result<Option<(Seq, Vec<Seq>)>, JournalError> {
    let rtx = db.begin_read().map_err(storage)?;
    let since = rtx
        .open_table(META)
        .map_err(storage)?
        .get("batch_index_since")
        .map_err(storage)?
        .map(|v| u64_from(Some(v.value().to_vec())));
    let Some(since) = since else { return Ok(None) };
    let t = rtx
        .open_table(if alarms { ALARMS } else { EVENTS })
        .map_err(storage)?;
    let mut out = Vec::new();
    for item in t.range(from.0..).map_err(storage)?.take(max) {
        out.push(Seq(item.map_err(storage)?.0.value()));
    }
    Ok(Some((Seq(since), out)))
}
