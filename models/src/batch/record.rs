//! What the batch twin records: batch events (start, state changes, phase changes, material
//! charges, comments, downtime, end with its summary) and the recipe data they carry.
//!
//! These types are stored (record format 5, see `record`): a change to them is a format bump
//! with a migration. Every event names its line and batch and carries the state and phase
//! *after* it, so a consumer of the record stream knows the batch context of any record that
//! follows without reading back.

use super::ProcCommand;
use super::ProcState;
use crate::{TagId, Timestamp};
use serde::{Deserialize, Serialize};

/// The recipe a batch runs against, as recorded at its start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipeRef {
    pub id: String,
    pub version: u32,
    pub product: String,
    pub product_code: String,
}

/// Who or what caused a batch event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// A value of one of the line's batch tags (the equipment or MES publishing it).
    Tag(TagId),
    /// A command on `P/cmd/batch`, by its request id, as the sender named its user.
    Command { request_id: String, user: String },
    /// The agent itself (a restart inside a batch, a phase closed by the batch's end).
    Agent,
}

/// A charge of material into the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    pub material: String,
    pub lot: String,
    pub quantity: f64,
    pub unit: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchChange {
    Started {
        recipe: RecipeRef,
    },
    /// A procedural transition: by a command, or (`command: None`) a transient state's
    /// completion. `irregular`: a state tag reported a state the table does not reach from
    /// the previous one; the twin follows the equipment and says so.
    State {
        from: ProcState,
        command: Option<ProcCommand>,
        irregular: bool,
    },
    Phase {
        from: Option<String>,
    },
    Material(Charge),
    Comment(String),
    /// The agent was not running from `from` to `to` inside this batch (a restart).
    Downtime {
        from: Timestamp,
        to: Timestamp,
    },
    /// The batch reached Complete, Stopped or Aborted.
    Ended(Box<Summary>),
}

/// One batch event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchEvent {
    pub line: String,
    pub batch_id: String,
    /// When it happened (the tag's source time, or the command's arrival).
    pub time: Timestamp,
    pub change: BatchChange,
    /// The procedural state after the event.
    pub state: ProcState,
    /// The phase after the event.
    pub phase: Option<String>,
    pub by: Actor,
}

/// The end-of-batch summary: enough to build a batch report from the record stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub recipe: RecipeRef,
    pub started: Timestamp,
    pub ended: Timestamp,
    /// Complete, Stopped or Aborted.
    pub outcome: ProcState,
    pub phases: Vec<PhaseSummary>,
    pub materials: Vec<MaterialSummary>,
    pub quality: Vec<QualitySummary>,
    /// Alarms raised while no phase ran (before the first, between holds).
    pub alarms_outside_phases: u32,
    /// Total time the agent was down inside the batch, in milliseconds.
    pub downtime_ms: u64,
    /// The audit chain's head (hex) just before the summary record: the report can prove
    /// the records it was built from are the journal's.
    pub chain_head: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseSummary {
    pub name: String,
    pub start: Timestamp,
    pub end: Timestamp,
    /// Running time (held time excluded), in milliseconds.
    pub duration_ms: u64,
    pub held_ms: u64,
    pub expected_min_s: Option<u64>,
    pub expected_max_s: Option<u64>,
    /// `false` when the duration fell outside the expected range.
    pub within_expected: bool,
    pub alarms: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaterialSummary {
    pub material: String,
    pub unit: String,
    /// `None`: charged but not in the bill of materials.
    pub planned: Option<f64>,
    pub charged: f64,
    pub tolerance_pct: f64,
    /// `false`: outside the tolerance, charged in another unit, or not planned.
    pub within_tolerance: bool,
    pub lots: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualitySummary {
    pub name: String,
    pub unit: String,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    /// The last Good value of its tag during the batch, if it has one.
    pub value: Option<f64>,
    /// `None` when there is no value to judge.
    pub within_spec: Option<bool>,
}

/// A line's batch state, recorded after each batch event and periodically while a batch is
/// open, so a restarted agent restores it from one record (its seq is kept in a journal
/// cursor) instead of reading the journal back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchSnapshot {
    pub twin: super::BatchTwin,
    pub trajectories: Option<super::Trajectories>,
    /// Recent commands by request id: the window in which a duplicate is recognised and
    /// answered as the first copy was, across restarts.
    pub requests: Vec<SeenRequest>,
    /// When the snapshot was taken: a restart records the downtime from here.
    pub at: Timestamp,
}

/// A command already answered: its request id, the seq of its record, and why it was
/// refused (`None`: accepted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenRequest {
    pub request_id: String,
    pub seq: u64,
    pub refused: Option<String>,
}
