//! The whole detector set on 1,000 tags: the CPU cost per sample (criterion).
//!
//! `cargo bench -p pdtf-models --bench detectors`. Workload: 1,000 tags, each with limits
//! (lo/hi/hihi with deadband) and every detector beyond limits (stale, frozen, rate over
//! 10 s, CUSUM, EWMA, Western Electric 1–4), fed `PDTF_BENCH_SAMPLES` (default 200,000) Good
//! samples per iteration round-robin at 10 kHz agent time (white noise around the centre
//! line, a 0.5 σ shift on every 10th tag halfway), plus the 1 s tick, into fresh detectors;
//! then the limit detector alone on the same stream, for the ratio. Criterion reports the
//! time per iteration and the throughput in samples/s (ns per sample = 10⁹ / throughput);
//! the alarm records each set makes are printed once before the measurement.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pdtf_models::detect::signal::Rule;
use pdtf_models::detect::signals::{RateSpec, Shift, SignalDetector, SignalSpec, SpcSpec};
use pdtf_models::detect::{Detector, LimitDetector};
use pdtf_models::twin::LineTwin;
use pdtf_models::{LimitSpec, Quality, Sample, TagId, Timestamp};
use std::hint::black_box;

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

/// Feeds the stream (and the 1 s tick) through `detectors`; the alarm records made.
fn run(samples: &[Sample], detectors: &mut [Box<dyn Detector>]) -> usize {
    let twin = LineTwin::new(TAGS);
    let mut out = Vec::new();
    let mut records = 0;
    let mut next_tick = samples.first().map_or(0, |s| s.agent_time.as_nanos());
    for s in samples {
        for d in detectors.iter_mut() {
            d.on_sample(s, &twin, &mut out);
        }
        if s.agent_time.as_nanos() >= next_tick {
            for d in detectors.iter_mut() {
                d.on_tick(s.agent_time, &twin, &mut out);
            }
            next_tick += 1_000_000_000;
        }
        records += out.len();
        out.clear();
    }
    records
}

fn limits() -> LimitSpec {
    LimitSpec {
        lolo: None,
        lo: Some(40.0),
        hi: Some(60.0),
        hihi: Some(65.0),
        deadband: 0.5,
        on_delay_ms: 0,
    }
}

/// Builds a fresh detector set.
type MakeSet = fn() -> Vec<Box<dyn Detector>>;

fn every_detector() -> Vec<Box<dyn Detector>> {
    vec![
        Box::new(LimitDetector::new(vec![Some(limits()); TAGS])),
        Box::new(SignalDetector::new(vec![signals(); TAGS])),
    ]
}

fn limits_alone() -> Vec<Box<dyn Detector>> {
    vec![Box::new(LimitDetector::new(vec![Some(limits()); TAGS]))]
}

fn detectors(c: &mut Criterion) {
    let n = env("PDTF_BENCH_SAMPLES", 200_000) as usize;
    let samples = stream(n);
    let sets: [(&str, MakeSet); 2] = [
        ("every_detector", every_detector),
        ("limits_alone", limits_alone),
    ];
    let mut group = c.benchmark_group(format!("detectors_{TAGS}_tags"));
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(20);
    for (name, make) in sets {
        println!(
            "{name}: {} alarm records per {n} samples",
            run(&samples, &mut make())
        );
        group.bench_function(name, |b| {
            b.iter_batched(
                make,
                |mut set| black_box(run(black_box(&samples), &mut set)),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, detectors);
criterion_main!(benches);
