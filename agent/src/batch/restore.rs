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
use pdtf_models::batch::{BatchSnapshot, BatchTwin, SeenRequest};
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

/// What a start found for one line.
#[derive(Debug, Default)]
pub struct Found {
    /// The latest snapshot of the line, if any.
    pub snapshot: Option<BatchSnapshot>,
    /// The window: the snapshot's requests and those answered after it.
    pub seen: RequestWindow,
    /// Records scanned forward from the cursors.
    pub scanned: u64,
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
    Ok(found)
}

fn take(found: &mut Found, line: &str, r: &Record) {
    match &r.body {
        RecordBody::BatchSnapshot(s) if s.twin.line == line => {
            found.seen = RequestWindow::from_vec(s.requests.clone());
            found.snapshot = Some((**s).clone());
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

/// The snapshot record of `twin` with `seen`, taken `at`.
pub fn snapshot(twin: &BatchTwin, seen: &RequestWindow, at: Timestamp) -> RecordBody {
    RecordBody::BatchSnapshot(Box::new(BatchSnapshot {
        twin: twin.clone(),
        trajectories: None,
        requests: seen.to_vec(),
        at,
    }))
}

/// The seq of the last snapshot of `line` among `records`.
pub fn snapshot_seq(records: &[Record], line: &str) -> Option<u64> {
    records.iter().rev().find_map(|r| match &r.body {
        RecordBody::BatchSnapshot(s) if s.twin.line == line => Some(r.seq.0),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
