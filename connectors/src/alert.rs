//! Alert publisher: current alarm state per *condition* as retained JSON, so SCADA sees the
//! state the moment it subscribes. Topics under `pdtf/{site}/{area}/{line}/alarms/`:
//! `{tag}` for a tag's limit alarm, `{tag}/{kind}` for its other conditions (`rate`,
//! `stale`, …), `_model/{model}/{kind}` for a model's; two conditions on one tag never share
//! a topic.
//!
//! Policy: the board keeps only the *latest* state per topic (retained semantics need nothing
//! more; the full history is in the journal and upstream). Updating the board never blocks the
//! pipeline. On every (re)connect all entries are published again, so a broker that lost its
//! retained store is repaired.

use crate::mqtt::{link_down, link_up, Backoff, BrokerConfig, Link, LinkError};
use crate::Stats;
use pdtf_models::deviation::Deviation;
use pdtf_models::lifecycle::{AlarmStatus, Lifecycle, LifecycleEvent, Shelf};
use pdtf_models::{
    AlarmEvent, AlarmState, Condition, ConditionKind, ConditionSource, Record, RecordBody,
    Timestamp,
};
use rumqttc::{Event, Packet, QoS};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The operator's text for an alarm: what, how far, against which limit.
fn message(name: &str, unit: &str, ev: &AlarmEvent) -> String {
    let what = match (ev.condition.kind, ev.state) {
        (ConditionKind::Limit, AlarmState::Active(l)) => format!("{} limit", l.name()),
        (k, _) => k.name().to_owned(),
    };
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    let limit = if ev.limit.is_finite() {
        format!(" (limit {}{unit})", ev.limit)
    } else {
        String::new()
    };
    match ev.state {
        AlarmState::Active(_) => format!("{name} {what} alarm: {}{unit}{limit}", ev.value),
        AlarmState::Inactive => format!("{name} {what} returned to normal: {}{unit}", ev.value),
    }
}

/// The JSON of a deviation (`P/deviations/{id}`, the HTTP API): the record, with times as
/// RFC 3339, the tag's name, the status and the duration so far.
pub fn deviation_payload(
    agent_id: &str,
    tag: Option<String>,
    d: &Deviation,
    now: Timestamp,
) -> Vec<u8> {
    json!({
        "agent_id": agent_id,
        "id": d.id,
        "line": d.line,
        "batch_id": d.batch_id,
        "phase": d.phase,
        "tag": tag,
        "tag_id": d.condition.tag().map(|t| t.0),
        "condition": d.condition.kind.name(),
        "level": d.level.name(),
        "limit": d.limit,
        "status": if d.is_open() { "open" } else { "closed" },
        "disposition": d.disposition(),
        "start": rfc3339(d.start),
        "end": d.end.map(rfc3339),
        "duration_s": d.duration_ms(now) as f64 / 1000.0,
        "beyond_limit_s": d.beyond_limit_ms as f64 / 1000.0,
        "peak": d.peak,
        "peak_at": rfc3339(d.peak_at),
        "alarms": d.alarms.iter().map(|a| json!({
            "time": rfc3339(a.time), "condition": a.condition, "state": a.state, "value": a.value,
        })).collect::<Vec<_>>(),
        "actions": d.actions.iter().map(|a| json!({
            "time": rfc3339(a.time), "condition": a.condition, "action": a.action,
            "user": a.user, "reason": a.reason,
        })).collect::<Vec<_>>(),
        "unlisted": d.unlisted,
        "closed_by": d.closed_by,
        "dispositions": d.dispositions.iter().map(|x| json!({
            "time": rfc3339(x.time), "decision": x.decision, "user": x.user,
            "reason": x.reason, "request_id": x.request_id,
        })).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes()
}

pub fn rfc3339(t: Timestamp) -> String {
    humantime::format_rfc3339_millis(t.to_system()).to_string()
}

#[derive(Default)]
struct Board {
    /// topic → retained payload.
    entries: BTreeMap<String, Vec<u8>>,
    dirty: BTreeSet<String>,
    shown: BTreeMap<Condition, Shown>,
}

/// What a condition's retained message is made of: its last alarm record (the process
/// state) and its last lifecycle record, each with its seq, and when it was raised.
#[derive(Default)]
struct Shown {
    alarm: Option<(u64, AlarmEvent)>,
    lifecycle: Option<(u64, LifecycleEvent)>,
    raised_at: Option<Timestamp>,
}

pub struct AlertBoard {
    agent_id: String,
    prefix: String,
    tags: crate::Shared<[(String, String)]>,
    /// The topic prefix of each `TagId` on an agent with several lines (empty: `prefix`).
    prefixes: crate::Shared<[String]>,
    inner: Mutex<Board>,
    changed: Notify,
}

impl AlertBoard {
    /// `prefix` is `pdtf/{site}/{area}/{line}`; `tags[i]` is (name, unit) of `TagId(i)`.
    pub fn new(agent_id: String, prefix: String, tags: Vec<(String, String)>) -> Self {
        Self {
            agent_id,
            prefix,
            tags: crate::Shared::new(tags.into()),
            prefixes: crate::Shared::new(Vec::new().into()),
            inner: Mutex::new(Board::default()),
            changed: Notify::new(),
        }
    }

    /// The tag map changed (a reload): (name, unit) of every `TagId`, as in `new`.
    pub fn set_tags(&self, tags: Vec<(String, String)>) {
        self.tags.set(tags.into());
    }

    /// Several lines: the topic prefix (`pdtf/{site}/{area}/{line}`) of each `TagId`'s line;
    /// an id past the end uses the agent's prefix.
    pub fn set_prefixes(&self, prefixes: Vec<String>) {
        self.prefixes.set(prefixes.into());
    }

    /// The retained topic of a condition, and the (name, unit) of what it watches.
    fn topic(&self, c: &Condition) -> Option<(String, String, String)> {
        let (name, unit) = match &c.source {
            ConditionSource::Tag(t) => self.tags.get().get(t.index())?.clone(),
            ConditionSource::Model(m) => (m.clone(), String::new()),
        };
        let prefixes = self.prefixes.get();
        let prefix = match &c.source {
            ConditionSource::Tag(t) => prefixes.get(t.index()).unwrap_or(&self.prefix),
            ConditionSource::Model(_) => &self.prefix,
        };
        let topic = match (&c.source, c.kind) {
            (ConditionSource::Tag(_), ConditionKind::Limit) => format!("{prefix}/alarms/{name}"),
            (ConditionSource::Tag(_), k) => format!("{prefix}/alarms/{name}/{}", k.name()),
            (ConditionSource::Model(_), k) => {
                format!("{prefix}/alarms/_model/{name}/{}", k.name())
            }
        };
        Some((topic, name, unit))
    }

    /// Takes an *accepted* record; alarm and lifecycle records update the retained state of
    /// their condition (an older record than the one shown, as a start's restore may hand
    /// over, changes nothing); a deviation record its `deviations/{id}` topic.
    pub fn accept(&self, record: &Record) {
        let seq = record.seq.0;
        let condition = match &record.body {
            RecordBody::Alarm(ev) => &ev.condition,
            RecordBody::Lifecycle(l) => &l.condition,
            RecordBody::Deviation(d) => return self.deviation(d, record.time),
            _ => return,
        };
        let Some((topic, name, unit)) = self.topic(condition) else {
            return;
        };
        let mut b = self.inner.lock().expect("alert board lock poisoned");
        let shown = b.shown.entry(condition.clone()).or_default();
        let newer = |at: Option<u64>| at.is_none_or(|s| s < seq);
        match &record.body {
            RecordBody::Alarm(ev) if newer(shown.alarm.as_ref().map(|a| a.0)) => {
                shown.raised_at = match ev.state {
                    AlarmState::Active(_) => Some(shown.raised_at.unwrap_or(ev.time)),
                    AlarmState::Inactive => None,
                };
                shown.alarm = Some((seq, ev.clone()));
            }
            RecordBody::Lifecycle(l) if newer(shown.lifecycle.as_ref().map(|l| l.0)) => {
                shown.lifecycle = Some((seq, (**l).clone()));
            }
            _ => return,
        }
        let Some(payload) = self.payload(&name, &unit, shown) else {
            return; // a lifecycle without its alarm yet
        };
        b.entries.insert(topic.clone(), payload);
        b.dirty.insert(topic);
        drop(b);
        self.changed.notify_one();
    }

    fn payload(&self, name: &str, unit: &str, shown: &Shown) -> Option<Vec<u8>> {
        let (seq, ev) = shown.alarm.as_ref()?;
        let (state, level, cleared_at) = match ev.state {
            AlarmState::Active(l) => ("active", Some(l.name()), None),
            AlarmState::Inactive => ("inactive", None, Some(rfc3339(ev.time))),
        };
        let lifecycle = shown.lifecycle.as_ref().map(|(_, l)| &l.lifecycle);
        // Before any lifecycle record (an older journal): what the process state implies.
        let status = lifecycle.map_or(
            if ev.is_raise() {
                AlarmStatus::UnackActive
            } else {
                AlarmStatus::Normal
            },
            |l| l.status,
        );
        let shelved_until = match lifecycle.and_then(|l| l.shelved) {
            Some(Shelf::Until(t)) => Some(rfc3339(t)),
            _ => None,
        };
        let last_action = shown
            .lifecycle
            .as_ref()
            .filter(|(_, l)| l.user.is_some())
            .map(|(s, l)| {
                json!({"action": l.input.name(), "user": l.user, "reason": l.reason,
                       "time": rfc3339(l.time), "seq": s})
            });
        let kind = ev.condition.kind.name();
        let condition_id = match &ev.condition.source {
            ConditionSource::Tag(_) => format!("{name}/{kind}"),
            ConditionSource::Model(_) => format!("_model/{name}/{kind}"),
        };
        let event_id = shown
            .lifecycle
            .as_ref()
            .map_or(*seq, |(s, _)| (*s).max(*seq));
        let flag = |f: fn(&Lifecycle) -> bool| lifecycle.is_some_and(f);
        let annunciated = lifecycle.map_or(status != AlarmStatus::Normal, Lifecycle::annunciated);
        Some(
            json!({
                "agent_id": self.agent_id,
                "tag": name,
                "unit": unit,
                "condition": kind,
                "condition_id": condition_id,
                "event_id": event_id,
                "state": state,
                "level": level,
                "previous_level": ev.previous.map(|l| l.name()),
                "severity": ev.severity,
                "value": ev.value,
                "limit": if ev.limit.is_finite() { Some(ev.limit) } else { None },
                "message": message(name, unit, ev),
                "time": rfc3339(ev.time),
                "raised_at": rfc3339(shown.raised_at.unwrap_or(ev.time)),
                "cleared_at": cleared_at,
                "alarm_state": status.name(),
                "acked": status.acknowledged(),
                "latched": flag(|l| l.latched),
                "shelved": flag(|l| l.shelved.is_some()),
                "shelved_until": shelved_until,
                "suppressed": flag(|l| l.suppressed),
                "out_of_service": flag(|l| l.out_of_service),
                "annunciated": annunciated,
                "last_action": last_action,
                "batch_id": ev.batch_id,
                "phase": ev.phase,
                "seq": seq,
            })
            .to_string()
            .into_bytes(),
        )
    }

    /// A GMP deviation as it stands, retained on `{line prefix}/deviations/{id}` while open
    /// (republished as it grows); when it closes the retained message is deleted (an empty
    /// retained payload) — the closed deviation is in the records, on `P/events` and in the
    /// HTTP API, awaiting QA's disposition.
    pub fn deviation(&self, d: &Deviation, now: Timestamp) {
        let prefixes = self.prefixes.get();
        let prefix = d
            .condition
            .tag()
            .and_then(|t| prefixes.get(t.index()))
            .unwrap_or(&self.prefix);
        let topic = format!("{prefix}/deviations/{}", d.id);
        let name = match &d.condition.source {
            ConditionSource::Tag(t) => self.tags.get().get(t.index()).map(|(n, _)| n.clone()),
            ConditionSource::Model(m) => Some(m.clone()),
        };
        let payload = if d.is_open() {
            deviation_payload(&self.agent_id, name, d, now)
        } else {
            Vec::new()
        };
        self.set_retained(topic, payload);
    }

    /// A condition of the agent itself (e.g. `journal_full`), retained on
    /// `.../alarms/_agent/{name}` with critical severity while active.
    pub fn set_system(&self, name: &str, active: bool, detail: &str, time: Timestamp) {
        let topic = format!("{}/alarms/_agent/{name}", self.prefix);
        let payload = json!({
            "agent_id": self.agent_id,
            "tag": format!("_agent/{name}"),
            "state": if active { "active" } else { "inactive" },
            "severity": if active { 1000 } else { 0 },
            "time": rfc3339(time),
            "detail": detail,
        })
        .to_string()
        .into_bytes();
        self.set_retained(topic, payload);
    }

    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// Any other retained state (e.g. a line's `P/batch`): kept, published on change and
    /// again after every reconnect, like the alarm states.
    pub fn set_retained(&self, topic: String, payload: Vec<u8>) {
        let mut b = self.inner.lock().expect("alert board lock poisoned");
        b.entries.insert(topic.clone(), payload);
        b.dirty.insert(topic);
        drop(b);
        self.changed.notify_one();
    }

    /// What changed since the last call; an empty payload (a deletion) is handed out once
    /// and forgotten.
    fn take_dirty(&self) -> Vec<(String, Vec<u8>)> {
        let mut b = self.inner.lock().expect("alert board lock poisoned");
        let dirty = std::mem::take(&mut b.dirty);
        let out: Vec<(String, Vec<u8>)> = dirty
            .into_iter()
            .filter_map(|t| b.entries.get(&t).map(|p| (t, p.clone())))
            .collect();
        b.entries.retain(|_, p| !p.is_empty());
        out
    }

    fn mark_all_dirty(&self) {
        let mut b = self.inner.lock().expect("alert board lock poisoned");
        let all: BTreeSet<String> = b.entries.keys().cloned().collect();
        b.dirty = all;
    }
}

pub struct AlertPublisher {
    pub agent_id: String,
    pub broker: BrokerConfig,
    pub qos: QoS,
    pub board: Arc<AlertBoard>,
}

impl AlertPublisher {
    pub async fn run(self, stats: Arc<Stats>, shutdown: CancellationToken) {
        let mut backoff = self.broker.backoff();
        loop {
            let reason = match self.broker.options(&self.agent_id, "alerts") {
                Err(e) => link_down(
                    &stats,
                    "alerts",
                    &self.broker.endpoint(),
                    LinkError::Setup(&e),
                    &backoff,
                ),
                Ok(o) => match self
                    .connected(Link::open(o, 256), &stats, &shutdown, &mut backoff)
                    .await
                {
                    Some(reason) => reason,
                    None => return,
                },
            };
            // Whatever was in flight is republished from the board on the next connect.
            self.board.mark_all_dirty();
            tracing::debug!(broker = %self.broker.endpoint(), %reason, "Alert publisher reconnecting.");
            let delay = backoff.next_delay();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Serves one connection; `None` on shutdown, else why the link went.
    async fn connected(
        &self,
        mut link: Link,
        stats: &Stats,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Option<String> {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = self.board.changed.notified() => {
                    if let Err(e) = self.publish_dirty(&link, stats).await {
                        return Some(e);
                    }
                }
                ev = link.events.recv() => match ev {
                    None => return Some("connection task stopped".to_owned()),
                    Some(Err(e)) => {
                        return Some(link_down(stats, "alerts", &self.broker.endpoint(), LinkError::Connection(&e), backoff));
                    }
                    Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        backoff.reset();
                        link_up(stats, "alerts");
                        info!(broker = %self.broker.endpoint(), "Alert publisher connected; republishing current alarm states.");
                        self.board.mark_all_dirty();
                        if let Err(e) = self.publish_dirty(&link, stats).await {
                            return Some(e);
                        }
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    async fn publish_dirty(&self, link: &Link, stats: &Stats) -> Result<(), String> {
        for (topic, payload) in self.board.take_dirty() {
            link.client
                .publish(topic, self.qos, true, payload)
                .await
                .map_err(|e| format!("publish failed: {e}"))?;
            Stats::add(&stats.alerts_published, 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pdtf_models::{AlarmEvent, Level, Seq, TagId};

    fn alarm(seq: u64, kind: ConditionKind, state: AlarmState) -> Record {
        let t = Timestamp::from_unix_millis(seq as i64);
        Record {
            seq: Seq(seq),
            time: t,
            body: RecordBody::Alarm(AlarmEvent {
                condition: Condition {
                    source: ConditionSource::Tag(TagId(0)),
                    kind,
                },
                state,
                previous: None,
                value: 1.0,
                limit: 0.5,
                severity: 500,
                time: t,
                batch_id: None,
                phase: None,
            }),
        }
    }

    #[test]
    fn two_conditions_on_one_tag_keep_two_retained_topics() {
        let board = AlertBoard::new("a".into(), "p".into(), vec![("temp".into(), "C".into())]);
        let hi = AlarmState::Active(Level::Hi);
        board.accept(&alarm(1, ConditionKind::Limit, hi));
        board.accept(&alarm(2, ConditionKind::Rate, hi));
        board.accept(&alarm(3, ConditionKind::Rate, AlarmState::Inactive));
        let mut entries = board.take_dirty();
        entries.sort();
        let topics: Vec<&str> = entries.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics, ["p/alarms/temp", "p/alarms/temp/rate"]);
        let state =
            |i: usize| -> serde_json::Value { serde_json::from_slice(&entries[i].1).unwrap() };
        assert_eq!(
            state(0)["state"],
            "active",
            "the rate clear left the limit alarm alone"
        );
        assert_eq!(state(1)["state"], "inactive");
        assert_eq!(state(1)["condition"], "rate");
    }
}
