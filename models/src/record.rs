//! Records: everything the agent commits, and their stored binary format.
//!
//! Stored format of one record (format version 1):
//! ```text
//! [version: u8 = 1][crc32 of payload: u32 LE][payload: bincode 2 (standard config) of Record]
//! ```
//! A record whose version byte is unknown is an error, never a guess: a format change comes
//! with a new version number and an explicit migration. A checksum mismatch is reported as
//! corruption with the record's sequence number by the journal that read it.

use crate::{AlarmEvent, Sample, TagId, Timestamp};
use serde::{Deserialize, Serialize};

/// Per-agent record sequence number. Contiguous from 1; 0 means "none yet".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seq(pub u64);

/// The current stored format version.
pub const FORMAT_VERSION: u8 = 1;

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
    Batch(BatchEvent),
}

impl RecordBody {
    pub const fn kind(&self) -> &'static str {
        match self {
            RecordBody::Sample(_) => "sample",
            RecordBody::Alarm(_) => "alarm",
            RecordBody::Gap(_) => "gap",
            RecordBody::Malformed(_) => "malformed",
            RecordBody::Audit(_) => "audit",
            RecordBody::Batch(_) => "batch",
        }
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

/// Batch lifecycle event (ISA-88 procedural state changes arrive here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchEvent {
    pub batch_id: String,
    /// "start", "end" (the full ISA-88 state set is a later issue).
    pub event: String,
    pub product: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Stored by a newer agent, or not a record at all: refuse, never guess.
    #[error("record format version {0} is not known to this agent (it knows {FORMAT_VERSION})")]
    UnknownVersion(u8),
    #[error("record is {0} bytes, shorter than its 5-byte header")]
    Truncated(usize),
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("payload does not decode: {0}")]
    Payload(String),
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let payload = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .expect("records contain only serialisable plain data");
        let mut out = Vec::with_capacity(payload.len() + 5);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        if bytes.len() < 5 {
            return Err(DecodeError::Truncated(bytes.len()));
        }
        if bytes[0] != FORMAT_VERSION {
            return Err(DecodeError::UnknownVersion(bytes[0]));
        }
        let stored = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let payload = &bytes[5..];
        let computed = crc32fast::hash(payload);
        if stored != computed {
            return Err(DecodeError::Checksum { stored, computed });
        }
        let (record, _) = bincode::serde::decode_from_slice(payload, bincode::config::standard())
            .map_err(|e| DecodeError::Payload(e.to_string()))?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AlarmState, Level, Quality};

    fn records() -> Vec<Record> {
        let t = Timestamp::from_unix_nanos(1_763_000_000_000_000_001);
        let bodies = vec![
            RecordBody::Sample(Sample {
                tag: TagId(3),
                value: 71.25,
                quality: Quality::Uncertain,
                source_time: Some(t),
                agent_time: t,
            }),
            RecordBody::Alarm(AlarmEvent {
                tag: TagId(3),
                state: AlarmState::Active(Level::Hi),
                previous: None,
                value: 81.0,
                limit: 80.0,
                severity: 500,
                time: t,
                batch_id: Some("B-1".into()),
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

    #[test]
    fn every_body_round_trips() {
        for r in records() {
            assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn any_flipped_payload_bit_is_caught() {
        let enc = records()[1].encode();
        for i in 5..enc.len() {
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
    fn unknown_version_and_short_input_are_refused() {
        let mut enc = records()[0].encode();
        enc[0] = 2;
        assert_eq!(Record::decode(&enc), Err(DecodeError::UnknownVersion(2)));
        assert_eq!(Record::decode(&[1, 0]), Err(DecodeError::Truncated(2)));
    }

    #[test]
    fn malformed_excerpt_is_bounded() {
        let m = Malformed::new("s", "t", "too big", &[b'x'; 10_000]);
        assert_eq!(m.excerpt.len(), MALFORMED_EXCERPT_BYTES);
    }
}
