//! Value and cross-reference rules. Pure: returns every problem with its TOML path.

use super::{Config, ConfigError, DeadbandKind, LimitsConfig, SourceSpec, TagAddress};
use pdtf_connectors::opcua::client::MAX_NOTIFICATIONS_PER_PUBLISH;
use pdtf_connectors::opcua::NodeAddr;
use std::collections::BTreeSet;

/// MQTT topic-filter match (`+` one level, `#` the rest).
pub fn matches_filter(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

pub(super) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

pub(super) const NAME_RULE: &str =
    "must be non-empty and use only letters, digits, `_`, `-` and `.`";

struct Check<'a> {
    file: &'a str,
    errs: Vec<ConfigError>,
}

/// False for a reference to a section that failed to parse (its own error says why).
fn reportable(c: &Config, section: &str, name: &str) -> bool {
    !c.unparsed.contains(&format!("{section}.{name}"))
}

impl Check<'_> {
    fn err(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.errs.push(ConfigError::new(self.file, path, msg));
    }

    fn name(&mut self, path: &str, value: &str) {
        if !is_name(value) {
            self.err(path, format!("{value:?} {NAME_RULE}"));
        }
    }

    fn broker_ref(&mut self, path: String, name: &str, known: &BTreeSet<&str>) {
        self.named_ref(path, "broker", name, known);
    }

    /// `name` must be one of `known` (the sections of that kind).
    fn named_ref(&mut self, path: String, what: &str, name: &str, known: &BTreeSet<&str>) {
        if !known.contains(name) {
            let list: Vec<_> = known.iter().copied().collect();
            self.err(
                path,
                format!(
                    "no {what} named {name:?} (defined: {})",
                    if list.is_empty() {
                        "none".into()
                    } else {
                        list.join(", ")
                    }
                ),
            );
        }
    }

    fn qos(&mut self, path: String, qos: u8) {
        if qos > 2 {
            self.err(path, format!("{qos} is not an MQTT QoS (0, 1 or 2)"));
        }
    }
}

pub fn validate(c: &Config) -> Vec<ConfigError> {
    let mut k = Check {
        file: &c.file,
        errs: Vec::new(),
    };
    let a = &c.agent;
    k.name("agent.id", &a.id);
    k.name("agent.site", &a.site);
    k.name("agent.area", &a.area);
    k.name("agent.line", &a.line);
    if a.state_dir.as_os_str().is_empty() {
        k.err("agent.state_dir", "must not be empty");
    }

    for (name, b) in &c.brokers {
        let p = format!("brokers.{name}");
        if b.host.trim().is_empty() {
            k.err(format!("{p}.host"), "must not be empty");
        }
        if b.port == 0 {
            k.err(format!("{p}.port"), "must be 1..=65535");
        }
        if b.backoff_initial_ms == 0 {
            k.err(format!("{p}.backoff_initial_ms"), "must be > 0");
        }
        if b.backoff_max_ms < b.backoff_initial_ms {
            k.err(
                format!("{p}.backoff_max_ms"),
                "must be >= backoff_initial_ms",
            );
        }
        if b.max_packet_bytes < 1024 {
            k.err(format!("{p}.max_packet_bytes"), "must be >= 1024");
        }
        if b.password.is_some() && b.username.is_none() {
            k.err(format!("{p}.password"), "is set but username is not");
        }
    }
    let brokers: BTreeSet<&str> = c.brokers.keys().map(String::as_str).collect();
    // An unused broker is almost always a misspelt name; refusing it keeps typos visible.
    let used: BTreeSet<&str> = c
        .sources
        .iter()
        .filter_map(|s| match &s.spec {
            SourceSpec::Mqtt(m) => Some(m.broker.as_str()),
            _ => None,
        })
        .chain(c.sinks.alerts.iter().map(|a| a.broker.as_str()))
        .chain(c.sinks.upstream.iter().map(|u| u.broker.as_str()))
        .collect();
    for (name, o) in &c.opcua_servers {
        for (key, msg) in o.problems() {
            k.err(format!("opcua_servers.{name}.{key}"), msg);
        }
        let uses =
            |s: &&super::SourceConfig| matches!(&s.spec, SourceSpec::Opcua(o) if &o.server == name);
        if !c.sources.iter().any(|s| uses(&s)) {
            k.err(format!("opcua_servers.{name}"), "is not used by any source");
        }
    }
    k.errs.extend(super::modbus::devices(c));
    for name in brokers.difference(&used) {
        k.err(
            format!("brokers.{name}"),
            "is not used by any source or sink",
        );
    }

    let mut source_ids = BTreeSet::new();
    for (i, s) in c.sources.iter().enumerate() {
        let p = format!("sources[{i}]");
        k.name(&format!("{p}.id"), &s.id);
        if !source_ids.insert(s.id.as_str()) {
            k.err(format!("{p}.id"), format!("duplicate source id {:?}", s.id));
        }
        if s.max_batch_samples == 0 {
            k.err(format!("{p}.max_batch_samples"), "must be >= 1");
        }
        if s.flush_interval_ms == 0 {
            k.err(format!("{p}.flush_interval_ms"), "must be >= 1");
        }
        match &s.spec {
            SourceSpec::Mqtt(m) => {
                if reportable(c, "brokers", &m.broker) {
                    k.broker_ref(format!("{p}.broker"), &m.broker, &brokers);
                }
                k.qos(format!("{p}.qos"), m.qos);
                if m.max_payload_bytes == 0
                    || m.max_payload_bytes > pdtf_connectors::mqtt::MQTT_MAX_PACKET_BYTES
                {
                    k.err(
                        format!("{p}.max_payload_bytes"),
                        format!(
                            "must be 1..={}",
                            pdtf_connectors::mqtt::MQTT_MAX_PACKET_BYTES
                        ),
                    );
                }
                for (j, f) in m.topics.iter().enumerate() {
                    let bad_hash = f.split('/').rev().skip(1).any(|l| l == "#");
                    let bad_level = f
                        .split('/')
                        .any(|l| l.len() > 1 && (l.contains('+') || l.contains('#')));
                    if f.is_empty() || bad_hash || bad_level {
                        k.err(
                            format!("{p}.topics[{j}]"),
                            format!("{f:?} is not a valid MQTT topic filter"),
                        );
                    }
                }
            }
            SourceSpec::Opcua(o) => {
                let servers = c.opcua_servers.keys().map(String::as_str).collect();
                if reportable(c, "opcua_servers", &o.server) {
                    k.named_ref(format!("{p}.server"), "OPC UA server", &o.server, &servers);
                }
                if o.publishing_interval_ms == 0 {
                    k.err(format!("{p}.publishing_interval_ms"), "must be >= 1");
                }
                if o.create_chunk_size == 0 {
                    k.err(format!("{p}.create_chunk_size"), "must be >= 1");
                }
                if !(1..=MAX_NOTIFICATIONS_PER_PUBLISH).contains(&o.max_notifications_per_publish) {
                    k.err(
                        format!("{p}.max_notifications_per_publish"),
                        format!("must be 1..={MAX_NOTIFICATIONS_PER_PUBLISH}"),
                    );
                }
            }
            SourceSpec::Modbus(m) => {
                if reportable(c, "modbus_devices", &m.device) {
                    let devices = c.modbus_devices.keys().map(String::as_str).collect();
                    k.named_ref(format!("{p}.device"), "Modbus device", &m.device, &devices);
                }
            }
        }
    }

    if let Some(al) = &c.sinks.alerts {
        if reportable(c, "brokers", &al.broker) {
            k.broker_ref("sinks.alerts.broker".into(), &al.broker, &brokers);
        }
        k.qos("sinks.alerts.qos".into(), al.qos);
    }
    if let Some(u) = &c.sinks.upstream {
        if reportable(c, "brokers", &u.broker) {
            k.broker_ref("sinks.upstream.broker".into(), &u.broker, &brokers);
        }
        if u.max_batch_records == 0 {
            k.err("sinks.upstream.max_batch_records", "must be >= 1");
        }
        if u.max_inflight == 0 || u.max_inflight > u16::MAX as usize {
            k.err("sinks.upstream.max_inflight", "must be 1..=65535");
        }
        if let Some(b) = c.brokers.get(&u.broker) {
            if u.max_batch_bytes < 1024 || u.max_batch_bytes > b.max_packet_bytes {
                k.err(
                    "sinks.upstream.max_batch_bytes",
                    format!(
                        "must be 1024..={} (brokers.{}.max_packet_bytes)",
                        b.max_packet_bytes, u.broker
                    ),
                );
            }
        }
        if let Some(t) = &u.topic {
            if t.is_empty() || t.contains(['+', '#']) {
                k.err(
                    "sinks.upstream.topic",
                    "must be a topic name without wildcards",
                );
            }
        }
    }

    let j = &c.journal;
    if j.max_size_bytes < 1024 * 1024 {
        k.err("journal.max_size_bytes", "must be >= 1048576 (1 MiB)");
    }
    if j.engine == super::Engine::Sled && !cfg!(feature = "sled") {
        k.err(
            "journal.engine",
            "this build has no sled engine (build with `--features sled`)",
        );
    }
    if !(1..=1024).contains(&j.cache_mib) {
        k.err("journal.cache_mib", "must be 1..=1024 (MiB)");
    }
    if j.housekeeping_interval_s == 0 {
        k.err("journal.housekeeping_interval_s", "must be >= 1");
    }
    if c.clock.step_threshold_ms < 10 {
        k.err("clock.step_threshold_ms", "must be >= 10");
    }
    if c.clock.max_source_skew_s == 0 {
        k.err("clock.max_source_skew_s", "must be >= 1");
    }
    if let Some(h) = &c.health {
        match h.listen.parse::<std::net::SocketAddr>() {
            Err(e) => k.err("health.listen", format!("{:?} is not an address:port ({e})", h.listen)),
            Ok(a) if !a.ip().is_loopback() => k.err(
                "health.listen",
                "must be a loopback address: the endpoints are unauthenticated (put a proxy in front to expose them)",
            ),
            Ok(_) => {}
        }
    }
    if let Some(u) = &c.sinks.upstream {
        if u.max_drain_records_per_s == Some(0) {
            k.err(
                "sinks.upstream.max_drain_records_per_s",
                "must be >= 1 (omit it for no limit)",
            );
        }
    }

    k.errs.extend(super::lines::check(c, &is_name, NAME_RULE));
    k.errs.extend(super::recipes::check(c));
    k.errs.extend(super::batch::check(c));
    check_tags(c, &mut k.errs);
    k.errs
}

fn check_tags(c: &Config, errs: &mut Vec<ConfigError>) {
    let mut names = BTreeSet::new();
    for (t, o) in c.tags.iter().zip(&c.tag_origins) {
        let mut k = Check {
            file: &o.file,
            errs: Vec::new(),
        };
        let p = format!("tags[{}]", o.index);
        k.name(&format!("{p}.name"), &t.name);
        if !names.insert(t.name.as_str()) {
            k.err(
                format!("{p}.name"),
                format!("duplicate tag name {:?}", t.name),
            );
        }
        let source = c.sources.iter().find(|s| s.id == t.source);
        if source.is_none() && reportable(c, "sources", &t.source) {
            k.err(format!("{p}.source"), super::kinds::no_source(&t.source));
        }
        match (&t.address, source.map(|s| &s.spec)) {
            (TagAddress::Mqtt(a), spec) => {
                let filters = match spec {
                    Some(SourceSpec::Mqtt(m)) => m.topics.as_slice(),
                    _ => &[],
                };
                mqtt_address(&mut k, &p, a, filters, &t.source);
            }
            (TagAddress::Modbus(_), _) => {
                if let Some(s) = source {
                    k.errs.extend(super::modbus::tag(c, s, t, &o.file, &p));
                }
            }
            (TagAddress::Opcua(a), _) => opcua_address(&mut k, &p, a),
        }
        if let Some(z) = &t.compression {
            if !(z.error.is_finite() && z.error >= 0.0) {
                k.err(
                    format!("{p}.compression.error"),
                    "must be a finite number >= 0",
                );
            }
            if z.max_interval_ms == 0 {
                k.err(format!("{p}.compression.max_interval_ms"), "must be >= 1");
            }
        }
        if let Some(d) = &t.detect {
            for (key, msg) in detect_problems(d) {
                k.err(format!("{p}.detect.{key}"), msg);
            }
        }
        if let Some(l) = &t.limits {
            for (key, msg) in limit_problems(l) {
                k.err(format!("{p}.limits{key}"), msg);
            }
        }
        for (i, phase) in t
            .alarm
            .iter()
            .flat_map(|a| a.suppress_in_phases.iter())
            .enumerate()
        {
            let known = c
                .recipes
                .iter()
                .any(|r| r.phases.iter().any(|x| &x.name == phase));
            if !known {
                k.err(
                    format!("{p}.alarm.suppress_in_phases[{i}]"),
                    format!("no recipe has a phase {phase:?}: the alarm would never be suppressed"),
                );
            }
        }
        errs.extend(k.errs);
    }
}

/// What is wrong with a set of limits, each as (the key's path below the limits table,
/// e.g. `.hi` or `` for the table itself, the message).
pub(super) fn limit_problems(l: &LimitsConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let set: Vec<(&str, f64)> = [
        ("lolo", l.lolo),
        ("lo", l.lo),
        ("hi", l.hi),
        ("hihi", l.hihi),
    ]
    .into_iter()
    .filter_map(|(n, v)| v.map(|v| (n, v)))
    .collect();
    if set.is_empty() {
        out.push((String::new(), "sets none of lolo, lo, hi, hihi".into()));
    }
    for (n, v) in &set {
        if !v.is_finite() {
            out.push((format!(".{n}"), "must be a finite number".into()));
        }
    }
    for w in set.windows(2) {
        if w[1].1 <= w[0].1 {
            out.push((
                format!(".{}", w[1].0),
                format!("must be > {} ({})", w[0].0, w[0].1),
            ));
        }
    }
    if !(l.deadband.is_finite() && l.deadband >= 0.0) {
        out.push((".deadband".into(), "must be a finite number >= 0".into()));
    }
    out
}

/// An MQTT tag's address; `filters` are its source's subscription filters.
fn mqtt_address(
    k: &mut Check<'_>,
    p: &str,
    a: &super::MqttAddress,
    filters: &[String],
    source: &str,
) {
    let topic = &a.topic;
    if topic.is_empty() || topic.contains(['+', '#']) {
        k.err(
            format!("{p}.topic"),
            "must be an exact topic name (no wildcards)",
        );
    } else if !filters.is_empty() && !filters.iter().any(|f| matches_filter(f, topic)) {
        k.err(
            format!("{p}.topic"),
            format!("{topic:?} is not covered by any of sources[id={source}].topics"),
        );
    }
    for (key, ptr) in [
        ("value_pointer", &a.value_pointer),
        ("time_pointer", &a.time_pointer),
        ("quality_pointer", &a.quality_pointer),
    ] {
        if let Some(ptr) = ptr {
            if !ptr.starts_with('/') {
                k.err(
                    format!("{p}.{key}"),
                    format!("{ptr:?} is not a JSON pointer (RFC 6901, starts with `/`)"),
                );
            }
        }
    }
    if a.value_pointer.is_none() && (a.time_pointer.is_some() || a.quality_pointer.is_some()) {
        k.err(
            format!("{p}.value_pointer"),
            "is required when time_pointer or quality_pointer is set (the payload is JSON)",
        );
    }
}

/// An OPC UA tag's address.
fn opcua_address(k: &mut Check<'_>, p: &str, a: &super::OpcuaAddress) {
    if let Err(e) = a.node.parse::<NodeAddr>() {
        k.err(format!("{p}.node"), e);
    }
    if a.sampling_interval_ms
        .is_some_and(|v| !(v.is_finite() && v >= 0.0))
    {
        k.err(format!("{p}.sampling_interval_ms"), "must be a number >= 0");
    }
    if a.queue_size == 0 {
        k.err(format!("{p}.queue_size"), "must be >= 1");
    }
    if let Some(d) = a.opcua_deadband {
        let ok = d.value.is_finite()
            && d.value >= 0.0
            && (d.kind == DeadbandKind::Absolute || d.value <= 100.0);
        if !ok {
            k.err(
                format!("{p}.opcua_deadband.value"),
                "must be >= 0 (and <= 100 for percent)",
            );
        }
    }
}

/// What is wrong with a `[tags.detect]` table, each as (the key's path below it, why).
fn detect_problems(d: &super::tags::DetectConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |key: &str, msg: &str| out.push((key.to_owned(), msg.to_owned()));
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if d.stale_ms == Some(0) {
        bad("stale_ms", "must be > 0");
    }
    if let Some(f) = &d.frozen {
        if !(f.tolerance.is_finite() && f.tolerance >= 0.0) {
            bad("frozen.tolerance", "must be a finite number >= 0");
        }
        if f.window_ms == 0 {
            bad("frozen.window_ms", "must be > 0");
        }
    }
    if let Some(r) = &d.rate {
        if r.window_ms == 0 {
            bad("rate.window_ms", "must be > 0");
        }
        if r.rising.is_none() && r.falling.is_none() {
            bad("rate", "needs rising and/or falling (units per second)");
        }
        for (key, v) in [("rate.rising", r.rising), ("rate.falling", r.falling)] {
            if v.is_some_and(|v| !positive(v)) {
                bad(key, "must be a number > 0 (units per second)");
            }
        }
    }
    let centre = |prefix: &str, target: f64, sigma: f64, out: &mut Vec<(String, String)>| {
        if !target.is_finite() {
            out.push((format!("{prefix}.target"), "must be a finite number".into()));
        }
        if !positive(sigma) {
            out.push((format!("{prefix}.sigma"), "must be a number > 0".into()));
        }
    };
    if let Some(c) = &d.cusum {
        centre("cusum", c.target, c.sigma, &mut out);
        if !(c.k.is_finite() && c.k >= 0.0) {
            out.push(("cusum.k".into(), "must be a finite number >= 0 (σ)".into()));
        }
        if !positive(c.h) {
            out.push(("cusum.h".into(), "must be a number > 0 (σ)".into()));
        }
    }
    if let Some(e) = &d.ewma {
        centre("ewma", e.target, e.sigma, &mut out);
        if !(e.lambda > 0.0 && e.lambda <= 1.0) {
            out.push(("ewma.lambda".into(), "must be in (0, 1]".into()));
        }
        if !positive(e.l) {
            out.push(("ewma.l".into(), "must be a number > 0 (σ)".into()));
        }
    }
    if d.state.as_ref().is_some_and(|st| st.alarm_on.is_empty()) {
        out.push((
            "state.alarm_on".into(),
            "must name at least one value in alarm".into(),
        ));
    }
    if let Some(p) = &d.spc {
        centre("spc", p.target, p.sigma, &mut out);
        if p.rules.is_empty() {
            out.push(("spc.rules".into(), "must name at least one rule".into()));
        }
        for (i, r) in p.rules.iter().enumerate() {
            if pdtf_models::detect::signal::Rule::from_name(r).is_none() {
                out.push((
                    format!("spc.rules[{i}]"),
                    format!("unknown rule {r:?} (we1..we4, nelson1..nelson8)"),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_matching() {
        assert!(matches_filter("a/+/c", "a/b/c"));
        assert!(matches_filter("a/#", "a/b/c"));
        assert!(matches_filter("#", "a"));
        assert!(!matches_filter("a/+", "a/b/c"));
        assert!(!matches_filter("a/b", "a/c"));
        assert!(matches_filter("a/b", "a/b"));
    }
}
