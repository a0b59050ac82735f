//! PDTF Edge domain model: tags, samples, records, the line twin and detectors.
//!
//! Invariants: this crate does no I/O, reads no clock and spawns no task. Everything here is
//! synchronous and deterministic so it can be unit-tested and benchmarked in isolation; the
//! agent and the connectors feed it time and data.

pub mod alarm;
pub mod analytics;
pub mod batch;
pub mod command;
pub mod compress;
pub mod detect;
pub mod deviation;
pub mod journal;
pub mod kpi;
pub mod lifecycle;
pub mod record;
pub mod registry;
pub mod sample;
pub mod tag;
pub mod time;
pub mod twin;

pub use alarm::{AlarmEvent, AlarmState, Condition, ConditionKind, ConditionSource, Level};
pub use journal::{Journal, JournalError};
pub use record::{Entry, Gap, Malformed, Record, RecordBody, Seq};
pub use registry::{RegistryChange, TagRegistry};
pub use sample::{status, Quality, Sample, Value};
pub use tag::{LimitSpec, TagId, TagSpec, TagTable};
pub use time::Timestamp;
