//! Counters shared by all tasks of an agent, and their Prometheus rendering. Every metric
//! name is defined here and nowhere else.
//!
//! Plain relaxed atomics: each counter is independent and only ever read for display. The
//! exposition is `prometheus-client`'s (a collector reads the atomics at each scrape), in
//! the Prometheus text format 0.0.4, with the `line` label on every metric and `source` on
//! the per-source ones.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
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
    sources: Mutex<std::collections::BTreeMap<String, Arc<SourceCounters>>>,
    line: OnceLock<String>,
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

    /// Prometheus text exposition format, version 0.0.4 (`prometheus-client`'s encoder):
    /// every metric with the `line` label, the per-source ones with `source` too.
    pub fn render_prometheus(self: &Arc<Self>) -> String {
        let line = self.line.get().cloned().unwrap_or_default();
        let mut registry =
            Registry::with_labels(std::iter::once((Cow::Borrowed("line"), Cow::Owned(line))));
        registry.register_collector(Box::new(Exposition(self.clone())));
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

/// The agent's counters, read at each scrape.
#[derive(Debug)]
struct Exposition(Arc<Stats>);

fn one(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    value: u64,
) -> std::fmt::Result {
    let m = e.encode_descriptor(name, help, None, kind)?;
    match kind {
        MetricType::Counter => ConstCounter::new(value).encode(m),
        _ => ConstGauge::new(value).encode(m),
    }
}

/// A per-source gauge; sources for which `value` is `None` are left out.
fn per_source_gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    sources: &[(String, Arc<SourceCounters>)],
    value: impl Fn(&SourceCounters) -> Option<N>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (id, c) in sources {
        if let Some(v) = value(c) {
            let labels = [("source", id.as_str())];
            ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn per_source(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    sources: &[(String, Arc<SourceCounters>)],
    value: impl Fn(&SourceCounters) -> u64,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (id, c) in sources {
        let labels = [("source", id.as_str())];
        ConstCounter::new(value(c)).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Exposition {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let sources: Vec<(String, Arc<SourceCounters>)> = s
            .sources
            .lock()
            .expect("stats lock poisoned")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        per_source(
            &mut e,
            "pdtf_source_samples",
            "Samples received from all sources.",
            &sources,
            |c| Stats::get(&c.samples),
        )?;
        per_source(
            &mut e,
            "pdtf_source_malformed",
            "Inputs that could not be mapped (recorded and skipped).",
            &sources,
            |c| Stats::get(&c.malformed),
        )?;
        per_source(
            &mut e,
            "pdtf_source_reconnects",
            "Source link losses.",
            &sources,
            |c| Stats::get(&c.reconnects),
        )?;
        per_source(
            &mut e,
            "pdtf_source_gaps",
            "Gap records written for source outages.",
            &sources,
            |c| Stats::get(&c.gaps),
        )?;
        per_source_gauge(
            &mut e,
            "pdtf_source_connected",
            "1 while the source's link is up (Modbus: the last device exchange was answered).",
            &sources,
            |c| Some(i64::from(Stats::flag(&c.connected))),
        )?;
        let now_ms = unix_ms();
        per_source_gauge(
            &mut e,
            "pdtf_source_last_sample_age_seconds",
            "Seconds since the source's last samples arrived (absent before the first).",
            &sources,
            |c| match Stats::get(&c.last_sample_unix_ms) {
                0 => None,
                t => Some(now_ms.saturating_sub(t) as f64 / 1000.0),
            },
        )?;
        if let Some(build) = s.build.get() {
            let m = e.encode_descriptor(
                "pdtf_build_info",
                "The running build: version, git commit, target and cargo features (value 1).",
                None,
                MetricType::Gauge,
            )?;
            let mut m = m;
            let labels: Vec<(&str, &str)> = build
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            ConstGauge::new(1).encode(m.encode_family(&labels)?)?;
        }
        let modbus: Vec<_> = sources
            .iter()
            .filter(|(_, c)| Stats::get(&c.modbus.requests) > 0)
            .cloned()
            .collect();
        for (name, help, value) in [
            (
                "pdtf_modbus_requests",
                "Modbus read requests sent.",
                (|c: &SourceCounters| Stats::get(&c.modbus.requests)) as fn(&SourceCounters) -> u64,
            ),
            (
                "pdtf_modbus_exceptions",
                "Modbus exception replies (tags Bad with the code; link kept).",
                |c| Stats::get(&c.modbus.exceptions),
            ),
            (
                "pdtf_modbus_timeouts",
                "Modbus requests without a reply in time (a link problem).",
                |c| Stats::get(&c.modbus.timeouts),
            ),
            (
                "pdtf_modbus_mismatched_replies",
                "Modbus replies to another request, discarded.",
                |c| Stats::get(&c.modbus.mismatched),
            ),
            (
                "pdtf_modbus_overruns",
                "Modbus poll cycles longer than their interval (missed polls skipped).",
                |c| Stats::get(&c.modbus.overruns),
            ),
        ] {
            per_source(&mut e, name, help, &modbus, value)?;
        }
        one(
            &mut e,
            "pdtf_source_samples_refused",
            "Samples refused because the journal is over quota (policy stop_samples).",
            MetricType::Counter,
            Stats::get(&s.samples_refused),
        )?;
        one(
            &mut e,
            "pdtf_journal_records_committed",
            "Records committed to the journal.",
            MetricType::Counter,
            Stats::get(&s.records_committed),
        )?;
        one(
            &mut e,
            "pdtf_journal_last_seq",
            "Highest committed sequence number.",
            MetricType::Gauge,
            Stats::get(&s.last_seq),
        )?;
        one(
            &mut e,
            "pdtf_journal_commit_errors",
            "Failed journal commits (retried).",
            MetricType::Counter,
            Stats::get(&s.commit_errors),
        )?;
        one(
            &mut e,
            "pdtf_journal_records_purged",
            "Records purged after upstream acknowledgement and retention.",
            MetricType::Counter,
            Stats::get(&s.records_purged),
        )?;
        one(
            &mut e,
            "pdtf_journal_size_bytes",
            "Bytes of records the journal holds, the measure journal.max_size_bytes is checked against (redb: encoded records, less than the file, which never shrinks; sled: its size on disk).",
            MetricType::Gauge,
            Stats::get(&s.journal_bytes),
        )?;
        one(
            &mut e,
            "pdtf_journal_full",
            "1 while the journal is over its quota or its filesystem is full.",
            MetricType::Gauge,
            u64::from(Stats::flag(&s.store_full) || Stats::flag(&s.store_disk_full)),
        )?;
        one(
            &mut e,
            "pdtf_journal_write_failed",
            "1 while journal commits fail (intake waits until they succeed).",
            MetricType::Gauge,
            u64::from(Stats::flag(&s.store_failed)),
        )?;
        one(
            &mut e,
            "pdtf_journal_reopens",
            "Times the journal was closed and reopened to recover from a failed write.",
            MetricType::Counter,
            Stats::get(&s.store_reopens),
        )?;
        if Stats::flag(&s.clock_sync_known) {
            one(
                &mut e,
                "pdtf_clock_synchronized",
                "1 while the kernel reports the host clock synchronised (adjtimex).",
                MetricType::Gauge,
                Stats::get(&s.clock_synchronized),
            )?;
        }
        one(
            &mut e,
            "pdtf_clock_steps",
            "Wall-clock steps beyond clock.step_threshold_ms (each an audit record).",
            MetricType::Counter,
            Stats::get(&s.clock_steps),
        )?;
        one(
            &mut e,
            "pdtf_config_reloads",
            "Tag-map reloads applied without a restart (each a config_reload audit record).",
            MetricType::Counter,
            Stats::get(&s.config_reloads),
        )?;
        one(&mut e, "pdtf_config_reloads_refused", "Reloads refused (invalid, or a change only a restart applies); the running configuration stayed.", MetricType::Counter, Stats::get(&s.config_reloads_refused))?;
        one(
            &mut e,
            "pdtf_upstream_acked_seq",
            "Last sequence number acknowledged by the upstream broker.",
            MetricType::Gauge,
            Stats::get(&s.upstream_acked_seq),
        )?;
        one(
            &mut e,
            "pdtf_upstream_backlog_records",
            "Committed records not yet acknowledged upstream.",
            MetricType::Gauge,
            s.upstream_backlog(),
        )?;
        one(
            &mut e,
            "pdtf_upstream_messages_acked",
            "Upstream messages acknowledged (PUBACK).",
            MetricType::Counter,
            Stats::get(&s.upstream_messages_acked),
        )?;
        one(
            &mut e,
            "pdtf_upstream_reconnects",
            "Upstream link losses.",
            MetricType::Counter,
            Stats::get(&s.upstream_reconnects),
        )?;
        one(
            &mut e,
            "pdtf_upstream_connected",
            "1 while the upstream link is up.",
            MetricType::Gauge,
            u64::from(Stats::flag(&s.upstream_connected)),
        )?;
        one(
            &mut e,
            "pdtf_upstream_mode",
            "Upstream sync mode: 0 offline, 1 live (caught up), 2 backlogged (replaying).",
            MetricType::Gauge,
            Stats::get(&s.upstream_mode),
        )?;
        one(
            &mut e,
            "pdtf_upstream_live_events_dropped",
            "Live alarm copies on .../events not delivered (the records stream still has them).",
            MetricType::Counter,
            Stats::get(&s.live_events_dropped),
        )?;
        one(
            &mut e,
            "pdtf_alarms_active",
            "Limit alarms currently active.",
            MetricType::Gauge,
            Stats::get(&s.alarms_active),
        )?;
        one(
            &mut e,
            "pdtf_alarms_raised",
            "Limit alarms raised.",
            MetricType::Counter,
            Stats::get(&s.alarms_raised),
        )?;
        one(
            &mut e,
            "pdtf_alerts_published",
            "Alarm state messages published to SCADA.",
            MetricType::Counter,
            Stats::get(&s.alerts_published),
        )?;
        // The buckets are kept cumulative; the encoder wants each bucket's own count.
        let cumulative: Vec<u64> = s.commit_buckets.iter().map(Stats::get).collect();
        let buckets: Vec<(f64, u64)> = COMMIT_BUCKETS
            .iter()
            .zip(&cumulative)
            .scan(0, |below, (bound, c)| {
                let own = c.saturating_sub(*below);
                *below = *c;
                Some((*bound, own))
            })
            .collect();
        let m = e.encode_descriptor(
            "pdtf_journal_commit_duration_seconds",
            "Journal commit latency.",
            None,
            MetricType::Histogram,
        )?;
        let mut m = m;
        m.encode_histogram::<NoLabelSet>(
            Stats::get(&s.commit_sum_ns) as f64 / 1e9,
            Stats::get(&s.commit_count),
            &buckets,
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_labels_a_cumulative_histogram_and_well_formed_lines() {
        let s = Arc::new(Stats::default());
        s.set_line("granulation-1");
        s.observe_commit(Duration::from_micros(300));
        s.observe_commit(Duration::from_millis(20));
        let (a, b) = (s.source("plc-a"), s.source("plc-b"));
        s.count(&a, SourceEvent::Samples, 7);
        s.count(&b, SourceEvent::Samples, 2);
        s.count(&b, SourceEvent::Gap, 1);
        s.count(&b, SourceEvent::Reconnect, 1);
        let c = s.source("plc-c");
        SourceStats { all: &s, own: &c }.link_up();
        Stats::set(&s.upstream_mode, 2);
        Stats::add(&s.live_events_dropped, 3);
        s.set_build_info(&[("version", "0.1.0"), ("commit", "abc123")]);
        assert_eq!(Stats::get(&s.samples_in), 9, "the agent-wide total follows");
        let text = s.render_prometheus();
        for want in [
            "# TYPE pdtf_source_samples_total counter\n",
            "pdtf_source_samples_total{line=\"granulation-1\",source=\"plc-a\"} 7\n",
            "pdtf_source_samples_total{line=\"granulation-1\",source=\"plc-b\"} 2\n",
            "pdtf_source_gaps_total{line=\"granulation-1\",source=\"plc-b\"} 1\n",
            "pdtf_journal_last_seq{line=\"granulation-1\"} 0\n",
            "pdtf_source_connected{line=\"granulation-1\",source=\"plc-a\"} 1\n",
            "pdtf_source_connected{line=\"granulation-1\",source=\"plc-b\"} 0\n",
            "pdtf_source_connected{line=\"granulation-1\",source=\"plc-c\"} 1\n",
            "pdtf_upstream_mode{line=\"granulation-1\"} 2\n",
            "pdtf_upstream_live_events_dropped_total{line=\"granulation-1\"} 3\n",
            "pdtf_build_info{line=\"granulation-1\",version=\"0.1.0\",commit=\"abc123\"} 1\n",
            "# TYPE pdtf_journal_commit_duration_seconds histogram\n",
            "pdtf_journal_commit_duration_seconds_bucket{line=\"granulation-1\",le=\"0.0005\"} 1\n",
            "pdtf_journal_commit_duration_seconds_bucket{line=\"granulation-1\",le=\"0.025\"} 2\n",
            "pdtf_journal_commit_duration_seconds_bucket{line=\"granulation-1\",le=\"+Inf\"} 2\n",
            "pdtf_journal_commit_duration_seconds_count{line=\"granulation-1\"} 2\n",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        assert!(
            !text.contains("pdtf_clock_synchronized"),
            "absent while unknown"
        );
        let age = |source: &str| -> Option<f64> {
            let key = format!("pdtf_source_last_sample_age_seconds{{line=\"granulation-1\",source=\"{source}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(key.as_str()))
                .map(|v| v.parse().unwrap())
        };
        assert!(
            age("plc-a").is_some_and(|a| (0.0..60.0).contains(&a)),
            "{text}"
        );
        assert_eq!(age("plc-c"), None, "no age before the first sample");
        // Every sample line: a pdtf_ name, labels, a number; every name has one HELP and TYPE.
        let mut typed = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(
                    typed.insert(rest.split(' ').next().unwrap().to_owned()),
                    "{line}"
                );
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(
                name.starts_with("pdtf_") && name.contains("{line="),
                "{line}"
            );
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        assert!(typed.len() >= 25, "{typed:?}");
    }

    /// Every metric name (`pdtf_` and lowercase, digits, `_`) in a text.
    fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
        text.match_indices("pdtf_")
            .map(|(i, _)| {
                text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect()
            })
            .collect()
    }

    /// The names exported, rendered with every conditional family present.
    fn exported() -> (std::collections::BTreeSet<String>, String) {
        let s = Arc::new(Stats::default());
        s.set_line("l1");
        s.set_build_info(&[("version", "0")]);
        Stats::set_flag(&s.clock_sync_known, true);
        let src = s.source("plc");
        s.count(&src, SourceEvent::Samples, 1);
        Stats::add(&src.modbus.requests, 1);
        let text = s.render_prometheus();
        let names = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(|n| n.strip_suffix("_bucket").unwrap_or(n))
            .map(|n| n.strip_suffix("_count").unwrap_or(n))
            .map(|n| n.strip_suffix("_sum").unwrap_or(n))
            .map(str::to_owned)
            .collect();
        (names, text)
    }

    /// Every metric the shipped Grafana dashboard (config/grafana/pdtf-edge.json) queries is
    /// one the agent exports, under that exact name: a renamed metric breaks this test, not
    /// a plant's dashboard.
    #[test]
    fn the_grafana_dashboard_queries_only_exported_metrics() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../config/grafana/pdtf-edge.json"))
                .expect("the dashboard is JSON");
        let (exported, text) = exported();
        let mut queried = std::collections::BTreeSet::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{}", panel["title"]);
            for t in targets {
                let name = metric_names(t["expr"].as_str().expect("expr"));
                queried.extend(
                    name.into_iter()
                        .map(|n| n.strip_suffix("_bucket").map_or(n.clone(), str::to_owned)),
                );
            }
        }
        assert!(queried.len() >= 20, "{queried:?}");
        let missing: Vec<_> = queried.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "queried, not exported: {missing:?}\n{text}"
        );
    }

    /// Every metric the README names is exported, and every exported one is in the README.
    #[test]
    fn the_readme_lists_exactly_the_exported_metrics() {
        let (exported, text) = exported();
        let mut listed = metric_names(include_str!("../../README.md"));
        listed.remove("pdtf_models"); // the crate, not a metric
        let missing: Vec<_> = listed.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "in the README, not exported: {missing:?}\n{text}"
        );
        let unlisted: Vec<_> = exported.difference(&listed).collect();
        assert!(
            unlisted.is_empty(),
            "exported, not in the README: {unlisted:?}"
        );
    }
}
