//! Operator actions on alarms in the line pipeline: decide (pure, `alarms::command`), commit
//! the command record and the lifecycle record in one transaction, and only then change the
//! alarm book, remember the request id, and answer.

use super::batch::{log_outcome, send_reply};
use super::{now, LinePipeline};
use crate::alarms::command;
use crate::batch::command::Policy;
use pdtf_models::{Condition, Entry, RecordBody, Timestamp};
use std::collections::BTreeSet;
use std::sync::Arc;
use tracing::warn;

/// What a line that takes operator actions holds for them.
pub struct Commands {
    pub policy: Policy,
    pub max_shelve_s: u64,
    /// Tag names by `TagId` (replaced by a reload).
    pub names: Arc<[String]>,
    /// `P/cmd/reply`: a reply goes to `{reply_prefix}/{request_id}`.
    pub reply_prefix: String,
    pub replies: tokio::sync::mpsc::Sender<crate::batch::Reply>,
}

impl LinePipeline {
    /// After the detectors: each alarm record in `bodies` is followed by its lifecycle record
    /// (`AlarmBook::follow`) and by the deviation it opens or closes; open deviations list
    /// the alarms and the agent's lifecycle changes inside them.
    pub(super) fn follow_alarms(&mut self, bodies: &mut Vec<RecordBody>, at: Timestamp) {
        if !bodies.iter().any(|b| matches!(b, RecordBody::Alarm(_))) {
            return;
        }
        self.alarms.follow(bodies, &self.twin, at);
        let mut out = Vec::with_capacity(bodies.len() + 1);
        for body in bodies.drain(..) {
            let opened = match &body {
                RecordBody::Alarm(a) => self.deviations.on_alarm(a),
                _ => Vec::new(),
            };
            out.push(body);
            out.extend(
                opened
                    .into_iter()
                    .map(|d| RecordBody::Deviation(Box::new(d))),
            );
        }
        *bodies = out;
    }

    /// At each tick: deviations of a batch that ended close; the open ones' retained state
    /// (peak, time beyond the limit so far) is refreshed.
    pub(super) fn deviation_tick(&mut self, now: Timestamp, out: &mut Vec<RecordBody>) {
        if self.deviations.is_idle() {
            return;
        }
        let closed = self.deviations.on_batch(self.twin.batch_id(), now);
        out.extend(
            closed
                .into_iter()
                .map(|d| RecordBody::Deviation(Box::new(d))),
        );
        if let Some(b) = &self.board {
            for d in self.deviations.open() {
                b.deviation(d, now);
            }
        }
    }

    /// One payload received on the line's `P/cmd/alarm`.
    pub(super) async fn alarm_command(&mut self, topic: String, payload: Vec<u8>) {
        let Some(cmds) = self.alarm_commands.as_ref() else {
            warn!(line = %self.line, "An alarm command reached a line that takes none; ignored.");
            return;
        };
        let at = now();
        let known: BTreeSet<Condition> =
            self.detectors.iter().flat_map(|d| d.conditions()).collect();
        let cx = command::Context {
            book: &self.alarms,
            known: &known,
            names: &cmds.names,
            policy: &cmds.policy,
            max_shelve_s: cmds.max_shelve_s,
            twin: &self.twin,
        };
        let d = command::decide(&cx, &topic, &payload, at);
        let mut entries = vec![Entry {
            time: at,
            body: RecordBody::Command(Box::new(d.record.clone())),
        }];
        if let Some(ev) = &d.event {
            entries.push(Entry {
                time: at,
                body: RecordBody::Lifecycle(Box::new(ev.clone())),
            });
        }
        let records = self.commit(entries).await;
        let Some(seq) = records.first().map(|r| r.seq.0) else {
            return; // only a stop gives a commit up: nothing applied or answered
        };
        log_outcome(&self.line, seq, &d.record, "Alarm action");
        if let Some(ev) = &d.event {
            self.alarms.apply(ev);
            self.deviations.on_action(ev);
        }
        let first = self
            .alarms
            .seen
            .answered(&d.record.outcome, d.reply_to.as_deref(), seq);
        let (Some(id), Some(cmds)) = (&d.reply_to, &self.alarm_commands) else {
            return;
        };
        let body = command::reply(&d.record, seq, d.event.as_ref(), first.as_ref());
        send_reply(
            &self.stats,
            &self.line,
            &cmds.replies,
            &cmds.reply_prefix,
            id,
            body,
        );
    }
}
