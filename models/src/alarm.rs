//! Alarm transitions produced by detectors.
//!
//! This is the first slice of the ISA-18.2 / OPC UA Part 9 model: the *process* state of a
//! limit alarm (which level is active). Acknowledgement, shelving and suppression are later
//! states of the same `AlarmEvent`, so they are additive fields, not a new type.

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

/// One alarm transition: `previous` → `state`, with the value and limit that caused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmEvent {
    pub tag: TagId,
    pub state: AlarmState,
    pub previous: Option<Level>,
    pub value: f64,
    /// The limit crossed: the new level's limit when raised, the old one's when cleared.
    pub limit: f64,
    pub severity: u16,
    pub time: Timestamp,
    /// The batch running on the line when the transition happened, if the twin knows it.
    pub batch_id: Option<String>,
}

impl AlarmEvent {
    pub fn is_raise(&self) -> bool {
        matches!(self.state, AlarmState::Active(_))
    }
}
