//! Batches in the line pipeline.
//!
//! Commands: decide (pure, `batch::command`), commit the command record and the batch events
//! in one transaction, and only then apply the plan, set the batch context every later alarm
//! carries, remember the request id, and answer.
//!
//! Batch tags (`batch::tags`): a value of the batch id, phase or state tag becomes batch
//! events in the same commit as the sample itself, and the context applies to the samples
//! after it at once (a commit is retried until it succeeds, so the events are recorded with
//! the samples they describe; only a stopping agent gives a commit up).

use super::{audit, now, LinePipeline};
use crate::batch::tags::TagOutcome;
use crate::batch::{command, restore};
use pdtf_connectors::Stats;
use pdtf_models::command::{CommandOutcome, CommandRecord};
use pdtf_models::{Entry, RecordBody, Sample};
use tracing::{info, warn};

/// Logs a committed command's outcome (`what`: "Batch command", "Alarm action").
pub(super) fn log_outcome(line: &str, seq: u64, record: &CommandRecord, what: &str) {
    match &record.outcome {
        CommandOutcome::Accepted => info!(
            line,
            seq,
            command = record.command.as_deref().unwrap_or_default(),
            user = record.user.as_deref().unwrap_or_default(),
            "{what} accepted."
        ),
        CommandOutcome::Refused(why) => info!(line, seq, %why, "{what} refused."),
        CommandOutcome::Duplicate { first_seq } => {
            info!(
                line,
                seq, first_seq, "{what}: a duplicate, answered again, not applied."
            )
        }
    }
}

/// Queues a reply on `{prefix}/{id}`; a full or closed queue drops it, counted.
pub(super) fn send_reply(
    stats: &Stats,
    line: &str,
    tx: &tokio::sync::mpsc::Sender<crate::batch::Reply>,
    prefix: &str,
    id: &str,
    body: Vec<u8>,
) {
    if tx.try_send((format!("{prefix}/{id}"), body)).is_err() {
        Stats::add(&stats.command_replies_dropped, 1);
        warn!(line, request_id = %id, "Command reply not sent: the reply queue is full or closed (the command's record holds its outcome).");
    }
}

impl LinePipeline {
    /// One payload received on the line's `P/cmd/batch`.
    pub(super) async fn batch_command(&mut self, topic: String, payload: Vec<u8>) {
        let Some(b) = self.batch.as_ref() else {
            warn!(line = %self.line, "A batch command reached a line without batch tracking; ignored.");
            return;
        };
        let at = now();
        let d = command::decide(
            &b.twin, &b.recipes, &b.policy, &b.seen, &topic, &payload, at,
        );
        let mut entries = Vec::new();
        if let Some(p) = d.plan.as_ref().filter(|p| p.next != b.twin) {
            // First in the commit: the window it holds ends before this command, which a
            // restart's scan finds after it (see `batch::restore`).
            entries.push(Entry {
                time: at,
                body: restore::snapshot(&p.next, &b.seen, None, at),
            });
        }
        let command_at = entries.len();
        entries.push(Entry {
            time: at,
            body: RecordBody::Command(Box::new(d.record.clone())),
        });
        if let Some(p) = &d.plan {
            entries.extend(crate::batch::event_entries(p.events.clone(), at));
        }
        let records = self.commit(entries).await;
        let Some(seq) = records.get(command_at).map(|r| r.seq.0) else {
            // Only a stop gives up a commit: nothing was applied or answered.
            return;
        };
        let Some(b) = self.batch.as_mut() else {
            return;
        };
        log_outcome(&self.line, seq, &d.record, "Batch command");
        if let Some(p) = d.plan {
            b.twin = p.next;
            b.feed.follow(&b.twin, None);
            b.set_context(&mut self.twin);
            self.publish_batch_state();
        }
        let Some(b) = self.batch.as_mut() else {
            return;
        };
        if d.reply_to.is_some() && !matches!(d.record.outcome, CommandOutcome::Duplicate { .. }) {
            b.snap.dirty = true;
        }
        let first = b
            .seen
            .answered(&d.record.outcome, d.reply_to.as_deref(), seq);
        let (Some(id), Some(tx)) = (&d.reply_to, &b.replies) else {
            return;
        };
        let body = command::reply(&d.record, seq, &b.twin, first.as_ref());
        send_reply(&self.stats, &self.line, tx, &b.reply_prefix, id, body);
    }

    /// A sample of one of the line's batch tags: its batch events (or a note) into `out`.
    pub(super) fn batch_tag(&mut self, s: &Sample, out: &mut Vec<Entry>) {
        let Some(b) = self.batch.as_mut() else {
            return;
        };
        b.feed.on_sample(&mut b.twin, s);
        if !b.tags.watches(s.tag) {
            return;
        }
        match b.tags.on_sample(&b.twin, &b.recipes, s) {
            TagOutcome::Nothing => {}
            TagOutcome::Note(note) => {
                warn!(line = %self.line, %note, "Batch tag value not applied.");
                out.push(audit("batch_tag_ignored", note));
            }
            TagOutcome::Plan(p) => {
                let p = *p;
                out.extend(crate::batch::event_entries(p.events, s.agent_time));
                b.twin = p.next;
                b.feed.follow(&b.twin, None);
                out.push(Entry {
                    time: s.agent_time,
                    body: restore::snapshot(&b.twin, &b.seen, None, s.agent_time),
                });
                b.set_context(&mut self.twin);
                self.publish_batch_state();
            }
        }
    }

    /// The retained `P/batch` (see `batch::state`), and the HTTP API's copy; also at start,
    /// so a subscriber sees the line's state before its first batch event.
    pub fn publish_batch_state(&self) {
        let Some(b) = &self.batch else {
            return;
        };
        let agent_id = self.board.as_ref().map_or("", |a| a.agent_id());
        let payload = crate::batch::state::payload(agent_id, &b.twin, now());
        if let Some(live) = &b.live {
            if let Ok(mut m) = live.lock() {
                m.insert(b.twin.line.clone(), payload.clone());
            }
        }
        if let Some(board) = &self.board {
            board.set_retained(b.state_topic.clone(), payload);
        }
    }

    /// At each tick: every `snapshot_interval_s`, a snapshot while a batch is open or a
    /// command was answered since the last one, else the `through` cursor moves to what is
    /// committed; and a committed snapshot's cursors are written (see `batch::restore`).
    pub(super) async fn batch_tick(&mut self, at: pdtf_models::Timestamp) {
        let Some(b) = self.batch.as_mut() else {
            return;
        };
        let mut through = None;
        if b.snap.last.elapsed() >= b.snap.every {
            b.snap.last = std::time::Instant::now();
            if b.snap.dirty || b.open() || b.feed.unsaved {
                b.snap.dirty = false;
                let trajectories = b.feed.current.as_ref().filter(|_| b.feed.unsaved);
                let entry = Entry {
                    time: at,
                    body: restore::snapshot(&b.twin, &b.seen, trajectories, at),
                };
                b.feed.unsaved = false;
                self.commit(vec![entry]).await;
            } else if b.snap.pending.is_none() {
                through = Some(*self.committed.borrow());
            }
        }
        let Some(b) = self.batch.as_mut() else {
            return;
        };
        let (snap, through_key) = b.snap.cursors.clone();
        let pending = b.snap.pending.take();
        let pending_trajectories = b.snap.pending_trajectories.take();
        let mut writes: Vec<(String, u64)> = match (pending, through) {
            (Some(s), _) => vec![(snap, s), (through_key, s)],
            (None, Some(t)) => vec![(through_key, t)],
            (None, None) => vec![],
        };
        if let Some(s) = pending_trajectories {
            writes.push((b.snap.trajectory_cursor.clone(), s));
        }
        if writes.is_empty() {
            return;
        }
        let j = self.journal.clone();
        let done = tokio::task::spawn_blocking(move || {
            writes
                .iter()
                .try_for_each(|(k, v)| j.set_cursor(k, pdtf_models::Seq(*v)))
        })
        .await;
        if !matches!(done, Ok(Ok(()))) {
            warn!(line = %self.line, "Batch snapshot cursor not written; the next start scans a little further back.");
            if let Some(b) = self.batch.as_mut() {
                b.snap.pending = pending;
                b.snap.pending_trajectories = pending_trajectories;
            }
        }
    }

    /// A committed snapshot of this line: its cursors are written at the next tick.
    pub(super) fn batch_committed(&mut self, records: &[pdtf_models::Record]) {
        if let Some(b) = self.batch.as_mut() {
            let (latest, with_trajectories) = restore::snapshot_seqs(records, &b.twin.line);
            b.snap.pending = latest.or(b.snap.pending);
            b.snap.pending_trajectories = with_trajectories.or(b.snap.pending_trajectories);
        }
    }

    /// Counts the alarms raised in `bodies` in the running batch's phase.
    pub(super) fn count_batch_alarms(&mut self, bodies: &[RecordBody]) {
        let Some(b) = self.batch.as_mut() else {
            return;
        };
        for body in bodies {
            if let RecordBody::Alarm(a) = body {
                if a.is_raise() {
                    b.twin.alarm_raised();
                }
            }
        }
    }
}
