//! A master recipe as the batch twin uses it (the agent builds it from `[[recipes]]`).

use super::record::RecipeRef;
use crate::TagId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub reference: RecipeRef,
    /// In running order.
    pub phases: Vec<RecipePhase>,
    pub materials: Vec<MaterialPlan>,
    pub quality: Vec<QualitySpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipePhase {
    pub name: String,
    pub min_duration_s: Option<u64>,
    pub max_duration_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaterialPlan {
    pub material: String,
    pub planned: f64,
    pub unit: String,
    pub tolerance_pct: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualitySpec {
    pub name: String,
    pub unit: String,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    /// The tag carrying the measured result.
    pub tag: Option<TagId>,
}

impl Recipe {
    pub fn phase_index(&self, name: &str) -> Option<usize> {
        self.phases.iter().position(|p| p.name == name)
    }
}

impl RecipePhase {
    /// Whether a running time of `ms` lies in the expected range.
    pub fn within(&self, ms: u64) -> bool {
        let s = ms / 1_000;
        self.min_duration_s.is_none_or(|lo| s >= lo)
            && self
                .max_duration_s
                .is_none_or(|hi| ms <= hi.saturating_mul(1_000))
    }
}

impl QualitySpec {
    pub fn within(&self, v: f64) -> bool {
        self.lo.is_none_or(|lo| v >= lo) && self.hi.is_none_or(|hi| v <= hi)
    }
}
