//! The batch twin of one line: which batch runs, against which recipe, in which procedural
//! state and phase, with which materials charged and how many alarms per phase.
//!
//! Pure and decision-only: every operation either returns the batch events to record (the
//! caller commits them, and only then applies the returned twin — see `Plan`) or refuses
//! with the reason and changes nothing. Commands and tags drive the same operations:
//!
//! - `start` a batch against a recipe (Idle only; a final batch needs `reset` first, except
//!   that a tag-driven line's new batch id resets implicitly);
//! - `command` Hold, Restart, Stop, Abort, Reset. On a line without a state tag nothing but
//!   the agent reports the transient states' ends, so `complete_transients` completes them at
//!   once (Hold gives Holding then Held); with a state tag, the equipment completes them;
//! - `phase` to a named phase or the next; advancing past the last phase completes the batch;
//! - `follow_state` for a state tag: the reported state, by the table's shortest path when
//!   one exists, else directly and marked irregular;
//! - `material`, `comment`, `downtime` (a restart inside a batch).
//!
//! Reaching Complete, Stopped or Aborted closes the running phase and records the summary.

use super::procedure::{ProcCommand, ProcState};
use super::recipe::Recipe;
use super::record::{Actor, BatchChange, BatchEvent, Charge};
use crate::Timestamp;
use serde::{Deserialize, Serialize};

/// One occurrence of a phase in the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRun {
    pub name: String,
    pub start: Timestamp,
    pub end: Option<Timestamp>,
    pub held_ms: u64,
    pub alarms: u32,
}

/// The batch on the line, from its start until it is reset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub id: String,
    pub recipe: Recipe,
    pub started: Timestamp,
    pub ended: Option<Timestamp>,
    pub phases: Vec<PhaseRun>,
    pub charges: Vec<Charge>,
    pub alarms_outside_phases: u32,
    pub downtime_ms: u64,
    /// Set while Held (or Holding), to add the held time to the phase.
    held_since: Option<Timestamp>,
    /// The last Good value of each quality attribute's tag (recipe order).
    pub quality_values: Vec<Option<f64>>,
}

impl Batch {
    /// The running phase, if one is open.
    pub fn current_phase(&self) -> Option<&PhaseRun> {
        self.phases.last().filter(|p| p.end.is_none())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchTwin {
    pub line: String,
    pub state: ProcState,
    pub batch: Option<Batch>,
    /// No state tag: the agent completes transient states itself.
    pub complete_transients: bool,
}

/// What an accepted operation would do: the events to commit, then the twin to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub events: Vec<BatchEvent>,
    pub next: BatchTwin,
}

impl BatchTwin {
    pub fn new(line: &str, complete_transients: bool) -> Self {
        BatchTwin {
            line: line.to_owned(),
            state: ProcState::Idle,
            batch: None,
            complete_transients,
        }
    }

    pub fn batch_id(&self) -> Option<&str> {
        self.batch.as_ref().map(|b| b.id.as_str())
    }

    pub fn phase(&self) -> Option<&str> {
        self.batch
            .as_ref()
            .and_then(Batch::current_phase)
            .map(|p| p.name.as_str())
    }

    /// An alarm was raised now: counted in the running phase (or outside phases).
    pub fn alarm_raised(&mut self) {
        if let Some(b) = self.batch.as_mut().filter(|b| b.ended.is_none()) {
            match b.phases.last_mut().filter(|p| p.end.is_none()) {
                Some(p) => p.alarms += 1,
                None => b.alarms_outside_phases += 1,
            }
        }
    }

    /// A Good value of quality attribute number `index` (recipe order).
    pub fn quality_value(&mut self, index: usize, v: f64) {
        if let Some(slot) = self
            .batch
            .as_mut()
            .filter(|b| b.ended.is_none())
            .and_then(|b| b.quality_values.get_mut(index))
        {
            *slot = Some(v);
        }
    }

    pub fn start(
        &self,
        batch_id: &str,
        recipe: &Recipe,
        at: Timestamp,
        by: Actor,
        first_phase: bool,
    ) -> Result<Plan, String> {
        if batch_id.trim().is_empty() {
            return Err("start needs a batch id".into());
        }
        let mut next = self.clone();
        let mut events = Vec::new();
        if self.state.is_final() && matches!(by, Actor::Tag(_)) {
            // The equipment began a new batch: the ended one is reset implicitly.
            next.transition(ProcCommand::Reset, at, &by, &mut events)?;
        }
        next.state = next
            .state
            .on_command(ProcCommand::Start)
            .map_err(|r| match &next.batch {
                Some(b) => format!(
                    "{r} (batch {:?} is {}; reset it first)",
                    b.id,
                    next.state.name()
                ),
                None => r.to_string(),
            })?;
        next.batch = Some(Batch {
            id: batch_id.to_owned(),
            recipe: recipe.clone(),
            started: at,
            ended: None,
            phases: Vec::new(),
            charges: Vec::new(),
            alarms_outside_phases: 0,
            downtime_ms: 0,
            held_since: None,
            quality_values: vec![None; recipe.quality.len()],
        });
        events.push(next.event(
            at,
            BatchChange::Started {
                recipe: recipe.reference.clone(),
            },
            &by,
        ));
        if first_phase {
            if let Some(p) = recipe.phases.first() {
                next.enter_phase(&p.name.clone(), at, &by, &mut events);
            }
        }
        Ok(Plan { events, next })
    }

    /// Hold, Restart, Stop, Abort or Reset.
    pub fn command(&self, c: ProcCommand, at: Timestamp, by: Actor) -> Result<Plan, String> {
        if c == ProcCommand::Start {
            return Err("start needs a batch id and a recipe".into());
        }
        if self.batch.is_none() {
            return Err(format!("{} needs a batch; none is on the line", c.name()));
        }
        let mut next = self.clone();
        let mut events = Vec::new();
        next.transition(c, at, &by, &mut events)?;
        if next.complete_transients {
            // Running is the one transient state that ends by the procedure, not by itself.
            while next.state.is_transient() && next.state != ProcState::Running {
                next.complete_state(at, &by, &mut events);
            }
        }
        Ok(Plan { events, next })
    }

    /// The equipment says the transient state's logic has finished.
    pub fn complete(&self, at: Timestamp, by: Actor) -> Result<Plan, String> {
        self.state.on_complete().map_err(|r| r.to_string())?;
        let mut next = self.clone();
        let mut events = Vec::new();
        next.complete_state(at, &by, &mut events);
        Ok(Plan { events, next })
    }

    /// To phase `name`, or the next one (`None`); past the last phase the batch completes.
    pub fn phase_to(&self, name: Option<&str>, at: Timestamp, by: Actor) -> Result<Plan, String> {
        let Some(b) = &self.batch else {
            return Err("no batch is on the line".into());
        };
        let from_tag = matches!(by, Actor::Tag(_));
        let allowed = self.state == ProcState::Running
            || (from_tag && !self.state.is_final() && self.state != ProcState::Idle);
        if !allowed {
            return Err(format!(
                "a phase change is accepted only while the batch is running; batch {:?} is {}",
                b.id,
                self.state.name()
            ));
        }
        let target = match name {
            Some(n) => {
                if b.recipe.phase_index(n).is_none() {
                    let list: Vec<&str> = b.recipe.phases.iter().map(|p| p.name.as_str()).collect();
                    return Err(format!(
                        "recipe {:?} has no phase {n:?} (phases: {})",
                        b.recipe.reference.id,
                        list.join(", ")
                    ));
                }
                if b.current_phase().is_some_and(|p| p.name == n) {
                    return Err(format!("phase {n:?} is already running"));
                }
                Some(n.to_owned())
            }
            None => {
                let after = b
                    .phases
                    .last()
                    .and_then(|p| b.recipe.phase_index(&p.name))
                    .map_or(0, |i| i + 1);
                b.recipe.phases.get(after).map(|p| p.name.clone())
            }
        };
        let mut next = self.clone();
        let mut events = Vec::new();
        match target {
            Some(n) => next.enter_phase(&n, at, &by, &mut events),
            None if self.state == ProcState::Running => next.complete_state(at, &by, &mut events),
            None => {
                return Err("the last phase has run; the batch completes only while running".into())
            }
        }
        Ok(Plan { events, next })
    }

    /// A state tag reported `to`.
    pub fn follow_state(&self, to: ProcState, at: Timestamp, by: Actor) -> Result<Plan, String> {
        if to == self.state {
            return Err(format!("the batch is already {}", to.name()));
        }
        if self.batch.is_none() {
            return Err(format!(
                "the state tag says {} but no batch is on the line (the batch id tag starts one)",
                to.name()
            ));
        }
        let mut next = self.clone();
        let mut events = Vec::new();
        match path(self.state, to) {
            Some(steps) => {
                for step in steps {
                    match step {
                        Some(c) => next.transition(c, at, &by, &mut events)?,
                        None => next.complete_state(at, &by, &mut events),
                    }
                }
            }
            None => {
                let from = next.state;
                next.state = to;
                next.after_state(from, None, true, at, &by, &mut events);
            }
        }
        Ok(Plan { events, next })
    }

    pub fn material(&self, charge: Charge, at: Timestamp, by: Actor) -> Result<Plan, String> {
        self.active("a material charge")?;
        if !(charge.quantity.is_finite() && charge.quantity > 0.0) {
            return Err("quantity must be a number > 0".into());
        }
        let mut next = self.clone();
        if let Some(nb) = next.batch.as_mut() {
            nb.charges.push(charge.clone());
        }
        let events = vec![next.event(at, BatchChange::Material(charge), &by)];
        Ok(Plan { events, next })
    }

    pub fn comment(&self, text: &str, at: Timestamp, by: Actor) -> Result<Plan, String> {
        if self.batch.is_none() {
            return Err("no batch is on the line".into());
        }
        let events = vec![self.event(at, BatchChange::Comment(text.to_owned()), &by)];
        Ok(Plan {
            events,
            next: self.clone(),
        })
    }

    /// The agent was down from `from` to `to` while this batch was open.
    pub fn downtime(&self, from: Timestamp, to: Timestamp) -> Option<Plan> {
        self.batch.as_ref().filter(|b| b.ended.is_none())?;
        let mut next = self.clone();
        if let Some(nb) = next.batch.as_mut() {
            nb.downtime_ms += to.millis_since(from);
        }
        let events = vec![next.event(to, BatchChange::Downtime { from, to }, &Actor::Agent)];
        Some(Plan { events, next })
    }

    fn active(&self, what: &str) -> Result<&Batch, String> {
        match &self.batch {
            Some(b) if !self.state.is_final() => Ok(b),
            Some(b) => Err(format!(
                "{what} is accepted only while a batch is open; batch {:?} has ended ({})",
                b.id,
                self.state.name()
            )),
            None => Err(format!("{what} needs a batch; none is on the line")),
        }
    }

    fn event(&self, at: Timestamp, change: BatchChange, by: &Actor) -> BatchEvent {
        BatchEvent {
            line: self.line.clone(),
            batch_id: self.batch_id().unwrap_or_default().to_owned(),
            time: at,
            change,
            state: self.state,
            phase: self.phase().map(str::to_owned),
            by: by.clone(),
        }
    }

    fn transition(
        &mut self,
        c: ProcCommand,
        at: Timestamp,
        by: &Actor,
        out: &mut Vec<BatchEvent>,
    ) -> Result<(), String> {
        let from = self.state;
        self.state = from.on_command(c).map_err(|r| r.to_string())?;
        self.after_state(from, Some(c), false, at, by, out);
        Ok(())
    }

    fn complete_state(&mut self, at: Timestamp, by: &Actor, out: &mut Vec<BatchEvent>) {
        let from = self.state;
        if let Ok(to) = from.on_complete() {
            self.state = to;
            self.after_state(from, None, false, at, by, out);
        }
    }

    /// Book-keeping after the state changed from `from`: held time, the ended batch, reset.
    fn after_state(
        &mut self,
        from: ProcState,
        command: Option<ProcCommand>,
        irregular: bool,
        at: Timestamp,
        by: &Actor,
        out: &mut Vec<BatchEvent>,
    ) {
        let to = self.state;
        let held = matches!(to, ProcState::Holding | ProcState::Held);
        if let Some(b) = self.batch.as_mut() {
            match (held, b.held_since) {
                (true, None) => b.held_since = Some(at),
                (false, Some(since)) => {
                    b.held_since = None;
                    if let Some(p) = b.phases.last_mut().filter(|p| p.end.is_none()) {
                        p.held_ms += at.millis_since(since);
                    }
                }
                _ => {}
            }
        }
        let change = BatchChange::State {
            from,
            command,
            irregular,
        };
        if to == ProcState::Idle {
            // Reset: the event still names the batch it closes, then the line is empty.
            out.push(self.event(at, change, by));
            self.batch = None;
            return;
        }
        if to.is_final() {
            if let Some(b) = self.batch.as_mut() {
                if let Some(p) = b.phases.last_mut().filter(|p| p.end.is_none()) {
                    p.end = Some(at);
                }
                b.ended = Some(at);
            }
        }
        out.push(self.event(at, change, by));
        if to.is_final() {
            if let Some(s) = self.summary() {
                out.push(self.event(at, BatchChange::Ended(Box::new(s)), by));
            }
        }
    }

    fn enter_phase(&mut self, name: &str, at: Timestamp, by: &Actor, out: &mut Vec<BatchEvent>) {
        let from = self.phase().map(str::to_owned);
        let held = self.state != ProcState::Running;
        if let Some(b) = self.batch.as_mut() {
            if let Some(p) = b.phases.last_mut().filter(|p| p.end.is_none()) {
                if let Some(since) = b.held_since.filter(|_| held) {
                    p.held_ms += at.millis_since(since);
                    b.held_since = Some(at);
                }
                p.end = Some(at);
            }
            b.phases.push(PhaseRun {
                name: name.to_owned(),
                start: at,
                end: None,
                held_ms: 0,
                alarms: 0,
            });
        }
        out.push(self.event(at, BatchChange::Phase { from }, by));
    }
}

/// The shortest way through the table from `from` to `to`: each step a command, or `None`
/// for a transient state's completion. Reset and Start are not taken (a state tag cannot
/// start or clear a batch; the batch id tag does).
fn path(from: ProcState, to: ProcState) -> Option<Vec<Option<ProcCommand>>> {
    let mut frontier = vec![(from, Vec::new())];
    let mut seen = vec![from];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for (s, steps) in frontier {
            let moves = ProcCommand::ALL
                .into_iter()
                .filter(|c| !matches!(c, ProcCommand::Start | ProcCommand::Reset))
                .filter_map(|c| s.on_command(c).ok().map(|n| (Some(c), n)))
                .chain(s.on_complete().ok().map(|n| (None, n)));
            for (step, n) in moves {
                let mut path: Vec<Option<ProcCommand>> = steps.clone();
                path.push(step);
                if n == to {
                    return Some(path);
                }
                if !seen.contains(&n) {
                    seen.push(n);
                    next.push((n, path));
                }
            }
        }
        frontier = next;
    }
    None
}

#[cfg(test)]
mod tests;
