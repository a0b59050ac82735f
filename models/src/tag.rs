//! Tags: the dense id the hot path uses, and the resolved specification behind it.

use serde::{Deserialize, Serialize};

/// Dense index of a tag within one agent's tag table. Resolved once at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TagId(pub u32);

impl TagId {
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// Alarm limits of one tag. Any subset may be set; `validate` in the agent's config checks
/// the ordering `lolo < lo < hi < hihi` for those that are.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LimitSpec {
    pub lolo: Option<f64>,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    pub hihi: Option<f64>,
    /// Hysteresis: a high alarm clears below `hi - deadband`, a low one above `lo + deadband`.
    pub deadband: f64,
    /// A condition must hold this long before the alarm is raised (filters spikes).
    pub on_delay_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TagSpec {
    pub name: String,
    pub unit: String,
    pub limits: Option<LimitSpec>,
}

/// All tags of an agent, indexed by `TagId`.
#[derive(Debug, Clone, Default)]
pub struct TagTable {
    specs: Vec<TagSpec>,
}

impl TagTable {
    pub fn new(specs: Vec<TagSpec>) -> Self {
        Self { specs }
    }

    pub fn get(&self, id: TagId) -> Option<&TagSpec> {
        self.specs.get(id.index())
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (TagId, &TagSpec)> {
        self.specs
            .iter()
            .enumerate()
            .map(|(i, s)| (TagId(i as u32), s))
    }
}
