//! GMP deviations: a limit marked critical (a critical process parameter) exceeded while a
//! batch runs opens a deviation, which QA must disposition.
//!
//! The tracker is pure: the line pipeline hands it the alarm and lifecycle records it makes
//! and the samples of critical tags, and commits the `deviation` records it returns — one
//! when a deviation opens (`end` absent) and one when it closes (its alarm cleared, or the
//! batch ended), each the whole deviation so far. In between, the peak and the time beyond
//! the limit grow in memory (`open`), for the retained `P/deviations/{id}`. QA's
//! dispositions of a closed deviation (`Deviation::dispose`) are further records of it, each
//! again the whole deviation with its dispositions so far.

use crate::lifecycle::LifecycleEvent;
use crate::{AlarmEvent, AlarmState, Condition, ConditionKind, Level, Quality, Sample, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The alarms and operator actions a deviation lists (beyond, counted only).
pub const MAX_LISTED: usize = 64;

/// An alarm transition on the line while a deviation was open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviationAlarm {
    pub time: Timestamp,
    pub condition: Condition,
    pub state: AlarmState,
    pub value: f64,
}

/// An operator action on the line's alarms while a deviation was open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviationAction {
    pub time: Timestamp,
    pub condition: Condition,
    pub action: String,
    pub user: Option<String>,
    pub reason: Option<String>,
}

/// The decisions QA may record on a closed deviation: `investigate` (more to find out; a
/// later disposition follows), `accept` (no impact on the product) and `reject` (the
/// product is affected). The last two are final.
pub const DECISIONS: [&str; 3] = ["investigate", "accept", "reject"];

/// QA's decision on a closed deviation, attributed (the command's request id and user).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disposition {
    pub time: Timestamp,
    /// One of `DECISIONS`.
    pub decision: String,
    pub user: String,
    pub reason: String,
    pub request_id: String,
}

impl Disposition {
    pub fn is_final(&self) -> bool {
        self.decision != "investigate"
    }
}

/// One deviation, as recorded (record format 6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deviation {
    /// `{batch_id}-D{n}`, n counting the batch's deviations on this line from 1.
    pub id: String,
    pub line: String,
    pub batch_id: String,
    /// The phase running when it opened.
    pub phase: Option<String>,
    /// The critical limit alarm that opened it.
    pub condition: Condition,
    pub level: Level,
    pub limit: f64,
    pub start: Timestamp,
    /// The most extreme value beyond the limit, and when.
    pub peak: f64,
    pub peak_at: Timestamp,
    /// Absent while open.
    pub end: Option<Timestamp>,
    /// Time the value spent beyond the limit (between samples beyond it).
    pub beyond_limit_ms: u64,
    pub alarms: Vec<DeviationAlarm>,
    pub actions: Vec<DeviationAction>,
    /// Alarms and actions beyond `MAX_LISTED` (counted, not listed).
    pub unlisted: u64,
    /// Why it closed: `alarm_cleared`, `batch_ended`.
    pub closed_by: Option<String>,
    /// QA's dispositions, oldest first (empty: pending).
    pub dispositions: Vec<Disposition>,
}

impl Deviation {
    pub fn is_open(&self) -> bool {
        self.end.is_none()
    }

    pub fn duration_ms(&self, now: Timestamp) -> u64 {
        self.end.unwrap_or(now).millis_since(self.start)
    }

    /// Where QA stands: `pending`, or the last decision.
    pub fn disposition(&self) -> &str {
        self.dispositions
            .last()
            .map_or("pending", |d| d.decision.as_str())
    }

    /// The deviation with `d` recorded, or why QA may not record it: the deviation is still
    /// open, the decision is not one of `DECISIONS`, or a final one stands.
    pub fn dispose(&self, d: Disposition) -> Result<Deviation, String> {
        if self.is_open() {
            return Err(format!(
                "deviation {} is still open; disposition it once it has closed",
                self.id
            ));
        }
        if !DECISIONS.contains(&d.decision.as_str()) {
            return Err(format!(
                "unknown decision {:?} (known: {})",
                d.decision,
                DECISIONS.join(", ")
            ));
        }
        if let Some(done) = self.dispositions.last().filter(|x| x.is_final()) {
            return Err(format!(
                "deviation {} is already dispositioned: {} by {:?} (request {:?})",
                self.id, done.decision, done.user, done.request_id
            ));
        }
        let mut out = self.clone();
        out.dispositions.push(d);
        Ok(out)
    }

    fn beyond(&self, v: f64) -> bool {
        if self.level.is_high() {
            v > self.limit
        } else {
            v < self.limit
        }
    }

    fn note_alarm(&mut self, a: &AlarmEvent) {
        if self.alarms.len() + self.actions.len() >= MAX_LISTED {
            self.unlisted += 1;
            return;
        }
        self.alarms.push(DeviationAlarm {
            time: a.time,
            condition: a.condition.clone(),
            state: a.state,
            value: a.value,
        });
    }
}

/// A line's deviations in progress.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    line: String,
    /// Per `TagId` index: the tag's limits are critical.
    critical: Vec<bool>,
    open: BTreeMap<Condition, (Deviation, Option<Timestamp>)>,
    /// Deviations opened per batch id (for the next id).
    opened: BTreeMap<String, u32>,
}

impl Tracker {
    pub fn new(line: &str, critical: Vec<bool>) -> Self {
        Self {
            line: line.to_owned(),
            critical,
            ..Self::default()
        }
    }

    /// A reload: which tags are critical now (open deviations run to their end).
    pub fn set_critical(&mut self, critical: Vec<bool>) {
        self.critical = critical;
    }

    pub fn is_idle(&self) -> bool {
        self.open.is_empty()
    }

    /// The open deviations, as they stand.
    pub fn open(&self) -> impl Iterator<Item = &Deviation> {
        self.open.values().map(|(d, _)| d)
    }

    fn is_critical(&self, c: &Condition) -> bool {
        c.kind == ConditionKind::Limit
            && c.tag()
                .and_then(|t| self.critical.get(t.index()))
                .copied()
                .unwrap_or(false)
    }

    /// An alarm record of the line: opens a deviation (a critical limit raised inside a
    /// batch), closes one (its alarm cleared), or is listed in the open ones. Returns the
    /// deviation records to commit after it.
    pub fn on_alarm(&mut self, a: &AlarmEvent) -> Vec<Deviation> {
        for (d, _) in self.open.values_mut() {
            d.note_alarm(a);
        }
        let mut out = Vec::new();
        match a.state {
            AlarmState::Inactive => {
                if let Some((mut d, _)) = self.open.remove(&a.condition) {
                    d.end = Some(a.time);
                    d.closed_by = Some("alarm_cleared".into());
                    out.push(d);
                }
            }
            AlarmState::Active(level) => {
                let (Some(batch), true) = (&a.batch_id, self.is_critical(&a.condition)) else {
                    return out;
                };
                if self.open.contains_key(&a.condition) {
                    return out; // an escalation inside the same deviation
                }
                let n = self.opened.entry(batch.clone()).or_default();
                *n += 1;
                let d = Deviation {
                    id: format!("{batch}-D{n}"),
                    line: self.line.clone(),
                    batch_id: batch.clone(),
                    phase: a.phase.clone(),
                    condition: a.condition.clone(),
                    level,
                    limit: a.limit,
                    start: a.time,
                    peak: a.value,
                    peak_at: a.time,
                    end: None,
                    beyond_limit_ms: 0,
                    alarms: vec![DeviationAlarm {
                        time: a.time,
                        condition: a.condition.clone(),
                        state: a.state,
                        value: a.value,
                    }],
                    actions: Vec::new(),
                    unlisted: 0,
                    closed_by: None,
                    dispositions: Vec::new(),
                };
                let beyond = d.beyond(a.value).then_some(a.time);
                out.push(d.clone());
                self.open.insert(a.condition.clone(), (d, beyond));
            }
        }
        out
    }

    /// An operator action on the line's alarms: listed in every open deviation.
    pub fn on_action(&mut self, l: &LifecycleEvent) {
        if l.user.is_none() {
            return;
        }
        for (d, _) in self.open.values_mut() {
            if d.alarms.len() + d.actions.len() >= MAX_LISTED {
                d.unlisted += 1;
                continue;
            }
            d.actions.push(DeviationAction {
                time: l.time,
                condition: l.condition.clone(),
                action: l.input.name().to_owned(),
                user: l.user.clone(),
                reason: l.reason.clone(),
            });
        }
    }

    /// A sample: the peak and the time beyond the limit of an open deviation on its tag.
    pub fn on_sample(&mut self, s: &Sample) {
        if self.open.is_empty() {
            return;
        }
        let c = Condition::tag_limit(s.tag);
        let Some((d, since)) = self.open.get_mut(&c) else {
            return;
        };
        let Some(v) = s.value.as_f64().filter(|_| s.quality == Quality::Good) else {
            return;
        };
        let t = s.agent_time;
        if let Some(from) = since.take() {
            d.beyond_limit_ms += t.millis_since(from);
        }
        if d.beyond(v) {
            *since = Some(t);
            let further = if d.level.is_high() {
                v > d.peak
            } else {
                v < d.peak
            };
            if further {
                d.peak = v;
                d.peak_at = t;
            }
        }
    }

    /// The batch running now (`None`: none): deviations of another batch close.
    pub fn on_batch(&mut self, batch_id: Option<&str>, now: Timestamp) -> Vec<Deviation> {
        let ended: Vec<Condition> = self
            .open
            .iter()
            .filter(|(_, (d, _))| Some(d.batch_id.as_str()) != batch_id)
            .map(|(c, _)| c.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|c| self.open.remove(&c))
            .map(|(mut d, since)| {
                if let Some(from) = since {
                    d.beyond_limit_ms += now.millis_since(from);
                }
                d.end = Some(now);
                d.closed_by = Some("batch_ended".into());
                d
            })
            .collect()
    }

    /// Takes the deviations a restart found open (their last record), and the count of each
    /// batch's deviations so far.
    pub fn restore(&mut self, d: &Deviation) {
        let n: u32 =
            d.id.rsplit_once("-D")
                .and_then(|(_, n)| n.parse().ok())
                .unwrap_or(0);
        let seen = self.opened.entry(d.batch_id.clone()).or_default();
        *seen = (*seen).max(n);
        if d.is_open() {
            self.open.insert(d.condition.clone(), (d.clone(), None));
        }
    }
}

#[cfg(test)]
mod tests;
