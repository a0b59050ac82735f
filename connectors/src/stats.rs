//! Counters shared by all tasks of an agent. Read by the status line and health endpoints.
//!
//! Plain relaxed atomics: each counter is independent and only ever read for display.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Stats {
    pub samples_in: AtomicU64,
    pub malformed_in: AtomicU64,
    pub records_committed: AtomicU64,
    pub last_seq: AtomicU64,
    pub alarms_raised: AtomicU64,
    pub alarms_active: AtomicU64,
    pub gaps: AtomicU64,
    pub source_reconnects: AtomicU64,
    pub upstream_acked_seq: AtomicU64,
    pub upstream_messages_acked: AtomicU64,
    pub upstream_reconnects: AtomicU64,
    pub alerts_published: AtomicU64,
    pub commit_errors: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    pub fn set(counter: &AtomicU64, v: u64) {
        counter.store(v, Relaxed);
    }

    /// Records committed but not yet acknowledged upstream.
    pub fn upstream_backlog(&self) -> u64 {
        Self::get(&self.last_seq).saturating_sub(Self::get(&self.upstream_acked_seq))
    }
}
