//! Malformed-input flood control, pure: the truth without the flood.
//!
//! Per source and kind of reason (the reason up to its first `:`, e.g. "payload is not
//! JSON"), the first `FULL_PER_WINDOW` malformed inputs of each `WINDOW_MS` are recorded in
//! full (a journal record and a WARN line each); the rest are counted, and when the window
//! ends (or the source stops) each kind with a count becomes one summary record and one log
//! line saying exactly how many were not recorded one by one, between which times, with the
//! last one's address and excerpt. The `malformed` counter counts every one.
//!
//! Memory is bounded: at most `MAX_KINDS` kinds are told apart; the rest share one.

use pdtf_models::{Malformed, Timestamp};
use std::collections::BTreeMap;

pub const WINDOW_MS: u64 = 10_000;
pub const FULL_PER_WINDOW: u32 = 10;
const MAX_KINDS: usize = 32;
const OTHER: &str = "other reasons";

#[derive(Debug)]
struct Kind {
    full: u32,
    suppressed: u64,
    first: Timestamp,
    last: Malformed,
    last_at: Timestamp,
}

#[derive(Debug, Default)]
pub struct MalformedGate {
    window_start: Option<Timestamp>,
    kinds: BTreeMap<String, Kind>,
}

fn kind_of(reason: &str) -> &str {
    reason.split(':').next().unwrap_or(reason).trim()
}

impl MalformedGate {
    /// `Some(m)`: record it in full. `None`: counted into the window's summary.
    pub fn offer(&mut self, m: Malformed, now: Timestamp) -> Option<Malformed> {
        self.window_start.get_or_insert(now);
        let mut key = kind_of(&m.reason).to_owned();
        if !self.kinds.contains_key(&key) && self.kinds.len() >= MAX_KINDS {
            key = OTHER.to_owned();
        }
        let k = self.kinds.entry(key).or_insert_with(|| Kind {
            full: 0,
            suppressed: 0,
            first: now,
            last: m.clone(),
            last_at: now,
        });
        if k.full < FULL_PER_WINDOW {
            k.full += 1;
            return Some(m);
        }
        if k.suppressed == 0 {
            k.first = now;
        }
        k.suppressed += 1;
        k.last = m;
        k.last_at = now;
        None
    }

    /// The summaries of a window that has ended by `now` (and a fresh window), else nothing.
    pub fn due(&mut self, now: Timestamp) -> Vec<Malformed> {
        match self.window_start {
            Some(start) if now.millis_since(start) >= WINDOW_MS => self.drain(),
            _ => Vec::new(),
        }
    }

    /// Every summary now (the source is stopping or its link went), and a fresh window.
    pub fn drain(&mut self) -> Vec<Malformed> {
        self.window_start = None;
        std::mem::take(&mut self.kinds)
            .into_iter()
            .filter(|(_, k)| k.suppressed > 0)
            .map(|(kind, k)| {
                let mut m = k.last;
                m.reason = format!(
                    "{} more malformed inputs ({kind}) from {} to {} were counted, not recorded one by one; the first {FULL_PER_WINDOW} of each kind per {} s are. Last one: {}",
                    k.suppressed,
                    crate::alert::rfc3339(k.first),
                    crate::alert::rfc3339(k.last_at),
                    WINDOW_MS / 1000,
                    m.reason
                );
                m
            })
            .collect()
    }
}

/// The count a summary record states (for consumers and tests).
pub fn summarised_count(m: &Malformed) -> Option<u64> {
    m.reason
        .split_once(" more malformed inputs (")
        .and_then(|(n, _)| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(reason: &str, topic: &str) -> Malformed {
        Malformed::new("src", topic, reason, b"x")
    }

    #[test]
    fn the_first_are_full_the_rest_counted_exactly_per_kind() {
        let mut g = MalformedGate::default();
        let t = |ms| Timestamp::from_unix_millis(ms);
        let mut full = 0;
        for i in 0..1_000 {
            let reason = if i % 2 == 0 {
                "payload is not JSON: at 1"
            } else {
                "no tag is mapped to this topic"
            };
            full += usize::from(g.offer(m(reason, &format!("t/{i}")), t(i)).is_some());
        }
        assert_eq!(full, 2 * FULL_PER_WINDOW as usize);
        assert!(g.due(t(9_999)).is_empty(), "the window has not ended");
        let s = g.due(t(10_000));
        let counts: Vec<u64> = s.iter().filter_map(summarised_count).collect();
        assert_eq!(
            counts.iter().sum::<u64>() + full as u64,
            1_000,
            "counts are exact"
        );
        assert_eq!(s.len(), 2, "one summary per kind");
        assert!(s[0].reason.contains("Last one:"), "{}", s[0].reason);
        // A fresh window records in full again.
        assert!(g
            .offer(m("payload is not JSON: x", "t"), t(10_001))
            .is_some());
        assert!(
            g.drain().is_empty(),
            "nothing suppressed, nothing to summarise"
        );
    }

    #[test]
    fn distinct_reasons_do_not_grow_memory_without_bound() {
        let mut g = MalformedGate::default();
        for i in 0..10_000 {
            g.offer(
                m(&format!("reason {i}"), "t"),
                Timestamp::from_unix_millis(0),
            );
        }
        assert_eq!(
            g.kinds.len(),
            MAX_KINDS + 1,
            "32 kinds, then one for the rest"
        );
        // Each of the 32 distinct reasons came once (recorded in full); of the rest, the
        // shared kind recorded its first 10 and counted the others.
        let total: u64 = g.drain().iter().filter_map(summarised_count).sum();
        let full = MAX_KINDS as u64 + u64::from(FULL_PER_WINDOW);
        assert_eq!(total, 10_000 - full);
    }
}
