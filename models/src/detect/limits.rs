//! Limit alarms: lo-lo / lo / hi / hi-hi with deadband (hysteresis) and on-delay.
//!
//! Rules, per tag:
//! - A level is *in condition* when the value is beyond its limit (`> hi`, `< lo`). While a
//!   level of at least the same rank on the same side is active, it stays in condition until
//!   the value comes back past the limit by `deadband`.
//! - The wanted level is the most severe level in condition. A raise or escalation happens only
//!   after the wanted level has held for `on_delay_ms` (measured on sample agent time); a
//!   clear or de-escalation happens at once.
//! - Bad-quality samples neither raise nor clear: the alarm keeps its state until a usable value.
//! - Phase-aware: a recipe's phase may replace a tag's limits while it runs (`PhaseLimits`);
//!   the line twin's recipe and phase say which apply to each sample. Outside the phases
//!   that name a tag its own limits apply; a tag with none is not judged there, and an alarm
//!   the phase's limits raised clears at the first sample after the phase ended.

use super::Detector;
use crate::{
    twin::LineTwin, AlarmEvent, AlarmState, Condition, ConditionKind, ConditionSource, Level,
    LimitSpec, RecordBody, Sample, TagId, TagTable, Timestamp,
};

#[derive(Debug, Clone, Copy, Default)]
struct TagAlarm {
    active: Option<Level>,
    pending: Option<(Level, Timestamp)>,
}

/// Limits that replace tags' own while one phase of one recipe runs.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseLimits {
    pub recipe: String,
    pub phase: String,
    /// `specs[i]` replaces `TagId(i)`'s limits in the phase; `None`: the tag's own apply.
    pub specs: Vec<Option<LimitSpec>>,
}

#[derive(Debug, Clone)]
pub struct LimitDetector {
    specs: Vec<Option<LimitSpec>>,
    phases: Vec<PhaseLimits>,
    state: Vec<TagAlarm>,
}

impl LimitDetector {
    /// `specs[i]` belongs to `TagId(i)`; `None` means the tag has no limits.
    pub fn new(specs: Vec<Option<LimitSpec>>) -> Self {
        let state = vec![TagAlarm::default(); specs.len()];
        Self {
            specs,
            phases: Vec::new(),
            state,
        }
    }

    /// With the recipes' phase limits.
    pub fn with_phases(mut self, phases: Vec<PhaseLimits>) -> Self {
        let len = phases
            .iter()
            .map(|p| p.specs.len())
            .max()
            .unwrap_or(0)
            .max(self.state.len());
        self.state.resize(len, TagAlarm::default());
        self.phases = phases;
        self
    }

    /// The limits of tag `i` now: the running phase's, else the tag's own.
    fn spec_now(&self, i: usize, twin: &LineTwin) -> Option<LimitSpec> {
        let phase = match (twin.recipe(), twin.phase()) {
            (Some(r), Some(p)) => self
                .phases
                .iter()
                .find(|l| l.recipe == r && l.phase == p)
                .and_then(|l| l.specs.get(i).copied().flatten()),
            _ => None,
        };
        phase.or_else(|| self.specs.get(i).copied().flatten())
    }

    /// Whether tag `i` has limits anywhere (its own, or in some phase).
    fn watched(&self, i: usize) -> bool {
        self.specs.get(i).is_some_and(Option::is_some)
            || self
                .phases
                .iter()
                .any(|p| p.specs.get(i).is_some_and(Option::is_some))
    }

    /// Currently active level of a tag, if any.
    pub fn active(&self, tag: crate::TagId) -> Option<Level> {
        self.state.get(tag.index()).and_then(|s| s.active)
    }

    /// Sets a tag's active level (at start, from the journal), so an alarm that was active
    /// before a restart clears when the value returns, instead of staying "active" on
    /// SCADA's retained topic forever.
    pub fn restore_level(&mut self, tag: TagId, level: Option<Level>) {
        if let Some(st) = self.state.get_mut(tag.index()) {
            st.active = level;
            st.pending = None;
        }
    }
}

fn limit_of(spec: &LimitSpec, level: Level) -> Option<f64> {
    match level {
        Level::LoLo => spec.lolo,
        Level::Lo => spec.lo,
        Level::Hi => spec.hi,
        Level::HiHi => spec.hihi,
    }
}

fn in_condition(spec: &LimitSpec, level: Level, value: f64, active: Option<Level>) -> bool {
    let Some(limit) = limit_of(spec, level) else {
        return false;
    };
    let holding =
        active.is_some_and(|a| a.is_high() == level.is_high() && a.rank() >= level.rank());
    let band = if holding { spec.deadband } else { 0.0 };
    if level.is_high() {
        value > limit - band
    } else {
        value < limit + band
    }
}

fn wanted(spec: &LimitSpec, value: f64, active: Option<Level>) -> Option<Level> {
    [Level::HiHi, Level::LoLo, Level::Hi, Level::Lo]
        .into_iter()
        .find(|&l| in_condition(spec, l, value, active))
}

/// A move to `to` from `from` that makes things worse waits for the on-delay.
fn is_worsening(from: Option<Level>, to: Option<Level>) -> bool {
    match (from, to) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(f), Some(t)) => f.is_high() != t.is_high() || t.rank() > f.rank(),
    }
}

impl Detector for LimitDetector {
    fn on_sample(&mut self, sample: &Sample, twin: &LineTwin, out: &mut Vec<RecordBody>) {
        let i = sample.tag.index();
        let spec = if self.phases.is_empty() {
            self.specs.get(i).copied().flatten()
        } else {
            self.spec_now(i, twin)
        };
        let Some(st) = self.state.get_mut(i) else {
            return;
        };
        let Some(spec) = spec.or_else(|| {
            // No limits now (a phase's ended): an alarm they raised clears.
            st.active.map(|_| LimitSpec {
                lolo: None,
                lo: None,
                hi: None,
                hihi: None,
                deadband: 0.0,
                on_delay_ms: 0,
            })
        }) else {
            return;
        };
        let spec = &spec;
        let Some(value) = sample.number().filter(|v| v.is_finite()) else {
            return;
        };
        if !sample.quality.is_usable() {
            return;
        }
        let now = sample.agent_time;
        let want = wanted(spec, value, st.active);
        if want == st.active {
            st.pending = None;
            return;
        }
        if is_worsening(st.active, want) && spec.on_delay_ms > 0 {
            let level = want.expect("worsening always has a target level");
            match st.pending {
                Some((p, since)) if p == level => {
                    if now.millis_since(since) < spec.on_delay_ms {
                        return;
                    }
                }
                _ => {
                    st.pending = Some((level, now));
                    return;
                }
            }
        }
        let previous = st.active;
        st.active = want;
        st.pending = None;
        let (state, limit, severity) = match want {
            Some(l) => (AlarmState::Active(l), limit_of(spec, l), l.severity()),
            None => (
                AlarmState::Inactive,
                previous.and_then(|p| limit_of(spec, p)),
                0,
            ),
        };
        out.push(RecordBody::Alarm(AlarmEvent {
            condition: Condition::tag_limit(sample.tag),
            state,
            previous,
            value,
            limit: limit.unwrap_or(f64::NAN),
            severity,
            time: now,
            batch_id: twin.batch_id().map(str::to_owned),
            phase: twin.phase().map(str::to_owned),
        }));
    }

    fn conditions(&self) -> Vec<Condition> {
        (0..self.state.len())
            .filter(|i| self.watched(*i))
            .map(|i| Condition::tag_limit(TagId(i as u32)))
            .collect()
    }

    fn restore(&mut self, last: &AlarmEvent) -> bool {
        let (ConditionSource::Tag(tag), ConditionKind::Limit) =
            (&last.condition.source, last.condition.kind)
        else {
            return false;
        };
        if !self.watched(tag.index()) {
            return false;
        }
        let level = match last.state {
            AlarmState::Active(l) => Some(l),
            AlarmState::Inactive => None,
        };
        self.restore_level(*tag, level);
        true
    }

    fn active_count(&self) -> usize {
        self.state.iter().filter(|s| s.active.is_some()).count()
    }

    fn reconfigure(
        &mut self,
        tags: &TagTable,
        at: Timestamp,
        twin: &LineTwin,
        out: &mut Vec<RecordBody>,
    ) {
        let specs = tags.limits();
        let in_phases: Vec<bool> = (0..specs.len())
            .map(|i| {
                self.phases
                    .iter()
                    .any(|p| p.specs.get(i).is_some_and(Option::is_some))
            })
            .collect();
        self.state
            .resize(specs.len().max(self.state.len()), TagAlarm::default());
        for (i, (st, new)) in self.state.iter_mut().zip(&specs).enumerate() {
            let old = self.specs.get(i).copied().flatten();
            if old != *new {
                // New limits judge the next sample; a half-run on-delay starts again.
                st.pending = None;
            }
            // A tag that lost its own limits but has a phase's keeps its state.
            let (Some(level), None, false) = (st.active, new, in_phases[i]) else {
                continue;
            };
            let tag = TagId(i as u32);
            st.active = None;
            out.push(RecordBody::Alarm(AlarmEvent {
                condition: Condition::tag_limit(tag),
                state: AlarmState::Inactive,
                previous: Some(level),
                value: twin
                    .get(tag)
                    .and_then(|v| v.value.as_f64())
                    .unwrap_or(f64::NAN),
                limit: old.and_then(|o| limit_of(&o, level)).unwrap_or(f64::NAN),
                severity: 0,
                time: at,
                batch_id: twin.batch_id().map(str::to_owned),
                phase: twin.phase().map(str::to_owned),
            }));
        }
        self.specs = specs;
    }
}

#[cfg(test)]
mod tests;
