//! Operator actions on alarms in the line pipeline: decide (pure, `alarms::command`), commit
//! the command record and the lifecycle record in one transaction, and only then change the
//! alarm book, remember the request id, and answer.

use super::batch::{log_outcome, send_reply};
use super::{now, LinePipeline};
use crate::alarms::{command, disposition};
use crate::batch::command::Policy;
use crate::batch::history;
use pdtf_connectors::Stats;
use pdtf_models::command::CommandRecord;
use pdtf_models::deviation::Deviation;
use pdtf_models::{Condition, Entry, Record, RecordBody, Timestamp};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;
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

/// A chattering condition's retained updates held back until `until`.
pub struct Held {
    until: Instant,
    /// The latest held alarm and lifecycle records (the board needs no older ones).
    records: Vec<Record>,
    merged: u64,
}

/// `tag/kind` (or `_model/name/kind`) of a condition, as the retained message's
/// `condition_id`.
fn condition_id(names: &[String], c: &Condition) -> String {
    match &c.source {
        pdtf_models::ConditionSource::Tag(t) => format!(
            "{}/{}",
            names.get(t.index()).map_or("?", String::as_str),
            c.kind.name()
        ),
        pdtf_models::ConditionSource::Model(m) => format!("_model/{m}/{}", c.kind.name()),
    }
}

impl LinePipeline {
    /// Hands a committed alarm, lifecycle or deviation record to the retained board —
    /// unless its condition chatters and was republished less than `chatter_republish` ago:
    /// then the latest such records wait for `release_held` (the first held one makes an
    /// audit record).
    pub(super) fn publish_retained(&mut self, r: &Record) {
        let Some(board) = self.board.clone() else {
            return;
        };
        let c = match &r.body {
            RecordBody::Alarm(a) => &a.condition,
            RecordBody::Lifecycle(l) => &l.condition,
            _ => return board.accept(r),
        };
        if self.chatter_republish.is_zero() {
            return board.accept(r);
        }
        let now = Instant::now();
        if let Some(h) = self.held.get_mut(c).filter(|h| now < h.until) {
            if h.merged == 0 {
                let detail = format!(
                    "{} chatters (3 or more activations in 60 s): its retained message is republished at most every {} s; every transition is still recorded",
                    condition_id(self.clocks.names(), c),
                    self.chatter_republish.as_secs()
                );
                self.pending_audits
                    .push(super::audit("alarm_republish_held", detail));
            }
            h.merged += 1;
            Stats::add(&self.stats.alarm_updates_held, 1);
            let same_kind = std::mem::discriminant(&r.body);
            h.records
                .retain(|x| std::mem::discriminant(&x.body) != same_kind);
            h.records.push(r.clone());
            return;
        }
        board.accept(r);
        if self.kpis.is_chattering(c, r.time) {
            let until = now + self.chatter_republish;
            self.held.insert(
                c.clone(),
                Held {
                    until,
                    records: Vec::new(),
                    merged: 0,
                },
            );
        }
    }

    /// At each tick: held updates whose time came go to the board (a condition still
    /// chattering is held again), with an audit record of how many were merged.
    fn release_held(&mut self, now: Timestamp, out: &mut Vec<Entry>) {
        out.append(&mut self.pending_audits);
        if self.held.is_empty() {
            return;
        }
        let at = Instant::now();
        let due: Vec<Condition> = self
            .held
            .iter()
            .filter(|(_, h)| at >= h.until)
            .map(|(c, _)| c.clone())
            .collect();
        for c in due {
            let Some(h) = self.held.remove(&c) else {
                continue;
            };
            if let Some(b) = &self.board {
                for r in &h.records {
                    b.accept(r);
                }
            }
            if h.merged == 0 {
                continue;
            }
            let detail = format!(
                "{}: {} retained updates merged into the latest",
                condition_id(self.clocks.names(), &c),
                h.merged
            );
            out.push(super::audit("alarm_republish_released", detail));
            if self.kpis.is_chattering(&c, now) {
                let until = at + self.chatter_republish;
                self.held.insert(
                    c,
                    Held {
                        until,
                        records: Vec::new(),
                        merged: 0,
                    },
                );
            }
        }
    }

    /// At each tick: the KPIs to the metrics and the HTTP API; held updates released.
    pub(super) fn kpi_tick(&mut self, now: Timestamp, out: &mut Vec<Entry>) {
        self.release_held(now, out);
        let k = self.kpis.snapshot(now);
        let figures = pdtf_connectors::stats::LineAlarms {
            rate_10min: k.rate_10min,
            peak_10min: k.peak_10min,
            chattering: k.chattering.len() as u64,
            stale: k.stale.len() as u64,
        };
        if let Ok(mut m) = self.stats.line_alarms.lock() {
            m.insert(self.line.clone(), figures);
        }
        let Some(live) = &self.kpi_live else {
            return;
        };
        let names = self.clocks.names();
        let active: u64 = self.detectors.iter().map(|d| d.active_count() as u64).sum();
        let v = serde_json::json!({
            "line": self.line,
            "rate_10min": k.rate_10min,
            "peak_10min": k.peak_10min,
            "peak_at": k.peak_at.map(pdtf_connectors::alert::rfc3339),
            "chattering": k.chattering.iter().map(|c| condition_id(names, c)).collect::<Vec<_>>(),
            "stale": k.stale.iter().map(|(c, since)| serde_json::json!({
                "condition_id": condition_id(names, c),
                "since": pdtf_connectors::alert::rfc3339(*since),
            })).collect::<Vec<_>>(),
            "active": active,
            "activations": k.activations,
            "updates_held": self.held.values().map(|h| h.merged).sum::<u64>(),
            "time": pdtf_connectors::alert::rfc3339(now),
        });
        if let Ok(mut m) = live.lock() {
            m.insert(self.line.clone(), v.to_string().into_bytes());
        }
    }

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
                RecordBody::Alarm(a) => {
                    self.kpis.on_alarm(a);
                    self.deviations.on_alarm(a)
                }
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

    /// One payload received on the line's `P/cmd/alarm` (or `P/cmd/deviation`).
    pub(super) async fn alarm_command(&mut self, topic: String, payload: Vec<u8>) {
        if self.alarm_commands.is_none() {
            warn!(line = %self.line, "An alarm command reached a line that takes none; ignored.");
            return;
        }
        if topic.ends_with("/cmd/deviation") {
            return self.deviation_command(topic, payload).await;
        }
        let Some(cmds) = self.alarm_commands.as_ref() else {
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
        self.answer(&d.record, seq, d.reply_to.as_deref(), |first| {
            command::reply(&d.record, seq, d.event.as_ref(), first)
        });
    }

    /// Remembers an operator's request id and answers on `P/cmd/reply/{id}` (`body`: given
    /// the first answer's seq when this one repeats it).
    fn answer(
        &mut self,
        record: &CommandRecord,
        seq: u64,
        reply_to: Option<&str>,
        body: impl FnOnce(Option<&Option<String>>) -> Vec<u8>,
    ) {
        let first = self.alarms.seen.answered(&record.outcome, reply_to, seq);
        let (Some(id), Some(cmds)) = (reply_to, &self.alarm_commands) else {
            return;
        };
        send_reply(
            &self.stats,
            &self.line,
            &cmds.replies,
            &cmds.reply_prefix,
            id,
            body(first.as_ref()),
        );
    }

    /// One payload received on the line's `P/cmd/deviation`: QA's disposition of a deviation,
    /// committed with the deviation's new record before it is answered.
    async fn deviation_command(&mut self, topic: String, payload: Vec<u8>) {
        let at = now();
        let found = match disposition::named(&payload) {
            Some(id) => self.find_deviation(&id).await,
            None => Ok(None),
        };
        let Some(cmds) = self.alarm_commands.as_ref() else {
            return;
        };
        let found = found.as_ref().map(Option::as_ref).map_err(String::as_str);
        let d = disposition::decide(&self.alarms, &cmds.policy, found, &topic, &payload, at);
        let mut entries = vec![Entry {
            time: at,
            body: RecordBody::Command(Box::new(d.record.clone())),
        }];
        if let Some(dev) = &d.deviation {
            entries.push(Entry {
                time: at,
                body: RecordBody::Deviation(Box::new(dev.clone())),
            });
        }
        let records = self.commit(entries).await;
        let Some(seq) = records.first().map(|r| r.seq.0) else {
            return;
        };
        log_outcome(&self.line, seq, &d.record, "Deviation disposition");
        self.answer(&d.record, seq, d.reply_to.as_deref(), |first| {
            disposition::reply(&d.record, seq, d.deviation.as_ref(), first)
        });
    }

    /// The deviation `id` as the line knows it now: open in the tracker, or its last record
    /// in the journal (found through its batch).
    fn find_deviation(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<Option<Deviation>, String>> + Send + 'static {
        let open = self.deviations.open().find(|d| d.id == id).cloned();
        let (j, line, id) = (self.journal.clone(), self.line.clone(), id.to_owned());
        async move {
            if open.is_some() {
                return Ok(open);
            }
            let Some((batch, _)) = id.rsplit_once("-D") else {
                return Ok(None);
            };
            let batch = batch.to_owned();
            let read = tokio::task::spawn_blocking(move || {
                let all = history::fold(&history::batch_records(j.as_ref(), &mut |_, _| {})?);
                let Some(b) = history::find(&all, &batch, Some(&line)) else {
                    return Ok(None);
                };
                Ok::<_, pdtf_models::JournalError>(
                    history::batch_deviations(j.as_ref(), b)?
                        .into_iter()
                        .find(|d| d.id == id),
                )
            })
            .await;
            match read {
                Ok(Ok(found)) => Ok(found),
                Ok(Err(e)) => Err(format!("the journal could not be read to find it: {e}")),
                Err(e) => Err(format!("the journal read to find it failed: {e}")),
            }
        }
    }
}
