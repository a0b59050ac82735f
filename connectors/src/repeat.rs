//! A failure that repeats is logged once, then counted.
//!
//! A journal on a full disk fails every commit and every cursor write, several times a
//! second, for as long as the disk stays full; one ERROR line per attempt buries the one line
//! an operator needs. `Repeats` tracks a run of failures: the first is logged in full, the
//! rest are counted and summarised at most once per interval (with the latest error), and the
//! end of the run is reported with its exact count and duration. Pure (the caller passes the
//! time), so the policy is unit-tested.

use std::time::{Duration, Instant};

/// How often a run that goes on is summarised.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// What the caller should log for this failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The first failure of a run: log it in full.
    First,
    /// Summarise: `failures` so far in this run, over `lasting`.
    Summary { failures: u64, lasting: Duration },
    /// Counted; log nothing.
    Quiet,
}

/// A run of failures that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub failures: u64,
    pub lasting: Duration,
    pub first_error: String,
}

#[derive(Debug, Clone)]
struct Run {
    failures: u64,
    since: Instant,
    reported: Instant,
    first_error: String,
}

#[derive(Debug, Clone)]
pub struct Repeats {
    every: Duration,
    run: Option<Run>,
}

impl Default for Repeats {
    fn default() -> Self {
        Self::new(SUMMARY_EVERY)
    }
}

impl Repeats {
    pub fn new(every: Duration) -> Self {
        Self { every, run: None }
    }

    /// Counts a failure.
    pub fn failed(&mut self, error: &str, now: Instant) -> Report {
        let Some(run) = &mut self.run else {
            self.run = Some(Run {
                failures: 1,
                since: now,
                reported: now,
                first_error: error.to_owned(),
            });
            return Report::First;
        };
        run.failures += 1;
        if now.duration_since(run.reported) < self.every {
            return Report::Quiet;
        }
        run.reported = now;
        Report::Summary {
            failures: run.failures,
            lasting: now.duration_since(run.since),
        }
    }

    /// A success: ends the run, if one was going on.
    pub fn succeeded(&mut self, now: Instant) -> Option<Ended> {
        self.run.take().map(|r| Ended {
            failures: r.failures,
            lasting: now.duration_since(r.since),
            first_error: r.first_error,
        })
    }

    /// Failures so far in the current run (0 when none is going on).
    pub fn failures(&self) -> u64 {
        self.run.as_ref().map_or(0, |r| r.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_logged_once_summarised_per_interval_and_ended_with_its_exact_count() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r = Repeats::new(Duration::from_secs(1));
        assert_eq!(r.failed("disk full", at(0)), Report::First);
        // 99 more within the first second: counted, not logged.
        for i in 1..100 {
            assert_eq!(r.failed("previous I/O error", at(i * 9)), Report::Quiet);
        }
        assert_eq!(
            r.failed("previous I/O error", at(1_000)),
            Report::Summary {
                failures: 101,
                lasting: Duration::from_secs(1)
            }
        );
        assert_eq!(r.failed("x", at(1_500)), Report::Quiet);
        assert_eq!(r.failures(), 102);
        let ended = r.succeeded(at(2_250)).unwrap();
        assert_eq!(
            ended,
            Ended {
                failures: 102,
                lasting: Duration::from_millis(2_250),
                first_error: "disk full".into()
            }
        );
        // The next failure starts a new run; a success without a run reports nothing.
        assert_eq!(r.succeeded(at(2_300)), None);
        assert_eq!(r.failed("again", at(2_400)), Report::First);
        assert_eq!(r.failures(), 1);
    }
}
