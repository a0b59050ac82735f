use super::evaluate::{cross_validate, judge, summarise, train};
use super::forecast::{scores, Forecast};
use super::mspc::{spe_limit, t2_limit};
use super::*;
use statrs::distribution::{ChiSquared, ContinuousCDF};

fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u = rng.f64().max(1e-12);
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * rng.f64()).cos()
}

fn spec(vars: usize) -> Spec {
    Spec {
        name: "synthetic".into(),
        variables: (0..vars).map(|j| format!("v{j}")).collect(),
        totalised: Vec::new(),
        maturity: "time_h".into(),
        resolution: 1.0,
        horizon: 60.0,
        monitoring: MonitorSpec::default(),
        quality: vec![QualitySpec {
            name: "titre".into(),
            checkpoints: vec![0.5, 0.75],
            low: Some(9.0),
            high: None,
            coverage: 0.9,
            blocks: 3,
            max_components: 3,
        }],
        folds: 4,
    }
}

/// A synthetic batch of 3 correlated variables over 60 h (one sample per 0.5 h): v0 a
/// trajectory with batch-to-batch gain g, v1 follows v0, v2 (a controller's output) follows
/// v0 too; the quality is 10 + 2·(g − 1)·10 plus noise. `fault`: a step on v1 from 30 h
/// ("step") or a slow ramp on v2 ("drift").
fn batch(id: usize, rng: &mut fastrand::Rng, fault: Option<&str>) -> BatchSeries {
    let g = 1.0 + 0.05 * normal(rng);
    let n = 120;
    let maturity: Vec<f64> = (1..=n).map(|i| i as f64 * 0.5).collect();
    let mut values = vec![Vec::new(), Vec::new(), Vec::new()];
    for &t in &maturity {
        let base = g * (10.0 + 5.0 * (t / 20.0).sin());
        let mut v1 = 0.5 * base + 0.2 * normal(rng);
        let mut v2 = 2.0 - 0.1 * base + 0.05 * normal(rng);
        if fault == Some("step") && t >= 30.0 {
            v1 += 2.0;
        }
        if fault == Some("sensor_drift") && t >= 30.0 {
            v2 += 0.02 * (t - 30.0);
        }
        values[0].push(base + 0.3 * normal(rng));
        values[1].push(v1);
        values[2].push(v2);
    }
    BatchSeries {
        id: format!("b{id:03}"),
        maturity,
        values,
        quality: vec![Some(10.0 + 20.0 * (g - 1.0) + 0.05 * normal(rng))],
        fault: fault.map(|k| Fault {
            kind: k.into(),
            start: 30.0,
        }),
    }
}

#[test]
fn t2_and_spe_limits_match_their_distributions() {
    // F(2, 20) at 0.95 is 3.4928 (tables): T² limit = 2·21·23 / (22·20) · 3.4928.
    let want = 2.0 * 21.0 * 23.0 / (22.0 * 20.0) * 3.4928;
    assert!(
        (t2_limit(2, 22, 0.95) - want).abs() < 1e-3,
        "{}",
        t2_limit(2, 22, 0.95)
    );
    // SPE values distributed exactly as 0.5·χ²₄: Box's limit is 0.5·χ²₄(0.99) = 6.638.
    let c = ChiSquared::new(4.0).unwrap();
    let spe: Vec<f64> = (0..20_000)
        .map(|i| 0.5 * c.inverse_cdf((i as f64 + 0.5) / 20_000.0))
        .collect();
    let lim = spe_limit(&spe, 0.99);
    assert!((lim - 0.5 * 13.2767).abs() < 0.1, "{lim}");
}

#[test]
fn alignment_averages_each_bin_and_leaves_an_empty_one_missing() {
    let s = Spec {
        horizon: 3.0,
        ..spec(1)
    };
    let b = BatchSeries {
        id: "a".into(),
        maturity: vec![0.5, 1.0, 1.5, 2.5],
        values: vec![vec![1.0, 3.0, f64::NAN, 7.0]],
        quality: vec![],
        fault: None,
    };
    let a = align(&s, &b);
    assert_eq!(a.x[0], vec![2.0], "0.5 and 1.0 share the first bin");
    assert!(a.x[1][0].is_nan(), "only a missing value in (1, 2]");
    assert_eq!(a.x[2], vec![7.0]);
    assert_eq!(conformal_quantile(&[4.0, 1.0, 3.0, 2.0], 0.5), 3.0);
    // A totalised flow: 2 per h for the first hour, then 4 per h; NaN from a gap on.
    assert_eq!(
        total(&[0.5, 1.0, 1.5], &[2.0, 2.0, 4.0]),
        vec![1.0, 2.0, 4.0]
    );
    let gap = total(&[0.5, 1.0, 1.5], &[2.0, f64::NAN, 4.0]);
    assert!(gap[0] == 1.0 && gap[1].is_nan() && gap[2].is_nan());
    let s = Spec {
        totalised: vec!["v0".into(), "nope".into()],
        ..s
    };
    assert_eq!(
        s.problems(),
        vec!["totalised: \"nope\" is not one of the variables"]
    );
    let t = align(
        &Spec {
            totalised: vec!["v0".into()],
            ..s
        },
        &b,
    );
    assert_eq!(t.x[0], vec![1.25], "the totals 0.5 and 2.0 averaged");
    assert!(t.x[2][0].is_nan(), "unknown after the missing value");
}

#[test]
fn pls_recovers_an_exact_linear_relation_and_conformal_intervals_cover_as_designed() {
    // y = 2·x0 − x1 exactly: two components give it back at a new point.
    let mut rng = fastrand::Rng::with_seed(3);
    let x: Vec<Vec<f64>> = (0..40)
        .map(|_| vec![normal(&mut rng), normal(&mut rng)])
        .collect();
    let y: Vec<f64> = x.iter().map(|r| 2.0 * r[0] - r[1]).collect();
    let f = Forecast::fit("y", 1.0, 1, &x, &y, 2, 0.9, 4).unwrap();
    assert_eq!(f.components, 2);
    let p = f.predict(&[0.3, -1.2]);
    assert!((p.value - (0.6 + 1.2)).abs() < 1e-6, "{p:?}");

    // y = x + N(0, 1): the 90 % interval covers close to 90 % of fresh points.
    let x: Vec<Vec<f64>> = (0..300).map(|_| vec![normal(&mut rng)]).collect();
    let y: Vec<f64> = x.iter().map(|r| r[0] + normal(&mut rng)).collect();
    let f = Forecast::fit("y", 1.0, 1, &x, &y, 1, 0.9, 5).unwrap();
    let fresh: Vec<(f64, f64)> = (0..4_000)
        .map(|_| {
            let x = normal(&mut rng);
            (x, x + normal(&mut rng))
        })
        .collect();
    let preds: Vec<_> = fresh.iter().map(|(x, _)| f.predict(&[*x])).collect();
    let ys: Vec<f64> = fresh.iter().map(|(_, y)| *y).collect();
    let (q2, rmse, coverage) = scores(&ys, &preds);
    assert!((0.87..=0.93).contains(&coverage), "coverage {coverage}");
    assert!((rmse - 1.0).abs() < 0.1 && q2 > 0.4, "rmse {rmse} q2 {q2}");
    assert!((f.half_width - 1.645).abs() < 0.25, "{}", f.half_width);
    // Far below the specification's low end: almost surely out of it.
    assert!(f.out_of_spec(-10.0, Some(0.0), None) > 0.99);
    assert_eq!(f.out_of_spec(10.0, Some(0.0), None), 0.0);
}

#[test]
fn the_monitor_catches_a_step_and_a_hidden_drift_with_the_right_contributors() {
    let mut rng = fastrand::Rng::with_seed(11);
    let reference: Vec<BatchSeries> = (0..40).map(|i| batch(i, &mut rng, None)).collect();
    let s = spec(3);
    let model = train(&s, &reference, &mut |_| {}).unwrap();
    assert!(model.monitor.batch_limit >= 1.0);
    assert!(
        model.monitor.loadings.len() < 6,
        "fewer components than features"
    );
    let fresh: Vec<BatchSeries> = (100..140).map(|i| batch(i, &mut rng, None)).collect();
    let judged = judge(&model, &fresh);
    let alarmed = judged.iter().filter(|r| r.false_alarm).count();
    assert!(alarmed <= 6, "{alarmed} of 40 normal batches alarmed");

    let step = judge(&model, &[batch(200, &mut rng, Some("step"))]).remove(0);
    let at = step.detected_h.expect("the step is caught");
    assert!((30.0..=33.0).contains(&at), "caught at {at} h");
    assert_eq!(step.contributions[0].0, "v1", "{:?}", step.contributions);

    let drift = judge(&model, &[batch(201, &mut rng, Some("sensor_drift"))]).remove(0);
    let at = drift.detected_h.expect("the drift is caught");
    assert!(at < 55.0, "caught at {at} h");
    assert_eq!(drift.contributions[0].0, "v2", "{:?}", drift.contributions);
}

#[test]
fn cross_validation_by_batch_reports_detection_false_alarms_and_forecast_skill() {
    let mut rng = fastrand::Rng::with_seed(5);
    let mut all: Vec<BatchSeries> = (0..32).map(|i| batch(i, &mut rng, None)).collect();
    for i in 0..8 {
        let kind = if i % 2 == 0 { "step" } else { "sensor_drift" };
        all.push(batch(100 + i, &mut rng, Some(kind)));
    }
    let mut steps = Vec::new();
    let (results, summary) =
        cross_validate(&spec(3), &all, &mut |m| steps.push(m.to_owned())).unwrap();
    assert_eq!(steps.len(), 4, "one progress line per fold: {steps:?}");
    assert_eq!(results.len(), 40);
    assert_eq!((summary.normal_batches, summary.faulty_batches), (32, 8));
    assert!(summary.faulty_detected >= 7, "{summary:?}");
    assert!(summary.normal_with_alarm <= 6, "{summary:?}");
    let delay = summary.median_delay_h_process.unwrap();
    assert!(delay <= 2.0, "step delay {delay}");
    // The quality follows the batch's gain, visible in its trajectory from the start.
    let at_half = &summary.forecasts[0];
    assert_eq!((at_half.checkpoint, at_half.batches), (0.5, 40));
    assert!(at_half.q2 > 0.8, "{at_half:?}");
    assert!((0.75..=1.0).contains(&at_half.coverage), "{at_half:?}");
    assert_eq!(summarise(&results), summary);
}
