//! Stores as older releases wrote them, for the migration tests and benchmark only.

use super::{meta_set, storage, CACHE_BYTES, CHUNK, RECORDS};
use pdtf_models::{JournalError, Record};
use redb::Database;
use std::path::Path;

/// Writes a store as an older release did — format 1 (no meta table, no chain) or format 2
/// or 3 (chained from `anchor`, as a purged store is) — for migration tests and the
/// migration benchmark; the agent itself never writes an old format. `break_at` gives one
/// record a wrong link. Records are written in chunks, so a large store needs little memory.
pub fn write_older_store(
    state_dir: &Path,
    version: u8,
    records: impl Iterator<Item = Record>,
    anchor: [u8; 32],
    break_at: Option<u64>,
) -> Result<u64, JournalError> {
    std::fs::create_dir_all(state_dir).map_err(storage)?;
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(state_dir.join("journal.redb"))
        .map_err(storage)?;
    let mut prev = anchor;
    let mut n = 0;
    let mut records = records.peekable();
    while records.peek().is_some() {
        let tx = db.begin_write().map_err(storage)?;
        {
            let mut t = tx.open_table(RECORDS).map_err(storage)?;
            for r in records.by_ref().take(CHUNK) {
                let link = if break_at == Some(r.seq.0) {
                    [9; 32]
                } else {
                    prev
                };
                let bytes = r.encode_older(version, &link);
                if version >= 2 {
                    prev = Record::decode_older(&bytes)
                        .map_err(|e| storage(e.to_string()))?
                        .chain
                        .map_or(prev, |c| c.1);
                }
                t.insert(r.seq.0, bytes.as_slice()).map_err(storage)?;
                n += 1;
            }
        }
        if version >= 2 {
            meta_set(&tx, "format", &[version])?;
            meta_set(&tx, "anchor", &anchor)?;
        }
        tx.commit().map_err(storage)?;
    }
    Ok(n)
}
