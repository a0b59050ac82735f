//! The journal: where records become accepted. See `pdtf_models::journal` for the contract,
//! `chain.rs` for the audit-chain verification every engine shares.
//!
//! Engines: redb (default; see the README's storage section for the measurements behind that
//! choice) and sled (cargo feature `sled`, for the comparison).

mod chain;
pub mod migrate;
mod redb_store;
#[cfg(feature = "sled")]
mod sled_store;
mod writer;

pub use chain::VerifyReport;
pub use redb_store::{verify_state_dir, write_older_store, RedbJournal, CACHE_BYTES};
#[cfg(feature = "sled")]
pub use sled_store::SledJournal;

use crate::config::Engine;
use pdtf_models::{Journal, JournalError, Seq};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A journal the agent can run on: the record contract plus verification.
pub trait Store: Journal {
    fn verify(&self, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport, JournalError>;
    /// The records after `after` only, anchored on record `after`'s own link (see
    /// `crate::verified`); the whole store when `after` is not stored.
    fn verify_after(
        &self,
        after: Seq,
        progress: &mut dyn FnMut(u64),
    ) -> Result<VerifyReport, JournalError>;
    fn location(&self) -> PathBuf;
}

impl Store for RedbJournal {
    fn verify(&self, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport, JournalError> {
        RedbJournal::verify(self, progress)
    }
    fn verify_after(
        &self,
        after: Seq,
        progress: &mut dyn FnMut(u64),
    ) -> Result<VerifyReport, JournalError> {
        RedbJournal::verify_after(self, after.0, progress)
    }
    fn location(&self) -> PathBuf {
        self.path().to_owned()
    }
}

#[cfg(feature = "sled")]
impl Store for SledJournal {
    fn verify(&self, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport, JournalError> {
        SledJournal::verify(self, progress)
    }
    /// sled (kept for the engine comparison) always verifies the whole store.
    fn verify_after(
        &self,
        _after: Seq,
        progress: &mut dyn FnMut(u64),
    ) -> Result<VerifyReport, JournalError> {
        SledJournal::verify(self, progress)
    }
    fn location(&self) -> PathBuf {
        self.path().to_owned()
    }
}

/// Verifies the journal in `state_dir` offline, whichever engine wrote it.
pub fn verify_offline(
    state_dir: &Path,
    progress: impl FnMut(u64),
) -> Result<VerifyReport, JournalError> {
    #[cfg(feature = "sled")]
    if state_dir.join("journal.sled").is_dir() {
        return SledJournal::open(state_dir)?.verify(progress);
    }
    verify_state_dir(state_dir, progress)
}

/// Opens the journal a stopped agent left in `state_dir`, whichever engine wrote it (as the
/// agent does at start: an older format is migrated); an error when there is none.
pub fn open_existing(state_dir: &Path) -> Result<Arc<dyn Store>, JournalError> {
    let engine = if state_dir.join("journal.sled").is_dir() {
        Engine::Sled
    } else if state_dir.join("journal.redb").is_file() {
        Engine::Redb
    } else {
        return Err(JournalError::Storage(format!(
            "no journal in {} (neither journal.redb nor journal.sled)",
            state_dir.display()
        )));
    };
    open(engine, state_dir)
}

/// Opens the engine's journal in `state_dir` with the default page cache.
pub fn open(engine: Engine, state_dir: &Path) -> Result<Arc<dyn Store>, JournalError> {
    open_with_cache(engine, state_dir, redb_store::CACHE_BYTES)
}

/// Opens the engine's journal in `state_dir`; redb gets a page cache of `cache_bytes`
/// (`journal.cache_mib`; sled keeps its own default).
pub fn open_with_cache(
    engine: Engine,
    state_dir: &Path,
    cache_bytes: usize,
) -> Result<Arc<dyn Store>, JournalError> {
    match engine {
        Engine::Redb => Ok(Arc::new(RedbJournal::open_with_cache(
            state_dir,
            cache_bytes,
        )?)),
        #[cfg(feature = "sled")]
        Engine::Sled => {
            std::fs::create_dir_all(state_dir).map_err(|e| JournalError::Storage(e.to_string()))?;
            Ok(Arc::new(SledJournal::open(state_dir)?))
        }
        #[cfg(not(feature = "sled"))]
        Engine::Sled => Err(JournalError::Storage(
            "this build has no sled engine (cargo feature `sled`)".into(),
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pdtf_models::{record::Audit, Entry, RecordBody, Seq, Timestamp};

    fn engines() -> Vec<Engine> {
        let mut e = vec![Engine::Redb];
        if cfg!(feature = "sled") {
            e.push(Engine::Sled);
        }
        e
    }

    /// `n` audit entries, for the journal tests of every engine.
    pub(crate) fn entries(n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                time: Timestamp::from_unix_millis(i as i64),
                body: RecordBody::Audit(Audit {
                    event: "t".into(),
                    detail: i.to_string(),
                }),
            })
            .collect()
    }

    #[test]
    fn every_engine_keeps_the_contract() {
        for engine in engines() {
            let dir = tempfile::tempdir().unwrap();
            {
                let j = open(engine, dir.path()).unwrap();
                assert_eq!(j.append(entries(10)).unwrap().last().unwrap().seq, Seq(10));
                j.set_cursor(pdtf_connectors::upstream::CURSOR, Seq(5))
                    .unwrap();
                assert!(
                    j.purge_through(Seq(6), entries(1).pop().unwrap()).is_err(),
                    "{engine:?}: purge past ack"
                );
                assert_eq!(
                    j.purge_through(Seq(3), entries(1).pop().unwrap()).unwrap()[0].seq,
                    Seq(11)
                );
                assert!(j.stored_bytes().unwrap() > 0);
            }
            let j = open(engine, dir.path()).unwrap();
            assert_eq!(j.last_seq().unwrap(), Seq(11), "{engine:?}");
            assert_eq!(j.first_seq().unwrap(), Seq(4), "{engine:?}");
            assert_eq!(j.read_from(Seq(1), 100).unwrap().len(), 8, "{engine:?}");
            let r = j.verify(&mut |_| {}).unwrap();
            assert_eq!((r.first, r.last, r.records), (4, 11, 8), "{engine:?}");
            drop(j);
            assert_eq!(
                verify_offline(dir.path(), |_| {}).unwrap().last,
                11,
                "{engine:?}"
            );
        }
    }

    #[test]
    fn every_engine_keeps_the_tag_registry_with_its_records() {
        use pdtf_models::{TagId, TagRegistry};
        for engine in engines() {
            let dir = tempfile::tempdir().unwrap();
            let mut reg = TagRegistry::default();
            reg.configure(&["temp", "flow"]);
            {
                let j = open(engine, dir.path()).unwrap();
                assert!(j.tag_registry().unwrap().is_empty(), "{engine:?}");
                let r = j.append_with_registry(&reg, entries(2)).unwrap();
                assert_eq!(r.last().unwrap().seq, Seq(2), "{engine:?}");
                // A registry that gives `temp`'s id to another name is refused, with nothing
                // written.
                let mut other = TagRegistry::default();
                other.configure(&["flow", "temp"]);
                assert!(j.append_with_registry(&other, entries(1)).is_err());
                assert_eq!(j.last_seq().unwrap(), Seq(2), "{engine:?}");
            }
            let j = open(engine, dir.path()).unwrap();
            let stored = j.tag_registry().unwrap();
            assert_eq!(stored, reg, "{engine:?}");
            assert_eq!(stored.name(TagId(1)), Some("flow"));
        }
    }

    #[test]
    fn an_end_of_batch_summary_names_the_chain_head_before_it() {
        use pdtf_models::batch::{Actor, BatchChange, BatchTwin, ProcCommand};
        for engine in engines() {
            let dir = tempfile::tempdir().unwrap();
            let j = open(engine, dir.path()).unwrap();
            j.append(entries(3)).unwrap();
            let head = j.verify(&mut |_| {}).unwrap().head;
            let t = Timestamp::from_unix_millis(5);
            let recipe = crate::batch::test_recipe(1, &["a"]);
            let twin = BatchTwin::new("l", true)
                .start("B", &recipe, t, Actor::Agent, true)
                .unwrap()
                .next;
            let plan = twin.command(ProcCommand::Stop, t, Actor::Agent).unwrap();
            let events: Vec<Entry> = crate::batch::event_entries(plan.events, t).collect();
            let committed = j.append(events).unwrap();
            let ended = |r: &pdtf_models::Record| match &r.body {
                RecordBody::Batch(e) => match &e.change {
                    BatchChange::Ended(s) => Some(s.chain_head.clone()),
                    _ => None,
                },
                _ => None,
            };
            let stored = j.read_from(Seq(4), 10).unwrap();
            let at = stored.iter().position(|r| ended(r).is_some()).unwrap();
            // The head just before the summary: the records of its commit before it count.
            let before = j.verify(&mut |_| {}).unwrap();
            assert_eq!(before.records, 3 + stored.len() as u64);
            let expected = if at == 0 {
                head.clone()
            } else {
                let d2 = tempfile::tempdir().unwrap();
                let j2 = open(engine, d2.path()).unwrap();
                j2.append(entries(3)).unwrap();
                j2.append(
                    stored[..at]
                        .iter()
                        .map(|r| Entry {
                            time: r.time,
                            body: r.body.clone(),
                        })
                        .collect(),
                )
                .unwrap();
                j2.verify(&mut |_| {}).unwrap().head
            };
            assert_eq!(ended(&stored[at]), Some(expected.clone()), "{engine:?}");
            assert_eq!(
                ended(&committed[at]),
                Some(expected),
                "what the commit hands on"
            );
            assert_ne!(head, before.head);
        }
    }
}
