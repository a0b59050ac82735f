//! The alarm index: each condition's last transition, kept beside the records (see the
//! layout in `redb_store.rs`), so a start reads one record per condition instead of scanning.

use super::{corrupt, storage, u64_from, ALARMS, META, RECORDS};
use pdtf_models::{JournalError, Record, Seq};
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

/// How far back the alarm index of a store written before it existed is filled in at its
/// first open: as far as the start-up scan looked before the index.
const ALARM_BACKFILL_RECORDS: usize = 500_000;

/// Fills the alarm index from the last `ALARM_BACKFILL_RECORDS` records, newest first (the
/// newest transition of each condition wins). Once per store.
pub(super) fn backfill(tx: &WriteTransaction) -> Result<(), JournalError> {
    let records = tx.open_table(RECORDS).map_err(storage)?;
    let mut index = tx.open_table(ALARMS).map_err(storage)?;
    for item in records
        .iter()
        .map_err(storage)?
        .rev()
        .take(ALARM_BACKFILL_RECORDS)
    {
        let (k, v) = item.map_err(storage)?;
        let seq = k.value();
        let r = Record::decode(v.value()).map_err(|e| corrupt(seq, e.to_string()))?;
        if let Some(key) = r.record.body.alarm_index_key() {
            if index.get(key.as_slice()).map_err(storage)?.is_none() {
                index.insert(key.as_slice(), seq).map_err(storage)?;
            }
        }
    }
    Ok(())
}

/// Every condition's last transition still stored, and where the index starts.
pub(super) fn last_transitions(db: &Database) -> Result<Option<(Seq, Vec<Record>)>, JournalError> {
    let rtx = db.begin_read().map_err(storage)?;
    let since = match rtx.open_table(META) {
        Ok(meta) => meta
            .get("alarm_index_since")
            .map_err(storage)?
            .map(|v| u64_from(Some(v.value().to_vec()))),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(storage(e)),
    };
    let Some(since) = since else { return Ok(None) };
    let index = rtx.open_table(ALARMS).map_err(storage)?;
    let records = rtx.open_table(RECORDS).map_err(storage)?;
    let mut out = Vec::new();
    for item in index.iter().map_err(storage)? {
        let seq = item.map_err(storage)?.1.value();
        let Some(v) = records.get(seq).map_err(storage)? else {
            continue; // purged
        };
        let r = Record::decode(v.value()).map_err(|e| corrupt(seq, e.to_string()))?;
        out.push(r.record);
    }
    Ok(Some((Seq(since), out)))
}
