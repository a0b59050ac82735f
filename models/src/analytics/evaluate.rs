//! Training, judging and batch-wise cross-validation of the whole analytics model.

use super::forecast::{inputs, scores, Forecast, Predicted};
use super::mspc::Monitor;
use super::{align, fold_of, Aligned, BatchSeries, Spec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The model file's format version.
pub const MODEL_FORMAT: u32 = 1;

/// A trained model: what it was trained on and how, the monitor and the forecasts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub format: u32,
    pub spec: Spec,
    pub monitor: Monitor,
    pub forecasts: Vec<Forecast>,
    /// The reference (normal) batches of the monitor.
    pub reference_batches: Vec<String>,
    /// The batches with a quality result the forecasts learnt from.
    pub training_batches: Vec<String>,
    /// Batch-wise cross-validation on the training data, when run.
    pub cross_validation: Option<Summary>,
}

/// One batch judged by a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchResult {
    pub id: String,
    pub fault: Option<String>,
    pub onset_h: Option<f64>,
    /// The first alarm (end of its bin on the maturity axis).
    pub first_alarm_h: Option<f64>,
    /// The first alarm at or after the labelled onset.
    pub detected_h: Option<f64>,
    /// An alarm before the onset (or in a normal batch).
    pub false_alarm: bool,
    /// The top contributing variables at `detected_h` (else the first alarm).
    pub contributions: Vec<(String, f64)>,
    /// Bins not judged because a value was missing.
    pub unjudged_bins: usize,
    pub forecasts: Vec<ForecastResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastResult {
    pub attribute: String,
    pub checkpoint: f64,
    pub measured: Option<f64>,
    pub predicted: Predicted,
    #[serde(with = "super::nan_number")]
    pub out_of_spec_probability: f64,
}

/// Detection and forecast figures over judged batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub normal_batches: usize,
    pub normal_with_alarm: usize,
    pub faulty_batches: usize,
    pub faulty_detected: usize,
    /// Per fault type: (batches, detected, median delay h).
    pub by_fault: BTreeMap<String, (usize, usize, Option<f64>)>,
    /// Median delay over the faults that are not sensor drifts (`*_drift`).
    pub median_delay_h_process: Option<f64>,
    pub forecasts: Vec<CheckpointScore>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointScore {
    pub attribute: String,
    pub checkpoint: f64,
    pub batches: usize,
    #[serde(with = "super::nan_number")]
    pub q2: f64,
    #[serde(with = "super::nan_number")]
    pub rmse: f64,
    #[serde(with = "super::nan_number")]
    pub coverage: f64,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Trains on `batches`: the monitor on the normal ones (no labelled fault), each forecast on
/// every batch with a result. `progress` hears each step.
pub fn train(
    spec: &Spec,
    batches: &[BatchSeries],
    progress: &mut dyn FnMut(&str),
) -> Result<Model, String> {
    let aligned: Vec<Aligned> = batches.iter().map(|b| align(spec, b)).collect();
    let normal: Vec<&Aligned> = aligned
        .iter()
        .zip(batches)
        .filter(|(_, b)| b.fault.is_none())
        .map(|(a, _)| a)
        .collect();
    progress(&format!(
        "monitor: {} reference batches, {} bins of {} h",
        normal.len(),
        spec.bins(),
        spec.resolution
    ));
    let monitor = Monitor::fit(&spec.variables, &normal, &spec.monitoring, spec.folds)?;
    let z: Vec<Vec<Vec<f64>>> = aligned
        .iter()
        .map(|a| monitor.reference.deviations(a))
        .collect();
    let mut forecasts = Vec::new();
    let mut training = Vec::new();
    for (qi, q) in spec.quality.iter().enumerate() {
        let with: Vec<usize> = (0..batches.len())
            .filter(|&i| batches[i].quality.get(qi).copied().flatten().is_some())
            .collect();
        if training.is_empty() {
            training = with.iter().map(|&i| batches[i].id.clone()).collect();
        }
        let y: Vec<f64> = with
            .iter()
            .filter_map(|&i| batches[i].quality[qi])
            .collect();
        for &c in &q.checkpoints {
            progress(&format!(
                "forecast {} at {:.0} %: {} batches",
                q.name,
                c * 100.0,
                y.len()
            ));
            let x: Vec<Vec<f64>> = with.iter().map(|&i| inputs(&z[i], c, q.blocks).0).collect();
            forecasts.push(Forecast::fit(
                &q.name,
                c,
                q.blocks,
                &x,
                &y,
                q.max_components,
                q.coverage,
                spec.folds,
            )?);
        }
    }
    Ok(Model {
        format: MODEL_FORMAT,
        spec: spec.clone(),
        reference_batches: normal.iter().map(|a| a.id.clone()).collect(),
        monitor,
        forecasts,
        training_batches: training,
        cross_validation: None,
    })
}

/// Judges each batch with `model`.
pub fn judge(model: &Model, batches: &[BatchSeries]) -> Vec<BatchResult> {
    let r = model.spec.resolution;
    batches
        .iter()
        .map(|b| {
            let a = align(&model.spec, b);
            let points = model.monitor.score(&a);
            let at = |k: usize| (k + 1) as f64 * r;
            let alarms: Vec<usize> = (0..points.len()).filter(|&k| points[k].alarm).collect();
            let onset = b.fault.as_ref().map(|f| f.start);
            let detected = onset.and_then(|o| alarms.iter().copied().find(|&k| at(k) >= o));
            let false_alarm = match onset {
                None => !alarms.is_empty(),
                Some(o) => alarms.iter().any(|&k| at(k) < o),
            };
            let shown = detected.or(alarms.first().copied());
            let z = model.monitor.reference.deviations(&a);
            let forecasts = model
                .forecasts
                .iter()
                .map(|f| {
                    let qi = model
                        .spec
                        .quality
                        .iter()
                        .position(|q| q.name == f.attribute);
                    let q = qi.map(|i| &model.spec.quality[i]);
                    let predicted = f.predict(&inputs(&z, f.checkpoint, f.blocks).0);
                    ForecastResult {
                        attribute: f.attribute.clone(),
                        checkpoint: f.checkpoint,
                        measured: qi.and_then(|i| b.quality.get(i).copied().flatten()),
                        out_of_spec_probability: f.out_of_spec(
                            predicted.value,
                            q.and_then(|q| q.low),
                            q.and_then(|q| q.high),
                        ),
                        predicted,
                    }
                })
                .collect();
            BatchResult {
                id: b.id.clone(),
                fault: b.fault.as_ref().map(|f| f.kind.clone()),
                onset_h: onset,
                first_alarm_h: alarms.first().map(|&k| at(k)),
                detected_h: detected.map(at),
                false_alarm,
                contributions: shown
                    .map(|k| {
                        let mut c = model.monitor.contributions(&a, k);
                        c.truncate(3);
                        c
                    })
                    .unwrap_or_default(),
                unjudged_bins: points.iter().filter(|p| p.ratio.is_nan()).count(),
                forecasts,
            }
        })
        .collect()
}

/// The figures over judged batches.
pub fn summarise(results: &[BatchResult]) -> Summary {
    let normal: Vec<&BatchResult> = results.iter().filter(|r| r.fault.is_none()).collect();
    let faulty: Vec<&BatchResult> = results.iter().filter(|r| r.fault.is_some()).collect();
    let delay = |r: &BatchResult| r.detected_h.zip(r.onset_h).map(|(d, o)| d - o);
    let mut by_fault: BTreeMap<String, (usize, usize, Option<f64>)> = BTreeMap::new();
    let mut kinds: BTreeMap<String, Vec<&BatchResult>> = BTreeMap::new();
    for r in &faulty {
        kinds
            .entry(r.fault.clone().unwrap_or_default())
            .or_default()
            .push(r);
    }
    for (k, rs) in &kinds {
        let delays: Vec<f64> = rs.iter().filter_map(|r| delay(r)).collect();
        by_fault.insert(k.clone(), (rs.len(), delays.len(), median(delays)));
    }
    let process: Vec<f64> = faulty
        .iter()
        .filter(|r| !r.fault.as_deref().unwrap_or("").ends_with("_drift"))
        .filter_map(|r| delay(r))
        .collect();
    let mut cells: BTreeMap<(String, u64), (Vec<f64>, Vec<Predicted>)> = BTreeMap::new();
    for r in results {
        for f in &r.forecasts {
            if let Some(m) = f.measured {
                let cell = cells
                    .entry((f.attribute.clone(), (f.checkpoint * 1e6) as u64))
                    .or_default();
                cell.0.push(m);
                cell.1.push(f.predicted);
            }
        }
    }
    let forecasts = cells
        .into_iter()
        .map(|((attribute, c), (y, p))| {
            let (q2, rmse, coverage) = scores(&y, &p);
            CheckpointScore {
                attribute,
                checkpoint: c as f64 / 1e6,
                batches: y.len(),
                q2,
                rmse,
                coverage,
            }
        })
        .collect();
    Summary {
        normal_batches: normal.len(),
        normal_with_alarm: normal.iter().filter(|r| r.false_alarm).count(),
        faulty_batches: faulty.len(),
        faulty_detected: faulty.iter().filter(|r| r.detected_h.is_some()).count(),
        by_fault,
        median_delay_h_process: median(process),
        forecasts,
    }
}

/// Batch-wise cross-validation: each of `spec.folds` groups of batches judged by a model
/// trained on the others.
pub fn cross_validate(
    spec: &Spec,
    batches: &[BatchSeries],
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<BatchResult>, Summary), String> {
    let mut results = Vec::new();
    for f in 0..spec.folds {
        let (held, kept): (Vec<_>, Vec<_>) = batches
            .iter()
            .enumerate()
            .partition(|(i, _)| fold_of(*i, spec.folds) == f);
        let kept: Vec<BatchSeries> = kept.into_iter().map(|(_, b)| b.clone()).collect();
        let held: Vec<BatchSeries> = held.into_iter().map(|(_, b)| b.clone()).collect();
        progress(&format!(
            "cross-validation fold {} of {}: training on {} batches, judging {}",
            f + 1,
            spec.folds,
            kept.len(),
            held.len()
        ));
        let model = train(spec, &kept, &mut |_| {})?;
        results.extend(judge(&model, &held));
    }
    let summary = summarise(&results);
    Ok((results, summary))
}
