//! Counters shared by all tasks of an agent, and their Prometheus rendering. Every metric
//! name is defined here and nowhere else.
//!
//! Plain relaxed atomics: each counter is independent and only ever read for display. The
//! exposition is `prometheus-client`'s (a collector reads the atomics at each scrape), in
//! the Prometheus text format 0.0.4, with the `line` label on every metric and `source` on
//! the per-source ones.

mod exposition;
#[cfg(test)]
mod tests;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Upper bounds (seconds) of the commit latency histogram buckets.
pub const COMMIT_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// One line's alarm-management KPIs, as the metrics show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineAlarms {
    pub rate_10min: u64,
    pub peak_10min: u64,
    pub chattering: u64,
    pub stale: u64,
}

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
    pub upstream_connected: AtomicBool,
    /// 0 offline, 1 live, 2 backlogged.
    pub upstream_mode: AtomicU64,
    pub live_events_dropped: AtomicU64,
    /// Replies to commands not handed to the reply publisher (its queue full or closed).
    pub command_replies_dropped: AtomicU64,
    /// Commands not taken because the lines' intake was full (a line stalled, e.g. on a
    /// failing disk): neither recorded nor answered; the sender retries with its request id.
    pub commands_dropped: AtomicU64,
    pub alerts_published: AtomicU64,
    pub commit_errors: AtomicU64,
    pub records_purged: AtomicU64,
    pub samples_refused: AtomicU64,
    pub journal_bytes: AtomicU64,
    /// Set when the whole journal verified at startup.
    pub store_verified: AtomicBool,
    /// Set when the start-up verification finished, whatever it found.
    pub store_verify_done: AtomicBool,
    /// Set while the journal is over its quota.
    pub store_full: AtomicBool,
    /// Set while journal commits fail (the disk is full or the store broke); intake waits.
    pub store_failed: AtomicBool,
    /// Set while journal commits fail because the filesystem is out of space.
    pub store_disk_full: AtomicBool,
    /// Times the journal was closed and reopened to recover from a failed write.
    pub store_reopens: AtomicU64,
    /// 1 while the kernel says the host clock is synchronised, 0 while it says not; shown
    /// only once `clock_sync_known` (the state could be read).
    pub clock_synchronized: AtomicU64,
    pub clock_sync_known: AtomicBool,
    /// Wall-clock steps detected against the monotonic clock.
    pub clock_steps: AtomicU64,
    /// Tag-map reloads applied, and reloads refused (invalid, or a change that needs a
    /// restart): each one an audit record.
    pub config_reloads: AtomicU64,
    pub config_reloads_refused: AtomicU64,
    commit_buckets: [AtomicU64; COMMIT_BUCKETS.len()],
    commit_count: AtomicU64,
    commit_sum_ns: AtomicU64,
    /// Alarm-management KPIs per line (`kpi::Snapshot` figures), set at each line's tick.
    pub line_alarms: Mutex<std::collections::BTreeMap<String, LineAlarms>>,
    /// Retained alarm updates of chattering conditions held back by
    /// `[sinks.alerts] chatter_republish_s` (the records and `P/events` have them all).
    pub alarm_updates_held: AtomicU64,
    /// Last problem per component, for `/readyz` and the logs (e.g. a TLS failure).
    pub problems: Mutex<std::collections::BTreeMap<String, String>>,
    pub(crate) sources: Mutex<std::collections::BTreeMap<String, Arc<SourceCounters>>>,
    pub(crate) line: OnceLock<String>,
    /// `pdtf_build_info` labels (version, commit, target, features); set once at start.
    build: OnceLock<Vec<(String, String)>>,
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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

    pub fn flag(flag: &AtomicBool) -> bool {
        flag.load(Relaxed)
    }

    pub fn set_flag(flag: &AtomicBool, v: bool) {
        flag.store(v, Relaxed);
    }

    /// Records committed but not yet acknowledged upstream.
    pub fn upstream_backlog(&self) -> u64 {
        Self::get(&self.last_seq).saturating_sub(Self::get(&self.upstream_acked_seq))
    }

    pub fn observe_commit(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (bound, bucket) in COMMIT_BUCKETS.iter().zip(&self.commit_buckets) {
            if s <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.commit_count.fetch_add(1, Relaxed);
        self.commit_sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Sets (`Some`) or clears (`None`) the current problem of a component.
    pub fn problem(&self, component: &str, what: Option<String>) {
        let mut p = self.problems.lock().expect("stats lock poisoned");
        match what {
            Some(w) => p.insert(component.to_owned(), w),
            None => p.remove(component),
        };
    }

    pub fn problems(&self) -> Vec<(String, String)> {
        let p = self.problems.lock().expect("stats lock poisoned");
        p.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The counters of source `id` (made on first use): its samples, malformed inputs,
    /// reconnects and gaps, shown with a `source` label. `count` adds to them and to the
    /// agent-wide totals at once.
    pub fn source(&self, id: &str) -> Arc<SourceCounters> {
        let mut m = self.sources.lock().expect("stats lock poisoned");
        m.entry(id.to_owned()).or_default().clone()
    }

    pub fn count(&self, source: &SourceCounters, event: SourceEvent, n: u64) {
        match event {
            SourceEvent::Samples if n > 0 => {
                Self::set(&source.last_sample_unix_ms, unix_ms());
                Self::set_flag(&source.connected, true);
            }
            SourceEvent::Reconnect => Self::set_flag(&source.connected, false),
            _ => {}
        }
        let (all, own) = match event {
            SourceEvent::Samples => (&self.samples_in, &source.samples),
            SourceEvent::Malformed => (&self.malformed_in, &source.malformed),
            SourceEvent::Reconnect => (&self.source_reconnects, &source.reconnects),
            SourceEvent::Gap => (&self.gaps, &source.gaps),
        };
        Self::add(all, n);
        Self::add(own, n);
    }

    /// `pdtf_build_info{version, commit, target, features} 1`; set once at start.
    pub fn set_build_info(&self, labels: &[(&str, &str)]) {
        let owned = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let _first = self.build.set(owned);
    }

    /// The `line` label every metric carries (the agent's `agent.line`); set once at start.
    pub fn set_line(&self, line: &str) {
        let _first = self.line.set(line.to_owned());
    }

    /// Source `id` feeds line `line` (an agent with `[[lines]]`): its metrics carry that
    /// `line` label instead of the agent's. Set once at start.
    pub fn set_source_line(&self, id: &str, line: &str) {
        let _first = self.source(id).line.set(line.to_owned());
    }

    /// Prometheus text exposition format, version 0.0.4 (`prometheus-client`'s encoder):
    /// every metric with the `line` label, the per-source ones with `source` too.
    pub fn render_prometheus(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(exposition::Exposition(self.clone())));
        let mut out = String::with_capacity(8192);
        prometheus_text::encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

/// What one source contributed, for the `source`-labelled metrics.
#[derive(Debug, Default)]
pub struct SourceCounters {
    pub samples: AtomicU64,
    pub malformed: AtomicU64,
    pub reconnects: AtomicU64,
    pub gaps: AtomicU64,
    /// Set while the source's link is up (MQTT: connected and subscribed; OPC UA: the
    /// subscription in place; Modbus: the last exchange with a device was answered), cleared
    /// when it is lost. False until the first connection.
    pub connected: AtomicBool,
    /// When the last samples arrived (wall clock, ms since the Unix epoch; 0 before any).
    pub last_sample_unix_ms: AtomicU64,
    /// Modbus sources only (shown only for sources that polled).
    pub modbus: ModbusCounters,
    /// The line this source feeds, when the agent has `[[lines]]` (else the agent's line).
    pub(crate) line: OnceLock<String>,
}

/// What a Modbus device answered, per source.
#[derive(Debug, Default)]
pub struct ModbusCounters {
    /// Read requests sent.
    pub requests: AtomicU64,
    /// Replies that were a Modbus exception (the device said no; the link stays).
    pub exceptions: AtomicU64,
    /// Requests that got no reply within `timeout_ms` (a link problem).
    pub timeouts: AtomicU64,
    /// Replies that belonged to another request (transaction or unit id mismatch): discarded.
    pub mismatched: AtomicU64,
    /// Poll cycles that took longer than their interval (the missed polls are skipped).
    pub overruns: AtomicU64,
}

/// A source's view of the counters: the agent-wide ones and its own. Derefs to `Stats`.
#[derive(Debug, Clone, Copy)]
pub struct SourceStats<'a> {
    pub all: &'a Stats,
    pub own: &'a SourceCounters,
}

impl SourceStats<'_> {
    pub fn count(&self, event: SourceEvent, n: u64) {
        self.all.count(self.own, event, n);
    }

    /// The link is up (`pdtf_source_connected` 1); a lost link clears it (`Reconnect`).
    pub fn link_up(&self) {
        Stats::set_flag(&self.own.connected, true);
    }
}

impl std::ops::Deref for SourceStats<'_> {
    type Target = Stats;
    fn deref(&self) -> &Stats {
        self.all
    }
}

#[derive(Debug, Clone, Copy)]
pub enum SourceEvent {
    Samples,
    Malformed,
    Reconnect,
    Gap,
}
