//! `pdtf-agent model train|evaluate`: historical batches from a folder (one CSV per batch and
//! a `labels.json`), the model spec (TOML), and model files (versioned, checksummed JSON).
//! The numerics are `pdtf_models::analytics`.
//!
//! The batch folder's format (the IndPenSim reference set is the first example):
//! - one CSV per batch, a header row naming the columns; the spec's `maturity` column (time in
//!   batch) and every one of its `variables` must be there; an empty cell or `NaN` is missing;
//! - `labels.json`: `{"batches": [{"batch_id": "…", "file": "batch_000.csv", "faulty": false,
//!   "fault_type": null, "fault_start_h": null, "<quality attribute>": 31.5, …}, …]}`; a
//!   batch's quality attributes are the keys the spec's `[[quality]]` names.
//!
//! A model file is one header line, `pdtf-model <format> sha256=<hex>`, and the model as JSON;
//! the digest covers the JSON, so a changed or truncated file is refused at load.

use pdtf_models::analytics::evaluate::{Model, MODEL_FORMAT};
use pdtf_models::analytics::{BatchSeries, Fault, Spec};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Reads and checks a model spec; every problem listed, each naming its key.
pub fn read_spec(path: &Path) -> Result<Spec, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the spec: {e}", path.display()))?;
    let spec: Spec =
        toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
    let problems = spec.problems();
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(problems
            .iter()
            .map(|p| format!("{}: {p}", path.display()))
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

#[derive(Deserialize)]
struct Labels {
    batches: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// Every batch `labels.json` in `dir` lists, with the spec's variables and quality results.
/// `progress` hears each file read.
pub fn read_batches(
    spec: &Spec,
    dir: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<BatchSeries>, String> {
    let labels_path = dir.join("labels.json");
    let text = std::fs::read_to_string(&labels_path)
        .map_err(|e| format!("{}: cannot read: {e}", labels_path.display()))?;
    let labels: Labels = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not the labels format: {e}", labels_path.display()))?;
    let total = labels.batches.len();
    let mut out = Vec::with_capacity(total);
    for (i, l) in labels.batches.iter().enumerate() {
        let s = |k: &str| l.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let n = |k: &str| l.get(k).and_then(serde_json::Value::as_f64);
        let id = s("batch_id").ok_or_else(|| {
            format!(
                "{}: batches[{i}].batch_id is missing",
                labels_path.display()
            )
        })?;
        let file = s("file").unwrap_or_else(|| format!("{id}.csv"));
        let (maturity, values) = read_csv(spec, &dir.join(&file))?;
        let faulty = l
            .get("faulty")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        let fault = faulty.then(|| Fault {
            kind: s("fault_type").unwrap_or_else(|| "unknown".into()),
            start: n("fault_start_h").unwrap_or(0.0),
        });
        out.push(BatchSeries {
            id,
            maturity,
            values,
            quality: spec.quality.iter().map(|q| n(&q.name)).collect(),
            fault,
        });
        progress(i + 1, total);
    }
    Ok(out)
}

fn read_csv(spec: &Spec, path: &Path) -> Result<(Vec<f64>, Vec<Vec<f64>>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| format!("{}: empty", path.display()))?
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("{}: no column {name:?}", path.display()))
    };
    let m = col(&spec.maturity)?;
    let cols: Vec<usize> = spec
        .variables
        .iter()
        .map(|v| col(v))
        .collect::<Result<_, _>>()?;
    let mut maturity = Vec::new();
    let mut values = vec![Vec::new(); cols.len()];
    for (row, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').collect();
        let num = |c: usize| {
            cells
                .get(c)
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map_or(Ok(f64::NAN), |s| s.parse::<f64>())
        };
        let t = num(m).map_err(|e| {
            format!(
                "{}: row {} column {}: {e}",
                path.display(),
                row + 2,
                spec.maturity
            )
        })?;
        maturity.push(t);
        for (j, &c) in cols.iter().enumerate() {
            // A cell that is not a number is missing (counted as such by the model), not fatal.
            values[j].push(num(c).unwrap_or(f64::NAN));
        }
    }
    Ok((maturity, values))
}

/// Writes `model` to `path` with its header and digest; returns the digest.
pub fn write_model(model: &Model, path: &Path) -> Result<String, String> {
    let body = serde_json::to_string(model).map_err(|e| format!("cannot encode: {e}"))?;
    let digest = hex(&Sha256::digest(body.as_bytes()));
    let text = format!("pdtf-model {MODEL_FORMAT} sha256={digest}\n{body}\n");
    std::fs::write(path, text).map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    Ok(digest)
}

/// Reads a model file, refusing one whose digest or format does not match; the model and
/// its digest.
pub fn read_model(path: &Path) -> Result<(Model, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the model: {e}", path.display()))?;
    let (head, body) = text
        .split_once('\n')
        .ok_or_else(|| format!("{}: not a model file (no header line)", path.display()))?;
    let body = body.trim_end_matches('\n');
    let mut parts = head.split(' ');
    let (Some("pdtf-model"), Some(format), Some(digest)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "{}: not a model file (header {head:?})",
            path.display()
        ));
    };
    if format != MODEL_FORMAT.to_string() {
        return Err(format!(
            "{}: model format {format}, this agent reads {MODEL_FORMAT}",
            path.display()
        ));
    }
    let want = digest.trim_start_matches("sha256=");
    let got = hex(&Sha256::digest(body.as_bytes()));
    if want != got {
        return Err(format!(
            "{}: the model's SHA-256 is {got}, its header says {want}: the file was changed or cut short",
            path.display()
        ));
    }
    let model: Model = serde_json::from_str(body)
        .map_err(|e| format!("{}: the model does not decode: {e}", path.display()))?;
    Ok((model, got))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where `evaluate` writes its JSON by default: beside the model.
pub fn default_report(model: &Path) -> PathBuf {
    model.with_extension("evaluation.json")
}

#[cfg(test)]
mod tests;

/// The cross-validation or evaluation figures as the table the README quotes.
pub fn summary_table(s: &pdtf_models::analytics::evaluate::Summary) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    let _ = writeln!(
        t,
        "faulty batches detected: {} of {} ({:.0} %)",
        s.faulty_detected,
        s.faulty_batches,
        pct(s.faulty_detected, s.faulty_batches)
    );
    for (kind, (n, found, delay)) in &s.by_fault {
        let _ = writeln!(
            t,
            "  {kind:<28} {found} of {n}, median delay {}",
            delay.map_or("-".into(), |d| format!("{d:.1} h"))
        );
    }
    let _ = writeln!(
        t,
        "normal batches with any alarm: {} of {} ({:.0} %)",
        s.normal_with_alarm,
        s.normal_batches,
        pct(s.normal_with_alarm, s.normal_batches)
    );
    let _ = writeln!(
        t,
        "median detection delay, process faults (not *_drift): {}",
        s.median_delay_h_process
            .map_or("-".into(), |d| format!("{d:.2} h"))
    );
    for f in &s.forecasts {
        let _ = writeln!(
            t,
            "forecast {} at {:.0} %: Q² {:.2}, RMSE {:.3}, interval coverage {:.0} % ({} batches)",
            f.attribute,
            f.checkpoint * 100.0,
            f.q2,
            f.rmse,
            f.coverage * 100.0,
            f.batches
        );
    }
    t
}

/// One line per judged batch: its fault and onset, first alarm, detection, top contributors.
pub fn batch_line(r: &pdtf_models::analytics::evaluate::BatchResult) -> String {
    let h = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} h"));
    let top: Vec<String> = r
        .contributions
        .iter()
        .map(|(v, c)| format!("{v} {c:.1}"))
        .collect();
    format!(
        "{} {} onset {} first alarm {} detected {}{} [{}]",
        r.id,
        r.fault.as_deref().unwrap_or("normal"),
        h(r.onset_h),
        h(r.first_alarm_h),
        h(r.detected_h),
        if r.false_alarm { " FALSE ALARM" } else { "" },
        top.join(", ")
    )
}
