//! A sample is one observed value of one tag, with its quality and both clocks.

use crate::{TagId, Timestamp};
use serde::{Deserialize, Serialize};

/// OPC UA style quality. `code` keeps the source's own status code when it sent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Good,
    Uncertain,
    Bad,
}

impl Quality {
    /// Maps an OPC UA status code by its severity bits (Part 4, 7.34.1).
    pub const fn from_status_code(code: u32) -> Self {
        match code >> 30 {
            0 => Quality::Good,
            1 => Quality::Uncertain,
            _ => Quality::Bad,
        }
    }

    /// Parses the names a publisher is likely to send ("good", "GOOD", "uncertain", "bad").
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "good" | "ok" => Some(Quality::Good),
            "uncertain" => Some(Quality::Uncertain),
            "bad" => Some(Quality::Bad),
            _ => None,
        }
    }

    /// Whether a value of this quality may drive detectors (Bad values never raise or clear).
    pub const fn is_usable(self) -> bool {
        !matches!(self, Quality::Bad)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub tag: TagId,
    pub value: f64,
    pub quality: Quality,
    /// Time the device or publisher stamped, when it sent one.
    pub source_time: Option<Timestamp>,
    /// Time this agent received the value.
    pub agent_time: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_by_severity_bits() {
        assert_eq!(Quality::from_status_code(0), Quality::Good);
        assert_eq!(Quality::from_status_code(0x4092_0000), Quality::Uncertain);
        assert_eq!(Quality::from_status_code(0x8034_0000), Quality::Bad);
        assert_eq!(Quality::from_status_code(0xC000_0000), Quality::Bad);
    }

    #[test]
    fn names_are_case_insensitive_and_unknown_is_none() {
        assert_eq!(Quality::from_name(" GOOD "), Some(Quality::Good));
        assert_eq!(Quality::from_name("Uncertain"), Some(Quality::Uncertain));
        assert_eq!(Quality::from_name("weird"), None);
    }
}
