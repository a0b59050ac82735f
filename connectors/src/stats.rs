//! Counters shared by all tasks of an agent, and their Prometheus rendering. Every metric
//! name is defined here and nowhere else.
//!
//! Plain relaxed atomics: each counter is independent and only ever read for display.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the commit latency histogram buckets.
pub const COMMIT_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

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
    /// Last problem per component, for `/readyz` and the logs (e.g. a TLS failure).
    pub problems: Mutex<std::collections::BTreeMap<String, String>>,
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

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let g = Self::get;
        metric(
            "pdtf_source_samples_total",
            "counter",
            "Samples received from all sources.",
            g(&self.samples_in),
        );
        metric(
            "pdtf_source_malformed_total",
            "counter",
            "Inputs that could not be mapped (recorded and skipped).",
            g(&self.malformed_in),
        );
        metric(
            "pdtf_source_reconnects_total",
            "counter",
            "Source link losses.",
            g(&self.source_reconnects),
        );
        metric(
            "pdtf_source_gaps_total",
            "counter",
            "Gap records written for source outages.",
            g(&self.gaps),
        );
        metric(
            "pdtf_source_samples_refused_total",
            "counter",
            "Samples refused because the journal is over quota (policy stop_samples).",
            g(&self.samples_refused),
        );
        metric(
            "pdtf_journal_records_committed_total",
            "counter",
            "Records committed to the journal.",
            g(&self.records_committed),
        );
        metric(
            "pdtf_journal_last_seq",
            "gauge",
            "Highest committed sequence number.",
            g(&self.last_seq),
        );
        metric(
            "pdtf_journal_commit_errors_total",
            "counter",
            "Failed journal commits (retried).",
            g(&self.commit_errors),
        );
        metric(
            "pdtf_journal_records_purged_total",
            "counter",
            "Records purged after upstream acknowledgement and retention.",
            g(&self.records_purged),
        );
        metric(
            "pdtf_journal_size_bytes",
            "gauge",
            "Size of the journal file.",
            g(&self.journal_bytes),
        );
        metric(
            "pdtf_journal_full",
            "gauge",
            "1 while the journal is over its quota or its filesystem is full.",
            u64::from(Self::flag(&self.store_full) || Self::flag(&self.store_disk_full)),
        );
        metric(
            "pdtf_journal_write_failed",
            "gauge",
            "1 while journal commits fail (intake waits until they succeed).",
            u64::from(Self::flag(&self.store_failed)),
        );
        metric(
            "pdtf_journal_reopens_total",
            "counter",
            "Times the journal was closed and reopened to recover from a failed write.",
            g(&self.store_reopens),
        );
        if Self::flag(&self.clock_sync_known) {
            metric(
                "pdtf_clock_synchronized",
                "gauge",
                "1 while the kernel reports the host clock synchronised (adjtimex).",
                g(&self.clock_synchronized),
            );
        }
        metric(
            "pdtf_clock_steps_total",
            "counter",
            "Wall-clock steps beyond clock.step_threshold_ms (each an audit record).",
            g(&self.clock_steps),
        );
        metric(
            "pdtf_config_reloads_total",
            "counter",
            "Tag-map reloads applied without a restart (each a config_reload audit record).",
            g(&self.config_reloads),
        );
        metric(
            "pdtf_config_reloads_refused_total",
            "counter",
            "Reloads refused (invalid, or a change only a restart applies); the running configuration stayed.",
            g(&self.config_reloads_refused),
        );
        metric(
            "pdtf_upstream_acked_seq",
            "gauge",
            "Last sequence number acknowledged by the upstream broker.",
            g(&self.upstream_acked_seq),
        );
        metric(
            "pdtf_upstream_backlog_records",
            "gauge",
            "Committed records not yet acknowledged upstream.",
            self.upstream_backlog(),
        );
        metric(
            "pdtf_upstream_messages_acked_total",
            "counter",
            "Upstream messages acknowledged (PUBACK).",
            g(&self.upstream_messages_acked),
        );
        metric(
            "pdtf_upstream_reconnects_total",
            "counter",
            "Upstream link losses.",
            g(&self.upstream_reconnects),
        );
        metric(
            "pdtf_upstream_connected",
            "gauge",
            "1 while the upstream link is up.",
            u64::from(Self::flag(&self.upstream_connected)),
        );
        metric(
            "pdtf_alarms_active",
            "gauge",
            "Limit alarms currently active.",
            g(&self.alarms_active),
        );
        metric(
            "pdtf_alarms_raised_total",
            "counter",
            "Limit alarms raised.",
            g(&self.alarms_raised),
        );
        metric(
            "pdtf_alerts_published_total",
            "counter",
            "Alarm state messages published to SCADA.",
            g(&self.alerts_published),
        );
        let name = "pdtf_journal_commit_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Journal commit latency.\n# TYPE {name} histogram"
        );
        for (bound, bucket) in COMMIT_BUCKETS.iter().zip(&self.commit_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", g(bucket));
        }
        let count = g(&self.commit_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", g(&self.commit_sum_ns) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_text_is_well_formed() {
        let s = Stats::default();
        s.observe_commit(Duration::from_micros(300));
        s.observe_commit(Duration::from_millis(20));
        Stats::add(&s.samples_in, 7);
        let text = s.render_prometheus();
        assert!(text.contains("pdtf_source_samples_total 7\n"));
        assert!(text.contains("pdtf_journal_commit_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("pdtf_journal_commit_duration_seconds_bucket{le=\"0.025\"} 2\n"));
        assert!(text.contains("pdtf_journal_commit_duration_seconds_count 2\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("pdtf_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
