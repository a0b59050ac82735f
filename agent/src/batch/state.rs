//! The retained batch state on `P/batch`: what SCADA and MES see about the line's batch on
//! subscribe — batch id, recipe and version, product, procedural state, phase, times, the
//! running time of each phase, and the materials charged against the plan. Republished after
//! every batch event and after every reconnect (it is an alert-board entry).

use pdtf_connectors::alert::rfc3339;
use pdtf_models::batch::BatchTwin;
use pdtf_models::Timestamp;
use serde_json::{json, Value};

/// The `P/batch` payload for `twin` at `now` (`now` closes the running phase's elapsed time).
pub fn payload(agent_id: &str, twin: &BatchTwin, now: Timestamp) -> Vec<u8> {
    let Some(b) = &twin.batch else {
        return json!({
            "agent_id": agent_id,
            "line": twin.line,
            "batch_id": null,
            "state": twin.state.name(),
            "time": rfc3339(now),
        })
        .to_string()
        .into_bytes();
    };
    let phases: Vec<Value> = b
        .phases
        .iter()
        .map(|p| {
            let end = p.end.unwrap_or(now);
            json!({
                "name": p.name,
                "start": rfc3339(p.start),
                "end": p.end.map(rfc3339),
                "elapsed_s": end.millis_since(p.start) as f64 / 1000.0,
                "held_s": p.held_ms as f64 / 1000.0,
                "alarms": p.alarms,
            })
        })
        .collect();
    let materials: Vec<Value> = b
        .recipe
        .materials
        .iter()
        .map(|m| {
            let charged: f64 = b
                .charges
                .iter()
                .filter(|c| c.material == m.material && c.unit == m.unit)
                .map(|c| c.quantity)
                .sum();
            json!({"material": m.material, "unit": m.unit, "planned": m.planned, "charged": charged})
        })
        .collect();
    json!({
        "agent_id": agent_id,
        "line": twin.line,
        "batch_id": b.id,
        "recipe": {"id": b.recipe.reference.id, "version": b.recipe.reference.version},
        "product": b.recipe.reference.product,
        "product_code": b.recipe.reference.product_code,
        "state": twin.state.name(),
        "phase": twin.phase(),
        "started": rfc3339(b.started),
        "ended": b.ended.map(rfc3339),
        "phases": phases,
        "materials": materials,
        "downtime_s": b.downtime_ms as f64 / 1000.0,
        "time": rfc3339(now),
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pdtf_models::batch::{Actor, Charge, MaterialPlan};

    #[test]
    fn the_batch_state_names_batch_recipe_state_phase_and_materials() {
        let t0 = Timestamp::from_unix_millis(1_700_000_000_000);
        let idle = BatchTwin::new("gran1", true);
        let v: Value = serde_json::from_slice(&payload("gw", &idle, t0)).unwrap();
        assert_eq!(
            (v["batch_id"].clone(), v["state"].as_str()),
            (Value::Null, Some("idle"))
        );
        let mut r = crate::batch::test_recipe(2, &["preheat", "spraying"]);
        r.materials.push(MaterialPlan {
            material: "API".into(),
            planned: 50.0,
            unit: "kg".into(),
            tolerance_pct: 1.0,
        });
        let twin = idle.start("B-1", &r, t0, Actor::Agent, true).unwrap().next;
        let charge = Charge {
            material: "API".into(),
            lot: "L".into(),
            quantity: 20.0,
            unit: "kg".into(),
        };
        let twin = twin.material(charge, t0, Actor::Agent).unwrap().next;
        let later = Timestamp::from_unix_millis(1_700_000_090_000);
        let v: Value = serde_json::from_slice(&payload("gw", &twin, later)).unwrap();
        assert_eq!(v["recipe"], json!({"id": "gran", "version": 2}));
        assert_eq!(
            (v["state"].as_str(), v["phase"].as_str()),
            (Some("running"), Some("preheat"))
        );
        assert_eq!(v["phases"][0]["elapsed_s"].as_f64(), Some(90.0));
        assert_eq!(v["materials"][0]["charged"].as_f64(), Some(20.0));
        assert_eq!(v["materials"][0]["planned"].as_f64(), Some(50.0));
    }
}
