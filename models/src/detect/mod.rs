//! Detectors: feed a sample (and the twin's view), get zero or more records.
//!
//! Every detector is pure: same inputs in the same order give the same outputs. Time comes
//! from the sample, never from a clock.

mod limits;

pub use limits::LimitDetector;

use crate::{twin::LineTwin, RecordBody, Sample};

pub trait Detector {
    /// Evaluates one sample. The twin already holds this sample when called.
    fn on_sample(&mut self, sample: &Sample, twin: &LineTwin, out: &mut Vec<RecordBody>);
}
