//! A line's batch state across restarts, from the journal, without reading it back.
//!
//! The pipeline records a `BatchSnapshot` (the batch twin and the window of answered
//! request ids) in the same commit as every batch event that changes the twin, at start,
//! and every `snapshot_interval_s` while a batch is open or a command was answered since the
//! last one. A command's snapshot comes first in its commit, before the command record (the
//! record's seq, which the window keeps, is known only once committed): the scan below
//! finds the command after it. Two journal cursors per line say where to look:
//!
//! - `batch/{line}/snapshot`: the seq of the line's latest snapshot known to be committed;
//! - `batch/{line}/through`: every record of this line up to it is in that snapshot (an
//!   idle line advances it instead of writing snapshots).
//!
//! A start reads the snapshot at the first cursor and then scans forward only from the later
//! of the two: a newer snapshot (a crash before its cursor was written) replaces it, and the
//! commands answered after it join the duplicate window. The scan is bounded by what one
//! snapshot interval commits (plus a crash's few records), never by the journal's size; no
//! cursor at all (a line new to batches, or a journal older than them) starts the line Idle.

use super::requests::RequestWindow;
use pdtf_models::batch::{BatchSnapshot, BatchTwin, SeenRequest, Trajectories};
use pdtf_models::command::CommandOutcome;
use pdtf_models::{Journal, JournalError, Record, RecordBody, Seq, Timestamp};
use tracing::warn;

/// The most records a start scans forward from the cursors (a safety bound: a healthy agent
/// moves the cursors every snapshot interval, so the scan is far shorter).
pub const MAX_SCAN_RECORDS: u64 = 2_000_000;
const CHUNK: usize = 10_000;

/// The journal cursors of `line`: (latest snapshot, scanned through).
pub fn cursors(line: &str) -> (String, String) {
    (
        format!("batch/{line}/snapshot"),
        format!("batch/{line}/through"),
    )
}

/// The journal cursor of `line`'s latest snapshot that holds trajectories (only the
/// periodic snapshots do: they are the large part).
pub fn trajectory_cursor(line: &str) -> String {
    format!("batch/{line}/trajectories")
}

/// What a start found for one line.
#[derive(Debug, Default)]
pub struct Found {
    /// The latest snapshot of the line, if any.
    pub snapshot: Option<BatchSnapshot>,
    /// The window: the snapshot's requests and those answered after it.
    pub seen: RequestWindow,
    /// Records scanned forward from the cursors.
    pub scanned: u64,
    /// The latest trajectories of the snapshot's batch, if a snapshot of that batch held
    /// them.
    pub trajectories: Option<Trajectories>,
}

impl Found {
    /// Nothing to restore: the line starts Idle with an empty window.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.seen.is_empty()
    }
}

/// The line's latest batch state in `journal`, whose last seq is `last`.
pub fn find(journal: &dyn Journal, line: &str, last: u64) -> Result<Found, JournalError> {
    let (snap_key, through_key) = cursors(line);
    let at = journal.cursor(&snap_key)?.0;
    let through = journal.cursor(&through_key)?.0;
    let mut found = Found::default();
    if at == 0 && through == 0 {
        return Ok(found);
    }
    if at > 0 {
        match journal.read_from(Seq(at), 1)?.pop() {
            Some(r) if r.seq.0 == at => take(&mut found, line, &r),
            _ => {
                warn!(%line, seq = at, "The batch snapshot the journal's cursor names is not there (purged?); the line's batch state starts from the records after it.")
            }
        }
        if found.snapshot.is_none() {
            warn!(%line, seq = at, "The record the batch snapshot cursor names is not a snapshot of this line.");
        }
    }
    let mut from = at.max(through) + 1;
    while from <= last && found.scanned < MAX_SCAN_RECORDS {
        let chunk = journal.read_from(Seq(from), CHUNK)?;
        let Some(end) = chunk.last().map(|r| r.seq.0) else {
            break;
        };
        found.scanned += chunk.len() as u64;
        for r in &chunk {
            take(&mut found, line, r);
        }
        from = end + 1;
    }
    if from <= last {
        warn!(%line, scanned = found.scanned, "The batch state scan stopped at its bound before the journal's end; later commands may be missing from the duplicate window.");
    }
    let key = |t: &BatchTwin| t.batch.as_ref().map(|b| (b.id.clone(), b.started));
    let wanted = found.snapshot.as_ref().and_then(|s| key(&s.twin));
    if found.trajectories.is_none() && wanted.is_some() {
        let at = journal.cursor(&trajectory_cursor(line))?.0;
        if at > 0 {
            if let Some(RecordBody::BatchSnapshot(s)) = journal
                .read_from(Seq(at), 1)?
                .pop()
                .filter(|r| r.seq.0 == at)
                .map(|r| r.body)
            {
                if s.twin.line == line && key(&s.twin) == wanted {
                    found.trajectories = s.trajectories;
                }
            }
        }
    }
    Ok(found)
}

fn take(found: &mut Found, line: &str, r: &Record) {
    match &r.body {
        RecordBody::BatchSnapshot(s) if s.twin.line == line => {
            found.seen = RequestWindow::from_vec(s.requests.clone());
            let same_batch = found.snapshot.as_ref().is_some_and(|old| {
                old.twin.batch.as_ref().map(|b| (&b.id, b.started))
                    == s.twin.batch.as_ref().map(|b| (&b.id, b.started))
            });
            if s.trajectories.is_some() {
                found.trajectories = s.trajectories.clone();
            } else if !same_batch {
                found.trajectories = None;
            }
            let mut s = (**s).clone();
            s.trajectories = None;
            found.snapshot = Some(s);
        }
        RecordBody::Command(c) if c.line == line => {
            let refused = match &c.outcome {
                CommandOutcome::Accepted => None,
                CommandOutcome::Refused(why) => Some(why.clone()),
                CommandOutcome::Duplicate { .. } => return,
            };
            if let Some(id) = &c.request_id {
                found.seen.insert(SeenRequest {
                    request_id: id.clone(),
                    seq: r.seq.0,
                    refused,
                });
            }
        }
        _ => {}
    }
}

/// The snapshot record of `twin` with `seen` (and `trajectories`, in a periodic one), taken
/// `at`.
pub fn snapshot(
    twin: &BatchTwin,
    seen: &RequestWindow,
    trajectories: Option<&Trajectories>,
    at: Timestamp,
) -> RecordBody {
    RecordBody::BatchSnapshot(Box::new(BatchSnapshot {
        twin: twin.clone(),
        trajectories: trajectories.cloned(),
        requests: seen.to_vec(),
        at,
    }))
}

/// The seqs of the last snapshot of `line` among `records`, and of the last one holding
/// trajectories.
pub fn snapshot_seqs(records: &[Record], line: &str) -> (Option<u64>, Option<u64>) {
    let mut out = (None, None);
    for r in records.iter().rev() {
        if let RecordBody::BatchSnapshot(s) = &r.body {
            if s.twin.line == line {
                out.0 = out.0.or(Some(r.seq.0));
                if s.trajectories.is_some() {
                    out.1 = out.1.or(Some(r.seq.0));
                }
            }
        }
        if out.0.is_some() && out.1.is_some() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests;
