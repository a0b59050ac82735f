//! Property tests: invariants of the detectors and the alarm lifecycle, checked on many
//! seeded random inputs (fastrand; a failure prints its seed). Each property is one that a
//! correct implementation cannot break for any input, so a failure is a bug, not noise.

use pdtf_models::detect::signal::{Cusum, Ewma, Frozen, Stale};
use pdtf_models::detect::{Detector, LimitDetector};
use pdtf_models::lifecycle::{AlarmStatus, Input, Lifecycle, Shelf};
use pdtf_models::twin::LineTwin;
use pdtf_models::{AlarmState, LimitSpec, Quality, RecordBody, Sample, TagId, Timestamp};

const SEEDS: u64 = 200;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_800_000_000_000 + ms)
}

#[test]
fn cusum_sums_are_never_negative_mirror_for_mirrored_input_and_stay_zero_inside_k() {
    for seed in 0..SEEDS {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (k, h) = (rng.f64() * 1.5, 1.0 + rng.f64() * 9.0);
        let (mut a, mut b, mut quiet) = (Cusum::new(k, h), Cusum::new(k, h), Cusum::new(k, h));
        for _ in 0..500 {
            let z = (rng.f64() - 0.5) * 8.0;
            let (sa, sb) = (a.push(z), b.push(-z));
            let ((hi, lo), (mhi, mlo)) = (a.sums(), b.sums());
            assert!(hi >= 0.0 && lo >= 0.0, "seed {seed}");
            assert!(
                (hi - mlo).abs() < 1e-9 && (lo - mhi).abs() < 1e-9,
                "seed {seed}"
            );
            assert_eq!(sa.is_some(), sb.is_some(), "seed {seed}: mirrored signals");
            assert_eq!(
                quiet.push(z.clamp(-k, k)),
                None,
                "seed {seed}: |z| <= k never signals"
            );
            assert_eq!(quiet.sums(), (0.0, 0.0), "seed {seed}");
        }
    }
}

#[test]
fn the_ewma_limit_widens_to_its_asymptote_and_the_statistic_stays_within_the_inputs() {
    for seed in 0..SEEDS {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (lambda, l) = (0.01 + rng.f64() * 0.99, 1.0 + rng.f64() * 3.0);
        let asymptote = l * (lambda / (2.0 - lambda)).sqrt();
        let mut e = Ewma::new(lambda, l);
        let (mut lo, mut hi, mut last_limit) = (0.0f64, 0.0f64, 0.0);
        for _ in 0..300 {
            let x = (rng.f64() - 0.5) * 10.0;
            lo = lo.min(x);
            hi = hi.max(x);
            e.push(x);
            let limit = e.limit();
            assert!(
                limit >= last_limit - 1e-12 && limit <= asymptote + 1e-12,
                "seed {seed}"
            );
            last_limit = limit;
            let z = e.statistic();
            assert!(
                z >= lo - 1e-9 && z <= hi + 1e-9,
                "seed {seed}: {z} outside [{lo}, {hi}]"
            );
        }
    }
}

#[test]
fn frozen_fires_only_on_a_run_within_the_tolerance_that_lasted_the_window() {
    for seed in 0..SEEDS {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (tol, window) = (rng.f64(), 1_000 + rng.u64(0..10_000));
        let mut f = Frozen::new(tol, window);
        let (mut ms, mut run_start, mut lo, mut hi) = (0i64, 0i64, f64::NAN, f64::NAN);
        for _ in 0..400 {
            ms += rng.i64(1..2_000);
            // Mostly moves by less than the tolerance, sometimes jumps.
            let v = if rng.u8(0..10) == 0 {
                rng.f64() * 100.0
            } else {
                let base = if lo.is_nan() { 50.0 } else { (lo + hi) / 2.0 };
                base + (rng.f64() - 0.5) * tol
            };
            let inside = !lo.is_nan() && v.max(hi) - v.min(lo) <= tol;
            if inside {
                lo = lo.min(v);
                hi = hi.max(v);
            } else {
                (run_start, lo, hi) = (ms, v, v);
            }
            let fired = f.push(t(ms), v);
            assert_eq!(
                fired,
                (ms - run_start) as u64 >= window,
                "seed {seed} at {ms}"
            );
        }
    }
}

#[test]
fn stale_is_exactly_an_age_over_the_limit_and_never_goes_backwards() {
    for seed in 0..SEEDS {
        let mut rng = fastrand::Rng::with_seed(seed);
        let max_age = rng.u64(1..5_000);
        let mut s = Stale::new(max_age, t(0));
        let mut last = 0i64;
        for step in 0..300 {
            let now = step * 100;
            if rng.bool() {
                // Values may arrive out of order: an older one never makes it younger.
                let at = now - rng.i64(0..1_000);
                s.seen(t(at));
                last = last.max(at);
            }
            let (stale, age) = s.check(t(now));
            assert_eq!(age, (now - last).max(0) as u64, "seed {seed}");
            assert_eq!(stale, age > max_age, "seed {seed}");
        }
    }
}

/// A random input for the lifecycle.
fn input(rng: &mut fastrand::Rng, now: i64) -> Input {
    match rng.u8(0..11) {
        0 | 1 => Input::Activate,
        2 | 3 => Input::Clear,
        4 => Input::Ack,
        5 => Input::Reset,
        6 => Input::Shelve(if rng.bool() {
            Shelf::OneShot
        } else {
            Shelf::Until(t(now + rng.i64(0..5_000)))
        }),
        7 => Input::Unshelve,
        8 => Input::Suppress(rng.bool()),
        9 => {
            if rng.bool() {
                Input::OutOfService
            } else {
                Input::InService
            }
        }
        _ => Input::Tick(t(now)),
    }
}

#[test]
fn the_lifecycle_keeps_its_invariants_on_any_sequence_of_inputs() {
    for seed in 0..SEEDS {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (latching, shelvable) = (rng.bool(), rng.bool());
        let mut l = Lifecycle::new(latching, shelvable);
        let mut active = false; // the process, as the detector last said
        for step in 0..500 {
            let now = step * 50;
            let i = input(&mut rng, now);
            match i {
                Input::Activate => active = true,
                Input::Clear => active = false,
                _ => {}
            }
            match l.apply(i) {
                Err(_) => assert!(
                    !matches!(
                        i,
                        Input::Activate | Input::Clear | Input::Tick(_) | Input::Suppress(_)
                    ),
                    "seed {seed}: the process and the tick are never refused"
                ),
                Ok(None) => {}
                Ok(Some(next)) => {
                    assert_ne!(next, l, "seed {seed}: Some means a change");
                    if i == Input::Ack {
                        assert!(next.status.acknowledged(), "seed {seed}");
                    }
                    l = next;
                }
            }
            let ctx = format!("seed {seed} step {step} {i:?} -> {l:?}");
            assert!(
                l.shelved.is_none() || shelvable,
                "{ctx}: a safety alarm is shelved"
            );
            assert!(!(l.shelved.is_some() && l.out_of_service), "{ctx}");
            assert!(!l.latched || latching, "{ctx}: latched without latching");
            if l.annunciated() {
                assert!(
                    l.status != AlarmStatus::Normal && l.shelved.is_none(),
                    "{ctx}"
                );
                assert!(!l.suppressed && !l.out_of_service, "{ctx}");
            }
            // Active process: never Normal (an alarm cannot vanish while its condition holds);
            // not latching and cleared: never active.
            if active {
                assert!(
                    matches!(l.status, AlarmStatus::UnackActive | AlarmStatus::AckActive),
                    "{ctx}"
                );
            } else if !latching {
                assert!(
                    matches!(l.status, AlarmStatus::Normal | AlarmStatus::ReturnedUnack),
                    "{ctx}"
                );
            }
            // A timed shelf is gone at the tick of its time.
            if let Some(Shelf::Until(until)) = l.shelved {
                let later = l.apply(Input::Tick(until)).unwrap().unwrap();
                assert!(later.shelved.is_none(), "{ctx}");
            }
        }
    }
}

#[test]
fn limit_alarms_alternate_raise_and_clear_and_respect_the_deadband() {
    for seed in 0..SEEDS {
        let mut rng = fastrand::Rng::with_seed(seed);
        let deadband = rng.f64() * 3.0;
        let spec = LimitSpec {
            lolo: None,
            lo: Some(20.0),
            hi: Some(80.0),
            hihi: Some(90.0),
            deadband,
            on_delay_ms: 0,
        };
        let mut d = LimitDetector::new(vec![Some(spec)]);
        let twin = LineTwin::new(1);
        let mut v = 50.0;
        let mut level: Option<AlarmState> = None;
        for step in 0..2_000 {
            v = (v + (rng.f64() - 0.5) * 12.0).clamp(0.0, 100.0);
            let s = Sample::new(TagId(0), v, Quality::Good, None, t(step));
            let mut out = Vec::new();
            d.on_sample(&s, &twin, &mut out);
            for body in out {
                let RecordBody::Alarm(a) = body else { continue };
                let was_active = matches!(level, Some(AlarmState::Active(_)));
                match a.state {
                    AlarmState::Inactive => {
                        assert!(was_active, "seed {seed}: a clear without a raise");
                        // Back inside by at least the deadband: hi - deadband > v > lo + deadband.
                        assert!(
                            v < 80.0 - deadband + 1e-9 && v > 20.0 + deadband - 1e-9,
                            "seed {seed}: cleared at {v} (deadband {deadband})"
                        );
                    }
                    AlarmState::Active(l) => {
                        assert_ne!(level, Some(a.state), "seed {seed}: a level raised twice");
                        assert_eq!(a.previous.is_some(), was_active, "seed {seed}: previous");
                        let beyond = if l.is_high() {
                            v >= a.limit
                        } else {
                            v <= a.limit
                        };
                        assert!(beyond, "seed {seed}: raised at {v}, limit {}", a.limit);
                    }
                }
                level = Some(a.state);
            }
        }
    }
}
