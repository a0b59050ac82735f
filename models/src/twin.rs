//! The line twin: what the agent currently believes about its line.
//!
//! The latest value, quality and times per tag, and the batch context (batch id and phase)
//! that the line's batch twin (`batch::BatchTwin`) last set, which detectors stamp on every
//! alarm. The pipeline owns one twin per line, so none of it needs locks.

use crate::{Quality, Sample, TagId, Timestamp, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct TagValue {
    pub value: Value,
    pub quality: Quality,
    pub source_time: Option<Timestamp>,
    pub agent_time: Timestamp,
}

#[derive(Debug, Clone)]
pub struct LineTwin {
    tags: Vec<Option<TagValue>>,
    /// The batch context the batch twin last set (`set_batch`): every alarm carries it.
    batch_id: Option<String>,
    /// The running batch's recipe id (phase-aware limits are per recipe and phase).
    recipe: Option<String>,
    phase: Option<String>,
}

impl LineTwin {
    pub fn new(tag_count: usize) -> Self {
        Self {
            tags: vec![None; tag_count],
            batch_id: None,
            recipe: None,
            phase: None,
        }
    }

    pub fn update(&mut self, s: &Sample) {
        if let Some(slot) = self.tags.get_mut(s.tag.index()) {
            *slot = Some(TagValue {
                value: s.value.clone(),
                quality: s.quality,
                source_time: s.source_time,
                agent_time: s.agent_time,
            });
        }
    }

    /// Marks tags Bad (their source is gone) while keeping the last value for context, so
    /// nothing downstream mistakes a stale value for a good one.
    pub fn mark_bad(&mut self, tags: &[TagId], at: Timestamp) {
        for t in tags {
            if let Some(Some(v)) = self.tags.get_mut(t.index()) {
                v.quality = Quality::Bad;
                v.agent_time = at;
            }
        }
    }

    /// The id space grew (a reload registered new tags): room for them, nothing else moves.
    pub fn grow(&mut self, tag_count: usize) {
        if tag_count > self.tags.len() {
            self.tags.resize(tag_count, None);
        }
    }

    pub fn get(&self, tag: TagId) -> Option<&TagValue> {
        self.tags.get(tag.index()).and_then(Option::as_ref)
    }

    pub fn batch_id(&self) -> Option<&str> {
        self.batch_id.as_deref()
    }

    pub fn phase(&self) -> Option<&str> {
        self.phase.as_deref()
    }

    pub fn recipe(&self) -> Option<&str> {
        self.recipe.as_deref()
    }

    /// The batch, its recipe and the phase running now (after each batch event).
    pub fn set_batch(&mut self, batch_id: Option<&str>, recipe: Option<&str>, phase: Option<&str>) {
        self.batch_id = batch_id.map(str::to_owned);
        self.recipe = recipe.map(str::to_owned);
        self.phase = phase.map(str::to_owned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_bad_keeps_value_but_drops_quality() {
        let mut twin = LineTwin::new(2);
        let t0 = Timestamp::from_unix_millis(1);
        twin.update(&Sample::new(TagId(1), 4.5, Quality::Good, None, t0));
        twin.mark_bad(&[TagId(0), TagId(1)], Timestamp::from_unix_millis(9));
        let v = twin.get(TagId(1)).unwrap();
        assert_eq!((&v.value, v.quality), (&Value::Num(4.5), Quality::Bad));
        assert!(twin.get(TagId(0)).is_none(), "never-seen tag stays unknown");
    }
}
