//! The alarm lifecycle in the agent (ISA-18.2, see `pdtf_models::lifecycle`): each line keeps
//! an `AlarmBook` — one `Lifecycle` per condition — and records every change.
//!
//! - A detector's raise or clear: the `alarm` record, then in the same commit the
//!   `alarm_lifecycle` record when the lifecycle moved (`follow`).
//! - The tick: timed shelves that ran out, and design suppression as the phase changes
//!   (`tick`).
//! - An operator's action on `P/cmd/alarm` (`command`): the `command` record and the
//!   `alarm_lifecycle` record commit together, then the book changes, then the reply.
//! - QA's disposition of a deviation on `P/cmd/deviation` (`disposition`): the `command`
//!   record and the deviation's new record commit together, then the reply.
//!
//! The book is derived from the journal: at start each condition's last lifecycle record is
//! read back from the alarm index (`restore`), so an acknowledged or shelved alarm stays so
//! across a restart.

pub mod command;
pub mod disposition;

use crate::batch::requests::RequestWindow;
use crate::config::AlarmConfig;
use pdtf_models::batch::SeenRequest;
use pdtf_models::lifecycle::{Input, Lifecycle, LifecycleEvent, Refused};
use pdtf_models::twin::LineTwin;
use pdtf_models::{Condition, RecordBody, Timestamp};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Who asked for an operator action.
#[derive(Debug, Clone, PartialEq)]
pub struct Operator {
    pub user: String,
    pub request_id: String,
    pub reason: String,
}

/// One line's alarm lifecycles.
#[derive(Debug, Clone, Default)]
pub struct AlarmBook {
    pub line: String,
    /// Per `TagId` index: its `[tags.alarm]` (absent: the defaults).
    settings: Vec<Option<Arc<AlarmConfig>>>,
    defaults: Arc<AlarmConfig>,
    lifecycles: BTreeMap<Condition, Lifecycle>,
    /// Recent operator request ids, so a redelivered action is answered, not applied twice.
    pub seen: RequestWindow,
}

impl AlarmBook {
    pub fn new(line: &str, settings: Vec<Option<Arc<AlarmConfig>>>) -> Self {
        Self {
            line: line.to_owned(),
            settings,
            ..Self::default()
        }
    }

    /// A reload changed `[tags.alarm]`: later transitions follow the new settings.
    pub fn set_settings(&mut self, settings: Vec<Option<Arc<AlarmConfig>>>) {
        self.settings = settings;
        let all: Vec<Condition> = self.lifecycles.keys().cloned().collect();
        for c in all {
            let s = self.settings_of(&c).clone();
            if let Some(l) = self.lifecycles.get_mut(&c) {
                l.latching = s.latching;
                l.shelvable = s.shelvable;
            }
        }
    }

    fn settings_of(&self, c: &Condition) -> &AlarmConfig {
        c.tag()
            .and_then(|t| self.settings.get(t.index()))
            .and_then(Option::as_ref)
            .unwrap_or(&self.defaults)
    }

    /// The condition's lifecycle now (a condition never seen is Normal).
    pub fn lifecycle(&self, c: &Condition) -> Lifecycle {
        self.lifecycles.get(c).cloned().unwrap_or_else(|| {
            let s = self.settings_of(c);
            Lifecycle::new(s.latching, s.shelvable)
        })
    }

    /// Conditions whose lifecycle is not plain Normal.
    pub fn len(&self) -> usize {
        self.lifecycles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lifecycles.is_empty()
    }

    /// Takes a condition's last lifecycle record (at start), with today's settings.
    pub fn restore(&mut self, ev: &LifecycleEvent) {
        let s = self.settings_of(&ev.condition).clone();
        let mut l = ev.lifecycle.clone();
        l.latching = s.latching;
        l.shelvable = s.shelvable;
        self.store(ev.condition.clone(), l);
        if let Some(id) = &ev.request_id {
            // The seq is not known here; a redelivery is answered as a duplicate of it.
            self.seen.insert(SeenRequest {
                request_id: id.clone(),
                seq: 0,
                refused: None,
            });
        }
    }

    fn store(&mut self, c: Condition, l: Lifecycle) {
        if l == Lifecycle::new(l.latching, l.shelvable) {
            self.lifecycles.remove(&c);
        } else {
            self.lifecycles.insert(c, l);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        c: &Condition,
        input: Input,
        before: &Lifecycle,
        after: Lifecycle,
        twin: &LineTwin,
        at: Timestamp,
        by: Option<&Operator>,
    ) -> LifecycleEvent {
        LifecycleEvent {
            condition: c.clone(),
            line: self.line.clone(),
            input,
            previous: before.status,
            lifecycle: after,
            time: at,
            user: by.map(|o| o.user.clone()),
            request_id: by.map(|o| o.request_id.clone()),
            reason: by.map(|o| o.reason.clone()),
            batch_id: twin.batch_id().map(str::to_owned),
            phase: twin.phase().map(str::to_owned),
        }
    }

    /// Applies an input the agent itself makes; the record of the change, if any.
    fn agent_input(
        &mut self,
        c: &Condition,
        input: Input,
        twin: &LineTwin,
        at: Timestamp,
    ) -> Option<RecordBody> {
        let before = self.lifecycle(c);
        let after = before.apply(input).ok().flatten()?;
        let ev = self.event(c, input, &before, after.clone(), twin, at, None);
        self.store(c.clone(), after);
        Some(RecordBody::Lifecycle(Box::new(ev)))
    }

    /// Design suppression for `c` in the twin's current phase, when it changes.
    fn suppression(&mut self, c: &Condition, twin: &LineTwin, at: Timestamp) -> Option<RecordBody> {
        let s = self.settings_of(c);
        if s.suppress_in_phases.is_empty() && !self.lifecycles.get(c).is_some_and(|l| l.suppressed)
        {
            return None;
        }
        let on = twin
            .phase()
            .is_some_and(|p| s.suppress_in_phases.iter().any(|x| x == p));
        self.agent_input(c, Input::Suppress(on), twin, at)
    }

    /// After the detectors: each alarm record in `bodies` is followed by the lifecycle record
    /// of the change it makes (and of a design suppression that now applies).
    pub fn follow(&mut self, bodies: &mut Vec<RecordBody>, twin: &LineTwin, at: Timestamp) {
        if !bodies.iter().any(|b| matches!(b, RecordBody::Alarm(_))) {
            return;
        }
        let mut out = Vec::with_capacity(bodies.len() * 2);
        for body in bodies.drain(..) {
            let RecordBody::Alarm(a) = &body else {
                out.push(body);
                continue;
            };
            let c = a.condition.clone();
            let input = if a.is_raise() {
                Input::Activate
            } else {
                Input::Clear
            };
            out.push(body);
            out.extend(self.suppression(&c, twin, at));
            out.extend(self.agent_input(&c, input, twin, at));
        }
        *bodies = out;
    }

    /// At each tick: timed shelves past their time expire; suppression follows the phase.
    pub fn tick(&mut self, now: Timestamp, twin: &LineTwin) -> Vec<RecordBody> {
        let conditions: Vec<Condition> = self.lifecycles.keys().cloned().collect();
        let mut out = Vec::new();
        for c in conditions {
            out.extend(self.agent_input(&c, Input::Tick(now), twin, now));
            out.extend(self.suppression(&c, twin, now));
        }
        out
    }

    /// Decides an operator's input: the record to commit, or why it is refused.
    pub fn decide(
        &self,
        c: &Condition,
        input: Input,
        by: &Operator,
        twin: &LineTwin,
        at: Timestamp,
    ) -> Result<LifecycleEvent, Refused> {
        let before = self.lifecycle(c);
        let after = match input {
            Input::Comment => before.clone(),
            _ => before.apply(input)?.ok_or_else(|| Refused {
                input: input.name(),
                why: "it would change nothing".into(),
            })?,
        };
        Ok(self.event(c, input, &before, after, twin, at, Some(by)))
    }

    /// A committed operator action takes effect.
    pub fn apply(&mut self, ev: &LifecycleEvent) {
        self.store(ev.condition.clone(), ev.lifecycle.clone());
    }
}

/// Each `TagId`'s `[tags.alarm]` for line `line`'s tags.
pub fn settings(
    c: &crate::config::Config,
    ids: &[pdtf_models::TagId],
    id_space: usize,
) -> Vec<Option<Arc<AlarmConfig>>> {
    let mut out = vec![None; id_space];
    for (t, id) in c.tags.iter().zip(ids) {
        if let Some(a) = &t.alarm {
            out[id.index()] = Some(Arc::new(a.clone()));
        }
    }
    out
}

/// Each `TagId`: whether the tag is a critical process parameter (`critical = true` in its
/// `limits`, or in a recipe phase's `limits` for it): a limit alarm of it inside a batch opens
/// a GMP deviation.
pub fn critical(
    c: &crate::config::Config,
    ids: &[pdtf_models::TagId],
    id_space: usize,
) -> Vec<bool> {
    let mut out = vec![false; id_space];
    for (t, id) in c.tags.iter().zip(ids) {
        let in_recipe = c.recipes.iter().any(|r| {
            r.phases
                .iter()
                .any(|p| p.limits.get(&t.name).is_some_and(|l| l.critical))
        });
        out[id.index()] = in_recipe || t.limits.is_some_and(|l| l.critical);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
