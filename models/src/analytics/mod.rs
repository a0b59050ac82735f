//! Batch analytics: multivariate batch monitoring (T² and SPE with contributions) and
//! end-of-batch quality forecasts with prediction intervals, trained from historical batches.
//!
//! Pure, like the rest of `models`: the agent reads batches (CSV, or later its journal) into
//! `BatchSeries`, and this module aligns them on the maturity axis, fits the models
//! (`mspc`, `forecast`), scores batches and cross-validates by batch (`evaluate`).
//!
//! The pipeline, fixed by design and never tuned to a particular data set:
//! 1. **Alignment**: each batch's samples are averaged into bins of `resolution` along the
//!    maturity axis (time in batch); a bin with no Good value is missing, never imputed.
//! 2. **Reference trajectories**: per bin and variable, the mean and spread over the
//!    reference (normal) batches, smoothed over neighbouring bins; every sample becomes a
//!    deviation `z` in units of that spread.
//! 3. **Monitoring**: the features at each bin are `z` and an EWMA of `z` (slow drifts that a
//!    control loop hides in its manipulated flows accumulate there); PCA on the standardised
//!    features of the reference batches; T² and SPE against their theoretical 99 % limits
//!    (F and Box's χ² approximations, `statrs`); an alarm when the larger ratio stays above
//!    the batch-level limit for `run` bins, that limit calibrated on reference batches held
//!    out of the fit so that at most `false_alarm_batches` of normal batches raise one.
//! 4. **Forecasts**: per quality attribute and checkpoint, PLS (`linfa-pls`) on block means of
//!    `z` up to the checkpoint, its components chosen by inner cross-validation, with a
//!    split-conformal interval from out-of-fold residuals of the training batches.

pub mod evaluate;
pub mod forecast;
pub mod mspc;

use serde::{Deserialize, Serialize};

/// One historical batch as read: the maturity axis and each variable's values on it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSeries {
    pub id: String,
    /// The maturity of each sample (time in batch, h), ascending.
    pub maturity: Vec<f64>,
    /// Per variable (the spec's order), per sample; NaN where missing or Bad.
    pub values: Vec<Vec<f64>>,
    /// Per quality attribute (the spec's order): the measured result, if known.
    pub quality: Vec<Option<f64>>,
    /// The labelled fault, when the batch is known to be faulty.
    pub fault: Option<Fault>,
}

/// A labelled fault: its type and onset on the maturity axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub kind: String,
    pub start: f64,
}

/// What to train: variables, maturity axis and resolution, monitoring and forecasts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    /// On-line measurements only (never hidden process states or lab results).
    pub variables: Vec<String>,
    /// Variables that enter as running totals over the maturity axis (Σ value·Δmaturity)
    /// instead of their instantaneous values: the intermittent outputs of control loops
    /// (acid and base dosing, heating and cooling), whose totals move smoothly and carry a
    /// drift the loop hides. A missing value leaves the total unknown from there on.
    #[serde(default)]
    pub totalised: Vec<String>,
    /// The maturity column (time in batch, h).
    pub maturity: String,
    /// Bin width on the maturity axis.
    pub resolution: f64,
    /// The batch's full maturity (bins beyond it are not judged).
    pub horizon: f64,
    #[serde(default)]
    pub monitoring: MonitorSpec,
    #[serde(default)]
    pub quality: Vec<QualitySpec>,
    /// Folds of the batch-wise cross-validation.
    #[serde(default = "default_folds")]
    pub folds: usize,
}

const fn default_folds() -> usize {
    5
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorSpec {
    /// The fraction of normal batches allowed to raise any alarm.
    pub false_alarm_batches: f64,
    /// EWMA weight of the slow-drift features.
    pub ewma_lambda: f64,
    /// Consecutive bins beyond the limit before an alarm.
    pub run: usize,
    /// Variance the principal components keep.
    pub variance: f64,
    /// Bins either side pooled into each reference mean and spread.
    pub smooth: usize,
}

impl Default for MonitorSpec {
    fn default() -> Self {
        Self {
            false_alarm_batches: 0.05,
            ewma_lambda: 0.1,
            run: 2,
            variance: 0.9,
            smooth: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualitySpec {
    pub name: String,
    /// Fractions of the horizon at which to forecast.
    pub checkpoints: Vec<f64>,
    #[serde(default)]
    pub low: Option<f64>,
    #[serde(default)]
    pub high: Option<f64>,
    /// Nominal coverage of the prediction interval.
    #[serde(default = "default_coverage")]
    pub coverage: f64,
    /// Blocks of maturity each variable's deviations are averaged over.
    #[serde(default = "default_blocks")]
    pub blocks: usize,
    #[serde(default = "default_components")]
    pub max_components: usize,
}

const fn default_coverage() -> f64 {
    0.9
}
const fn default_blocks() -> usize {
    5
}
const fn default_components() -> usize {
    6
}

impl Spec {
    /// Every problem with the spec, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.variables.is_empty() {
            out.push("variables: name at least one".to_owned());
        }
        for t in &self.totalised {
            if !self.variables.contains(t) {
                out.push(format!("totalised: {t:?} is not one of the variables"));
            }
        }
        if self.resolution.is_nan() || self.resolution <= 0.0 {
            out.push(format!("resolution: {} must be above 0", self.resolution));
        }
        if self.horizon.is_nan() || self.horizon <= self.resolution {
            out.push(format!("horizon: {} must exceed resolution", self.horizon));
        }
        if self.folds < 2 {
            out.push(format!("folds: {} must be at least 2", self.folds));
        }
        let m = &self.monitoring;
        if !(m.false_alarm_batches > 0.0 && m.false_alarm_batches < 1.0) {
            out.push("monitoring.false_alarm_batches: must be in (0, 1)".to_owned());
        }
        if !(m.ewma_lambda > 0.0 && m.ewma_lambda <= 1.0) {
            out.push("monitoring.ewma_lambda: must be in (0, 1]".to_owned());
        }
        if m.run == 0 {
            out.push("monitoring.run: must be at least 1".to_owned());
        }
        if !(m.variance > 0.0 && m.variance <= 1.0) {
            out.push("monitoring.variance: must be in (0, 1]".to_owned());
        }
        for (i, q) in self.quality.iter().enumerate() {
            if q.checkpoints.iter().any(|c| !(*c > 0.0 && *c <= 1.0)) {
                out.push(format!("quality[{i}].checkpoints: each must be in (0, 1]"));
            }
            if !(q.coverage > 0.0 && q.coverage < 1.0) {
                out.push(format!("quality[{i}].coverage: must be in (0, 1)"));
            }
            if q.blocks == 0 || q.max_components == 0 {
                out.push(format!(
                    "quality[{i}]: blocks and max_components must be at least 1"
                ));
            }
        }
        out
    }

    /// Bins on the maturity axis.
    pub fn bins(&self) -> usize {
        (self.horizon / self.resolution).ceil() as usize
    }
}

/// A batch on the maturity grid: per bin, per variable, the mean of its values (NaN: none).
#[derive(Debug, Clone, PartialEq)]
pub struct Aligned {
    pub id: String,
    pub x: Vec<Vec<f64>>,
}

/// The running total of `v` over `maturity` (each value over the interval since the previous
/// sample, the first since maturity 0); NaN from the first missing value on.
pub fn total(maturity: &[f64], v: &[f64]) -> Vec<f64> {
    let mut sum = 0.0;
    let mut prev: Option<f64> = None;
    maturity
        .iter()
        .zip(v)
        .map(|(&m, &x)| {
            let dt = prev.map_or(m.max(0.0), |p| (m - p).max(0.0));
            prev = Some(m);
            sum += x * dt;
            sum
        })
        .collect()
}

/// Averages `b`'s samples into the spec's bins (bin k holds maturity in (k·r, (k+1)·r]),
/// the `totalised` variables as running totals.
pub fn align(spec: &Spec, b: &BatchSeries) -> Aligned {
    let totals: Vec<Option<Vec<f64>>> = spec
        .variables
        .iter()
        .zip(&b.values)
        .map(|(name, v)| spec.totalised.contains(name).then(|| total(&b.maturity, v)))
        .collect();
    let values: Vec<&[f64]> = b
        .values
        .iter()
        .zip(&totals)
        .map(|(v, t)| t.as_deref().unwrap_or(v))
        .collect();
    let (n, p) = (spec.bins(), values.len());
    let mut sum = vec![vec![0.0; p]; n];
    let mut count = vec![vec![0u32; p]; n];
    for (i, &m) in b.maturity.iter().enumerate() {
        if m.is_nan() || m <= 0.0 || m > spec.horizon + 1e-9 {
            continue;
        }
        let k = (((m / spec.resolution) - 1e-9).floor() as usize).min(n - 1);
        for j in 0..p {
            let v = values[j].get(i).copied().unwrap_or(f64::NAN);
            if v.is_finite() {
                sum[k][j] += v;
                count[k][j] += 1;
            }
        }
    }
    let x = sum
        .into_iter()
        .zip(count)
        .map(|(s, c)| {
            s.into_iter()
                .zip(c)
                .map(|(s, c)| if c > 0 { s / c as f64 } else { f64::NAN })
                .collect()
        })
        .collect();
    Aligned {
        id: b.id.clone(),
        x,
    }
}

/// The largest deviation, in spreads, one variable contributes: beyond it a value counts as
/// this far out. An intermittent flow (acid dosing, a discharge) whose reference spread is
/// tiny where the reference batches happened not to dose would otherwise swamp every other
/// variable and force limits so wide that slow faults pass.
pub const DEVIATION_BOUND: f64 = 6.0;

/// Reference trajectories: per bin and variable, the mean and spread of the reference batches
/// (a bin no reference batch reached has a NaN mean, `null` in a model file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    #[serde(with = "nan_grid")]
    pub mean: Vec<Vec<f64>>,
    #[serde(with = "nan_grid")]
    pub spread: Vec<Vec<f64>>,
}

/// NaN as JSON `null` (which JSON has no number for) and back.
pub mod nan_grid {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(g: &[Vec<f64>], s: S) -> Result<S::Ok, S::Error> {
        let o: Vec<Vec<Option<f64>>> = g
            .iter()
            .map(|r| r.iter().map(|v| v.is_finite().then_some(*v)).collect())
            .collect();
        o.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<f64>>, D::Error> {
        let o: Vec<Vec<Option<f64>>> = Vec::deserialize(d)?;
        Ok(o.into_iter()
            .map(|r| r.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())
            .collect())
    }
}

/// A single f64 that may be NaN, as JSON `null` and back.
pub mod nan_number {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        v.is_finite().then_some(*v).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

impl Reference {
    /// From aligned reference batches, pooling `smooth` bins either side.
    pub fn fit(batches: &[&Aligned], smooth: usize) -> Reference {
        let n = batches.first().map_or(0, |b| b.x.len());
        let p = batches
            .first()
            .and_then(|b| b.x.first())
            .map_or(0, Vec::len);
        let mut mean = vec![vec![f64::NAN; p]; n];
        let mut spread = vec![vec![f64::NAN; p]; n];
        // A floor per variable: 5 % of its spread over the whole batch, so a stretch where
        // every reference batch is identical (a feed not yet started) does not divide by 0.
        let mut floor = vec![0.0; p];
        for (j, f) in floor.iter_mut().enumerate() {
            let all: Vec<f64> = batches
                .iter()
                .flat_map(|b| b.x.iter().map(move |row| row[j]))
                .filter(|v| v.is_finite())
                .collect();
            let (m, s) = mean_sd(&all);
            *f = (0.05 * s).max(1e-6 * (m.abs() + 1.0));
        }
        for k in 0..n {
            let lo = k.saturating_sub(smooth);
            let hi = (k + smooth).min(n - 1);
            for j in 0..p {
                let centre: Vec<f64> = batches
                    .iter()
                    .map(|b| b.x[k][j])
                    .filter(|v| v.is_finite())
                    .collect();
                mean[k][j] = mean_sd(&centre).0;
                // The spread pools each neighbouring bin's deviations from its own mean.
                let mut dev = Vec::new();
                for kk in lo..=hi {
                    let vals: Vec<f64> = batches
                        .iter()
                        .map(|b| b.x[kk][j])
                        .filter(|v| v.is_finite())
                        .collect();
                    let m = mean_sd(&vals).0;
                    dev.extend(vals.iter().map(|v| v - m));
                }
                let s = if dev.len() > 1 {
                    (dev.iter().map(|d| d * d).sum::<f64>() / (dev.len() - 1) as f64).sqrt()
                } else {
                    0.0
                };
                spread[k][j] = s.max(floor[j]);
            }
        }
        Reference { mean, spread }
    }

    /// `a`'s deviations from the reference, in spreads, each bounded to ±`DEVIATION_BOUND`
    /// (NaN stays NaN).
    pub fn deviations(&self, a: &Aligned) -> Vec<Vec<f64>> {
        a.x.iter()
            .zip(self.mean.iter().zip(&self.spread))
            .map(|(row, (m, s))| {
                row.iter()
                    .zip(m.iter().zip(s))
                    .map(|(v, (m, s))| ((v - m) / s).clamp(-DEVIATION_BOUND, DEVIATION_BOUND))
                    .collect()
            })
            .collect()
    }
}

/// Mean and sample standard deviation (0 for fewer than two values; NaN mean for none).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, 0.0);
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    if v.len() < 2 {
        return (m, 0.0);
    }
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64;
    (m, var.sqrt())
}

/// The `q` quantile of `v` by the conservative rank ⌈(n + 1)·q⌉ (the largest value when
/// that rank is beyond n), as split-conformal calibration uses it.
pub fn conformal_quantile(v: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let rank = ((s.len() + 1) as f64 * q).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Batch-wise folds: batch i (in the order given) is held out in fold i mod `folds`.
pub fn fold_of(i: usize, folds: usize) -> usize {
    i % folds.max(1)
}

#[cfg(test)]
mod tests;
