//! Journal on sled (feature `sled`), kept for the engine comparison. Same record format and
//! chain as the redb store; directory `journal.sled/` in the state directory.
//!
//! Trees: `records` (u64 big-endian seq → record bytes), `cursors` (name → u64 LE), `meta`
//! (`format`, `head`, `anchor`, `purged_through`). An append is one multi-tree transaction
//! followed by `flush()` (sled makes nothing durable before a flush), so when it returns the
//! records are on disk.

use super::chain::{corrupt, hash_from, u64_from, verify_chain, ChainMeta, VerifyReport};
use super::writer::{check_purge, purge_anchor, Head, Writer};
use pdtf_connectors::upstream::CURSOR as UPSTREAM_CURSOR;
use pdtf_models::journal::{check_registry, registry_from};
use pdtf_models::record::{ChainHash, FORMAT_VERSION};
use pdtf_models::{Entry, Journal, JournalError, Record, Seq, TagRegistry};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use std::path::{Path, PathBuf};

fn storage(e: impl std::fmt::Display) -> JournalError {
    JournalError::Storage(e.to_string())
}

fn tx_err(e: TransactionError<JournalError>) -> JournalError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => storage(e),
    }
}

pub struct SledJournal {
    db: sled::Db,
    records: sled::Tree,
    cursors: sled::Tree,
    meta: sled::Tree,
    path: PathBuf,
    head: Writer,
}

fn get(t: &sled::Tree, k: &str) -> Result<Option<Vec<u8>>, JournalError> {
    Ok(t.get(k).map_err(storage)?.map(|v| v.to_vec()))
}

type TxResult<T> = Result<T, ConflictableTransactionError<JournalError>>;

fn append_tx(
    r: &TransactionalTree,
    m: &TransactionalTree,
    encoded: &[(u64, Vec<u8>)],
    link: &ChainHash,
) -> TxResult<()> {
    for (seq, bytes) in encoded {
        r.insert(&seq.to_be_bytes(), bytes.as_slice())?;
    }
    m.insert("head", link.as_slice())?;
    Ok(())
}

/// The streaming, resumable migration of `migrate.rs`, a chunk per sled transaction.
fn migrate(
    db: &sled::Db,
    records: &sled::Tree,
    meta: &sled::Tree,
    from: u8,
) -> Result<(), JournalError> {
    let mut p = match get(meta, "migration")? {
        Some(m) => super::migrate::Progress::decode(&m)?,
        None => super::migrate::Progress::start(from),
    };
    loop {
        let mut rows = Vec::with_capacity(super::migrate::CHUNK);
        for item in records
            .range((p.through + 1).to_be_bytes()..)
            .take(super::migrate::CHUNK)
        {
            let (k, v) = item.map_err(storage)?;
            let seq = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| storage("bad record key"))?,
            );
            rows.push((seq, v.to_vec()));
        }
        if rows.is_empty() {
            break;
        }
        let converted = p.convert(&rows)?;
        let marker = p.encode();
        (records, meta)
            .transaction(|(r, m)| {
                for (seq, bytes) in &converted {
                    r.insert(&seq.to_be_bytes(), bytes.as_slice())?;
                }
                m.insert("migration", marker.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        db.flush().map_err(storage)?;
    }
    let head = p.link;
    let has_records = p.records > 0;
    meta.transaction(|m| {
        m.insert("format", &[FORMAT_VERSION])?;
        if has_records {
            m.insert("head", head.as_slice())?;
        }
        m.remove("migration")?;
        Ok::<_, ConflictableTransactionError<JournalError>>(())
    })
    .map_err(tx_err)?;
    db.flush().map_err(storage)?;
    tracing::warn!(
        records = p.records,
        from,
        to = FORMAT_VERSION,
        old_head = p.old_head(),
        "Journal migrated to the current record format."
    );
    Ok(())
}

impl SledJournal {
    pub fn open(state_dir: &Path) -> Result<Self, JournalError> {
        let path = state_dir.join("journal.sled");
        // sled releases its file lock from a background thread after the last handle is
        // dropped; a reopen right after a close (a restart in the same process) can find the
        // lock still held for a moment. Another process holding it keeps it: that still fails.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let db = loop {
            match sled::Config::new().path(&path).open() {
                Ok(db) => break db,
                // sled reports it as ErrorKind::Other with this message (config.rs).
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(storage(format!("cannot open {}: {e}", path.display()))),
            }
        };
        let records = db.open_tree("records").map_err(storage)?;
        let cursors = db.open_tree("cursors").map_err(storage)?;
        let meta = db.open_tree("meta").map_err(storage)?;
        match get(&meta, "format")?.as_deref() {
            None if records.is_empty() => {
                meta.insert("format", &[FORMAT_VERSION]).map_err(storage)?;
                db.flush().map_err(storage)?;
            }
            Some([FORMAT_VERSION]) => {}
            Some([v @ 1..=5]) => migrate(&db, &records, &meta, *v)?,
            other => {
                return Err(storage(format!(
                    "{} holds record format {other:?}; this agent knows {FORMAT_VERSION}",
                    path.display()
                )))
            }
        }
        let head = match records.last().map_err(storage)? {
            Some((k, v)) => {
                let seq = u64::from_be_bytes(
                    k.as_ref()
                        .try_into()
                        .map_err(|_| storage("bad record key"))?,
                );
                Head {
                    next: seq + 1,
                    hash: Record::decode(&v)
                        .map_err(|e| corrupt(seq, e.to_string()))?
                        .hash,
                }
            }
            None => Head {
                next: u64_from(get(&meta, "purged_through")?) + 1,
                hash: hash_from(get(&meta, "anchor")?),
            },
        };
        Ok(Self {
            db,
            records,
            cursors,
            meta,
            path,
            head: Writer::new(head),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn verify(&self, progress: impl FnMut(u64)) -> Result<VerifyReport, JournalError> {
        let meta = ChainMeta {
            purged_through: get(&self.meta, "purged_through")?,
            anchor: get(&self.meta, "anchor")?,
            head: get(&self.meta, "head")?,
        };
        let rows = self.records.iter().map(|item| {
            let (k, v) = item.map_err(storage)?;
            let seq = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| storage("bad record key"))?,
            );
            Ok((seq, v.to_vec()))
        });
        verify_chain(meta, rows, progress)
    }
}

impl Journal for SledJournal {
    fn append(&self, entries: Vec<Entry>) -> Result<Vec<Record>, JournalError> {
        let mut head = self.head.lock()?;
        if entries.is_empty() {
            return Ok(vec![]);
        }
        let e = head.encode(entries);
        (&self.records, &self.meta)
            .transaction(|(r, m)| append_tx(r, m, &e.rows, &e.link))
            .map_err(tx_err)?;
        self.db.flush().map_err(storage)?;
        head.advance(&e);
        Ok(e.records)
    }

    fn read_from(&self, from: Seq, max: usize) -> Result<Vec<Record>, JournalError> {
        let mut out = Vec::with_capacity(max.min(4096));
        for item in self.records.range(from.0.to_be_bytes()..).take(max) {
            let (k, v) = item.map_err(storage)?;
            let seq = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| storage("bad record key"))?,
            );
            let s = Record::decode(&v).map_err(|e| corrupt(seq, e.to_string()))?;
            out.push(s.record);
        }
        Ok(out)
    }

    fn read_back(&self, before: Seq, max: usize) -> Result<Vec<Record>, JournalError> {
        let mut out = Vec::with_capacity(max.min(4096));
        for item in self.records.range(..before.0.to_be_bytes()).rev().take(max) {
            let (k, v) = item.map_err(storage)?;
            let seq = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| storage("bad record key"))?,
            );
            out.push(
                Record::decode(&v)
                    .map_err(|e| corrupt(seq, e.to_string()))?
                    .record,
            );
        }
        Ok(out)
    }

    fn last_seq(&self) -> Result<Seq, JournalError> {
        Ok(Seq(self.head.lock()?.next - 1))
    }

    fn cursor(&self, name: &str) -> Result<Seq, JournalError> {
        Ok(Seq(u64_from(get(&self.cursors, name)?)))
    }

    fn set_cursor(&self, name: &str, seq: Seq) -> Result<(), JournalError> {
        self.cursors
            .insert(name, &seq.0.to_le_bytes())
            .map_err(storage)?;
        self.db.flush().map_err(storage)?;
        Ok(())
    }

    fn purge_through(&self, through: Seq, audit: Entry) -> Result<Vec<Record>, JournalError> {
        let mut head = self.head.lock()?;
        let acked = self.cursor(UPSTREAM_CURSOR)?.0;
        check_purge(through, acked)?;
        let last = self.records.get(through.0.to_be_bytes()).map_err(storage)?;
        let anchor = purge_anchor(through, last.as_deref())?;
        let first = self.first_seq()?.0;
        let e = head.encode(vec![audit]);
        (&self.records, &self.meta)
            .transaction(|(r, m)| {
                for seq in first..=through.0 {
                    r.remove(&seq.to_be_bytes())?;
                }
                m.insert("anchor", anchor.as_slice())?;
                m.insert("purged_through", &through.0.to_le_bytes())?;
                append_tx(r, m, &e.rows, &e.link)
            })
            .map_err(tx_err)?;
        self.db.flush().map_err(storage)?;
        head.advance(&e);
        Ok(e.records)
    }

    fn first_seq(&self) -> Result<Seq, JournalError> {
        match self.records.first().map_err(storage)? {
            Some((k, _)) => Ok(Seq(u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| storage("bad record key"))?,
            ))),
            None => Ok(Seq(self.last_seq()?.0 + 1)),
        }
    }

    fn stored_bytes(&self) -> Result<u64, JournalError> {
        self.db.size_on_disk().map_err(storage)
    }

    fn tag_registry(&self) -> Result<TagRegistry, JournalError> {
        registry_from(get(&self.meta, "tags")?.as_deref())
    }

    fn append_with_registry(
        &self,
        registry: &TagRegistry,
        entries: Vec<Entry>,
    ) -> Result<Vec<Record>, JournalError> {
        let mut head = self.head.lock()?;
        // The writer lock is held: nobody else changes the registry between check and write.
        check_registry(registry, &self.tag_registry()?)?;
        let e = head.encode(entries);
        let bytes = registry.encode();
        (&self.records, &self.meta)
            .transaction(|(r, m)| {
                m.insert("tags", bytes.as_slice())?;
                append_tx(r, m, &e.rows, &e.link)
            })
            .map_err(tx_err)?;
        self.db.flush().map_err(storage)?;
        head.advance(&e);
        Ok(e.records)
    }
}
