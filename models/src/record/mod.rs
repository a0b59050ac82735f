//! Records: everything the agent commits, and their stored binary format.
//!
//! Stored format of one record (format version 6):
//! ```text
//! [version: u8 = 6][crc32: u32 LE][prev: 32 bytes][payload: bincode 2 (standard) of Record]
//! ```
//! - `crc32` covers `prev` and `payload`: it catches accidental corruption of one record.
//! - `prev` is the chain hash of the record before (all zeros before the first record, or the
//!   purge anchor). The chain hash of a record is `SHA-256(prev || seq as u64 LE || payload)`.
//!   Editing, removing or reordering a stored record breaks the link of the record after it,
//!   even when the editor recomputes the CRC: that is the audit trail's tamper evidence.
//!
//! **The rule: any change to a stored type is a version bump plus a migration, tested.**
//! bincode is not self-describing — a stored struct's fields *are* its format — so a new
//! field is never "additive". The types below (and `Sample`, `AlarmEvent`, `Condition` they
//! hold, and the batch, command and lifecycle types) are format 6; the schemas of formats 1–4 are
//! frozen copies in `older.rs`, read only
//! by the journal's migration (`decode_older`), which is streaming and resumable (see the
//! journal). One cheap case: a variant appended at the *end* of an enum keeps every stored
//! payload decodable, so that bump's migration only relabels the version byte (the chain
//! hashes cover the payload, not the version byte, and stay valid).
//!
//! Format 4 over 3: alarms are keyed by a `Condition` (source tag or model, and kind), and
//! `RecordBody::Samples` holds a block of samples under one seq (for block storage).
//! Format 5 over 4: an alarm carries the phase beside the batch id, and the batch twin's
//! records (`Batch`, `Command`, `BatchSnapshot`, see `batch::record` and `command`) exist.
//! Format 6 over 5: the alarm lifecycle's record (`Lifecycle`, see `lifecycle`) and the GMP
//! deviation's (`Deviation`, see `deviation`), variants appended at the end: a format 5
//! payload decodes as format 6 unchanged (the cheap case).
//! An unknown version is an error, never a guess.

mod older;

use crate::batch::{BatchEvent, BatchSnapshot};
use crate::command::CommandRecord;
use crate::deviation::Deviation;
use crate::lifecycle::LifecycleEvent;
use crate::{AlarmEvent, Sample, TagId, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Per-agent record sequence number. Contiguous from 1; 0 means "none yet".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seq(pub u64);

/// The current stored format version.
pub const FORMAT_VERSION: u8 = 6;

/// A link of the audit chain: SHA-256 over the previous link, the seq and the payload.
pub type ChainHash = [u8; 32];

/// The link before the first record of a store.
pub const GENESIS: ChainHash = [0; 32];

pub fn hex(h: &ChainHash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn chain(prev: &ChainHash, seq: u64, payload: &[u8]) -> ChainHash {
    let mut d = Sha256::new();
    d.update(prev);
    d.update(seq.to_le_bytes());
    d.update(payload);
    d.finalize().into()
}

/// A stored record as read back: the record, the link it claims to follow, and its own link.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub record: Record,
    pub prev: ChainHash,
    pub hash: ChainHash,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: Seq,
    /// Agent time at which the record was made.
    pub time: Timestamp,
    pub body: RecordBody,
}

/// A record before the journal gives it a sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub time: Timestamp,
    pub body: RecordBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordBody {
    Sample(Sample),
    Alarm(AlarmEvent),
    Gap(Gap),
    Malformed(Malformed),
    Audit(Audit),
    /// Samples committed as one block under one seq, in arrival order.
    Samples(Vec<Sample>),
    /// A batch event: start, state and phase changes, charges, comments, downtime, end.
    Batch(Box<BatchEvent>),
    /// A command as received, with its outcome.
    Command(Box<CommandRecord>),
    /// A line's batch state, for restoring it at start.
    BatchSnapshot(Box<BatchSnapshot>),
    /// An alarm's lifecycle moved, or an operator acted on it.
    Lifecycle(Box<LifecycleEvent>),
    /// A GMP deviation opened or closed (see `deviation`).
    Deviation(Box<Deviation>),
}

impl RecordBody {
    pub const fn kind(&self) -> &'static str {
        match self {
            RecordBody::Sample(_) => "sample",
            RecordBody::Alarm(_) => "alarm",
            RecordBody::Gap(_) => "gap",
            RecordBody::Malformed(_) => "malformed",
            RecordBody::Audit(_) => "audit",
            RecordBody::Samples(_) => "samples",
            RecordBody::Batch(_) => "batch",
            RecordBody::Command(_) => "command",
            RecordBody::BatchSnapshot(_) => "batch_snapshot",
            RecordBody::Lifecycle(_) => "alarm_lifecycle",
            RecordBody::Deviation(_) => "deviation",
        }
    }

    /// The key of the journal's alarm index for an alarm record (its condition's key), a
    /// lifecycle record (the same behind a `0xff` byte, which no condition key starts with:
    /// its first byte is the source's variant index) and a deviation record (behind `0xfe`):
    /// each condition's last transition, last lifecycle and last deviation are all kept.
    pub fn alarm_index_key(&self) -> Option<Vec<u8>> {
        let (prefix, c) = match self {
            RecordBody::Alarm(a) => return Some(a.condition.key()),
            RecordBody::Lifecycle(l) => (0xff, &l.condition),
            RecordBody::Deviation(d) => (0xfe, &d.condition),
            _ => return None,
        };
        let mut k = vec![prefix];
        k.extend(c.key());
        Some(k)
    }
}

/// A span of time in which a source delivered nothing (link down, resubscription, restart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    pub source: String,
    pub start: Timestamp,
    pub end: Timestamp,
    pub reason: String,
    /// Tags the source feeds: all of them had no data for the span.
    pub tags: Vec<TagId>,
}

/// An input that could not be turned into samples. Kept so the hole is explained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Malformed {
    pub source: String,
    /// Where it came from: an MQTT topic, a node id, a register.
    pub address: String,
    pub reason: String,
    /// The start of the payload, lossily as text (at most `MALFORMED_EXCERPT_BYTES`).
    pub excerpt: String,
}

pub const MALFORMED_EXCERPT_BYTES: usize = 256;

impl Malformed {
    pub fn new(source: &str, address: &str, reason: impl Into<String>, payload: &[u8]) -> Self {
        let cut = &payload[..payload.len().min(MALFORMED_EXCERPT_BYTES)];
        Self {
            source: source.to_owned(),
            address: address.to_owned(),
            reason: reason.into(),
            excerpt: String::from_utf8_lossy(cut).into_owned(),
        }
    }
}

/// Something the agent did or was told that belongs in the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    pub event: String,
    pub detail: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Stored by a newer agent, or not a record at all: refuse, never guess.
    #[error("record format version {0} is not known to this agent (it knows {FORMAT_VERSION})")]
    UnknownVersion(u8),
    /// An older format: only the journal's explicit migration reads it.
    #[error("record is in format version {0}; the store needs migration to {FORMAT_VERSION}")]
    NeedsMigration(u8),
    #[error("record is {0} bytes, shorter than its header")]
    Truncated(usize),
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("payload does not decode: {0}")]
    Payload(String),
}

const HEADER: usize = 1 + 4 + 32;

/// A record read from an older format, converted to the current one.
#[derive(Debug, Clone, PartialEq)]
pub struct Older {
    pub version: u8,
    pub record: Record,
    /// Format 2 only: the stored link to the record before, and this record's old link.
    pub chain: Option<(ChainHash, ChainHash)>,
}

fn check_crc(bytes: &[u8], start: usize) -> Result<(), DecodeError> {
    let stored = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let computed = crc32fast::hash(&bytes[start..]);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    Ok(())
}

fn payload_of(r: &Record) -> Vec<u8> {
    bincode::serde::encode_to_vec(r, bincode::config::standard())
        .expect("records contain only serialisable plain data")
}

fn decode_payload(payload: &[u8]) -> Result<Record, DecodeError> {
    bincode::serde::decode_from_slice(payload, bincode::config::standard())
        .map(|(r, _)| r)
        .map_err(|e| DecodeError::Payload(e.to_string()))
}

impl Record {
    /// Encodes in the current format after `prev`; returns the bytes and this record's link.
    pub fn encode(&self, prev: &ChainHash) -> (Vec<u8>, ChainHash) {
        let payload = payload_of(self);
        let mut out = Vec::with_capacity(payload.len() + HEADER);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(prev);
        out.extend_from_slice(&payload);
        let crc = crc32fast::hash(&out[5..]);
        out[1..5].copy_from_slice(&crc.to_le_bytes());
        (out, chain(prev, self.seq.0, &payload))
    }

    /// Decodes a current-format record and computes its link. Whether `prev` matches the
    /// record before is the caller's check (it knows the record before).
    pub fn decode(bytes: &[u8]) -> Result<Stored, DecodeError> {
        match bytes.first() {
            None => return Err(DecodeError::Truncated(0)),
            Some(&FORMAT_VERSION) => {}
            Some(&v @ 1..=5) => return Err(DecodeError::NeedsMigration(v)),
            Some(&v) => return Err(DecodeError::UnknownVersion(v)),
        }
        if bytes.len() < HEADER {
            return Err(DecodeError::Truncated(bytes.len()));
        }
        check_crc(bytes, 5)?;
        let prev: ChainHash = bytes[5..HEADER].try_into().expect("header length checked");
        let payload = &bytes[HEADER..];
        let record = decode_payload(payload)?;
        let hash = chain(&prev, record.seq.0, payload);
        Ok(Stored { record, prev, hash })
    }

    /// Reads a record of format 1 to 5 and converts it; the journal's migration only.
    pub fn decode_older(bytes: &[u8]) -> Result<Older, DecodeError> {
        let version = *bytes.first().ok_or(DecodeError::Truncated(0))?;
        let (start, chained) = match version {
            1 => (5, false),
            2..=5 => (HEADER, true),
            v => return Err(DecodeError::UnknownVersion(v)),
        };
        if bytes.len() < start {
            return Err(DecodeError::Truncated(bytes.len()));
        }
        check_crc(bytes, 5)?;
        let payload = &bytes[start..];
        let std = bincode::config::standard();
        let bad = |e: bincode::error::DecodeError| DecodeError::Payload(e.to_string());
        let record: Record = if version == 5 {
            // Format 6 only appended a variant: the payload is a format 6 payload.
            decode_payload(payload)?
        } else if version == 4 {
            bincode::serde::decode_from_slice::<older::V4Record, _>(payload, std)
                .map_err(bad)?
                .0
                .into()
        } else if version == 3 {
            bincode::serde::decode_from_slice::<older::V3Record, _>(payload, std)
                .map_err(bad)?
                .0
                .into()
        } else {
            bincode::serde::decode_from_slice::<older::V1Record, _>(payload, std)
                .map_err(bad)?
                .0
                .into()
        };
        let seq = record.seq.0;
        let chain = chained.then(|| {
            let prev: ChainHash = bytes[5..HEADER].try_into().expect("header length checked");
            (prev, self::chain(&prev, seq, payload))
        });
        Ok(Older {
            version,
            record,
            chain,
        })
    }

    /// Writes format 1, 2 (numeric samples only), 3, 4 or 5, so the migration is tested against
    /// real old bytes. Tests and benchmarks only: the agent never writes an old format.
    pub fn encode_older(&self, version: u8, prev: &ChainHash) -> Vec<u8> {
        let std = bincode::config::standard();
        let payload = match version {
            5 => Ok(payload_of(self)),
            4 => bincode::serde::encode_to_vec(older::write::v4(self), std),
            3 => bincode::serde::encode_to_vec(older::write::v3(self), std),
            _ => bincode::serde::encode_to_vec(older::write::v1(self), std),
        }
        .expect("records contain only serialisable plain data");
        let mut out = vec![version, 0, 0, 0, 0];
        if version >= 2 {
            out.extend_from_slice(prev);
        }
        out.extend_from_slice(&payload);
        let crc = crc32fast::hash(&out[5..]);
        out[1..5].copy_from_slice(&crc.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AlarmState, Level, Quality, Value};

    fn records() -> Vec<Record> {
        records_with(false)
    }

    fn records_with(with_block: bool) -> Vec<Record> {
        let t = Timestamp::from_unix_nanos(1_763_000_000_000_000_001);
        let bodies = vec![
            RecordBody::Sample(Sample::new(TagId(3), 71.25, Quality::Uncertain, Some(t), t)),
            RecordBody::Sample(Sample {
                tag: TagId(4),
                value: Value::Array(vec![1.0, 2.5]),
                quality: Quality::Bad,
                status: 0x8034_0000,
                source_time: Some(t),
                server_time: Some(t),
                agent_time: t,
            }),
            RecordBody::Sample(Sample {
                tag: TagId(5),
                value: Value::Text("B-17".into()),
                quality: Quality::Good,
                status: 0,
                source_time: None,
                server_time: Some(t),
                agent_time: t,
            }),
            RecordBody::Alarm(AlarmEvent {
                condition: crate::Condition::tag_limit(TagId(3)),
                state: AlarmState::Active(Level::Hi),
                previous: None,
                value: 81.0,
                limit: 80.0,
                severity: 500,
                time: t,
                batch_id: Some("B-1".into()),
                phase: None,
            }),
            RecordBody::Gap(Gap {
                source: "plc".into(),
                start: t,
                end: t,
                reason: "link down".into(),
                tags: vec![TagId(1), TagId(2)],
            }),
            RecordBody::Malformed(Malformed::new("m", "a/b", "not a number", b"\xff\xfeabc")),
            RecordBody::Audit(Audit {
                event: "start".into(),
                detail: String::new(),
            }),
        ];
        let mut bodies = bodies;
        if with_block {
            bodies.push(RecordBody::Samples(vec![
                Sample::new(TagId(1), 1.0, Quality::Good, None, t),
                Sample::new(TagId(2), 2.0, Quality::Good, Some(t), t),
            ]));
        }
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Record {
                seq: Seq(i as u64 + 1),
                time: t,
                body,
            })
            .collect()
    }

    /// Every kind of body, including those only format 5 has.
    fn records_v5() -> Vec<Record> {
        use crate::batch::{Actor, BatchChange, BatchEvent, BatchSnapshot, BatchTwin, ProcState};
        use crate::command::{CommandOutcome, CommandRecord, Signature};
        let mut all = records_with(true);
        let t = all[0].time;
        let mut phased = all
            .iter()
            .find_map(|r| match &r.body {
                RecordBody::Alarm(a) => Some(a.clone()),
                _ => None,
            })
            .unwrap();
        phased.phase = Some("spraying".into());
        let event = BatchEvent {
            line: "gran1".into(),
            batch_id: "B-1".into(),
            time: t,
            change: BatchChange::Comment("lump in the bowl".into()),
            state: ProcState::Running,
            phase: Some("spraying".into()),
            by: Actor::Command {
                request_id: "r-1".into(),
                user: "alice".into(),
            },
        };
        let command = CommandRecord {
            line: "gran1".into(),
            topic: "pdtf/s/a/gran1/cmd/batch".into(),
            command: Some("comment".into()),
            request_id: Some("r-1".into()),
            user: Some("alice".into()),
            reason: Some("operator note".into()),
            signature: Some(Signature {
                printed_name: "Alice Example".into(),
                time: "2026-12-03T18:00:00Z".into(),
                meaning: "performed".into(),
            }),
            payload: "{}".into(),
            outcome: CommandOutcome::Refused("no batch".into()),
        };
        let snapshot = BatchSnapshot {
            twin: BatchTwin::new("gran1", true),
            trajectories: None,
            requests: vec![crate::batch::SeenRequest {
                request_id: "r-1".into(),
                seq: 9,
                refused: Some("no batch".into()),
            }],
            at: t,
        };
        for body in [
            RecordBody::Alarm(phased),
            RecordBody::Batch(Box::new(event)),
            RecordBody::Command(Box::new(command)),
            RecordBody::BatchSnapshot(Box::new(snapshot)),
        ] {
            all.push(Record {
                seq: Seq(all.len() as u64 + 1),
                time: t,
                body,
            });
        }
        all
    }

    #[test]
    fn every_body_round_trips_and_links_to_its_predecessor() {
        use crate::lifecycle::{AlarmStatus, Input, Lifecycle, LifecycleEvent, Shelf};
        let mut all = records_v5();
        let t = all[0].time;
        let mut lifecycle = Lifecycle::new(false, true);
        lifecycle.shelved = Some(Shelf::Until(t));
        all.push(Record {
            seq: Seq(all.len() as u64 + 1),
            time: t,
            body: RecordBody::Lifecycle(Box::new(LifecycleEvent {
                condition: crate::Condition::tag_limit(TagId(3)),
                line: "gran1".into(),
                input: Input::Shelve(Shelf::Until(t)),
                previous: AlarmStatus::UnackActive,
                lifecycle,
                time: t,
                user: Some("alice".into()),
                request_id: Some("r-9".into()),
                reason: Some("sensor being replaced".into()),
                batch_id: Some("B-1".into()),
                phase: None,
            })),
        });
        let phased = all
            .iter()
            .find_map(|r| match &r.body {
                RecordBody::Alarm(a) if a.phase.is_some() => Some(a.clone()),
                _ => None,
            })
            .unwrap();
        let deviation = crate::deviation::Tracker::new("gran1", vec![false, false, false, true])
            .on_alarm(&phased)
            .pop()
            .expect("a critical limit inside a batch");
        all.push(Record {
            seq: Seq(all.len() as u64 + 1),
            time: t,
            body: RecordBody::Deviation(Box::new(deviation)),
        });
        let mut prev = GENESIS;
        for r in all {
            let (bytes, hash) = r.encode(&prev);
            let stored = Record::decode(&bytes).unwrap();
            assert_eq!((stored.record, stored.prev, stored.hash), (r, prev, hash));
            prev = hash;
        }
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let (enc, _) = records()[1].encode(&GENESIS);
        for i in 1..enc.len() {
            for bit in 0..8 {
                let mut bad = enc.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    matches!(Record::decode(&bad), Err(DecodeError::Checksum { .. })),
                    "flip at byte {i} bit {bit} not detected"
                );
            }
        }
    }

    #[test]
    fn an_edit_with_a_recomputed_crc_changes_the_link() {
        let r = &records()[0];
        let (enc, hash) = r.encode(&GENESIS);
        let mut edited = r.clone();
        if let RecordBody::Sample(s) = &mut edited.body {
            s.value = Value::Num(99.0);
        }
        let (enc2, hash2) = edited.encode(&GENESIS);
        assert_ne!(enc, enc2);
        assert_ne!(hash, hash2, "the next record's prev no longer matches");
    }

    #[test]
    fn versions_are_explicit() {
        let r = &records()[0];
        let v1 = r.encode_older(1, &GENESIS);
        assert_eq!(Record::decode(&v1), Err(DecodeError::NeedsMigration(1)));
        let old = Record::decode_older(&v1).unwrap();
        assert_eq!((&old.record, old.chain), (r, None));
        let prev = [7; 32];
        let v2 = r.encode_older(2, &prev);
        assert_eq!(Record::decode(&v2), Err(DecodeError::NeedsMigration(2)));
        let old = Record::decode_older(&v2).unwrap();
        assert_eq!(&old.record, r);
        assert_eq!(old.chain.map(|c| c.0), Some(prev));
        for r in records() {
            let v3 = r.encode_older(3, &prev);
            assert_eq!(Record::decode(&v3), Err(DecodeError::NeedsMigration(3)));
            let old = Record::decode_older(&v3).unwrap();
            assert_eq!(old.record, r, "format 3 converts losslessly");
            assert_eq!(old.chain.map(|c| c.0), Some(prev));
        }
        for r in records_with(true) {
            let v4 = r.encode_older(4, &prev);
            assert_eq!(Record::decode(&v4), Err(DecodeError::NeedsMigration(4)));
            let old = Record::decode_older(&v4).unwrap();
            assert_eq!(old.record, r, "format 4 converts losslessly (no phase)");
            assert_eq!(old.chain.map(|c| c.0), Some(prev));
        }
        for r in records_v5() {
            let v5 = r.encode_older(5, &prev);
            assert_eq!(Record::decode(&v5), Err(DecodeError::NeedsMigration(5)));
            let old = Record::decode_older(&v5).unwrap();
            assert_eq!(old.record, r, "format 5 decodes as format 6");
            let (_, hash) = r.encode(&prev);
            assert_eq!(old.chain, Some((prev, hash)), "and keeps its chain link");
        }
        let (mut enc, _) = r.encode(&GENESIS);
        enc[0] = 7;
        assert_eq!(Record::decode(&enc), Err(DecodeError::UnknownVersion(7)));
        assert_eq!(Record::decode(&[6, 0]), Err(DecodeError::Truncated(2)));
    }

    #[test]
    fn malformed_excerpt_is_bounded() {
        let m = Malformed::new("s", "t", "too big", &[b'x'; 10_000]);
        assert_eq!(m.excerpt.len(), MALFORMED_EXCERPT_BYTES);
    }
}
