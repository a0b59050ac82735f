//! Tags: the dense id the hot path uses, and the resolved specification behind it.

use serde::{Deserialize, Serialize};

/// Durable id of a tag *name*: given once by the journal's `TagRegistry`, never reused.
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
    /// The detectors beyond limits (stale, frozen, rate, CUSUM, EWMA, SPC).
    pub signals: crate::detect::signals::SignalSpec,
}

/// The configured tags of an agent, indexed by durable `TagId` over the whole registry: an
/// id whose tag is not configured now (removed, kept for the records) has no spec.
#[derive(Debug, Clone, Default)]
pub struct TagTable {
    specs: Vec<Option<TagSpec>>,
}

impl TagTable {
    /// `specs[i]` belongs to `TagId(i)`.
    pub fn new(specs: Vec<Option<TagSpec>>) -> Self {
        Self { specs }
    }

    pub fn get(&self, id: TagId) -> Option<&TagSpec> {
        self.specs.get(id.index()).and_then(Option::as_ref)
    }

    /// The size of the id space (configured or not): vectors indexed by `TagId` use it.
    pub fn id_space(&self) -> usize {
        self.specs.len()
    }

    /// The configured tags, by id.
    pub fn iter(&self) -> impl Iterator<Item = (TagId, &TagSpec)> {
        self.specs
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (TagId(i as u32), s)))
    }

    /// Limits of every id (`None` where unconfigured or unlimited), for the detector.
    pub fn limits(&self) -> Vec<Option<LimitSpec>> {
        self.specs
            .iter()
            .map(|s| s.as_ref().and_then(|s| s.limits))
            .collect()
    }

    /// Each id's detectors beyond limits (empty for an id not configured now).
    pub fn signals(&self) -> Vec<crate::detect::signals::SignalSpec> {
        self.specs
            .iter()
            .map(|s| s.as_ref().map(|s| s.signals.clone()).unwrap_or_default())
            .collect()
    }
}
