//! Migrating a redb store in place from an older record format (see `journal/migrate.rs`
//! for the streaming, resumable scheme).

use super::super::migrate::{Progress, CHUNK};
use super::{meta_get, meta_set, storage, META, RECORDS};
use pdtf_models::JournalError;
use redb::{Database, ReadableTable};
use tracing::{info, warn};

/// Rewrites every record of format `from` in the current format, a chunk per transaction
/// (see `migrate.rs`); resumes from the marker a crash left.
pub(super) fn migrate(db: &Database, from: u8) -> Result<(), JournalError> {
    let mut p = {
        let tx = db.begin_write().map_err(storage)?;
        let marker = meta_get(&tx, "migration")?;
        tx.abort().map_err(storage)?;
        match marker {
            Some(m) => Progress::decode(&m)?,
            None => Progress::start(from),
        }
    };
    if p.from != from {
        return Err(storage(format!(
            "migration marker says format {}, the store says {from}; restore from a backup",
            p.from
        )));
    }
    let started = std::time::Instant::now();
    loop {
        let tx = db.begin_write().map_err(storage)?;
        let rows = {
            let t = tx.open_table(RECORDS).map_err(storage)?;
            let mut rows = Vec::with_capacity(CHUNK);
            for item in t.range(p.through + 1..).map_err(storage)?.take(CHUNK) {
                let (k, v) = item.map_err(storage)?;
                rows.push((k.value(), v.value().to_vec()));
            }
            rows
        };
        if rows.is_empty() {
            meta_set(&tx, "format", &[pdtf_models::record::FORMAT_VERSION])?;
            if p.records > 0 {
                meta_set(&tx, "head", &p.link)?;
            }
            {
                let mut meta = tx.open_table(META).map_err(storage)?;
                meta.remove("migration").map_err(storage)?;
                // Records changed size: the byte counter is recounted at the next open.
                meta.remove("record_bytes").map_err(storage)?;
            }
            tx.commit().map_err(storage)?;
            break;
        }
        let converted = p.convert(&rows)?;
        drop(rows);
        {
            let mut t = tx.open_table(RECORDS).map_err(storage)?;
            for (seq, bytes) in &converted {
                t.insert(*seq, bytes.as_slice()).map_err(storage)?;
            }
        }
        meta_set(&tx, "migration", &p.encode())?;
        tx.commit().map_err(storage)?;
        if p.records.is_multiple_of(10 * CHUNK as u64) {
            info!(
                records = p.records,
                through = p.through,
                "Migrating the journal ..."
            );
        }
    }
    warn!(
        records = p.records,
        from,
        to = pdtf_models::record::FORMAT_VERSION,
        old_head = p.old_head(),
        secs = started.elapsed().as_secs_f64(),
        "Journal migrated to the current record format."
    );
    Ok(())
}
