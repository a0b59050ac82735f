//! Batches read back from the journal, for the HTTP API (`/batches`, a running agent) and
//! `pdtf-agent batch list|show|export` (a stopped one).
//!
//! A batch is folded from its batch records alone (start, state and phase changes, material
//! charges, downtime, the end with its summary); its alarms are the alarm records that carry
//! its batch id between its first and last record, its deviations the deviation records
//! with its batch id (each as its latest record says). Where the engine keeps a batch index
//! (redb: `batch_events`, `batch_alarms`, written with the records) only those records are
//! read; otherwise (sled, or records older than the index) the journal is scanned, with
//! progress for the CLI.

use pdtf_connectors::alert::rfc3339;
use pdtf_models::batch::{BatchChange, Charge, RecipeRef, Summary};
use pdtf_models::deviation::Deviation;
use pdtf_models::{Journal, JournalError, Record, RecordBody, Seq, Timestamp};
use serde::Serialize;
use serde_json::{json, Value};

/// Records read per step of a scan.
const CHUNK: usize = 10_000;
/// The most alarm records one batch view lists (the count is always exact).
pub const MAX_ALARMS_LISTED: usize = 10_000;

/// One phase as the batch records show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseView {
    pub name: String,
    pub start: String,
    pub end: Option<String>,
}

/// One batch as its records show it. Times are RFC 3339; `summary` is the end-of-batch
/// summary record's content as stored (its times are Unix nanoseconds, as in every record).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchView {
    pub line: String,
    pub batch_id: String,
    /// `None` when the batch's start record was purged.
    pub recipe: Option<RecipeRef>,
    pub started: String,
    pub ended: Option<String>,
    pub state: String,
    pub phase: Option<String>,
    pub phases: Vec<PhaseView>,
    pub materials: Vec<Charge>,
    pub downtime_ms: u64,
    /// Batch records of this batch, and the seqs of its first and last.
    pub events: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub summary: Option<Summary>,
    #[serde(skip)]
    started_at: Timestamp,
}

impl BatchView {
    pub fn is_open(&self) -> bool {
        self.ended.is_none()
    }

    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }
}

/// Which batches to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub line: Option<String>,
    /// Batches that ran at some time in `[from, to]`.
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

impl Filter {
    pub fn keeps(&self, b: &BatchView) -> bool {
        let ended = b
            .summary
            .as_ref()
            .map(|s| s.ended)
            .unwrap_or(Timestamp(i64::MAX));
        self.line.as_ref().is_none_or(|l| *l == b.line)
            && self.to.is_none_or(|t| b.started_at <= t)
            && self.from.is_none_or(|f| ended >= f || b.is_open())
    }
}

/// Folds batch records (in seq order) into batches, oldest first.
pub fn fold<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<BatchView> {
    let mut out: Vec<BatchView> = Vec::new();
    for r in records {
        let RecordBody::Batch(e) = &r.body else {
            continue;
        };
        let open = out
            .iter()
            .rposition(|b| b.line == e.line && b.batch_id == e.batch_id);
        let i = match (&e.change, open) {
            (BatchChange::Started { .. }, _) | (_, None) => {
                out.push(BatchView {
                    line: e.line.clone(),
                    batch_id: e.batch_id.clone(),
                    recipe: None,
                    started: rfc3339(e.time),
                    ended: None,
                    state: String::new(),
                    phase: None,
                    phases: Vec::new(),
                    materials: Vec::new(),
                    downtime_ms: 0,
                    events: 0,
                    first_seq: r.seq.0,
                    last_seq: r.seq.0,
                    summary: None,
                    started_at: e.time,
                });
                out.len() - 1
            }
            (_, Some(i)) => i,
        };
        let b = &mut out[i];
        b.events += 1;
        b.last_seq = r.seq.0;
        if b.summary.is_some() {
            continue; // the reset after the end: the batch keeps its outcome
        }
        b.state = e.state.name().to_owned();
        if b.phase != e.phase {
            if let Some(p) = b.phases.last_mut().filter(|p| p.end.is_none()) {
                p.end = Some(rfc3339(e.time));
            }
            if let Some(name) = &e.phase {
                b.phases.push(PhaseView {
                    name: name.clone(),
                    start: rfc3339(e.time),
                    end: None,
                });
            }
            b.phase = e.phase.clone();
        }
        match &e.change {
            BatchChange::Started { recipe } => b.recipe = Some(recipe.clone()),
            BatchChange::Material(c) => b.materials.push(c.clone()),
            BatchChange::Downtime { from, to } => b.downtime_ms += to.millis_since(*from),
            BatchChange::Ended(s) => {
                b.ended = Some(rfc3339(e.time));
                b.summary = Some((**s).clone());
            }
            _ => {}
        }
    }
    out
}

/// Every batch record in the journal, in seq order. `progress(done, total)` is called
/// during a scan (records read of the journal's seq span).
pub fn batch_records(
    j: &dyn Journal,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<Record>, JournalError> {
    let (first, last) = (j.first_seq()?.0, j.last_seq()?.0);
    let keep = |r: &Record| matches!(r.body, RecordBody::Batch(_));
    indexed_or_scanned(j, false, first, last, &keep, usize::MAX, progress)
}

/// The alarm records inside batch `b` (by its batch id, between its first and last record,
/// or to the journal's end while it is open), at most `MAX_ALARMS_LISTED`, and their count.
pub fn batch_alarms(j: &dyn Journal, b: &BatchView) -> Result<(Vec<Record>, u64), JournalError> {
    let to = if b.is_open() {
        j.last_seq()?.0
    } else {
        b.last_seq
    };
    let id = b.batch_id.as_str();
    let keep =
        |r: &Record| matches!(&r.body, RecordBody::Alarm(a) if a.batch_id.as_deref() == Some(id));
    let mut all = indexed_or_scanned(j, true, b.first_seq, to, &keep, usize::MAX, &mut |_, _| {})?;
    let count = all.len() as u64;
    all.truncate(MAX_ALARMS_LISTED);
    Ok((all, count))
}

/// The deviations of batch `b`, each as its latest record says, in the order they opened.
pub fn batch_deviations(j: &dyn Journal, b: &BatchView) -> Result<Vec<Deviation>, JournalError> {
    // A deviation open at the batch's end closes at the next tick, after the end record.
    let to = j.last_seq()?.0;
    let id = b.batch_id.as_str();
    let keep = |r: &Record| matches!(&r.body, RecordBody::Deviation(d) if d.batch_id == id && d.line == b.line);
    let found = indexed_or_scanned(j, true, b.first_seq, to, &keep, usize::MAX, &mut |_, _| {})?;
    let mut out: Vec<Deviation> = Vec::new();
    for r in found {
        let RecordBody::Deviation(d) = r.body else {
            continue;
        };
        match out.iter_mut().find(|x| x.id == d.id) {
            Some(x) => *x = *d,
            None => out.push(*d),
        }
    }
    Ok(out)
}

/// Records in `[from, to]` that `keep` keeps: from the engine's batch index (`alarms`: the
/// alarm one) where it reaches, by scanning where it does not.
fn indexed_or_scanned(
    j: &dyn Journal,
    alarms: bool,
    from: u64,
    to: u64,
    keep: &dyn Fn(&Record) -> bool,
    max: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<Record>, JournalError> {
    let mut out = Vec::new();
    let since = match j.batch_index(alarms, Seq(from), 0)? {
        Some((since, _)) => since.0.max(from),
        None => to + 1,
    };
    // Before the index: scan.
    let mut at = from;
    let total = to.saturating_sub(from) + 1;
    while at < since && at <= to && out.len() < max {
        let chunk = j.read_from(Seq(at), CHUNK)?;
        let Some(end) = chunk.last().map(|r| r.seq.0) else {
            break;
        };
        out.extend(
            chunk
                .into_iter()
                .filter(|r| r.seq.0 < since && r.seq.0 <= to && keep(r)),
        );
        at = end + 1;
        progress(at.saturating_sub(from).min(total), total);
    }
    // From the index: read each indexed record.
    let mut next = since;
    while next <= to && out.len() < max {
        let Some((_, seqs)) = j.batch_index(alarms, Seq(next), CHUNK)? else {
            break;
        };
        let Some(end) = seqs.last().map(|s| s.0) else {
            break;
        };
        for s in seqs.into_iter().filter(|s| s.0 <= to) {
            if let Some(r) = j.read_from(s, 1)?.pop().filter(|r| r.seq == s) {
                if keep(&r) {
                    out.push(r);
                }
            }
        }
        next = end + 1;
    }
    out.truncate(max);
    Ok(out)
}

/// The deviations as `/batches/{id}/deviations` lists them (`now` for the open ones'
/// duration so far).
pub fn deviations_json(deviations: &[Deviation], now: Timestamp) -> Value {
    Value::Array(
        deviations
            .iter()
            .map(|d| {
                let bytes = pdtf_connectors::alert::deviation_payload("", None, d, now);
                let mut v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                if let Some(o) = v.as_object_mut() {
                    o.remove("agent_id");
                    o.remove("tag");
                }
                v
            })
            .collect(),
    )
}

/// `batch` with its alarms and deviations, as `/batches/{id}` and `batch show --format json`
/// give it.
pub fn detail(
    b: &BatchView,
    alarms: &[Record],
    alarm_count: u64,
    deviations: &[Deviation],
) -> Value {
    let mut v = serde_json::to_value(b).unwrap_or(Value::Null);
    v["alarm_count"] = json!(alarm_count);
    v["deviations"] = deviations_json(deviations, crate::pipeline::now());
    v["alarms"] = Value::Array(
        alarms
            .iter()
            .filter_map(|r| match &r.body {
                RecordBody::Alarm(a) => Some(json!({
                    "seq": r.seq.0,
                    "time": rfc3339(a.time),
                    "condition": a.condition,
                    "state": a.state,
                    "value": a.value,
                    "limit": a.limit,
                    "severity": a.severity,
                    "phase": a.phase,
                })),
                _ => None,
            })
            .collect(),
    );
    v
}

/// The latest batch with id `id` (and on `line`, if given).
pub fn find<'a>(all: &'a [BatchView], id: &str, line: Option<&str>) -> Option<&'a BatchView> {
    all.iter()
        .rev()
        .find(|b| b.batch_id == id && line.is_none_or(|l| l == b.line))
}

#[cfg(test)]
mod tests;
