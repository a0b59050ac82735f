//! Record-format migration, shared by the engines: streaming and resumable.
//!
//! A store in an older format is rewritten in chunks of `CHUNK` records, each chunk in its
//! own transaction together with the `Progress` marker (meta key `migration`). Memory stays
//! bounded by a chunk whatever the journal's size, and a crash or power loss mid-way resumes
//! from the marker: records `<= through` are already in the new format, the rest are old.
//! The last transaction sets the format, the head, and removes the marker.
//!
//! The chain: the old chain is checked while reading (a broken link refuses the migration:
//! an operator must look at that store), and the new chain starts from the same anchor (the
//! first record's stored `prev`), so a purged store keeps its anchor. The old head is logged.

use super::chain::corrupt;
use pdtf_models::record::{hex, ChainHash, GENESIS};
use pdtf_models::{JournalError, Record};

/// Records per migration transaction.
pub const CHUNK: usize = 20_000;

/// How far a migration got; stored after every chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub from: u8,
    /// Last migrated seq (0 = none yet).
    pub through: u64,
    /// New chain link of `through` (the anchor before the first record).
    pub link: ChainHash,
    /// Old chain link of `through`, for checking the next old record's `prev`.
    pub old_link: Option<ChainHash>,
    pub records: u64,
}

impl Progress {
    pub fn start(from: u8) -> Self {
        Self {
            from,
            through: 0,
            link: GENESIS,
            old_link: None,
            records: 0,
        }
    }

    /// `[from][through u64 LE][link 32][has old 0/1][old 32][records u64 LE]`
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.from];
        v.extend(self.through.to_le_bytes());
        v.extend(self.link);
        v.push(u8::from(self.old_link.is_some()));
        v.extend(self.old_link.unwrap_or(GENESIS));
        v.extend(self.records.to_le_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Result<Self, JournalError> {
        if b.len() != 1 + 8 + 32 + 1 + 32 + 8 {
            return Err(JournalError::Storage(
                "migration marker is damaged; restore the journal from a backup".into(),
            ));
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("length checked"));
        let hash_at = |i: usize| -> ChainHash { b[i..i + 32].try_into().expect("length checked") };
        Ok(Self {
            from: b[0],
            through: u64_at(1),
            link: hash_at(9),
            old_link: (b[41] == 1).then(|| hash_at(42)),
            records: u64_at(74),
        })
    }

    /// Converts the next old rows (in seq order, all after `through`) to the current format.
    pub fn convert(
        &mut self,
        rows: &[(u64, Vec<u8>)],
    ) -> Result<Vec<(u64, Vec<u8>)>, JournalError> {
        let mut out = Vec::with_capacity(rows.len());
        for (seq, bytes) in rows {
            let old = Record::decode_older(bytes).map_err(|e| {
                corrupt(
                    *seq,
                    format!("format {} record does not decode: {e}", self.from),
                )
            })?;
            if let Some((old_prev, old_hash)) = old.chain {
                if self.records == 0 {
                    self.link = old_prev;
                } else if Some(old_prev) != self.old_link {
                    return Err(corrupt(
                        *seq,
                        format!(
                            "format {} chain is broken here; refusing to migrate",
                            self.from
                        ),
                    ));
                }
                self.old_link = Some(old_hash);
            }
            let (enc, hash) = old.record.encode(&self.link);
            out.push((*seq, enc));
            self.link = hash;
            self.through = *seq;
            self.records += 1;
        }
        Ok(out)
    }

    pub fn old_head(&self) -> String {
        self.old_link.as_ref().map(hex).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pdtf_models::record::Audit;
    use pdtf_models::{RecordBody, Seq, Timestamp};

    fn old_rows(n: u64, version: u8) -> Vec<(u64, Vec<u8>)> {
        let mut prev = [9; 32];
        (1..=n)
            .map(|i| {
                let r = Record {
                    seq: Seq(i),
                    time: Timestamp::from_unix_millis(i as i64),
                    body: RecordBody::Audit(Audit {
                        event: "e".into(),
                        detail: i.to_string(),
                    }),
                };
                let bytes = r.encode_older(version, &prev);
                prev = Record::decode_older(&bytes).unwrap().chain.unwrap().1;
                (i, bytes)
            })
            .collect()
    }

    #[test]
    fn chunks_resumed_from_the_marker_give_the_same_chain_as_one_pass() {
        let rows = old_rows(10, 3);
        let mut whole = Progress::start(3);
        let all = whole.convert(&rows).unwrap();
        let mut p = Progress::start(3);
        let mut parts = p.convert(&rows[..4]).unwrap();
        let mut resumed = Progress::decode(&p.encode()).unwrap();
        assert_eq!(resumed, p);
        parts.extend(resumed.convert(&rows[4..]).unwrap());
        assert_eq!(parts, all);
        assert_eq!(resumed, whole);
        let first = Record::decode(&all[0].1).unwrap();
        assert_eq!(first.prev, [9; 32], "the new chain keeps the anchor");
    }

    #[test]
    fn a_broken_old_chain_refuses_the_migration() {
        let mut rows = old_rows(5, 2);
        rows.remove(2);
        let err = Progress::start(2).convert(&rows).unwrap_err();
        assert!(err.to_string().contains("chain is broken"), "{err}");
    }
}
