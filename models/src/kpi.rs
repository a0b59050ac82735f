//! Alarm-management KPIs of one line (EEMUA 191 / ISA-18.2), pure: the alarm rate over the
//! last 10 minutes and its peak, chattering alarms (at least `CHATTER_ACTIVATIONS`
//! activations within `CHATTER_WINDOW_MS`) and stale alarms (active for longer than
//! `STALE_AFTER_MS`). Fed with the line's alarm records; memory is bounded by the number of
//! conditions (a ring of 600 one-second buckets, at most three activation times per
//! condition, one start time per active alarm).

use crate::{AlarmEvent, Condition, Timestamp};
use std::collections::{BTreeMap, VecDeque};

/// The rate window: 10 minutes, in one-second buckets.
pub const RATE_WINDOW_S: usize = 600;
pub const CHATTER_WINDOW_MS: u64 = 60_000;
pub const CHATTER_ACTIVATIONS: usize = 3;
pub const STALE_AFTER_MS: u64 = 24 * 3600 * 1000;

/// The KPIs at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// Activations in the last 10 minutes.
    pub rate_10min: u64,
    /// The highest `rate_10min` seen since start, and when.
    pub peak_10min: u64,
    pub peak_at: Option<Timestamp>,
    /// Conditions chattering now.
    pub chattering: Vec<Condition>,
    /// Conditions active for longer than `STALE_AFTER_MS`, with the time they were raised.
    pub stale: Vec<(Condition, Timestamp)>,
    /// Activations since start.
    pub activations: u64,
}

#[derive(Debug, Clone)]
pub struct Kpis {
    /// Activations per second, indexed by the second modulo the window.
    buckets: Vec<u32>,
    /// The second (since the epoch) the newest bucket counts.
    newest_s: i64,
    in_window: u64,
    peak: u64,
    peak_at: Option<Timestamp>,
    recent: BTreeMap<Condition, VecDeque<Timestamp>>,
    active_since: BTreeMap<Condition, Timestamp>,
    activations: u64,
}

impl Default for Kpis {
    fn default() -> Self {
        Self {
            buckets: vec![0; RATE_WINDOW_S],
            newest_s: i64::MIN,
            in_window: 0,
            peak: 0,
            peak_at: None,
            recent: BTreeMap::new(),
            active_since: BTreeMap::new(),
            activations: 0,
        }
    }
}

fn second(t: Timestamp) -> i64 {
    t.as_nanos().div_euclid(1_000_000_000)
}

impl Kpis {
    /// Moves the window to end at `now`'s second, dropping the buckets that fell out.
    fn advance(&mut self, now: Timestamp) {
        let s = second(now);
        if s <= self.newest_s {
            return;
        }
        let steps = s.saturating_sub(self.newest_s).min(RATE_WINDOW_S as i64);
        for k in 0..steps {
            let i = (s - k).rem_euclid(RATE_WINDOW_S as i64) as usize;
            self.in_window -= u64::from(self.buckets[i]);
            self.buckets[i] = 0;
        }
        self.newest_s = s;
    }

    /// An alarm record of the line. An activation is a raise from inactive (an escalation
    /// to another level of an active alarm is not a new one).
    pub fn on_alarm(&mut self, a: &AlarmEvent) {
        if !a.is_raise() {
            self.active_since.remove(&a.condition);
            return;
        }
        if a.previous.is_some() {
            return;
        }
        self.active_since
            .entry(a.condition.clone())
            .or_insert(a.time);
        self.activations += 1;
        self.advance(a.time);
        // A record older than the window's end (a source's late clock) counts now.
        let i = self.newest_s.rem_euclid(RATE_WINDOW_S as i64) as usize;
        self.buckets[i] += 1;
        self.in_window += 1;
        if self.in_window > self.peak {
            self.peak = self.in_window;
            self.peak_at = Some(a.time);
        }
        let times = self.recent.entry(a.condition.clone()).or_default();
        times.push_back(a.time);
        if times.len() > CHATTER_ACTIVATIONS {
            times.pop_front();
        }
    }

    /// Restored at start: the alarm was active since `since`.
    pub fn restore_active(&mut self, c: &Condition, since: Timestamp) {
        self.active_since.insert(c.clone(), since);
    }

    fn chattering_at(times: &VecDeque<Timestamp>, now: Timestamp) -> bool {
        times.len() >= CHATTER_ACTIVATIONS
            && times
                .front()
                .is_some_and(|first| now.millis_since(*first) <= CHATTER_WINDOW_MS)
    }

    /// The KPIs at `now`; forgets activation times too old to make a condition chatter.
    pub fn snapshot(&mut self, now: Timestamp) -> Snapshot {
        self.advance(now);
        self.recent.retain(|_, times| {
            times
                .back()
                .is_some_and(|last| now.millis_since(*last) <= CHATTER_WINDOW_MS)
        });
        Snapshot {
            rate_10min: self.in_window,
            peak_10min: self.peak,
            peak_at: self.peak_at,
            chattering: self
                .recent
                .iter()
                .filter(|(_, t)| Self::chattering_at(t, now))
                .map(|(c, _)| c.clone())
                .collect(),
            stale: self
                .active_since
                .iter()
                .filter(|(_, since)| now.millis_since(**since) > STALE_AFTER_MS)
                .map(|(c, s)| (c.clone(), *s))
                .collect(),
            activations: self.activations,
        }
    }

    /// Whether `c` is chattering at `now`.
    pub fn is_chattering(&self, c: &Condition, now: Timestamp) -> bool {
        self.recent
            .get(c)
            .is_some_and(|t| Self::chattering_at(t, now))
    }
}

#[cfg(test)]
mod tests;
