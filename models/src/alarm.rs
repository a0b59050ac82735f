//! Alarm transitions produced by detectors.
//!
//! This is the first slice of the ISA-18.2 / OPC UA Part 9 model: the *process* state of an
//! alarm (which level is active). An alarm is keyed by its `Condition` — what it is about (a
//! tag or a model) and the kind of condition — so a rate alarm and a high-limit alarm on one
//! tag are two alarms that never overwrite each other. These types are stored (record format
//! 5): a change to them is a format bump with a migration (see `record`).

use crate::{TagId, Timestamp};
use serde::{Deserialize, Serialize};

/// Limit level, least to most severe on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    LoLo,
    Lo,
    Hi,
    HiHi,
}

impl Level {
    /// OPC UA Part 9 severity (1..=1000): critical limits high, warning limits medium.
    pub const fn severity(self) -> u16 {
        match self {
            Level::LoLo | Level::HiHi => 800,
            Level::Lo | Level::Hi => 500,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Level::LoLo => "lolo",
            Level::Lo => "lo",
            Level::Hi => "hi",
            Level::HiHi => "hihi",
        }
    }

    /// Rank used to order escalation: 2 for critical, 1 for warning.
    pub const fn rank(self) -> u8 {
        match self {
            Level::LoLo | Level::HiHi => 2,
            Level::Lo | Level::Hi => 1,
        }
    }

    pub const fn is_high(self) -> bool {
        matches!(self, Level::Hi | Level::HiHi)
    }
}

/// Process state of a tag's limit alarm after a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    Active(Level),
    Inactive,
}

/// What a condition watches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionSource {
    Tag(TagId),
    /// A model (batch monitoring, a quality forecast) by name.
    Model(String),
}

/// The kind of condition. The list names the detectors the product has or plans, so adding
/// one of them needs no format change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionKind {
    Limit,
    Rate,
    Stale,
    Frozen,
    Spc,
    Ewma,
    Cusum,
    State,
    Mspc,
    Forecast,
}

impl ConditionKind {
    pub const fn name(self) -> &'static str {
        match self {
            ConditionKind::Limit => "limit",
            ConditionKind::Rate => "rate",
            ConditionKind::Stale => "stale",
            ConditionKind::Frozen => "frozen",
            ConditionKind::Spc => "spc",
            ConditionKind::Ewma => "ewma",
            ConditionKind::Cusum => "cusum",
            ConditionKind::State => "state",
            ConditionKind::Mspc => "mspc",
            ConditionKind::Forecast => "forecast",
        }
    }
}

/// The identity of an alarm: one source, one kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Condition {
    pub source: ConditionSource,
    pub kind: ConditionKind,
}

impl Condition {
    pub const fn tag_limit(tag: TagId) -> Self {
        Self {
            source: ConditionSource::Tag(tag),
            kind: ConditionKind::Limit,
        }
    }

    pub fn tag(&self) -> Option<TagId> {
        match self.source {
            ConditionSource::Tag(t) => Some(t),
            ConditionSource::Model(_) => None,
        }
    }

    /// A stable byte key: the record format's own encoding of the condition (bincode 2,
    /// standard), so it changes only with a format version. The journal's alarm index uses it.
    pub fn key(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard())
            .expect("a condition always encodes")
    }
}

/// One alarm transition: `previous` → `state`, with the value and limit that caused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmEvent {
    pub condition: Condition,
    pub state: AlarmState,
    pub previous: Option<Level>,
    pub value: f64,
    /// The limit crossed: the new level's limit when raised, the old one's when cleared.
    pub limit: f64,
    pub severity: u16,
    pub time: Timestamp,
    /// The batch running on the line when the transition happened, if the twin knows it.
    pub batch_id: Option<String>,
    /// The batch's phase at that moment, if one was running.
    pub phase: Option<String>,
}

impl AlarmEvent {
    /// The tag the condition watches, if it watches one.
    pub fn tag(&self) -> Option<TagId> {
        self.condition.tag()
    }

    pub fn is_raise(&self) -> bool {
        matches!(self.state, AlarmState::Active(_))
    }
}
