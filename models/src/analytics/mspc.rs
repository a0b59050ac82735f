//! Multivariate batch monitoring: PCA on maturity-aligned deviations and their EWMA, T² and
//! SPE with limits, a batch-level limit calibrated for a false-alarm budget, contributions.

use super::{conformal_quantile, fold_of, mean_sd, Aligned, MonitorSpec, Reference};
use linfa_linalg::eigh::Eigh;
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF, FisherSnedecor};

/// Confidence of the theoretical T² and SPE limits the statistics are scaled by.
pub const POINT_CONFIDENCE: f64 = 0.99;

/// A fitted monitoring model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Monitor {
    pub variables: Vec<String>,
    pub reference: Reference,
    pub lambda: f64,
    pub run: usize,
    /// Per feature (`z` of each variable, then its EWMA): centring and scaling.
    pub feature_mean: Vec<f64>,
    pub feature_sd: Vec<f64>,
    /// Principal components: one row of loadings per component.
    pub loadings: Vec<Vec<f64>>,
    /// The variance of each component's scores.
    pub eigenvalues: Vec<f64>,
    pub t2_limit: f64,
    pub spe_limit: f64,
    /// An alarm when max(T²/t2_limit, SPE/spe_limit) stays above this for `run` bins.
    pub batch_limit: f64,
}

/// One bin of a monitored batch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub t2: f64,
    pub spe: f64,
    /// max(T²/t2_limit, SPE/spe_limit); NaN when the bin is not judged (a value missing).
    pub ratio: f64,
    /// Beyond the batch limit for `run` bins in a row, ending here.
    pub alarm: bool,
}

/// The features of each bin: deviations `z` and their EWMA (NaN where a value is missing;
/// a missing value leaves the EWMA where it was).
pub fn features(z: &[Vec<f64>], lambda: f64) -> Vec<Vec<f64>> {
    let p = z.first().map_or(0, Vec::len);
    let mut e = vec![0.0; p];
    z.iter()
        .map(|row| {
            let mut f = row.clone();
            for (j, v) in row.iter().enumerate() {
                if v.is_finite() {
                    e[j] = lambda * v + (1.0 - lambda) * e[j];
                }
                f.push(if v.is_finite() { e[j] } else { f64::NAN });
            }
            f
        })
        .collect()
}

/// The theoretical T² limit for `a` components from `n` observations (F distribution).
pub fn t2_limit(a: usize, n: usize, confidence: f64) -> f64 {
    let (a, n) = (a as f64, n as f64);
    match FisherSnedecor::new(a, n - a) {
        Ok(f) => a * (n - 1.0) * (n + 1.0) / (n * (n - a)) * f.inverse_cdf(confidence),
        Err(_) => f64::INFINITY,
    }
}

/// Box's approximation of the SPE limit: g·χ²_h with g = v/(2m), h = 2m²/v from the
/// reference SPE values' mean m and variance v.
pub fn spe_limit(spe: &[f64], confidence: f64) -> f64 {
    let (m, s) = mean_sd(spe);
    let v = s * s;
    if !(m > 0.0 && v > 0.0) {
        return m.max(f64::MIN_POSITIVE);
    }
    let (g, h) = (v / (2.0 * m), 2.0 * m * m / v);
    match ChiSquared::new(h) {
        Ok(c) => g * c.inverse_cdf(confidence),
        Err(_) => f64::INFINITY,
    }
}

impl Monitor {
    /// Fits on the reference (normal) batches, the batch limit calibrated on each of
    /// `folds` groups of them held out of a fit on the others.
    pub fn fit(
        variables: &[String],
        batches: &[&Aligned],
        spec: &MonitorSpec,
        folds: usize,
    ) -> Result<Monitor, String> {
        let mut maxima = Vec::new();
        for f in 0..folds {
            let (held, kept): (Vec<_>, Vec<_>) = batches
                .iter()
                .enumerate()
                .partition(|(i, _)| fold_of(*i, folds) == f);
            let kept: Vec<&Aligned> = kept.into_iter().map(|(_, b)| *b).collect();
            let m = Self::fit_once(variables, &kept, spec)?;
            for (_, b) in held {
                maxima.push(m.batch_maximum(b));
            }
        }
        let mut m = Self::fit_once(variables, batches, spec)?;
        m.batch_limit = conformal_quantile(&maxima, 1.0 - spec.false_alarm_batches).max(1.0);
        Ok(m)
    }

    fn fit_once(
        variables: &[String],
        batches: &[&Aligned],
        spec: &MonitorSpec,
    ) -> Result<Monitor, String> {
        if batches.len() < 3 {
            return Err(format!(
                "monitoring needs at least 3 reference batches, got {}",
                batches.len()
            ));
        }
        let reference = Reference::fit(batches, spec.smooth);
        let rows: Vec<Vec<f64>> = batches
            .iter()
            .flat_map(|b| features(&reference.deviations(b), spec.ewma_lambda))
            .filter(|f| f.iter().all(|v| v.is_finite()))
            .collect();
        let width = 2 * variables.len();
        if rows.len() <= width {
            return Err(format!(
                "monitoring needs more complete bins than features ({} <= {width})",
                rows.len()
            ));
        }
        let (feature_mean, feature_sd): (Vec<f64>, Vec<f64>) = (0..width)
            .map(|j| {
                let col: Vec<f64> = rows.iter().map(|r| r[j]).collect();
                let (m, s) = mean_sd(&col);
                (m, if s > 1e-12 { s } else { 1.0 })
            })
            .unzip();
        let n = rows.len();
        let x = Array2::from_shape_fn((n, width), |(i, j)| {
            (rows[i][j] - feature_mean[j]) / feature_sd[j]
        });
        let cov = x.t().dot(&x) / (n as f64 - 1.0);
        let (vals, vecs) = cov.eigh().map_err(|e| format!("PCA failed: {e}"))?;
        let mut order: Vec<usize> = (0..width).collect();
        order.sort_by(|a, b| vals[*b].total_cmp(&vals[*a]));
        let total: f64 = vals.iter().map(|v| v.max(0.0)).sum();
        let mut kept = 0.0;
        let mut loadings = Vec::new();
        let mut eigenvalues = Vec::new();
        for &c in &order {
            if kept >= spec.variance * total || vals[c] <= 1e-12 {
                break;
            }
            kept += vals[c];
            eigenvalues.push(vals[c]);
            loadings.push(vecs.column(c).to_vec());
        }
        let mut m = Monitor {
            variables: variables.to_vec(),
            reference,
            lambda: spec.ewma_lambda,
            run: spec.run,
            feature_mean,
            feature_sd,
            t2_limit: t2_limit(loadings.len(), n, POINT_CONFIDENCE),
            loadings,
            eigenvalues,
            spe_limit: 1.0,
            batch_limit: 1.0,
        };
        let spe: Vec<f64> = (0..n).map(|i| m.statistics(&x.row(i).to_vec()).1).collect();
        m.spe_limit = spe_limit(&spe, POINT_CONFIDENCE);
        Ok(m)
    }

    /// The standardised features of a bin (`None`: a value is missing).
    fn standardised(&self, f: &[f64]) -> Option<Vec<f64>> {
        f.iter()
            .zip(self.feature_mean.iter().zip(&self.feature_sd))
            .map(|(v, (m, s))| v.is_finite().then(|| (v - m) / s))
            .collect()
    }

    /// T², SPE and the scores of standardised features `x`.
    fn statistics(&self, x: &[f64]) -> (f64, f64, Vec<f64>) {
        let t: Vec<f64> = self
            .loadings
            .iter()
            .map(|p| p.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect();
        let t2 = t
            .iter()
            .zip(&self.eigenvalues)
            .map(|(t, l)| t * t / l)
            .sum();
        let spe = (0..x.len())
            .map(|i| {
                let fit: f64 = self.loadings.iter().zip(&t).map(|(p, t)| p[i] * t).sum();
                (x[i] - fit).powi(2)
            })
            .sum();
        (t2, spe, t)
    }

    /// Every bin of `a`, judged.
    pub fn score(&self, a: &Aligned) -> Vec<Point> {
        let f = features(&self.reference.deviations(a), self.lambda);
        let mut run = 0;
        f.iter()
            .map(|row| match self.standardised(row) {
                None => {
                    run = 0;
                    Point {
                        t2: f64::NAN,
                        spe: f64::NAN,
                        ratio: f64::NAN,
                        alarm: false,
                    }
                }
                Some(x) => {
                    let (t2, spe, _) = self.statistics(&x);
                    let ratio = (t2 / self.t2_limit).max(spe / self.spe_limit);
                    run = if ratio > self.batch_limit { run + 1 } else { 0 };
                    Point {
                        t2,
                        spe,
                        ratio,
                        alarm: run >= self.run,
                    }
                }
            })
            .collect()
    }

    /// The largest ratio a batch holds for `run` bins in a row (what the batch limit is
    /// calibrated on).
    fn batch_maximum(&self, a: &Aligned) -> f64 {
        let ratios: Vec<f64> = self.score(a).iter().map(|p| p.ratio).collect();
        ratios
            .windows(self.run.max(1))
            .map(|w| w.iter().copied().fold(f64::INFINITY, f64::min))
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
    }

    /// Each variable's share of bin `k`'s statistics (T² and SPE each relative to its
    /// limit, the deviation and its EWMA summed), largest first.
    pub fn contributions(&self, a: &Aligned, k: usize) -> Vec<(String, f64)> {
        let f = features(&self.reference.deviations(a), self.lambda);
        let Some(x) = f.get(k).and_then(|row| self.standardised(row)) else {
            return Vec::new();
        };
        let (_, _, t) = self.statistics(&x);
        let p = self.variables.len();
        let mut share = vec![0.0; p];
        for i in 0..x.len() {
            let fit: f64 = self.loadings.iter().zip(&t).map(|(l, t)| l[i] * t).sum();
            let t2_part: f64 = self
                .loadings
                .iter()
                .zip(t.iter().zip(&self.eigenvalues))
                .map(|(l, (t, e))| x[i] * l[i] * t / e)
                .sum();
            share[i % p] += t2_part / self.t2_limit + (x[i] - fit).powi(2) / self.spe_limit;
        }
        let mut out: Vec<(String, f64)> = self.variables.iter().cloned().zip(share).collect();
        out.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        out
    }
}
