use super::*;

fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = rng.f64().max(1e-12);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_unix_millis(1_800_000_000_000 + ms as i64)
}

/// Samples after the shift until `detect` first fires (or `max`), over `runs` seeded series
/// of white noise shifted by `shift` σ; and the share of in-control series of `max` points
/// with any signal.
fn delays(
    runs: u64,
    shift: f64,
    max: usize,
    detect: &mut dyn FnMut(bool, f64) -> bool,
) -> (f64, f64) {
    let mut total = 0usize;
    let mut false_runs = 0u64;
    for seed in 0..runs {
        let mut rng = fastrand::Rng::with_seed(seed);
        detect(true, 0.0); // reset
        if (0..max).any(|_| detect(false, normal(&mut rng))) {
            false_runs += 1;
        }
        detect(true, 0.0);
        let d = (0..max)
            .position(|_| detect(false, normal(&mut rng) + shift))
            .unwrap_or(max);
        total += d + 1;
    }
    (total as f64 / runs as f64, false_runs as f64 / runs as f64)
}

#[test]
fn cusum_catches_a_half_sigma_shift_within_its_run_length_where_a_3_sigma_limit_does_not() {
    // k = 0.25 (half the 0.5 σ shift), h = 8: a design ARL of about 30 for that shift.
    let mut c = Cusum::new(0.25, 8.0);
    let (cusum, cusum_false) = delays(300, 0.5, 400, &mut |reset, z| {
        if reset {
            c.reset();
            return false;
        }
        c.push(z).is_some()
    });
    // A two-sided 3 σ limit has the same in-control run length (about 370 points).
    let (limit, limit_false) = delays(300, 0.5, 400, &mut |reset, z| !reset && z.abs() > 3.0);
    eprintln!("0.5 σ shift: CUSUM mean delay {cusum:.1} (false-alarm share over 400 in-control points {cusum_false:.2}), 3 σ limit {limit:.1} ({limit_false:.2})");
    assert!(cusum < 45.0, "CUSUM mean delay {cusum}");
    assert!(limit > 120.0, "3 σ limit mean delay {limit}");
    // The same false-alarm budget: the shares agree (both near 1 - e^(-400/370) = 0.66).
    assert!(
        (cusum_false - limit_false).abs() < 0.15,
        "{cusum_false} vs {limit_false}"
    );
    // The side is the shift's.
    let mut c = Cusum::new(0.25, 8.0);
    let side = (0..100).find_map(|_| c.push(-1.0));
    assert_eq!(side, Some(Side::Low));
}

#[test]
fn ewma_catches_a_half_sigma_shift_and_its_limits_start_narrow() {
    let mut e = Ewma::new(0.1, 2.7);
    let first = {
        e.push(0.0);
        e.limit()
    };
    for _ in 0..200 {
        e.push(0.0);
    }
    let steady = e.limit();
    assert!((steady - 2.7 * (0.1f64 / 1.9).sqrt()).abs() < 1e-9);
    assert!(
        first < steady / 2.0,
        "the exact limits start narrow: {first} vs {steady}"
    );
    let mut e = Ewma::new(0.1, 2.7);
    let (ewma, ewma_false) = delays(300, 0.5, 400, &mut |reset, z| {
        if reset {
            e.reset();
            return false;
        }
        e.push(z).is_some()
    });
    eprintln!("0.5 σ shift: EWMA mean delay {ewma:.1} (false-alarm share {ewma_false:.2})");
    assert!(ewma < 45.0, "EWMA mean delay {ewma}");
    assert!(ewma_false < 0.75, "{ewma_false}");
}

fn fired(rules: &[Rule], zs: &[f64]) -> Vec<Rule> {
    let mut r = RunRules::new(rules.to_vec());
    let mut last = Fired(0);
    for z in zs {
        last = r.push(*z);
    }
    r.rules_in(last).collect()
}

#[test]
fn each_run_rule_fires_on_its_pattern_and_not_on_its_near_miss() {
    use Rule::*;
    let all: Vec<Rule> = Rule::WESTERN_ELECTRIC
        .into_iter()
        .chain(Rule::NELSON)
        .collect();
    assert_eq!(fired(&all, &[0.1, 3.2]), [We1, Nelson1]);
    assert!(fired(&[We1], &[2.9]).is_empty());
    assert_eq!(fired(&[We2, Nelson5], &[2.5, 0.0, 2.1]), [We2, Nelson5]);
    assert!(
        fired(&[We2], &[2.5, 0.0, -2.1]).is_empty(),
        "opposite sides"
    );
    assert_eq!(fired(&[We3], &[1.5, 1.2, 0.3, 1.1, 1.4]), [We3]);
    assert!(fired(&[We3], &[1.5, 0.2, 0.3, 1.1, 1.4]).is_empty());
    assert_eq!(fired(&[We4], &[0.2; 8]), [We4]);
    assert!(fired(&[We4], &[0.2; 7]).is_empty());
    assert!(
        fired(&[Nelson2], &[0.2; 8]).is_empty(),
        "Nelson 2 needs nine"
    );
    assert_eq!(fired(&[Nelson2], &[-0.2; 9]), [Nelson2]);
    assert_eq!(
        fired(&[Nelson3], &[-1.0, -0.6, -0.2, 0.1, 0.4, 0.9]),
        [Nelson3]
    );
    assert!(fired(&[Nelson3], &[-1.0, -0.6, -0.2, 0.1, 0.4, 0.3]).is_empty());
    let saw: Vec<f64> = (0..14)
        .map(|i| if i % 2 == 0 { 0.5 } else { -0.5 })
        .collect();
    assert_eq!(fired(&[Nelson4], &saw), [Nelson4]);
    assert!(fired(&[Nelson4], &saw[..13]).is_empty());
    assert_eq!(fired(&[Nelson7], &[0.3; 15]), [Nelson7]);
    assert!(fired(&[Nelson7], &[[0.3; 14].as_slice(), &[1.2]].concat()).is_empty());
    let wide: Vec<f64> = (0..8)
        .map(|i| if i % 2 == 0 { 1.5 } else { -1.5 })
        .collect();
    assert_eq!(fired(&[Nelson8], &wide), [Nelson8]);
    assert!(fired(&[Nelson8], &[&wide[..7], &[0.5]].concat()).is_empty());
    assert_eq!(Rule::from_name("nelson6"), Some(Nelson6));
    assert_eq!(Rule::from_name("we5"), None);
}

#[test]
fn run_rules_on_white_noise_fire_at_about_their_textbook_rate() {
    // Western Electric rules together: an in-control ARL of about 92 points (time to the
    // first signal, restarting after each).
    let mut r = RunRules::new(Rule::WESTERN_ELECTRIC.to_vec());
    let mut rng = fastrand::Rng::with_seed(3);
    let n = 200_000;
    let signals = (0..n)
        .filter(|_| {
            let hit = !r.push(normal(&mut rng)).is_empty();
            if hit {
                r.reset();
            }
            hit
        })
        .count();
    let arl = n as f64 / signals as f64;
    eprintln!("Western Electric 1-4 on white noise: a signal every {arl:.0} points");
    assert!((80.0..105.0).contains(&arl), "{arl}");
}

#[test]
fn rate_of_change_sees_a_ramp_and_not_noise() {
    let mut r = Rate::new(10_000, Some(1.0), Some(1.0));
    // 2 units/s rising, sampled at 1 Hz: out once the window is half full.
    let out: Vec<Option<Side>> = (0..12)
        .map(|s| r.push(at(s * 1000), 2.0 * s as f64).1)
        .collect();
    assert_eq!(out[3], None, "window not yet half full");
    assert_eq!(out[6], Some(Side::High));
    assert!((r.push(at(12_000), 24.0).0.unwrap() - 2.0).abs() < 1e-9);
    // Falling.
    let mut r = Rate::new(10_000, None, Some(1.0));
    let last = (0..12)
        .map(|s| r.push(at(s * 1000), -3.0 * s as f64).1)
        .last();
    assert_eq!(last, Some(Some(Side::Low)));
    // White noise of 1 unit around a level: its rate over 10 s is about 0.14 units/s.
    let mut r = Rate::new(10_000, Some(1.0), Some(1.0));
    let mut rng = fastrand::Rng::with_seed(9);
    assert!((0..10_000).all(|s| r.push(at(s * 1000), 50.0 + normal(&mut rng)).1.is_none()));
    // An out-of-order value is ignored; memory stays bounded at 100 Hz for a long window.
    assert_eq!(r.push(at(0), 1e9), (None, None));
    let mut r = Rate::new(600_000, Some(1.0), None);
    for i in 0..100_000u64 {
        r.push(at(i * 10), 0.0);
    }
    assert!(r.points.len() <= MAX_RATE_POINTS);
}

#[test]
fn a_stuck_transmitter_is_frozen_and_a_live_one_never() {
    let mut f = Frozen::new(0.01, 30_000);
    let stuck: Vec<bool> = (0..40).map(|s| f.push(at(s * 1000), 21.437)).collect();
    assert!(!stuck[29] && stuck[30], "frozen after the 30 s window");
    // One move beyond the tolerance starts the window again.
    assert!(!f.push(at(41_000), 21.6));
    let mut f = Frozen::new(0.01, 30_000);
    let mut rng = fastrand::Rng::with_seed(5);
    assert!((0..3_600).all(|s| !f.push(at(s * 1000), 21.4 + 0.05 * normal(&mut rng))));
    // A Bad value breaks a run.
    let mut f = Frozen::new(0.01, 5_000);
    for s in 0..4 {
        f.push(at(s * 1000), 1.0);
    }
    f.reset();
    assert!(!f.push(at(6_000), 1.0));
}

#[test]
fn staleness_is_judged_at_the_tick() {
    let mut s = Stale::new(5_000, at(0));
    assert_eq!(s.check(at(4_000)), (false, 4_000));
    assert_eq!(
        s.check(at(6_000)),
        (true, 6_000),
        "never reported: stale from the start"
    );
    s.seen(at(6_500));
    assert!(!s.check(at(7_000)).0);
    s.seen(at(1_000)); // a late, older value does not refresh it
    assert_eq!(s.check(at(12_000)), (true, 5_500));
}
