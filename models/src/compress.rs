//! Per-tag sample compression for stored and forwarded sample records: exception deadband,
//! then swinging-door trending (SDT). The twin and the detectors still see every sample;
//! only what is *recorded* is thinned.
//!
//! Two modes, each with its own reconstruction and bound (tested on random signals):
//! - `Deadband`: a sample is kept when it moves more than `error` from the last kept one;
//!   holding the last kept value reproduces every dropped sample within `error`.
//! - `SwingingDoor`: linear interpolation between kept samples reproduces every dropped
//!   sample within `error`.
//!
//! (They are alternatives, not a chain: a deadband in front of SDT drops points the doors
//! never see, and the linear bound no longer holds.) In both modes:
//! - the first sample, every quality change, every non-Good sample and every sample after a
//!   gap of `max_interval_ms` are kept;
//! - `flush()` releases the held sample so the stored trend reaches the last value.
//!
//! SDT keeps an archived point `(t0, v0)` and two "doors" pivoting at it: every point `p` since
//! narrows them to `lo = max(lo, slope to (p - E))`, `hi = min(hi, slope to (p + E))`. A new
//! point whose own slope from `(t0, v0)` lies within `[lo, hi]` becomes the held point: the
//! line to it passes within `E` of every point before it. Otherwise the held point is archived
//! and becomes the new pivot. (Checking only `lo <= hi`, as some write-ups do, proves that
//! *a* line fits, not the line to the held point, and breaks the bound.)

use crate::{Quality, Sample, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionMode {
    Deadband,
    SwingingDoor,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompressionSpec {
    pub mode: CompressionMode,
    /// The error bound, in the tag's unit (>= 0).
    pub error: f64,
    /// Keep at least one sample per this interval even when the signal is flat.
    pub max_interval_ms: u64,
}

/// The last kept sample, as far as the doors need it.
#[derive(Debug, Clone, Copy)]
struct Point {
    t: Timestamp,
    v: f64,
    q: Quality,
}

#[derive(Debug, Clone, Default)]
pub struct TagCompressor {
    spec: Option<CompressionSpec>,
    archived: Option<Point>,
    held: Option<Sample>,
    slope_lo: f64,
    slope_hi: f64,
}

fn secs(a: Timestamp, b: Timestamp) -> f64 {
    (b.as_nanos() - a.as_nanos()) as f64 / 1e9
}

impl TagCompressor {
    /// `None` keeps every sample.
    pub fn new(spec: Option<CompressionSpec>) -> Self {
        Self {
            spec,
            ..Default::default()
        }
    }

    /// Feeds one sample; pushes the samples to record (zero, one or two) onto `out`.
    /// Samples without a number (text, arrays, empty) are always kept.
    pub fn push(&mut self, s: Sample, out: &mut Vec<Sample>) {
        let (Some(spec), Some(v)) = (self.spec, s.number()) else {
            self.release_held(out);
            self.archived = None;
            out.push(s);
            return;
        };
        let Some(a) = self.archived else {
            self.keep(s, out);
            return;
        };
        let must_keep = s.quality != Quality::Good
            || a.q != s.quality
            || s.agent_time.millis_since(a.t) >= spec.max_interval_ms
            || s.agent_time <= a.t;
        if must_keep {
            self.release_held(out);
            self.keep(s, out);
            return;
        }
        if spec.mode == CompressionMode::Deadband {
            if (v - a.v).abs() > spec.error {
                self.keep(s, out);
            }
            return;
        }
        let dt = secs(a.t, s.agent_time);
        let slope = (v - a.v) / dt;
        if slope >= self.slope_lo && slope <= self.slope_hi {
            // The line archived → s passes within `error` of every point since `archived`.
            self.slope_lo = self.slope_lo.max((v - spec.error - a.v) / dt);
            self.slope_hi = self.slope_hi.min((v + spec.error - a.v) / dt);
            self.held = Some(s);
            return;
        }
        // The doors opened: archive the held point and restart the doors from it.
        match self.held.take() {
            Some(h) => {
                self.keep(h, out);
                self.push(s, out);
            }
            None => self.keep(s, out),
        }
    }

    /// Releases the held sample (end of data, shutdown, link loss).
    pub fn flush(&mut self, out: &mut Vec<Sample>) {
        self.release_held(out);
    }

    fn release_held(&mut self, out: &mut Vec<Sample>) {
        if let Some(h) = self.held.take() {
            self.keep(h, out);
        }
    }

    fn keep(&mut self, s: Sample, out: &mut Vec<Sample>) {
        self.archived = s.number().map(|v| Point {
            t: s.agent_time,
            v,
            q: s.quality,
        });
        out.push(s);
        self.held = None;
        self.slope_lo = f64::NEG_INFINITY;
        self.slope_hi = f64::INFINITY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TagId;

    fn sample(ms: i64, v: f64) -> Sample {
        Sample::new(
            TagId(0),
            v,
            Quality::Good,
            None,
            Timestamp::from_unix_millis(ms),
        )
    }

    fn compress(spec: CompressionSpec, input: &[Sample]) -> Vec<Sample> {
        let mut c = TagCompressor::new(Some(spec));
        let mut out = Vec::new();
        for s in input {
            c.push(s.clone(), &mut out);
        }
        c.flush(&mut out);
        out
    }

    /// The value `kept` implies at time `t`: linear between kept samples for SDT, the last
    /// kept value for deadband.
    fn reconstruct(mode: CompressionMode, kept: &[Sample], t: Timestamp) -> f64 {
        let i = kept.partition_point(|k| k.agent_time <= t);
        let a = &kept[i - 1];
        let (av, at) = (a.number().unwrap(), a.agent_time);
        if mode == CompressionMode::Deadband || at == t || i == kept.len() {
            return av;
        }
        let b = &kept[i];
        av + (b.number().unwrap() - av) * secs(at, t) / secs(at, b.agent_time)
    }

    fn random_walk(seed: u64, n: usize) -> Vec<Sample> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut v = 50.0;
        let mut t = 0;
        (0..n)
            .map(|_| {
                t += rng.i64(1..500);
                v += (rng.f64() - 0.5) * 2.0 + if rng.u8(..) == 0 { 30.0 } else { 0.0 };
                sample(t, v)
            })
            .collect()
    }

    #[test]
    fn reconstruction_stays_within_the_bound_on_random_signals() {
        for seed in 0..200 {
            for mode in [CompressionMode::Deadband, CompressionMode::SwingingDoor] {
                for error in [0.1, 0.5, 2.0] {
                    let spec = CompressionSpec {
                        mode,
                        error,
                        max_interval_ms: 60_000,
                    };
                    let input = random_walk(seed, 400);
                    let kept = compress(spec, &input);
                    assert_eq!(kept[0], input[0], "first sample kept");
                    assert!(kept.len() < input.len(), "{spec:?} dropped nothing");
                    for s in &input {
                        let err =
                            (reconstruct(mode, &kept, s.agent_time) - s.number().unwrap()).abs();
                        assert!(
                            err <= error + 1e-9,
                            "seed {seed} {spec:?}: error {err} at {:?}",
                            s.agent_time
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_line_compresses_to_its_ends_and_noise_shrinks() {
        let line: Vec<_> = (0..1_000)
            .map(|i| sample(i * 100, 10.0 + i as f64 * 0.01))
            .collect();
        let spec = CompressionSpec {
            mode: CompressionMode::SwingingDoor,
            error: 0.05,
            max_interval_ms: 3_600_000,
        };
        let kept = compress(spec, &line);
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept.last(), line.last(), "flush keeps the last sample");
        let noisy = random_walk(7, 2_000);
        let kept = compress(CompressionSpec { error: 2.0, ..spec }, &noisy);
        assert!(
            kept.len() * 3 < noisy.len(),
            "only {} of {} dropped",
            noisy.len() - kept.len(),
            noisy.len()
        );
    }

    #[test]
    fn quality_changes_bad_values_and_max_interval_are_always_kept() {
        let spec = CompressionSpec {
            mode: CompressionMode::SwingingDoor,
            error: 100.0,
            max_interval_ms: 1_000,
        };
        let mut input = vec![sample(0, 1.0), sample(100, 1.0)];
        let mut bad = sample(200, 1.0);
        bad.quality = Quality::Bad;
        input.push(bad);
        input.push(sample(300, 1.0));
        input.push(sample(2_000, 1.0));
        let kept = compress(spec, &input);
        let times: Vec<i64> = kept
            .iter()
            .map(|s| s.agent_time.as_nanos() / 1_000_000)
            .collect();
        assert_eq!(times, vec![0, 100, 200, 300, 2_000]);
    }

    #[test]
    fn no_spec_keeps_everything() {
        let mut c = TagCompressor::new(None);
        let mut out = vec![];
        for s in random_walk(1, 50) {
            c.push(s, &mut out);
        }
        assert_eq!(out.len(), 50);
    }
}
