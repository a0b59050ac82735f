//! The end-of-batch summary: phase durations against the recipe's expected ranges, alarms
//! per phase, material reconciliation (charged against planned, within tolerance) and the
//! quality attributes' last values against their specification.

use super::record::{MaterialSummary, PhaseSummary, QualitySummary, Summary};
use super::twin::BatchTwin;

impl BatchTwin {
    /// The summary of an ended batch (its chain head is the caller's to fill in).
    pub fn summary(&self) -> Option<Summary> {
        let b = self.batch.as_ref()?;
        let ended = b.ended?;
        let phases = b
            .phases
            .iter()
            .map(|p| {
                let end = p.end.unwrap_or(ended);
                let duration_ms = end.millis_since(p.start).saturating_sub(p.held_ms);
                let spec = b.recipe.phases.iter().find(|r| r.name == p.name);
                PhaseSummary {
                    name: p.name.clone(),
                    start: p.start,
                    end,
                    duration_ms,
                    held_ms: p.held_ms,
                    expected_min_s: spec.and_then(|s| s.min_duration_s),
                    expected_max_s: spec.and_then(|s| s.max_duration_s),
                    within_expected: spec.is_none_or(|s| s.within(duration_ms)),
                    alarms: p.alarms,
                }
            })
            .collect();
        let mut materials: Vec<MaterialSummary> = b
            .recipe
            .materials
            .iter()
            .map(|m| MaterialSummary {
                material: m.material.clone(),
                unit: m.unit.clone(),
                planned: Some(m.planned),
                charged: 0.0,
                tolerance_pct: m.tolerance_pct,
                within_tolerance: true,
                lots: Vec::new(),
            })
            .collect();
        for c in &b.charges {
            let line = match materials.iter_mut().position(|m| m.material == c.material) {
                Some(i) => &mut materials[i],
                None => {
                    materials.push(MaterialSummary {
                        material: c.material.clone(),
                        unit: c.unit.clone(),
                        planned: None,
                        charged: 0.0,
                        tolerance_pct: 0.0,
                        within_tolerance: false,
                        lots: Vec::new(),
                    });
                    materials.last_mut().expect("just pushed")
                }
            };
            if c.unit != line.unit {
                line.within_tolerance = false;
            } else {
                line.charged += c.quantity;
            }
            if !line.lots.contains(&c.lot) {
                line.lots.push(c.lot.clone());
            }
        }
        for m in &mut materials {
            if let Some(planned) = m.planned {
                let allowed = planned * m.tolerance_pct / 100.0;
                m.within_tolerance &= (m.charged - planned).abs() <= allowed + 1e-9 * planned;
            }
        }
        let quality = b
            .recipe
            .quality
            .iter()
            .zip(&b.quality_values)
            .map(|(q, v)| QualitySummary {
                name: q.name.clone(),
                unit: q.unit.clone(),
                lo: q.lo,
                hi: q.hi,
                value: *v,
                within_spec: v.map(|v| q.within(v)),
            })
            .collect();
        Some(Summary {
            recipe: b.recipe.reference.clone(),
            started: b.started,
            ended,
            outcome: self.state,
            phases,
            materials,
            quality,
            alarms_outside_phases: b.alarms_outside_phases,
            downtime_ms: b.downtime_ms,
            chain_head: String::new(),
        })
    }
}
