//! The journal trait: the one place records become *accepted*.
//!
//! Contract every implementation keeps:
//! - `append` assigns contiguous sequence numbers (the first record ever is `Seq(1)`) and
//!   returns only after the commit is durable; the returned records are accepted.
//! - `read_from` returns records in sequence order, starting at the given seq.
//! - Cursors are named, persisted positions (e.g. the upstream's last acknowledged seq).
//! - The tag registry (`TagRegistry`: durable names behind `TagId`s) only ever grows, and
//!   changes only together with the records that audit the change.

use crate::{Entry, Record, Seq, TagRegistry};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The engine failed (I/O, full disk, lock). Caller: keep the batch, retry with backoff,
    /// raise the alarm; never report it accepted.
    #[error("store error: {0}")]
    Storage(String),
    /// A stored record does not decode or verify. Caller: stop and report; an operator must act.
    #[error("record {seq} is corrupt: {reason}")]
    Corrupt { seq: u64, reason: String },
}

pub trait Journal: Send + Sync {
    /// Commits entries as one transaction and returns them with their sequence numbers.
    fn append(&self, entries: Vec<Entry>) -> Result<Vec<Record>, JournalError>;

    /// Up to `max` records with `seq >= from`, in order.
    fn read_from(&self, from: Seq, max: usize) -> Result<Vec<Record>, JournalError>;

    /// Up to `max` records with `seq < before`, newest first (for restoring state at start).
    fn read_back(&self, before: Seq, max: usize) -> Result<Vec<Record>, JournalError>;

    /// Highest committed seq, `Seq(0)` when empty.
    fn last_seq(&self) -> Result<Seq, JournalError>;

    /// A named cursor, `Seq(0)` when never set.
    fn cursor(&self, name: &str) -> Result<Seq, JournalError>;

    fn set_cursor(&self, name: &str, seq: Seq) -> Result<(), JournalError>;

    /// Removes every record with `seq <= through` and, in the same transaction, appends
    /// `audit` (which says what was purged); returns the audit record. Refuses to purge past
    /// the `upstream` cursor: only acknowledged records may go. The chain stays verifiable:
    /// the link of the last purged record becomes the anchor.
    fn purge_through(&self, through: Seq, audit: Entry) -> Result<Vec<Record>, JournalError>;

    /// Lowest stored seq (`last_seq + 1` when empty).
    fn first_seq(&self) -> Result<Seq, JournalError>;

    /// Bytes of record data held (what the quota measures).
    fn stored_bytes(&self) -> Result<u64, JournalError>;

    /// The stored tag registry; empty when none was stored yet.
    fn tag_registry(&self) -> Result<TagRegistry, JournalError>;

    /// Commits `entries` and stores `registry` in one transaction. Refused (nothing written)
    /// when `registry` does not extend the stored one: ids are never reused.
    fn append_with_registry(
        &self,
        registry: &TagRegistry,
        entries: Vec<Entry>,
    ) -> Result<Vec<Record>, JournalError>;

    /// The last alarm transition and the last lifecycle record of every condition, from an
    /// index the engine keeps in the
    /// same transaction as the records (so a start need not scan the journal for them), and
    /// the seq the index starts at: transitions before it (a store written by an earlier
    /// release) are not in it. `None`: the engine keeps no index. A transition whose record
    /// was purged is left out.
    fn last_alarm_transitions(&self) -> Result<Option<(Seq, Vec<Record>)>, JournalError> {
        Ok(None)
    }

    /// Up to `max` seqs `>= from` of the batch records (`alarms`: of the alarm records inside
    /// a batch), from an index the engine keeps in the same transaction as the records, and
    /// the seq the index starts at. `None`: the engine keeps no index (scan instead).
    fn batch_index(
        &self,
        _alarms: bool,
        _from: Seq,
        _max: usize,
    ) -> Result<Option<(Seq, Vec<Seq>)>, JournalError> {
        Ok(None)
    }

    /// After a failed write: closes and reopens the store and checks that it still ends
    /// where the writer's head says (nothing committed lost, nothing half-written kept).
    /// Returns what was checked, or `None` when nothing was reopened. An engine that refuses
    /// every write after one I/O error (redb: "Previous I/O error occurred") recovers only
    /// this way; the default does nothing, for engines that keep working on the same handle.
    fn reopen(&self) -> Result<Option<String>, JournalError> {
        Ok(None)
    }
}

/// The registry stored under the journal's registry key, or an empty one.
pub fn registry_from(bytes: Option<&[u8]>) -> Result<TagRegistry, JournalError> {
    match bytes {
        None => Ok(TagRegistry::default()),
        Some(b) => TagRegistry::decode(b).map_err(JournalError::Storage),
    }
}

/// Refuses a registry that would take back or rename an id.
pub fn check_registry(new: &TagRegistry, stored: &TagRegistry) -> Result<(), JournalError> {
    if new.extends(stored) {
        Ok(())
    } else {
        Err(JournalError::Storage(
            "refusing a tag registry that renames or drops stored tag ids".into(),
        ))
    }
}
