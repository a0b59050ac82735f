//! Tag-driven batches: the equipment (or MES) publishes the batch id, the phase and the
//! procedural state on tags the line names (`batch_id_tag`, `phase_tag`, `state_tag`), as most
//! PLCs do. Pure: each Good value of one of those tags becomes the batch twin's plan, which
//! the pipeline records in the same commit as the sample itself.
//!
//! - **batch id**: a new non-empty value starts a batch against the line's `recipe` (an open
//!   batch is ended first: Complete on a line without a state tag, where the id's change is
//!   how the end is told; on a line with one, the equipment should have said so, so the end is
//!   recorded as irregular); an empty text, or the number 0 (a PLC's "no batch"), ends the
//!   open batch the same way when the tag named that batch before: a PLC's "no batch" at
//!   start-up (or on reconnect, an OPC UA initial value) does not end a batch an MES
//!   command started. A numeric id is kept as its decimal text (`1002`).
//! - **phase**: the value is matched against the running recipe's phases' `start_on`.
//! - **state**: the value is matched against `state_values`; the twin follows the equipment.
//!
//! Values that match nothing, and changes the twin refuses, are returned as a note for an
//! audit record, once per distinct value, so a PLC that publishes an unmapped phase number
//! is visible without a record per sample.

use crate::config::{BatchConfig, Marker, RecipeConfig};
use pdtf_models::batch::{Actor, BatchChange, BatchTwin, Plan, ProcState, Recipe};
use pdtf_models::{Quality, Sample, TagId, Value};

/// What the line's batch tags mean, resolved to tag ids.
#[derive(Debug, Clone, Default)]
pub struct BatchTags {
    pub batch_id: Option<TagId>,
    pub phase: Option<TagId>,
    pub state: Option<TagId>,
    /// The recipe (id) a tag-started batch runs: its highest version.
    pub recipe: Option<String>,
    /// Recipe id → (marker, phase name), from the phases' `start_on`.
    pub phase_markers: Vec<(String, Marker, String)>,
    pub state_values: Vec<(Marker, ProcState)>,
    /// The last value that produced a note, per tag kind, so repeats stay quiet.
    last_note: [Option<String>; 3],
    /// The batch id tag's previous value (as an id), since the agent started.
    last_id: Option<String>,
}

/// What one batch-tag value does.
#[derive(Debug, Clone, PartialEq)]
pub enum TagOutcome {
    /// Not one of the batch tags, not Good, or no change.
    Nothing,
    /// Apply this plan (the events go into the same commit as the sample).
    Plan(Box<Plan>),
    /// Worth one audit record: what did not match or was refused.
    Note(String),
}

impl BatchTags {
    pub fn of(
        b: &BatchConfig,
        recipes: &[RecipeConfig],
        ids: &dyn Fn(&str) -> Option<TagId>,
    ) -> Self {
        let phase_markers = recipes
            .iter()
            .flat_map(|r| {
                r.phases.iter().filter_map(|p| {
                    p.start_on
                        .clone()
                        .map(|m| (r.id.clone(), m, p.name.clone()))
                })
            })
            .collect();
        let state_values = b
            .state_values
            .iter()
            .filter_map(|(name, m)| ProcState::from_name(name).map(|s| (m.clone(), s)))
            .collect();
        BatchTags {
            batch_id: b.batch_id_tag.as_deref().and_then(ids),
            phase: b.phase_tag.as_deref().and_then(ids),
            state: b.state_tag.as_deref().and_then(ids),
            recipe: b.recipe.clone(),
            phase_markers,
            state_values,
            last_note: Default::default(),
            last_id: None,
        }
    }

    /// Whether `tag` is one of the batch tags (the pipeline's fast path skips the rest).
    pub fn watches(&self, tag: TagId) -> bool {
        [self.batch_id, self.phase, self.state].contains(&Some(tag))
    }

    pub fn on_sample(&mut self, twin: &BatchTwin, recipes: &[Recipe], s: &Sample) -> TagOutcome {
        if s.quality != Quality::Good || !self.watches(s.tag) {
            return TagOutcome::Nothing;
        }
        let at = s.source_time.unwrap_or(s.agent_time);
        let by = Actor::Tag(s.tag);
        let i = Input {
            twin,
            v: &s.value,
            at,
            by,
        };
        let (slot, result) = if Some(s.tag) == self.batch_id {
            let r = self.batch_id_changed(i, recipes);
            self.last_id = id_of(&s.value);
            (0, r)
        } else if Some(s.tag) == self.phase {
            (1, self.phase_changed(i))
        } else {
            (2, self.state_changed(i))
        };
        match result {
            Ok(Some(plan)) => {
                self.last_note[slot] = None;
                TagOutcome::Plan(Box::new(plan))
            }
            Ok(None) => TagOutcome::Nothing,
            Err(note) if self.last_note[slot].as_ref() == Some(&note) => TagOutcome::Nothing,
            Err(note) => {
                self.last_note[slot] = Some(note.clone());
                TagOutcome::Note(note)
            }
        }
    }

    fn batch_id_changed(&self, i: Input<'_>, recipes: &[Recipe]) -> Result<Option<Plan>, String> {
        let Input { twin, v, at, by } = i;
        let Some(id) = id_of(v) else {
            return Err("the batch id tag carries no text or number".into());
        };
        if twin.batch_id() == Some(id.as_str()) {
            return Ok(None);
        }
        if id.is_empty() && self.last_id.as_deref() != twin.batch_id() {
            // "No batch", but the tag never named the open one (a command started it, or
            // this is the first value since the agent started): nothing ends.
            return Ok(None);
        }
        let open = twin.batch.is_some() && !twin.state.is_final();
        let mut twin = twin.clone();
        let mut events = Vec::new();
        if open {
            // A line without a state tag says "ended" by changing the id; on a line with one,
            // the equipment should have said so first: the end is then irregular.
            let mut ended = twin.follow_state(ProcState::Complete, at, by.clone())?;
            if !twin.complete_transients {
                for e in &mut ended.events {
                    if let BatchChange::State { irregular, .. } = &mut e.change {
                        *irregular = true;
                    }
                }
            }
            events.extend(ended.events);
            twin = ended.next;
        }
        if id.is_empty() {
            return Ok((!events.is_empty()).then_some(Plan { events, next: twin }));
        }
        let Some(rid) = self.recipe.as_deref() else {
            return Err(format!(
                "batch {id:?} started on the tag, but the line names no recipe"
            ));
        };
        let recipe = crate::batch::command::find_recipe(recipes, rid, None)?;
        let started = twin.start(&id, recipe, at, by, false)?;
        events.extend(started.events);
        Ok(Some(Plan {
            events,
            next: started.next,
        }))
    }

    fn phase_changed(&self, i: Input<'_>) -> Result<Option<Plan>, String> {
        let Input { twin, v, at, by } = i;
        let Some(b) = &twin.batch else {
            return Ok(None); // no batch: a phase value alone starts nothing
        };
        let rid = &b.recipe.reference.id;
        let name = self
            .phase_markers
            .iter()
            .find(|(r, m, _)| r == rid && matches(m, v))
            .map(|(_, _, n)| n.clone())
            .ok_or_else(|| {
                format!(
                    "phase tag value {} marks no phase of recipe {rid:?}",
                    show(v)
                )
            })?;
        if twin.phase() == Some(name.as_str()) {
            return Ok(None);
        }
        twin.phase_to(Some(&name), at, by).map(Some)
    }

    fn state_changed(&self, i: Input<'_>) -> Result<Option<Plan>, String> {
        let Input { twin, v, at, by } = i;
        let state = self
            .state_values
            .iter()
            .find(|(m, _)| matches(m, v))
            .map(|(_, s)| *s)
            .ok_or_else(|| format!("state tag value {} is in no state_values", show(v)))?;
        if state == twin.state || twin.batch.is_none() {
            return Ok(None);
        }
        twin.follow_state(state, at, by).map(Some)
    }
}

/// One batch-tag value and where it applies.
struct Input<'a> {
    twin: &'a BatchTwin,
    v: &'a Value,
    at: pdtf_models::Timestamp,
    by: Actor,
}

/// A tag value against a configured marker: numbers by value (booleans as 0/1), text exactly.
fn matches(m: &Marker, v: &Value) -> bool {
    match (m, v) {
        (Marker::Text(t), Value::Text(x)) => t == x.trim(),
        (Marker::Number(n), v) => v.as_f64().is_some_and(|x| (x - n).abs() < 1e-9),
        _ => false,
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Text(t) => format!("{t:?}"),
        other => other
            .as_f64()
            .map_or("(no value)".to_owned(), |n| n.to_string()),
    }
}

/// A batch id tag's value as an id: trimmed text, or a number's decimal text; `""` for an
/// empty text or the number 0 (a PLC's "no batch"); `None` for anything else.
fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::Text(t) => Some(t.trim().to_owned()),
        // PLCs number batches; 0 is their "no batch".
        Value::Num(n) if *n == 0.0 => Some(String::new()),
        Value::Num(n) if n.is_finite() => Some(format!("{n}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
