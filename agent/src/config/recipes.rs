//! `[[recipes]]`: simplified ISA-88 master recipes — the product, the ordered phases with
//! their expected durations, the phase-tag values that mark them (tag-driven lines), per-phase
//! targets and limits that replace a tag's own while the phase runs, the bill of materials,
//! the quality attributes with their specifications, and which tags keep trajectories.
//!
//! `check` returns every problem with its TOML path, like the rest of validation.

use super::validate::{is_name, limit_problems, NAME_RULE};
use super::{Config, ConfigError, LimitsConfig};
use pdtf_models::batch::{Trajectories, TrajectorySpec};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecipeConfig {
    /// Names the recipe in commands (`start` … `recipe`) and records.
    pub id: String,
    /// Several versions of one recipe may be configured; a start names one or takes the
    /// highest.
    pub version: u32,
    pub product: String,
    pub product_code: String,
    #[serde(default)]
    pub description: String,
    /// In the order they run.
    pub phases: Vec<PhaseConfig>,
    #[serde(default)]
    pub materials: Vec<MaterialConfig>,
    #[serde(default)]
    pub quality: Vec<QualityConfig>,
    pub trajectories: Option<TrajectoryConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PhaseConfig {
    pub name: String,
    /// The expected duration range; a phase outside it is flagged in the batch summary.
    pub min_duration_s: Option<u64>,
    pub max_duration_s: Option<u64>,
    /// The value of the line's phase tag that marks this phase's start (tag-driven lines):
    /// a number (`2`) or a text (`"SPRAY"`).
    pub start_on: Option<Marker>,
    /// Tag name → limits that replace the tag's own while this phase runs.
    #[serde(default)]
    pub limits: BTreeMap<String, LimitsConfig>,
    /// Tag name → the phase's target value (set point) for it.
    #[serde(default)]
    pub targets: BTreeMap<String, f64>,
}

/// A phase-tag value: PLCs give phase numbers, MES systems give names.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Marker {
    Number(f64),
    Text(String),
}

impl std::fmt::Display for Marker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Marker::Number(n) => write!(f, "{n}"),
            Marker::Text(t) => write!(f, "{t:?}"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaterialConfig {
    pub material: String,
    #[serde(default)]
    pub description: String,
    pub planned: f64,
    pub unit: String,
    /// Allowed deviation of the charged total from `planned`, in percent of `planned`.
    #[serde(default)]
    pub tolerance_pct: f64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QualityConfig {
    pub name: String,
    pub unit: String,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    /// The tag that carries the measured result, if the line has one.
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrajectoryConfig {
    pub tags: Vec<String>,
    #[serde(default = "default_resolution_ms")]
    pub resolution_ms: u64,
    /// Points per tag and phase occurrence (`max_points × resolution_ms` of each phase).
    #[serde(default = "default_max_points")]
    pub max_points: u32,
    /// Phase occurrences kept per batch (a phase entered again after a hold is one more).
    #[serde(default = "default_max_phase_occurrences")]
    pub max_phase_occurrences: u32,
}

const fn default_resolution_ms() -> u64 {
    10_000
}
const fn default_max_points() -> u32 {
    720
}
const fn default_max_phase_occurrences() -> u32 {
    32
}

/// The most memory one recipe's trajectories may take.
pub const MAX_TRAJECTORY_BYTES: u64 = 64 << 20;

impl TrajectoryConfig {
    pub fn spec(&self) -> TrajectorySpec {
        TrajectorySpec {
            resolution_ms: self.resolution_ms,
            max_points: self.max_points,
            max_phases: self.max_phase_occurrences,
        }
    }
}

impl RecipeConfig {
    pub fn phase(&self, name: &str) -> Option<&PhaseConfig> {
        self.phases.iter().find(|p| p.name == name)
    }
}

pub(super) fn check(c: &Config) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    let mut err = |path: String, msg: String| errs.push(ConfigError::new(&c.file, path, msg));
    let tags: BTreeSet<&str> = c.tags.iter().map(|t| t.name.as_str()).collect();
    let known_tag = |name: &str| tags.contains(name);
    let mut ids = BTreeSet::new();
    for (i, r) in c.recipes.iter().enumerate() {
        let p = format!("recipes[{i}]");
        if !is_name(&r.id) {
            err(format!("{p}.id"), format!("{:?} {NAME_RULE}", r.id));
        }
        if r.version == 0 {
            err(format!("{p}.version"), "must be >= 1".into());
        } else if !ids.insert((r.id.as_str(), r.version)) {
            err(
                format!("{p}.version"),
                format!("recipe {:?} version {} is defined twice", r.id, r.version),
            );
        }
        for (key, v) in [("product", &r.product), ("product_code", &r.product_code)] {
            if v.trim().is_empty() {
                err(format!("{p}.{key}"), "must not be empty".into());
            }
        }
        if r.phases.is_empty() {
            err(format!("{p}.phases"), "must list at least one phase".into());
        }
        let mut names = BTreeSet::new();
        let mut markers: Vec<(&Marker, &str)> = Vec::new();
        for (j, ph) in r.phases.iter().enumerate() {
            let pp = format!("{p}.phases[{j}]");
            if !is_name(&ph.name) {
                err(format!("{pp}.name"), format!("{:?} {NAME_RULE}", ph.name));
            }
            if !names.insert(ph.name.as_str()) {
                err(
                    format!("{pp}.name"),
                    format!("phase {:?} is listed twice", ph.name),
                );
            }
            if ph.max_duration_s == Some(0) {
                err(format!("{pp}.max_duration_s"), "must be >= 1".into());
            }
            if let (Some(lo), Some(hi)) = (ph.min_duration_s, ph.max_duration_s) {
                if hi < lo {
                    err(
                        format!("{pp}.max_duration_s"),
                        format!("must be >= min_duration_s ({lo})"),
                    );
                }
            }
            if let Some(m) = &ph.start_on {
                match m {
                    Marker::Number(n) if !n.is_finite() => {
                        err(format!("{pp}.start_on"), "must be a finite number".into())
                    }
                    Marker::Text(t) if t.is_empty() => {
                        err(format!("{pp}.start_on"), "must not be empty".into())
                    }
                    _ => {}
                }
                if let Some((_, other)) = markers.iter().find(|(o, _)| *o == m) {
                    err(
                        format!("{pp}.start_on"),
                        format!("{m} already marks phase {other:?}"),
                    );
                }
                markers.push((m, &ph.name));
            }
            for (tag, l) in &ph.limits {
                let lp = format!("{pp}.limits.{tag}");
                if !known_tag(tag) {
                    err(
                        lp.clone(),
                        format!("unknown tag {tag:?} (no [[tags]] entry has that name)"),
                    );
                }
                for (key, msg) in limit_problems(l) {
                    err(format!("{lp}{key}"), msg);
                }
            }
            for (tag, v) in &ph.targets {
                let tp = format!("{pp}.targets.{tag}");
                if !known_tag(tag) {
                    err(
                        tp.clone(),
                        format!("unknown tag {tag:?} (no [[tags]] entry has that name)"),
                    );
                }
                if !v.is_finite() {
                    err(tp, "must be a finite number".into());
                    continue;
                }
                let Some(l) = ph.limits.get(tag) else {
                    continue;
                };
                if l.lo.is_some_and(|lo| *v <= lo) || l.hi.is_some_and(|hi| *v >= hi) {
                    err(
                        tp,
                        format!("{v} is outside the phase's own limits for {tag:?}"),
                    );
                }
            }
        }
        let mut materials = BTreeSet::new();
        for (j, m) in r.materials.iter().enumerate() {
            let mp = format!("{p}.materials[{j}]");
            if m.material.trim().is_empty() {
                err(format!("{mp}.material"), "must not be empty".into());
            } else if !materials.insert(m.material.as_str()) {
                err(
                    format!("{mp}.material"),
                    format!("material {:?} is listed twice", m.material),
                );
            }
            if !(m.planned.is_finite() && m.planned > 0.0) {
                err(format!("{mp}.planned"), "must be a number > 0".into());
            }
            if m.unit.trim().is_empty() {
                err(format!("{mp}.unit"), "must not be empty".into());
            }
            if !(0.0..=100.0).contains(&m.tolerance_pct) {
                err(format!("{mp}.tolerance_pct"), "must be 0..=100".into());
            }
        }
        let mut attributes = BTreeSet::new();
        for (j, q) in r.quality.iter().enumerate() {
            let qp = format!("{p}.quality[{j}]");
            if !is_name(&q.name) {
                err(format!("{qp}.name"), format!("{:?} {NAME_RULE}", q.name));
            } else if !attributes.insert(q.name.as_str()) {
                err(
                    format!("{qp}.name"),
                    format!("quality attribute {:?} is listed twice", q.name),
                );
            }
            match (q.lo, q.hi) {
                (None, None) => err(qp.clone(), "sets neither lo nor hi".into()),
                (Some(lo), Some(hi)) if hi <= lo => {
                    err(format!("{qp}.hi"), format!("must be > lo ({lo})"))
                }
                _ => {}
            }
            for (key, v) in [("lo", q.lo), ("hi", q.hi)] {
                if v.is_some_and(|v| !v.is_finite()) {
                    err(format!("{qp}.{key}"), "must be a finite number".into());
                }
            }
            if let Some(t) = q.tag.as_deref().filter(|t| !known_tag(t)) {
                err(
                    format!("{qp}.tag"),
                    format!("unknown tag {t:?} (no [[tags]] entry has that name)"),
                );
            }
        }
        if let Some(t) = &r.trajectories {
            let tp = format!("{p}.trajectories");
            if t.tags.is_empty() {
                err(format!("{tp}.tags"), "must name at least one tag".into());
            }
            let mut seen = BTreeSet::new();
            for (j, tag) in t.tags.iter().enumerate() {
                if !known_tag(tag) {
                    err(
                        format!("{tp}.tags[{j}]"),
                        format!("unknown tag {tag:?} (no [[tags]] entry has that name)"),
                    );
                } else if !seen.insert(tag.as_str()) {
                    err(
                        format!("{tp}.tags[{j}]"),
                        format!("{tag:?} is listed twice"),
                    );
                }
            }
            if t.resolution_ms < 100 {
                err(format!("{tp}.resolution_ms"), "must be >= 100".into());
            }
            if !(1..=100_000).contains(&t.max_points) {
                err(format!("{tp}.max_points"), "must be 1..=100000".into());
            }
            if !(1..=1_000).contains(&t.max_phase_occurrences) {
                err(
                    format!("{tp}.max_phase_occurrences"),
                    "must be 1..=1000".into(),
                );
            }
            let bytes = Trajectories::capacity_bytes(&t.spec(), t.tags.len());
            if bytes > MAX_TRAJECTORY_BYTES {
                err(
                    tp,
                    format!(
                        "could hold {} MiB per batch (tags x max_points x max_phase_occurrences x 48 bytes), more than {} MiB: fewer tags, points or occurrences",
                        bytes >> 20,
                        MAX_TRAJECTORY_BYTES >> 20
                    ),
                );
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recipe_loads_with_its_phases_markers_limits_and_trajectory_spec() {
        let tags = "[[tags]]\nname = \"temp\"\nsource = \"plc\"\ntopic = \"t\"\n";
        let c = super::super::test_config(
            tags,
            r#"
[[recipes]]
id = "r1"
version = 2
product = "P"
product_code = "P-1"
[[recipes.phases]]
name = "heat"
start_on = 1
[[recipes.phases]]
name = "spray"
start_on = "SPRAY"
limits.temp = { hi = 40.0 }
targets.temp = 35.0
[recipes.trajectories]
tags = ["temp"]
"#,
        );
        let r = &c.recipes[0];
        assert_eq!((r.id.as_str(), r.version), ("r1", 2));
        let names: Vec<&str> = r.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["heat", "spray"], "phases keep their order");
        assert_eq!(r.phases[0].start_on, Some(Marker::Number(1.0)));
        let spray = r.phase("spray").unwrap();
        assert_eq!(spray.start_on, Some(Marker::Text("SPRAY".into())));
        assert_eq!(spray.limits["temp"].hi, Some(40.0));
        assert_eq!(spray.targets["temp"], 35.0);
        let spec = r.trajectories.as_ref().unwrap().spec();
        assert_eq!(
            (spec.resolution_ms, spec.max_points, spec.max_phases),
            (10_000, 720, 32),
            "the documented defaults"
        );
    }
}
