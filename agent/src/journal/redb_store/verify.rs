//! Verification of a redb journal: the whole chain, or its tail after a checkpoint, and
//! offline (`pdtf-agent verify`) on a quiet store.

use super::{storage, CACHE_BYTES, META, RECORDS};
use crate::journal::chain::{verify_chain, ChainMeta, VerifyReport};
use pdtf_models::{JournalError, Record};
use redb::{Database, ReadableDatabase};
use std::path::Path;
use tracing::warn;

/// Verifies the journal in `state_dir` without writing to it (for `pdtf-agent verify`).
///
/// After an unclean stop redb must repair its allocator state before the file can be read,
/// which a read-only open cannot do. Then a copy is made next to the system's temp files,
/// repaired by opening it, and verified; the original stays exactly as the crash left it
/// (the agent repairs it itself at its next start). Committed records are what redb's
/// commit made durable, so the copy holds the same records.
pub fn verify_state_dir(
    state_dir: &Path,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, JournalError> {
    let path = state_dir.join("journal.redb");
    if !path.is_file() {
        return Err(storage(format!("no journal at {}", path.display())));
    }
    let in_use = |path: &Path| {
        storage(format!(
            "{} is in use (stop the agent first: verification needs a quiet store)",
            path.display()
        ))
    };
    match redb::ReadOnlyDatabase::open(&path) {
        Ok(db) => return verify_db(&db, None, progress),
        Err(redb::DatabaseError::RepairAborted) => {}
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(in_use(&path)),
        Err(e) => return Err(storage(format!("cannot open {}: {e}", path.display()))),
    }
    let copy = std::env::temp_dir().join(format!(
        "pdtf-verify-{}-{}.redb",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let result = (|| {
        std::fs::copy(&path, &copy).map_err(|e| {
            storage(format!(
                "{} needs recovery after an unclean stop; copying it to {} for verification failed: {e}",
                path.display(),
                copy.display()
            ))
        })?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&copy)
            .map_err(|e| storage(format!("cannot recover a copy of {}: {e}", path.display())))?;
        let mut r = verify_db(&db, None, &mut progress)?;
        r.recovered_copy = true;
        Ok(r)
    })();
    // The copy is ours alone; failing to remove it loses nothing.
    if let Err(e) = std::fs::remove_file(&copy) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(copy = %copy.display(), error = %e, "Verification copy not removed.");
        }
    }
    result
}

/// Checks every stored record: sequence continuity, checksum, decodability and the chain
/// from the anchor to the recorded head. `progress` gets each verified seq.
///
/// With `after` (a checkpoint: every record through it was verified before), the walk starts
/// at record `after + 1` with record `after`'s link as its anchor; when `after` is not stored,
/// the whole store is walked.
pub(super) fn verify_db(
    db: &impl ReadableDatabase,
    after: Option<u64>,
    progress: impl FnMut(u64),
) -> Result<VerifyReport, JournalError> {
    let rtx = db.begin_read().map_err(storage)?;
    // Format 1 stores were written before the meta table existed.
    let meta = match rtx.open_table(META) {
        Ok(t) => Some(t),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(storage(e)),
    };
    let get = |k: &str| -> Result<Option<Vec<u8>>, JournalError> {
        let Some(meta) = &meta else { return Ok(None) };
        Ok(meta.get(k).map_err(storage)?.map(|v| v.value().to_vec()))
    };
    let mut chain_meta = ChainMeta {
        purged_through: get("purged_through")?,
        anchor: get("anchor")?,
        head: get("head")?,
    };
    let t = rtx.open_table(RECORDS).map_err(storage)?;
    let checkpoint = match after {
        Some(seq) => t
            .get(seq)
            .map_err(storage)?
            .and_then(|v| Record::decode(v.value()).ok())
            .map(|stored| (seq, stored.hash)),
        None => None,
    };
    let from = match checkpoint {
        Some((seq, hash)) => {
            chain_meta.purged_through = Some(seq.to_le_bytes().to_vec());
            chain_meta.anchor = Some(hash.to_vec());
            seq + 1
        }
        None => 0,
    };
    let rows = t.range(from..).map_err(storage)?.map(|item| {
        let (k, v) = item.map_err(storage)?;
        Ok((k.value(), v.value().to_vec()))
    });
    verify_chain(chain_meta, rows, progress)
}
