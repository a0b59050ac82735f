//! Detectors: each sees every sample with the twin's view, a periodic tick with the current
//! time, and line events; each raises and clears the alarms of its own conditions.
//!
//! The line pipeline holds a list of them (`Vec<Box<dyn Detector>>`), so a new kind of
//! detection is one more entry, not a new hard-wired type. Every detector is pure: same
//! inputs in the same order give the same outputs; time comes from the sample or the tick,
//! never from a clock. Its state is restored at start from the last transition of each of
//! its conditions in the journal (the journal is the snapshot).

mod limits;
pub mod signal;
pub mod signals;

pub use limits::{LimitDetector, PhaseLimits};

use crate::{twin::LineTwin, AlarmEvent, Condition, RecordBody, Sample, TagTable, Timestamp};

/// Something that happened to the line as a whole.
#[derive(Debug, Clone, PartialEq)]
pub enum LineEvent {
    BatchStarted { batch_id: String },
    PhaseChanged { phase: String },
    BatchEnded { batch_id: String },
}

pub trait Detector: Send {
    /// Evaluates one sample. The twin already holds this sample when called.
    fn on_sample(&mut self, sample: &Sample, twin: &LineTwin, out: &mut Vec<RecordBody>);

    /// The periodic tick (about once a second) with the current time: for conditions that
    /// arise from the *absence* of samples, such as a stale sensor.
    fn on_tick(&mut self, _now: Timestamp, _twin: &LineTwin, _out: &mut Vec<RecordBody>) {}

    /// A batch or phase change of the line.
    fn on_line_event(&mut self, _event: &LineEvent, _twin: &LineTwin, _out: &mut Vec<RecordBody>) {}

    /// Every condition this detector can raise (what the start-up restore looks for).
    fn conditions(&self) -> Vec<Condition>;

    /// Takes back a condition's state from its last recorded transition. Returns false when
    /// the condition is not this detector's.
    fn restore(&mut self, last: &AlarmEvent) -> bool;

    /// How many of its conditions are active now.
    fn active_count(&self) -> usize;

    /// The tag map changed while running (a reload): take the new table (indexed over the
    /// whole, possibly grown, id space), keep the state of the conditions that still exist,
    /// and clear — as records in `out` — the active ones that no longer do, so no retained
    /// alarm is left standing for a condition nothing evaluates any more.
    fn reconfigure(
        &mut self,
        tags: &TagTable,
        at: Timestamp,
        twin: &LineTwin,
        out: &mut Vec<RecordBody>,
    );
}
