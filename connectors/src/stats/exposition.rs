//! The Prometheus exposition of `Stats`: `prometheus-client`'s encoder over a collector that
//! reads the atomics at each scrape. Every metric carries `line` (the agent's `agent.line`;
//! a per-source metric, its source's line) and the per-source ones `source` too.

use super::{unix_ms, SourceCounters, Stats, COMMIT_BUCKETS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::sync::Arc;

/// The agent's counters, read at each scrape.
#[derive(Debug)]
pub(super) struct Exposition(pub(super) Arc<Stats>);

/// A source's id, the line its metrics are labelled with, and its counters.
type Source = (String, String, Arc<SourceCounters>);

fn one(
    e: &mut DescriptorEncoder,
    line: &[(&str, &str)],
    name: &str,
    help: &str,
    kind: MetricType,
    value: u64,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    let m = m.encode_family(&line)?;
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
    sources: &[Source],
    value: impl Fn(&SourceCounters) -> Option<N>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (id, line, c) in sources {
        if let Some(v) = value(c) {
            let labels = [("line", line.as_str()), ("source", id.as_str())];
            ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn per_source(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    sources: &[Source],
    value: impl Fn(&SourceCounters) -> u64,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (id, line, c) in sources {
        let labels = [("line", line.as_str()), ("source", id.as_str())];
        ConstCounter::new(value(c)).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Exposition {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let agent_line = s.line.get().map_or("", String::as_str);
        let line = [("line", agent_line)];
        let sources: Vec<Source> = s
            .sources
            .lock()
            .expect("stats lock poisoned")
            .iter()
            .map(|(k, v)| {
                let line = v.line.get().map_or(agent_line, String::as_str);
                (k.clone(), line.to_owned(), v.clone())
            })
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
            let labels: Vec<(&str, &str)> = line
                .into_iter()
                .chain(build.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .collect();
            ConstGauge::new(1).encode(m.encode_family(&labels)?)?;
        }
        let modbus: Vec<_> = sources
            .iter()
            .filter(|(_, _, c)| Stats::get(&c.modbus.requests) > 0)
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
            &line,
            "pdtf_source_samples_refused",
            "Samples refused because the journal is over quota (policy stop_samples).",
            MetricType::Counter,
            Stats::get(&s.samples_refused),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_journal_records_committed",
            "Records committed to the journal.",
            MetricType::Counter,
            Stats::get(&s.records_committed),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_journal_last_seq",
            "Highest committed sequence number.",
            MetricType::Gauge,
            Stats::get(&s.last_seq),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_journal_commit_errors",
            "Failed journal commits (retried).",
            MetricType::Counter,
            Stats::get(&s.commit_errors),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_journal_records_purged",
            "Records purged after upstream acknowledgement and retention.",
            MetricType::Counter,
            Stats::get(&s.records_purged),
        )?;
        one(&mut e, &line,
            "pdtf_journal_size_bytes",
            "Bytes of records the journal holds, the measure journal.max_size_bytes is checked against (redb: encoded records, less than the file, which never shrinks; sled: its size on disk).",
            MetricType::Gauge,
            Stats::get(&s.journal_bytes),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_journal_full",
            "1 while the journal is over its quota or its filesystem is full.",
            MetricType::Gauge,
            u64::from(Stats::flag(&s.store_full) || Stats::flag(&s.store_disk_full)),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_journal_write_failed",
            "1 while journal commits fail (intake waits until they succeed).",
            MetricType::Gauge,
            u64::from(Stats::flag(&s.store_failed)),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_journal_reopens",
            "Times the journal was closed and reopened to recover from a failed write.",
            MetricType::Counter,
            Stats::get(&s.store_reopens),
        )?;
        if Stats::flag(&s.clock_sync_known) {
            one(
                &mut e,
                &line,
                "pdtf_clock_synchronized",
                "1 while the kernel reports the host clock synchronised (adjtimex).",
                MetricType::Gauge,
                Stats::get(&s.clock_synchronized),
            )?;
        }
        one(
            &mut e,
            &line,
            "pdtf_clock_steps",
            "Wall-clock steps beyond clock.step_threshold_ms (each an audit record).",
            MetricType::Counter,
            Stats::get(&s.clock_steps),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_config_reloads",
            "Tag-map reloads applied without a restart (each a config_reload audit record).",
            MetricType::Counter,
            Stats::get(&s.config_reloads),
        )?;
        one(&mut e, &line, "pdtf_config_reloads_refused", "Reloads refused (invalid, or a change only a restart applies); the running configuration stayed.", MetricType::Counter, Stats::get(&s.config_reloads_refused))?;
        one(
            &mut e,
            &line,
            "pdtf_upstream_acked_seq",
            "Last sequence number acknowledged by the upstream broker.",
            MetricType::Gauge,
            Stats::get(&s.upstream_acked_seq),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_upstream_backlog_records",
            "Committed records not yet acknowledged upstream.",
            MetricType::Gauge,
            s.upstream_backlog(),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_upstream_messages_acked",
            "Upstream messages acknowledged (PUBACK).",
            MetricType::Counter,
            Stats::get(&s.upstream_messages_acked),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_upstream_reconnects",
            "Upstream link losses.",
            MetricType::Counter,
            Stats::get(&s.upstream_reconnects),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_upstream_connected",
            "1 while the upstream link is up.",
            MetricType::Gauge,
            u64::from(Stats::flag(&s.upstream_connected)),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_upstream_mode",
            "Upstream sync mode: 0 offline, 1 live (caught up), 2 backlogged (replaying).",
            MetricType::Gauge,
            Stats::get(&s.upstream_mode),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_upstream_live_events_dropped",
            "Live alarm copies on .../events not delivered (the records stream still has them).",
            MetricType::Counter,
            Stats::get(&s.live_events_dropped),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_command_replies_dropped",
            "Replies to commands not published (queue full or closed); the command records hold the outcomes.",
            MetricType::Counter,
            Stats::get(&s.command_replies_dropped),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_commands_dropped",
            "Commands not taken because the lines' intake was full; not recorded, not answered (the sender retries).",
            MetricType::Counter,
            Stats::get(&s.commands_dropped),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_alarms_active",
            "Limit alarms currently active.",
            MetricType::Gauge,
            Stats::get(&s.alarms_active),
        )?;
        let lines: Vec<(String, super::LineAlarms)> = s
            .line_alarms
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        for (name, help, value) in [
            (
                "pdtf_alarm_rate_10min",
                "Alarm activations in the last 10 minutes, per line (EEMUA 191: about 1 is manageable).",
                (|a: &super::LineAlarms| a.rate_10min) as fn(&super::LineAlarms) -> u64,
            ),
            (
                "pdtf_alarm_rate_10min_peak",
                "The highest 10-minute alarm count since start, per line.",
                |a| a.peak_10min,
            ),
            (
                "pdtf_alarms_chattering",
                "Alarms with 3 or more activations in the last 60 s, per line.",
                |a| a.chattering,
            ),
            (
                "pdtf_alarms_stale",
                "Alarms active for more than 24 h, per line.",
                |a| a.stale,
            ),
        ] {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (l, a) in &lines {
                ConstGauge::new(value(a)).encode(m.encode_family(&[("line", l.as_str())])?)?;
            }
        }
        one(
            &mut e,
            &line,
            "pdtf_alarm_updates_held",
            "Retained alarm updates of chattering alarms held back (chatter_republish_s); recorded in full.",
            MetricType::Counter,
            Stats::get(&s.alarm_updates_held),
        )?;
        one(
            &mut e,
            &line,
            "pdtf_alarms_raised",
            "Limit alarms raised.",
            MetricType::Counter,
            Stats::get(&s.alarms_raised),
        )?;
        one(
            &mut e,
            &line,
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
        m.encode_family(&line)?.encode_histogram::<NoLabelSet>(
            Stats::get(&s.commit_sum_ns) as f64 / 1e9,
            Stats::get(&s.commit_count),
            &buckets,
            None,
        )
    }
}
