//! The audit-chain walk shared by every storage engine: sequence continuity from the purge
//! point, checksum and decodability of each record, each record's `prev` link, and the
//! recorded head. Reports the first bad record.

use pdtf_models::record::{hex, ChainHash, DecodeError, GENESIS};
use pdtf_models::{JournalError, Record};

/// What `verify` found in a store whose chain is intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub first: u64,
    pub last: u64,
    pub records: u64,
    pub head: String,
    /// The file needed recovery after an unclean stop; a recovered copy was verified (the
    /// original was not changed).
    pub recovered_copy: bool,
    /// Records in an older format (written by an earlier release, not migrated yet), if any:
    /// verified in that format's own terms (format 1 has no chain to verify).
    pub older_format: Option<u8>,
}

/// The store's own bookkeeping (its `meta`), as raw values.
pub struct ChainMeta {
    pub purged_through: Option<Vec<u8>>,
    pub anchor: Option<Vec<u8>>,
    pub head: Option<Vec<u8>>,
}

pub fn corrupt(seq: u64, reason: impl Into<String>) -> JournalError {
    JournalError::Corrupt {
        seq,
        reason: reason.into(),
    }
}

pub fn hash_from(v: Option<Vec<u8>>) -> ChainHash {
    v.and_then(|b| b.try_into().ok()).unwrap_or(GENESIS)
}

pub fn u64_from(v: Option<Vec<u8>>) -> u64 {
    v.and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// Walks `rows` (seq, stored bytes) in key order.
pub fn verify_chain(
    meta: ChainMeta,
    rows: impl Iterator<Item = Result<(u64, Vec<u8>), JournalError>>,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, JournalError> {
    let first = u64_from(meta.purged_through) + 1;
    let mut prev = hash_from(meta.anchor);
    let mut expected = first;
    let mut older = None;
    for row in rows {
        let (seq, bytes) = row?;
        if seq != expected {
            return Err(corrupt(
                expected,
                format!("missing: the store jumps from {} to {seq}", expected - 1),
            ));
        }
        let (held, link) = match Record::decode(&bytes) {
            Ok(s) => (s.record.seq.0, Some((s.prev, s.hash))),
            Err(DecodeError::NeedsMigration(v)) => {
                let o = Record::decode_older(&bytes).map_err(|e| corrupt(seq, e.to_string()))?;
                older = Some(v);
                (o.record.seq.0, o.chain)
            }
            Err(e) => return Err(corrupt(seq, e.to_string())),
        };
        if held != seq {
            return Err(corrupt(
                seq,
                format!("stored under {seq} but holds seq {held}"),
            ));
        }
        let Some((stored_prev, hash)) = link else {
            // Format 1: checksummed, but never chained.
            progress(seq);
            expected += 1;
            continue;
        };
        if stored_prev != prev {
            // The link stored here was made from the original of the record before.
            let culprit = seq.saturating_sub(1).max(first);
            return Err(corrupt(
                culprit,
                format!("content does not match the chain link stored in record {seq}: edited, replaced or removed"),
            ));
        }
        prev = hash;
        progress(seq);
        expected += 1;
    }
    let last = expected - 1;
    if last >= first && meta.head.is_some_and(|h| h.as_slice() != prev) {
        return Err(corrupt(
            last,
            "content does not match the recorded chain head: edited",
        ));
    }
    Ok(VerifyReport {
        recovered_copy: false,
        older_format: older,
        first,
        last,
        records: expected - first,
        head: hex(&prev),
    })
}
