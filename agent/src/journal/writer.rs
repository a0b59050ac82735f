//! Writer state shared by the engines: the next seq and the chain head, behind the lock that
//! makes appends single-writer, and the encoding of entries into chained records.

use pdtf_models::batch::BatchChange;
use pdtf_models::record::ChainHash;
use pdtf_models::{Entry, JournalError, Record, RecordBody, Seq};
use std::sync::{Mutex, MutexGuard};

pub struct Head {
    pub next: u64,
    pub hash: ChainHash,
}

/// Records with their seqs, their stored bytes by seq, and the new chain head.
pub struct Encoded {
    pub records: Vec<Record>,
    pub rows: Vec<(u64, Vec<u8>)>,
    pub link: ChainHash,
}

impl Head {
    /// Gives `entries` the next seqs and chains them after the head (nothing is written).
    pub fn encode(&self, entries: Vec<Entry>) -> Encoded {
        let mut link = self.hash;
        let records: Vec<Record> = entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| Record {
                seq: Seq(self.next + i as u64),
                time: e.time,
                body: e.body,
            })
            .collect();
        let mut records = records;
        let rows = records
            .iter_mut()
            .map(|r| {
                stamp_chain_head(&mut r.body, &link);
                let (bytes, hash) = r.encode(&link);
                link = hash;
                (r.seq.0, bytes)
            })
            .collect();
        Encoded {
            records,
            rows,
            link,
        }
    }

    /// After the commit of `e` returned.
    pub fn advance(&mut self, e: &Encoded) {
        self.next += e.records.len() as u64;
        self.hash = e.link;
    }
}

/// An end-of-batch summary gets the chain head just before its record (the link it is
/// chained to), here, under the writer's lock, where the head is known: a batch report built
/// from the record stream can prove its records are the journal's. A summary that already
/// names a head (a migrated or replayed record) keeps it.
fn stamp_chain_head(body: &mut RecordBody, link: &ChainHash) {
    if let RecordBody::Batch(e) = body {
        if let BatchChange::Ended(s) = &mut e.change {
            if s.chain_head.is_empty() {
                s.chain_head = pdtf_models::record::hex(link);
            }
        }
    }
}

pub struct Writer(Mutex<Head>);

impl Writer {
    pub fn new(head: Head) -> Self {
        Self(Mutex::new(head))
    }

    pub fn lock(&self) -> Result<MutexGuard<'_, Head>, JournalError> {
        self.0
            .lock()
            .map_err(|_| JournalError::Storage("journal writer lock poisoned".into()))
    }
}

/// The hash of the last record purged (`through`, stored as `last`): the chain's new anchor.
pub fn purge_anchor(through: Seq, last: Option<&[u8]>) -> Result<ChainHash, JournalError> {
    let bytes = last.ok_or_else(|| {
        JournalError::Storage(format!("seq {} is not stored; nothing purged", through.0))
    })?;
    Ok(Record::decode(bytes)
        .map_err(|e| super::chain::corrupt(through.0, e.to_string()))?
        .hash)
}

/// Only records the upstream acknowledged may be purged.
pub fn check_purge(through: Seq, acked: u64) -> Result<(), JournalError> {
    if through.0 > acked {
        return Err(JournalError::Storage(format!(
            "refusing to purge through seq {} past the upstream acknowledgement ({acked})",
            through.0
        )));
    }
    Ok(())
}
