//! Journal on redb: one file `journal.redb` in the state directory.
//!
//! On-disk layout:
//! - table `records`: `u64` seq → record bytes in the format of `pdtf_models::record`
//!   (`[version][crc32][bincode]`), seqs contiguous from 1;
//! - table `cursors`: name → `u64` seq (e.g. `upstream` = last seq the upstream broker acked).
//!
//! Invariants: one `append` is one write transaction committed with `Durability::Immediate`,
//! so when it returns the records are on disk (redb's commit is atomic and checksummed); the
//! writer lock serialises appends, so seqs never interleave or skip.

use pdtf_models::{Entry, Journal, JournalError, Record, Seq};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");

pub struct RedbJournal {
    db: Database,
    path: PathBuf,
    /// Next seq to assign. Held for the whole append: the single-writer lock.
    next: Mutex<u64>,
}

fn storage(e: impl std::fmt::Display) -> JournalError {
    JournalError::Storage(e.to_string())
}

impl RedbJournal {
    /// Opens (or creates) `state_dir/journal.redb`.
    pub fn open(state_dir: &Path) -> Result<Self, JournalError> {
        std::fs::create_dir_all(state_dir).map_err(|e| {
            storage(format!(
                "cannot create state directory {}: {e}",
                state_dir.display()
            ))
        })?;
        let path = state_dir.join("journal.redb");
        let db = Database::create(&path)
            .map_err(|e| storage(format!("cannot open {}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(storage)?;
        tx.open_table(RECORDS).map_err(storage)?;
        tx.open_table(CURSORS).map_err(storage)?;
        tx.commit().map_err(storage)?;
        let last = {
            let rtx = db.begin_read().map_err(storage)?;
            let t = rtx.open_table(RECORDS).map_err(storage)?;
            let last = t
                .last()
                .map_err(storage)?
                .map(|(k, _)| k.value())
                .unwrap_or(0);
            last
        };
        Ok(Self {
            db,
            path,
            next: Mutex::new(last + 1),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Journal for RedbJournal {
    fn append(&self, entries: Vec<Entry>) -> Result<Vec<Record>, JournalError> {
        let mut next = self
            .next
            .lock()
            .map_err(|_| storage("journal writer lock poisoned"))?;
        let records: Vec<Record> = entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| Record {
                seq: Seq(*next + i as u64),
                time: e.time,
                body: e.body,
            })
            .collect();
        if records.is_empty() {
            return Ok(records);
        }
        let tx = self.db.begin_write().map_err(storage)?;
        {
            let mut t = tx.open_table(RECORDS).map_err(storage)?;
            for r in &records {
                t.insert(r.seq.0, r.encode().as_slice()).map_err(storage)?;
            }
        }
        tx.commit().map_err(storage)?;
        *next += records.len() as u64;
        Ok(records)
    }

    fn read_from(&self, from: Seq, max: usize) -> Result<Vec<Record>, JournalError> {
        let rtx = self.db.begin_read().map_err(storage)?;
        let t = rtx.open_table(RECORDS).map_err(storage)?;
        let mut out = Vec::with_capacity(max.min(4096));
        for item in t.range(from.0..).map_err(storage)?.take(max) {
            let (k, v) = item.map_err(storage)?;
            let seq = k.value();
            let r = Record::decode(v.value()).map_err(|e| JournalError::Corrupt {
                seq,
                reason: e.to_string(),
            })?;
            if r.seq.0 != seq {
                return Err(JournalError::Corrupt {
                    seq,
                    reason: format!("stored under key {seq} but holds seq {}", r.seq.0),
                });
            }
            out.push(r);
        }
        Ok(out)
    }

    fn last_seq(&self) -> Result<Seq, JournalError> {
        let next = self
            .next
            .lock()
            .map_err(|_| storage("journal writer lock poisoned"))?;
        Ok(Seq(*next - 1))
    }

    fn cursor(&self, name: &str) -> Result<Seq, JournalError> {
        let rtx = self.db.begin_read().map_err(storage)?;
        let t = rtx.open_table(CURSORS).map_err(storage)?;
        Ok(Seq(t
            .get(name)
            .map_err(storage)?
            .map(|v| v.value())
            .unwrap_or(0)))
    }

    fn set_cursor(&self, name: &str, seq: Seq) -> Result<(), JournalError> {
        let tx = self.db.begin_write().map_err(storage)?;
        {
            let mut t = tx.open_table(CURSORS).map_err(storage)?;
            t.insert(name, seq.0).map_err(storage)?;
        }
        tx.commit().map_err(storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pdtf_models::{record::Audit, RecordBody, Timestamp};

    fn entries(n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                time: Timestamp::from_unix_millis(i as i64),
                body: RecordBody::Audit(Audit {
                    event: "test".into(),
                    detail: i.to_string(),
                }),
            })
            .collect()
    }

    #[test]
    fn seqs_are_contiguous_across_reopen_and_cursors_persist() {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = RedbJournal::open(dir.path()).unwrap();
            assert_eq!(j.last_seq().unwrap(), Seq(0));
            let a = j.append(entries(3)).unwrap();
            assert_eq!(a.iter().map(|r| r.seq.0).collect::<Vec<_>>(), vec![1, 2, 3]);
            assert!(j.append(vec![]).unwrap().is_empty());
            j.set_cursor("upstream", Seq(2)).unwrap();
        }
        let j = RedbJournal::open(dir.path()).unwrap();
        assert_eq!(j.last_seq().unwrap(), Seq(3));
        let b = j.append(entries(2)).unwrap();
        assert_eq!(b[0].seq, Seq(4));
        let all = j.read_from(Seq(1), 100).unwrap();
        assert_eq!(
            all.iter().map(|r| r.seq.0).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(j.read_from(Seq(4), 1).unwrap().len(), 1);
        assert_eq!(j.cursor("upstream").unwrap(), Seq(2));
        assert_eq!(j.cursor("never").unwrap(), Seq(0));
    }
}
