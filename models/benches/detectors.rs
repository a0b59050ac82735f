//! The whole detector set on 1,000 tags: the CPU cost per sample.
//!
//! `cargo bench -p pdtf-models --bench detectors`. Workload: 1,000 tags, each with limits
//! (lo/hi/hihi with deadband) and every detector beyond limits (stale, frozen, rate over
//! 10 s, CUSUM, EWMA, Western Electric 1–4), fed `PDTF_BENCH_SAMPLES` (default 2,000,000)
//! Good samples round-robin at 10 kHz agent time (white noise around the centre line, a
//! 0.5 σ shift on every 10th tag halfway), plus the 1 s tick; then the limit detector alone
//! on the same stream, for the ratio. Prints ns per sample (median of `PDTF_BENCH_ROUNDS`,
//! default 5) and the alarm records made.

use pdtf_models::detect::signal::Rule;
use pdtf_models::detect::signals::{RateSpec, Shift, SignalDetector, SignalSpec, SpcSpec};
use pdtf_models::detect::{Detector, LimitDetector};
use pdtf_models::twin::LineTwin;
use pdtf_models::{LimitSpec, Quality, Sample, TagId, Timestamp};
use std::time::Instant;

const TAGS: usize = 1_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn signals() -> SignalSpec {
    SignalSpec {
        stale_ms: Some(5_000),
        frozen: Some((1e-6, 60_000)),
        rate: Some(RateSpec {
            window_ms: 10_000,
            rising: Some(50.0),
            falling: Some(50.0),
        }),
        cusum: Some(Shift {
            target: 50.0,
            sigma: 1.0,
            a: 0.5,
            b: 5.0,
        }),
        ewma: Some(Shift {
            target: 50.0,
            sigma: 1.0,
            a: 0.2,
            b: 3.0,
        }),
        spc: Some(SpcSpec {
            target: 50.0,
            sigma: 1.0,
            rules: Rule::WESTERN_ELECTRIC.to_vec(),
        }),
        state: None,
    }
}

fn stream(n: usize) -> Vec<Sample> {
    let mut rng = fastrand::Rng::with_seed(1);
    let t0 = 1_800_000_000_000i64;
    (0..n)
        .map(|i| {
            let tag = i % TAGS;
            let u1 = rng.f64().max(1e-12);
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * rng.f64()).cos();
            let shift = if tag.is_multiple_of(10) && i > n / 2 {
                0.5
            } else {
                0.0
            };
            let at = Timestamp::from_unix_millis(t0 + (i / 10) as i64); // 10 kHz
            Sample::new(
                TagId(tag as u32),
                50.0 + z + shift,
                Quality::Good,
                Some(at),
                at,
            )
        })
        .collect()
}

/// ns per sample and alarm records, for the detectors `make` builds.
fn run(samples: &[Sample], make: &dyn Fn() -> Vec<Box<dyn Detector>>) -> (f64, usize) {
    let mut detectors = make();
    let twin = LineTwin::new(TAGS);
    let mut out = Vec::new();
    let mut records = 0;
    let started = Instant::now();
    let mut next_tick = samples.first().map_or(0, |s| s.agent_time.as_nanos());
    for s in samples {
        for d in &mut detectors {
            d.on_sample(s, &twin, &mut out);
        }
        if s.agent_time.as_nanos() >= next_tick {
            for d in &mut detectors {
                d.on_tick(s.agent_time, &twin, &mut out);
            }
            next_tick += 1_000_000_000;
        }
        records += out.len();
        out.clear();
    }
    let ns = started.elapsed().as_nanos() as f64 / samples.len() as f64;
    (ns, records)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n = env("PDTF_BENCH_SAMPLES", 2_000_000) as usize;
    let rounds = env("PDTF_BENCH_ROUNDS", 5).max(1);
    let samples = stream(n);
    let limits = LimitSpec {
        lolo: None,
        lo: Some(40.0),
        hi: Some(60.0),
        hihi: Some(65.0),
        deadband: 0.5,
        on_delay_ms: 0,
    };
    let all = || -> Vec<Box<dyn Detector>> {
        vec![
            Box::new(LimitDetector::new(vec![Some(limits); TAGS])),
            Box::new(SignalDetector::new(vec![signals(); TAGS])),
        ]
    };
    let only_limits = || -> Vec<Box<dyn Detector>> {
        vec![Box::new(LimitDetector::new(vec![Some(limits); TAGS]))]
    };
    let mut full = Vec::new();
    let mut base = Vec::new();
    let mut records = 0;
    for _ in 0..rounds {
        let (ns, r) = run(&samples, &all);
        full.push(ns);
        records = r;
        base.push(run(&samples, &only_limits).0);
    }
    let (full, base) = (median(full), median(base));
    println!(
        "detectors on {TAGS} tags, {n} samples, median of {rounds}: every detector {full:.0} ns/sample ({records} alarm records), limits alone {base:.0} ns/sample, ratio {:.1}x",
        full / base
    );
}
