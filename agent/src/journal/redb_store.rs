//! Journal on redb: one file `journal.redb` in the state directory.
//!
//! On-disk layout:
//! - table `records`: `u64` seq → record bytes in the format of `pdtf_models::record`
//!   (`[version][crc32][prev link][bincode]`), seqs contiguous from `purged_through + 1`;
//! - table `cursors`: name → `u64` seq (e.g. `upstream` = last seq the upstream broker acked);
//! - table `meta`: `format` (u8: the record format of every stored record), `head` (the chain
//!   link of the last record), `anchor` (the link before the first stored record: zeros until a
//!   purge moves it), `purged_through` (u64 LE), `tags` (the tag registry, in the format of
//!   `pdtf_models::registry`), `record_bytes` (u64 LE: keys and values of `records`, kept in
//!   each commit and purge; what the quota measures) and `alarm_index_since` (u64 LE, below);
//! - table `alarm_index`: alarm condition (bincode 2, standard, of `Condition`) → `u64` seq of
//!   its last transition, and the same key behind a `0xff` byte → the seq of its last
//!   lifecycle record (`RecordBody::alarm_index_key`), written in the same transaction as the
//!   record; it holds every
//!   transition from `alarm_index_since`. A store written before the index existed is
//!   backfilled at its first open from its last 500,000 records (as far as the start-up scan
//!   looked before), and `alarm_index_since` is then 1. Derived data: a start reads the last
//!   state of each condition from it instead of scanning the journal.
//! - tables `batch_events` and `batch_alarms`: `u64` seq → `()`, the seqs of every batch
//!   record and of every alarm and deviation record inside a batch, written in the same transaction and
//!   purged with the records; they hold what was committed from `batch_index_since` (u64 LE
//!   in `meta`, the next seq when the store first opened with them). Derived data: the HTTP
//!   API finds batches and their alarms without scanning samples.
//!
//! Invariants: one `append` is one write transaction committed with `Durability::Immediate`,
//! so when it returns the records are on disk (redb's commit is atomic and checksummed). The
//! writer lock serialises appends: seqs never interleave or skip, and each record's `prev`
//! is the link of the record before it. A store in an older format is migrated explicitly at
//! open, streaming and resumably (`migrate.rs`); a newer format is refused. The page cache is
//! set explicitly (`CACHE_BYTES`; redb's own default is 1 GiB), so memory does not grow with
//! the journal.

use super::chain::{corrupt, hash_from, u64_from, VerifyReport};
use super::migrate::CHUNK;
use super::writer::{check_purge, purge_anchor, Encoded, Head, Writer};
use pdtf_models::journal::{check_registry, registry_from};
use pdtf_models::{Entry, Journal, JournalError, Record, Seq, TagRegistry};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Alarm condition (bincode 2 of `Condition`, standard config) → seq of its last transition.
const ALARMS: TableDefinition<&[u8], u64> = TableDefinition::new("alarm_index");

/// The upstream sync's cursor; purges never pass it.
use pdtf_connectors::upstream::CURSOR as UPSTREAM_CURSOR;

/// The key of a stored record (its `u64` seq), counted into `record_bytes`.
const RECORD_KEY_BYTES: u64 = 8;

pub(super) fn storage(e: impl std::fmt::Display) -> JournalError {
    JournalError::Storage(e.to_string())
}

pub struct RedbJournal {
    /// `None` only between closing a failed handle and reopening it (`reopen`).
    db: RwLock<Option<Database>>,
    path: PathBuf,
    /// The page cache, kept for a reopen.
    cache_bytes: usize,
    /// Next seq and the last link. Held for the whole append: the single-writer lock.
    head: Writer,
}

fn meta_get(tx: &WriteTransaction, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
    let t = tx.open_table(META).map_err(storage)?;
    let v = t.get(key).map_err(storage)?.map(|v| v.value().to_vec());
    Ok(v)
}

fn meta_set(tx: &WriteTransaction, key: &str, value: &[u8]) -> Result<(), JournalError> {
    let mut t = tx.open_table(META).map_err(storage)?;
    t.insert(key, value).map_err(storage)?;
    Ok(())
}

/// redb's page cache by default (`journal.cache_mib`). Appends touch only the tail of the
/// tree and upstream reads what was just written, so a small cache serves the hot path;
/// verification and migration stream. 4 MiB: the 10,000-tag soak at 10k samples/s ran at the
/// same CPU per sample as with 16 MiB, and 10 MiB smaller.
pub const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// A new journal file is made under a temporary name and renamed into place once redb has
/// written its header: a crash or power cut during the very first start would otherwise
/// leave a half-written file that redb refuses for good ("not a redb database").
fn create_atomically(path: &Path) -> Result<(), JournalError> {
    if path.exists() {
        return Ok(());
    }
    let tmp = path.with_extension("redb.creating");
    let fail =
        |e: &dyn std::fmt::Display| storage(format!("cannot create {}: {e}", path.display()));
    if tmp.exists() {
        std::fs::remove_file(&tmp).map_err(|e| fail(&e))?;
    }
    drop(Database::create(&tmp).map_err(|e| fail(&e))?);
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| fail(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(&e))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail(&e))?;
    }
    Ok(())
}

/// Opens the file (redb repairs it here after an unclean stop or a failed write).
fn open_db(path: &Path, cache_bytes: usize) -> Result<Database, JournalError> {
    Database::builder()
        .set_cache_size(cache_bytes)
        .create(path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => storage(format!(
                "{} is in use by another process (is the agent running?)",
                path.display()
            )),
            e => storage(format!("cannot open {}: {e}", path.display())),
        })
}

/// The open handle, read-locked for one operation (a reopen waits for it).
struct Open<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for Open<'_> {
    type Target = Database;
    fn deref(&self) -> &Database {
        // `RedbJournal::db` makes an `Open` only from a `Some`.
        self.0.as_ref().expect("an Open holds an open database")
    }
}

impl RedbJournal {
    /// Opens (or creates) `state_dir/journal.redb`, migrating an older format explicitly.
    pub fn open(state_dir: &Path) -> Result<Self, JournalError> {
        Self::open_with_cache(state_dir, CACHE_BYTES)
    }

    /// `open` with a page cache of `cache_bytes`.
    pub fn open_with_cache(state_dir: &Path, cache_bytes: usize) -> Result<Self, JournalError> {
        std::fs::create_dir_all(state_dir).map_err(|e| {
            storage(format!(
                "cannot create state directory {}: {e}",
                state_dir.display()
            ))
        })?;
        let path = state_dir.join("journal.redb");
        create_atomically(&path)?;
        let db = open_db(&path, cache_bytes)?;
        let tx = db.begin_write().map_err(storage)?;
        let empty = tx
            .open_table(RECORDS)
            .map_err(storage)?
            .is_empty()
            .map_err(storage)?;
        tx.open_table(CURSORS).map_err(storage)?;
        let format = meta_get(&tx, "format")?;
        if format.is_none() && empty {
            meta_set(&tx, "format", &[pdtf_models::record::FORMAT_VERSION])?;
        }
        tx.commit().map_err(storage)?;
        match format.as_deref() {
            None if empty => {}
            // Stores written before the meta table existed hold format 1 records.
            None => upgrade::migrate(&db, 1)?,
            Some([v @ 1..=5]) => upgrade::migrate(&db, *v)?,
            Some([pdtf_models::record::FORMAT_VERSION]) => {}
            Some(other) => {
                return Err(storage(format!(
                "{} holds record format {other:?}, newer than this agent's {}; use a newer agent",
                path.display(),
                pdtf_models::record::FORMAT_VERSION
            )))
            }
        }
        let tx = db.begin_write().map_err(storage)?;
        tx.open_table(ALARMS).map_err(storage)?;
        let head = {
            let t = tx.open_table(RECORDS).map_err(storage)?;
            let last = t
                .last()
                .map_err(storage)?
                .map(|(k, v)| (k.value(), v.value().to_vec()));
            match last {
                Some((seq, bytes)) => {
                    let s = pdtf_models::Record::decode(&bytes)
                        .map_err(|e| corrupt(seq, e.to_string()))?;
                    Head {
                        next: seq + 1,
                        hash: s.hash,
                    }
                }
                None => Head {
                    next: u64_from(meta_get(&tx, "purged_through")?) + 1,
                    hash: hash_from(meta_get(&tx, "anchor")?),
                },
            }
        };
        if meta_get(&tx, "record_bytes")?.is_none() {
            let mut bytes = 0u64;
            for item in tx
                .open_table(RECORDS)
                .map_err(storage)?
                .iter()
                .map_err(storage)?
            {
                bytes += RECORD_KEY_BYTES + item.map_err(storage)?.1.value().len() as u64;
            }
            meta_set(&tx, "record_bytes", &bytes.to_le_bytes())?;
        }
        if meta_get(&tx, "alarm_index_since")?.is_none() {
            alarms::backfill(&tx)?;
            meta_set(&tx, "alarm_index_since", &1u64.to_le_bytes())?;
        }
        batches::open(&tx, head.next)?;
        tx.commit().map_err(storage)?;
        Ok(Self {
            db: RwLock::new(Some(db)),
            path,
            cache_bytes,
            head: Writer::new(head),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The handle for one operation. Callers keep it for the whole transaction (`let db =
    /// self.db()?`), so a reopen waits until no transaction uses the old handle.
    fn db(&self) -> Result<Open<'_>, JournalError> {
        let g = self
            .db
            .read()
            .map_err(|_| storage("journal handle lock poisoned"))?;
        if g.is_none() {
            return Err(storage(format!(
                "{} is closed after a failed write and not reopened yet",
                self.path.display()
            )));
        }
        Ok(Open(g))
    }

    /// Checks every stored record (see `verify_db`).
    pub fn verify(&self, progress: impl FnMut(u64)) -> Result<VerifyReport, JournalError> {
        verify_db(&*self.db()?, None, progress)
    }

    /// Checks the records after `after` only, anchored on record `after`'s own link: what a
    /// start needs when everything through `after` was verified before (the checkpoint).
    /// The whole store when `after` is not stored (purged, or beyond the end).
    pub fn verify_after(
        &self,
        after: u64,
        progress: impl FnMut(u64),
    ) -> Result<VerifyReport, JournalError> {
        verify_db(&*self.db()?, Some(after), progress)
    }
}

impl RedbJournal {
    /// Appends within an open transaction; the caller commits, then advances `head`.
    fn append_in(
        tx: &WriteTransaction,
        head: &Head,
        entries: Vec<Entry>,
    ) -> Result<Encoded, JournalError> {
        let e = head.encode(entries);
        {
            let mut t = tx.open_table(RECORDS).map_err(storage)?;
            for (seq, bytes) in &e.rows {
                t.insert(*seq, bytes.as_slice()).map_err(storage)?;
            }
        }
        let added: u64 = e
            .rows
            .iter()
            .map(|(_, b)| RECORD_KEY_BYTES + b.len() as u64)
            .sum();
        let bytes = u64_from(meta_get(tx, "record_bytes")?) + added;
        meta_set(tx, "record_bytes", &bytes.to_le_bytes())?;
        let mut alarms = None;
        for r in &e.records {
            if let Some(key) = r.body.alarm_index_key() {
                let t = match &mut alarms {
                    Some(t) => t,
                    None => alarms.insert(tx.open_table(ALARMS).map_err(storage)?),
                };
                t.insert(key.as_slice(), r.seq.0).map_err(storage)?;
            }
        }
        drop(alarms);
        batches::index(tx, &e.records)?;
        meta_set(tx, "head", &e.link)?;
        Ok(e)
    }
}

impl Journal for RedbJournal {
    fn append(&self, entries: Vec<Entry>) -> Result<Vec<Record>, JournalError> {
        let mut head = self.head.lock()?;
        if entries.is_empty() {
            return Ok(vec![]);
        }
        let db = self.db()?;
        let tx = db.begin_write().map_err(storage)?;
        let e = Self::append_in(&tx, &head, entries)?;
        tx.commit().map_err(storage)?;
        head.advance(&e);
        Ok(e.records)
    }

    fn purge_through(&self, through: Seq, audit: Entry) -> Result<Vec<Record>, JournalError> {
        let mut head = self.head.lock()?;
        let db = self.db()?;
        let tx = db.begin_write().map_err(storage)?;
        let acked = {
            let t = tx.open_table(CURSORS).map_err(storage)?;
            let v = t
                .get(UPSTREAM_CURSOR)
                .map_err(storage)?
                .map(|v| v.value())
                .unwrap_or(0);
            v
        };
        check_purge(through, acked)?;
        let anchor = {
            let mut t = tx.open_table(RECORDS).map_err(storage)?;
            let last = t
                .get(through.0)
                .map_err(storage)?
                .map(|v| v.value().to_vec());
            let anchor = purge_anchor(through, last.as_deref())?;
            let mut removed = 0u64;
            t.retain_in(..=through.0, |_, v| {
                removed += RECORD_KEY_BYTES + v.len() as u64;
                false
            })
            .map_err(storage)?;
            let left = u64_from(meta_get(&tx, "record_bytes")?).saturating_sub(removed);
            meta_set(&tx, "record_bytes", &left.to_le_bytes())?;
            anchor
        };
        batches::purge(&tx, through)?;
        meta_set(&tx, "anchor", &anchor)?;
        meta_set(&tx, "purged_through", &through.0.to_le_bytes())?;
        let e = Self::append_in(&tx, &head, vec![audit])?;
        tx.commit().map_err(storage)?;
        head.advance(&e);
        Ok(e.records)
    }

    fn first_seq(&self) -> Result<Seq, JournalError> {
        let db = self.db()?;
        let rtx = db.begin_read().map_err(storage)?;
        let t = rtx.open_table(RECORDS).map_err(storage)?;
        let first = t.first().map_err(storage)?.map(|(k, _)| k.value());
        match first {
            Some(f) => Ok(Seq(f)),
            None => Ok(Seq(self.last_seq()?.0 + 1)),
        }
    }

    fn tag_registry(&self) -> Result<TagRegistry, JournalError> {
        let db = self.db()?;
        let rtx = db.begin_read().map_err(storage)?;
        let t = rtx.open_table(META).map_err(storage)?;
        let v = t.get("tags").map_err(storage)?;
        registry_from(v.as_ref().map(|v| v.value()))
    }

    fn append_with_registry(
        &self,
        registry: &TagRegistry,
        entries: Vec<Entry>,
    ) -> Result<Vec<Record>, JournalError> {
        let mut head = self.head.lock()?;
        let db = self.db()?;
        let tx = db.begin_write().map_err(storage)?;
        check_registry(registry, &registry_from(meta_get(&tx, "tags")?.as_deref())?)?;
        meta_set(&tx, "tags", &registry.encode())?;
        let e = Self::append_in(&tx, &head, entries)?;
        tx.commit().map_err(storage)?;
        head.advance(&e);
        Ok(e.records)
    }

    /// The `record_bytes` counter (keys and values of the records table), kept in each
    /// commit: constant time, where redb's own statistics walk the whole tree.
    fn stored_bytes(&self) -> Result<u64, JournalError> {
        let db = self.db()?;
        let rtx = db.begin_read().map_err(storage)?;
        let meta = rtx.open_table(META).map_err(storage)?;
        let v = meta.get("record_bytes").map_err(storage)?;
        Ok(u64_from(v.map(|v| v.value().to_vec())))
    }

    fn read_from(&self, from: Seq, max: usize) -> Result<Vec<Record>, JournalError> {
        let db = self.db()?;
        let rtx = db.begin_read().map_err(storage)?;
        let t = rtx.open_table(RECORDS).map_err(storage)?;
        let mut out = Vec::with_capacity(max.min(4096));
        for item in t.range(from.0..).map_err(storage)?.take(max) {
            let (k, v) = item.map_err(storage)?;
            let seq = k.value();
            let s = Record::decode(v.value()).map_err(|e| corrupt(seq, e.to_string()))?;
            if s.record.seq.0 != seq {
                return Err(corrupt(
                    seq,
                    format!("stored under {seq} but holds seq {}", s.record.seq.0),
                ));
            }
            out.push(s.record);
        }
        Ok(out)
    }

    fn read_back(&self, before: Seq, max: usize) -> Result<Vec<Record>, JournalError> {
        let db = self.db()?;
        let rtx = db.begin_read().map_err(storage)?;
        let t = rtx.open_table(RECORDS).map_err(storage)?;
        let mut out = Vec::with_capacity(max.min(4096));
        for item in t.range(..before.0).map_err(storage)?.rev().take(max) {
            let (k, v) = item.map_err(storage)?;
            let seq = k.value();
            out.push(
                Record::decode(v.value())
                    .map_err(|e| corrupt(seq, e.to_string()))?
                    .record,
            );
        }
        Ok(out)
    }

    fn batch_index(
        &self,
        alarms: bool,
        from: Seq,
        max: usize,
    ) -> Result<Option<(Seq, Vec<Seq>)>, JournalError> {
        batches::read(&*self.db()?, alarms, from, max)
    }

    fn last_alarm_transitions(&self) -> Result<Option<(Seq, Vec<Record>)>, JournalError> {
        alarms::last_transitions(&*self.db()?)
    }

    fn last_seq(&self) -> Result<Seq, JournalError> {
        let head = self
            .head
            .lock()
            .map_err(|_| storage("journal writer lock poisoned"))?;
        Ok(Seq(head.next - 1))
    }

    fn cursor(&self, name: &str) -> Result<Seq, JournalError> {
        let db = self.db()?;
        let rtx = db.begin_read().map_err(storage)?;
        let t = rtx.open_table(CURSORS).map_err(storage)?;
        Ok(Seq(t
            .get(name)
            .map_err(storage)?
            .map(|v| v.value())
            .unwrap_or(0)))
    }

    fn reopen(&self) -> Result<Option<String>, JournalError> {
        // The writer lock first, as `append` takes it: no commit runs while the handle changes.
        let head = self.head.lock()?;
        let mut slot = self
            .db
            .write()
            .map_err(|_| storage("journal handle lock poisoned"))?;
        // Closed before reopening: redb locks the file, and after an I/O error the old handle
        // refuses every write anyway.
        *slot = None;
        let db = open_db(&self.path, self.cache_bytes)?;
        // What a failed write could have damaged: the records after the verified checkpoint
        // (the whole store when there is none), so a recovery on a large journal is quick.
        let checkpoint = {
            let rtx = db.begin_read().map_err(storage)?;
            let t = rtx.open_table(CURSORS).map_err(storage)?;
            let c = t.get(crate::verified::CURSOR).map_err(storage)?;
            c.map(|v| v.value()).filter(|c| *c > 0)
        };
        let r = verify_db(&db, checkpoint, |_| {})?;
        let expected = head.next - 1;
        let ends_right = r.last == expected && r.head == pdtf_models::record::hex(&head.hash);
        if (r.records > 0 || checkpoint.is_some()) && !ends_right {
            return Err(corrupt(
                r.last,
                format!(
                    "after reopening, the store ends at seq {} (head {}), but seq {expected} (head {}) was committed",
                    r.last,
                    r.head,
                    pdtf_models::record::hex(&head.hash)
                ),
            ));
        }
        *slot = Some(db);
        Ok(Some(format!(
            "{} closed, reopened and verified: {} records (seq {}..={}), chain head matches the last commit{}",
            self.path.display(),
            r.records,
            r.first,
            r.last,
            if checkpoint.is_some() { " (after the verified checkpoint)" } else { "" }
        )))
    }

    fn set_cursor(&self, name: &str, seq: Seq) -> Result<(), JournalError> {
        let db = self.db()?;
        let tx = db.begin_write().map_err(storage)?;
        {
            let mut t = tx.open_table(CURSORS).map_err(storage)?;
            t.insert(name, seq.0).map_err(storage)?;
        }
        tx.commit().map_err(storage)
    }
}

mod alarms;
mod batches;
mod older;
mod upgrade;
mod verify;
pub use older::write_older_store;
use verify::verify_db;
pub use verify::verify_state_dir;

#[cfg(test)]
mod tests;
