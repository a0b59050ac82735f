//! The frozen schemas of record formats 1, 2 and 3, read only by the journal's migration.
//! Each is a copy of the types as they were stored; nothing here may change.
//!
//! - 1: `[1][crc32 of payload][payload]`, no chain; samples are numbers only;
//! - 2: `[2][crc32][prev][payload]`, chained; the schema of format 1;
//! - 3: `[3][crc32][prev][payload]`, chained; typed samples with status and server time;
//!   alarms keyed by their tag alone (one alarm per tag);
//! - 4: as 3, alarms keyed by a `Condition`, and sample blocks; no batch records, and
//!   alarms without a phase.
//!
//! Conversion: an alarm of formats 1–3 was always a limit alarm, so its condition is
//! `Condition::tag_limit(tag)`; an alarm of formats 1–4 has no phase (`None`). `Condition`,
//! `AlarmState`, `Level`, `Quality` and `Value` are shared with the current format, which
//! has not changed them: a format that does must first copy them here.

use super::{Audit, Gap, Malformed, Record, RecordBody, Seq};
use crate::{AlarmEvent, AlarmState, Condition, Level, Quality, Sample, TagId, Timestamp, Value};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub(super) struct V1Record {
    seq: Seq,
    time: Timestamp,
    body: V1Body,
}

#[derive(Serialize, Deserialize)]
enum V1Body {
    Sample(V1Sample),
    Alarm(V3Alarm),
    Gap(V3Gap),
    Malformed(V3Malformed),
    Audit(V3Audit),
}

#[derive(Serialize, Deserialize)]
struct V1Sample {
    tag: TagId,
    value: f64,
    quality: Quality,
    source_time: Option<Timestamp>,
    agent_time: Timestamp,
}

#[derive(Serialize, Deserialize)]
pub(super) struct V3Record {
    seq: Seq,
    time: Timestamp,
    body: V3Body,
}

#[derive(Serialize, Deserialize)]
enum V3Body {
    Sample(V3Sample),
    Alarm(V3Alarm),
    Gap(V3Gap),
    Malformed(V3Malformed),
    Audit(V3Audit),
}

#[derive(Serialize, Deserialize)]
struct V3Sample {
    tag: TagId,
    /// `Value`'s stored form (its non-human-readable `Tagged` encoding) is frozen with it.
    value: Value,
    quality: Quality,
    status: u32,
    source_time: Option<Timestamp>,
    server_time: Option<Timestamp>,
    agent_time: Timestamp,
}

#[derive(Serialize, Deserialize)]
pub(super) struct V4Record {
    seq: Seq,
    time: Timestamp,
    body: V4Body,
}

#[derive(Serialize, Deserialize)]
enum V4Body {
    Sample(V3Sample),
    Alarm(V4Alarm),
    Gap(V3Gap),
    Malformed(V3Malformed),
    Audit(V3Audit),
    Samples(Vec<V3Sample>),
}

#[derive(Serialize, Deserialize)]
struct V4Alarm {
    condition: Condition,
    state: AlarmState,
    previous: Option<Level>,
    value: f64,
    limit: f64,
    severity: u16,
    time: Timestamp,
    batch_id: Option<String>,
}

impl From<V4Alarm> for AlarmEvent {
    fn from(a: V4Alarm) -> Self {
        AlarmEvent {
            condition: a.condition,
            state: a.state,
            previous: a.previous,
            value: a.value,
            limit: a.limit,
            severity: a.severity,
            time: a.time,
            batch_id: a.batch_id,
            phase: None,
        }
    }
}

impl From<V3Sample> for Sample {
    fn from(s: V3Sample) -> Self {
        Sample {
            tag: s.tag,
            value: s.value,
            quality: s.quality,
            status: s.status,
            source_time: s.source_time,
            server_time: s.server_time,
            agent_time: s.agent_time,
        }
    }
}

impl From<V4Record> for Record {
    fn from(r: V4Record) -> Self {
        let body = match r.body {
            V4Body::Sample(s) => RecordBody::Sample(s.into()),
            V4Body::Alarm(a) => RecordBody::Alarm(a.into()),
            V4Body::Gap(g) => RecordBody::Gap(g.into()),
            V4Body::Malformed(m) => RecordBody::Malformed(m.into()),
            V4Body::Audit(a) => RecordBody::Audit(a.into()),
            V4Body::Samples(b) => RecordBody::Samples(b.into_iter().map(Sample::from).collect()),
        };
        Record {
            seq: r.seq,
            time: r.time,
            body,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct V3Alarm {
    tag: TagId,
    state: AlarmState,
    previous: Option<Level>,
    value: f64,
    limit: f64,
    severity: u16,
    time: Timestamp,
    batch_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct V3Gap {
    source: String,
    start: Timestamp,
    end: Timestamp,
    reason: String,
    tags: Vec<TagId>,
}

#[derive(Serialize, Deserialize)]
struct V3Malformed {
    source: String,
    address: String,
    reason: String,
    excerpt: String,
}

#[derive(Serialize, Deserialize)]
struct V3Audit {
    event: String,
    detail: String,
}

impl From<V3Alarm> for AlarmEvent {
    /// Through format 4: a format 3 alarm is a limit alarm on its tag.
    fn from(a: V3Alarm) -> Self {
        let V3Alarm {
            tag,
            state,
            previous,
            value,
            limit,
            severity,
            time,
            batch_id,
        } = a;
        let condition = Condition::tag_limit(tag);
        let v4 = V4Alarm {
            condition,
            state,
            previous,
            value,
            limit,
            severity,
            time,
            batch_id,
        };
        v4.into()
    }
}

impl From<V3Gap> for Gap {
    fn from(g: V3Gap) -> Self {
        Gap {
            source: g.source,
            start: g.start,
            end: g.end,
            reason: g.reason,
            tags: g.tags,
        }
    }
}

impl From<V3Malformed> for Malformed {
    fn from(m: V3Malformed) -> Self {
        Malformed {
            source: m.source,
            address: m.address,
            reason: m.reason,
            excerpt: m.excerpt,
        }
    }
}

impl From<V3Audit> for Audit {
    fn from(a: V3Audit) -> Self {
        Audit {
            event: a.event,
            detail: a.detail,
        }
    }
}

impl From<V1Record> for Record {
    fn from(r: V1Record) -> Self {
        let body = match r.body {
            V1Body::Sample(s) => RecordBody::Sample(Sample::new(
                s.tag,
                s.value,
                s.quality,
                s.source_time,
                s.agent_time,
            )),
            V1Body::Alarm(a) => RecordBody::Alarm(a.into()),
            V1Body::Gap(g) => RecordBody::Gap(g.into()),
            V1Body::Malformed(m) => RecordBody::Malformed(m.into()),
            V1Body::Audit(a) => RecordBody::Audit(a.into()),
        };
        Record {
            seq: r.seq,
            time: r.time,
            body,
        }
    }
}

impl From<V3Record> for Record {
    fn from(r: V3Record) -> Self {
        let body = match r.body {
            V3Body::Sample(s) => RecordBody::Sample(s.into()),
            V3Body::Alarm(a) => RecordBody::Alarm(a.into()),
            V3Body::Gap(g) => RecordBody::Gap(g.into()),
            V3Body::Malformed(m) => RecordBody::Malformed(m.into()),
            V3Body::Audit(a) => RecordBody::Audit(a.into()),
        };
        Record {
            seq: r.seq,
            time: r.time,
            body,
        }
    }
}

/// The old schema of a current record, for tests that write real old bytes. Panics on what
/// the old format could not hold (a text sample in format 1, a non-limit alarm, a block, a
/// batch record, an alarm with a phase).
pub(super) mod write {
    use super::*;

    fn sample(s: &Sample) -> V3Sample {
        V3Sample {
            tag: s.tag,
            value: s.value.clone(),
            quality: s.quality,
            status: s.status,
            source_time: s.source_time,
            server_time: s.server_time,
            agent_time: s.agent_time,
        }
    }

    fn alarm4(a: &AlarmEvent) -> V4Alarm {
        assert_eq!(a.phase, None, "formats 1-4 alarms have no phase");
        V4Alarm {
            condition: a.condition.clone(),
            state: a.state,
            previous: a.previous,
            value: a.value,
            limit: a.limit,
            severity: a.severity,
            time: a.time,
            batch_id: a.batch_id.clone(),
        }
    }

    fn alarm(a: &AlarmEvent) -> V3Alarm {
        assert_eq!(a.condition.kind, crate::ConditionKind::Limit);
        assert_eq!(a.phase, None, "formats 1-4 alarms have no phase");
        V3Alarm {
            tag: a.tag().expect("formats 1-3 alarms are tag limits"),
            state: a.state,
            previous: a.previous,
            value: a.value,
            limit: a.limit,
            severity: a.severity,
            time: a.time,
            batch_id: a.batch_id.clone(),
        }
    }

    fn gap(g: &Gap) -> V3Gap {
        V3Gap {
            source: g.source.clone(),
            start: g.start,
            end: g.end,
            reason: g.reason.clone(),
            tags: g.tags.clone(),
        }
    }

    fn malformed(m: &Malformed) -> V3Malformed {
        V3Malformed {
            source: m.source.clone(),
            address: m.address.clone(),
            reason: m.reason.clone(),
            excerpt: m.excerpt.clone(),
        }
    }

    fn audit(a: &Audit) -> V3Audit {
        V3Audit {
            event: a.event.clone(),
            detail: a.detail.clone(),
        }
    }

    pub fn v1(r: &Record) -> V1Record {
        let body = match &r.body {
            RecordBody::Sample(s) => V1Body::Sample(V1Sample {
                tag: s.tag,
                value: s.number().expect("format 1 and 2 samples are numbers"),
                quality: s.quality,
                source_time: s.source_time,
                agent_time: s.agent_time,
            }),
            RecordBody::Alarm(a) => V1Body::Alarm(alarm(a)),
            RecordBody::Gap(g) => V1Body::Gap(gap(g)),
            RecordBody::Malformed(m) => V1Body::Malformed(malformed(m)),
            RecordBody::Audit(a) => V1Body::Audit(audit(a)),
            RecordBody::Samples(_) => panic!("formats 1-3 have no sample blocks"),
            _ => panic!("formats 1-4 have no batch or command records"),
        };
        V1Record {
            seq: r.seq,
            time: r.time,
            body,
        }
    }

    pub fn v3(r: &Record) -> V3Record {
        let body = match &r.body {
            RecordBody::Sample(s) => V3Body::Sample(sample(s)),
            RecordBody::Alarm(a) => V3Body::Alarm(alarm(a)),
            RecordBody::Gap(g) => V3Body::Gap(gap(g)),
            RecordBody::Malformed(m) => V3Body::Malformed(malformed(m)),
            RecordBody::Audit(a) => V3Body::Audit(audit(a)),
            RecordBody::Samples(_) => panic!("formats 1-3 have no sample blocks"),
            _ => panic!("formats 1-4 have no batch or command records"),
        };
        V3Record {
            seq: r.seq,
            time: r.time,
            body,
        }
    }

    pub fn v4(r: &Record) -> V4Record {
        let body = match &r.body {
            RecordBody::Sample(s) => V4Body::Sample(sample(s)),
            RecordBody::Alarm(a) => V4Body::Alarm(alarm4(a)),
            RecordBody::Gap(g) => V4Body::Gap(gap(g)),
            RecordBody::Malformed(m) => V4Body::Malformed(malformed(m)),
            RecordBody::Audit(a) => V4Body::Audit(audit(a)),
            RecordBody::Samples(b) => V4Body::Samples(b.iter().map(sample).collect()),
            _ => panic!("formats 1-4 have no batch or command records"),
        };
        V4Record {
            seq: r.seq,
            time: r.time,
            body,
        }
    }
}
