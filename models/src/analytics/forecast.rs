//! End-of-batch quality forecasts: PLS (`linfa-pls`) on block means of the batch's deviations
//! up to a checkpoint, with a split-conformal prediction interval and the probability of
//! ending out of specification.

use super::{conformal_quantile, fold_of, mean_sd};
use linfa::traits::{Fit, Predict};
use linfa::Dataset;
use linfa_pls::PlsRegression;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

/// The forecast inputs of one batch at `checkpoint` (a fraction of the bins): per variable,
/// the mean of its deviations over each of `blocks` equal stretches up to the checkpoint
/// (a stretch with no value gives 0, the reference mean, and is counted in `missing`).
pub fn inputs(z: &[Vec<f64>], checkpoint: f64, blocks: usize) -> (Vec<f64>, usize) {
    let upto = ((z.len() as f64 * checkpoint).round() as usize).clamp(1, z.len().max(1));
    let p = z.first().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(p * blocks);
    let mut missing = 0;
    for j in 0..p {
        for b in 0..blocks {
            let (lo, hi) = (
                b * upto / blocks,
                ((b + 1) * upto / blocks).max(b * upto / blocks + 1),
            );
            let vals: Vec<f64> = z[lo.min(z.len())..hi.min(z.len())]
                .iter()
                .map(|r| r[j])
                .filter(|v| v.is_finite())
                .collect();
            if vals.is_empty() {
                missing += 1;
                out.push(0.0);
            } else {
                out.push(mean_sd(&vals).0);
            }
        }
    }
    (out, missing)
}

/// A fitted forecast of one quality attribute at one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    pub attribute: String,
    pub checkpoint: f64,
    pub blocks: usize,
    pub components: usize,
    pub x_mean: Vec<f64>,
    pub x_sd: Vec<f64>,
    /// On the standardised inputs.
    pub coefficients: Vec<f64>,
    pub y_mean: f64,
    /// Signed out-of-fold residuals (measured − predicted) of the training batches, sorted.
    pub residuals: Vec<f64>,
    /// Half-width of the interval at `coverage`.
    pub half_width: f64,
    pub coverage: f64,
}

/// A forecast for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Predicted {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

fn standardise(x: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let w = x.first().map_or(0, Vec::len);
    (0..w)
        .map(|j| {
            let col: Vec<f64> = x.iter().map(|r| r[j]).collect();
            let (m, s) = mean_sd(&col);
            (m, if s > 1e-12 { s } else { 1.0 })
        })
        .unzip()
}

/// PLS with `a` components on `x` → `y`: (x mean, x sd, coefficients, y mean).
type Fitted = (Vec<f64>, Vec<f64>, Vec<f64>, f64);

fn pls(x: &[Vec<f64>], y: &[f64], a: usize) -> Result<Fitted, String> {
    let (xm, xs) = standardise(x);
    let (n, w) = (x.len(), xm.len());
    let xa = Array2::from_shape_fn((n, w), |(i, j)| (x[i][j] - xm[j]) / xs[j]);
    let ym = mean_sd(y).0;
    let ya = Array2::from_shape_fn((n, 1), |(i, _)| y[i] - ym);
    let model = PlsRegression::params(a.min(w).max(1))
        .scale(false)
        .fit(&Dataset::new(xa.clone(), ya))
        .map_err(|e| format!("PLS failed: {e}"))?;
    // Predictions at the column means are the fitted intercept (the library centres again).
    let base: Array2<f64> = model.predict(&Array2::zeros((1, w)));
    let ones = Array2::from_shape_fn((w, w), |(i, j)| f64::from(u8::from(i == j)));
    let unit: Array2<f64> = model.predict(&ones);
    let coefficients = (0..w).map(|j| unit[[j, 0]] - base[[0, 0]]).collect();
    Ok((xm, xs, coefficients, ym + base[[0, 0]]))
}

fn predict_with(f: &Fitted, x: &[f64]) -> f64 {
    let (xm, xs, c, ym) = f;
    ym + x
        .iter()
        .zip(xm.iter().zip(xs))
        .zip(c)
        .map(|((v, (m, s)), c)| (v - m) / s * c)
        .sum::<f64>()
}

/// Out-of-fold predictions of `y` with `a` components, `folds`-fold by batch.
fn out_of_fold(x: &[Vec<f64>], y: &[f64], a: usize, folds: usize) -> Result<Vec<f64>, String> {
    let mut pred = vec![f64::NAN; y.len()];
    for f in 0..folds {
        let train: Vec<usize> = (0..y.len()).filter(|i| fold_of(*i, folds) != f).collect();
        let fitted = pls(
            &train.iter().map(|&i| x[i].clone()).collect::<Vec<_>>(),
            &train.iter().map(|&i| y[i]).collect::<Vec<_>>(),
            a,
        )?;
        for i in (0..y.len()).filter(|i| fold_of(*i, folds) == f) {
            pred[i] = predict_with(&fitted, &x[i]);
        }
    }
    Ok(pred)
}

impl Forecast {
    /// Fits on the training batches' inputs `x` and measured results `y`: the components
    /// (1 to `max_components`) with the least out-of-fold error, then the interval from the
    /// out-of-fold residuals with those components.
    #[allow(clippy::too_many_arguments)]
    pub fn fit(
        attribute: &str,
        checkpoint: f64,
        blocks: usize,
        x: &[Vec<f64>],
        y: &[f64],
        max_components: usize,
        coverage: f64,
        folds: usize,
    ) -> Result<Forecast, String> {
        if y.len() < folds.max(3) {
            return Err(format!(
                "a forecast of {attribute} needs at least {} batches with a result, got {}",
                folds.max(3),
                y.len()
            ));
        }
        let mut best: Option<(f64, usize, Vec<f64>)> = None;
        let most = max_components.min(x.first().map_or(1, Vec::len));
        for a in 1..=most {
            let pred = out_of_fold(x, y, a, folds)?;
            let press: f64 = pred.iter().zip(y).map(|(p, y)| (y - p).powi(2)).sum();
            if best.as_ref().is_none_or(|(b, _, _)| press < *b) {
                best = Some((press, a, pred));
            }
        }
        let (_, components, pred) = best.ok_or("no components to try")?;
        let mut residuals: Vec<f64> = y.iter().zip(&pred).map(|(y, p)| y - p).collect();
        residuals.sort_by(f64::total_cmp);
        let abs: Vec<f64> = residuals.iter().map(|r| r.abs()).collect();
        let half_width = conformal_quantile(&abs, coverage);
        let (x_mean, x_sd, coefficients, y_mean) = pls(x, y, components)?;
        Ok(Forecast {
            attribute: attribute.to_owned(),
            checkpoint,
            blocks,
            components,
            x_mean,
            x_sd,
            coefficients,
            y_mean,
            residuals,
            half_width,
            coverage,
        })
    }

    pub fn predict(&self, x: &[f64]) -> Predicted {
        let f = (
            self.x_mean.clone(),
            self.x_sd.clone(),
            self.coefficients.clone(),
            self.y_mean,
        );
        let value = predict_with(&f, x);
        Predicted {
            value,
            low: value - self.half_width,
            high: value + self.half_width,
        }
    }

    /// The probability of ending below `low` or above `high`: the share of the training
    /// residuals that would put this forecast there.
    pub fn out_of_spec(&self, value: f64, low: Option<f64>, high: Option<f64>) -> f64 {
        if self.residuals.is_empty() {
            return f64::NAN;
        }
        let out = self
            .residuals
            .iter()
            .filter(|r| {
                let v = value + *r;
                low.is_some_and(|l| v < l) || high.is_some_and(|h| v > h)
            })
            .count();
        out as f64 / self.residuals.len() as f64
    }
}

/// Q² (1 − PRESS / total sum of squares), RMSE and the share of `y` inside its interval.
pub fn scores(y: &[f64], p: &[Predicted]) -> (f64, f64, f64) {
    let m = mean_sd(y).0;
    let press: f64 = y.iter().zip(p).map(|(y, p)| (y - p.value).powi(2)).sum();
    let ss: f64 = y.iter().map(|y| (y - m).powi(2)).sum();
    let inside = y
        .iter()
        .zip(p)
        .filter(|(y, p)| **y >= p.low && **y <= p.high)
        .count();
    let n = y.len().max(1) as f64;
    (1.0 - press / ss, (press / n).sqrt(), inside as f64 / n)
}
