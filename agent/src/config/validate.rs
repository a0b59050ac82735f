//! Value and cross-reference rules. Pure: returns every problem with its TOML path.

use super::{Config, ConfigError, DeadbandKind, SourceKind};
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

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// Keys only one source kind understands. serde's unknown-field check cannot catch them on
/// the wrong kind (the kinds share one table type, and defaults hide whether a key was
/// set), so the keys a table sets are checked against its kind here, in one place.
const MQTT_SOURCE_KEYS: &[&str] = &["broker", "qos", "topics", "max_payload_bytes"];
const OPCUA_SOURCE_KEYS: &[&str] = &[
    "server",
    "publishing_interval_ms",
    "create_chunk_size",
    "max_notifications_per_publish",
];
const MODBUS_SOURCE_KEYS: &[&str] = &["device"];
/// Tag keys by the kind of the tag's source.
const MQTT_TAG_KEYS: &[&str] = &["topic", "value_pointer", "time_pointer", "quality_pointer"];
const OPCUA_TAG_KEYS: &[&str] = &[
    "node",
    "value_type",
    "sampling_interval_ms",
    "queue_size",
    "discard_oldest",
    "opcua_deadband",
];
const MODBUS_TAG_KEYS: &[&str] = &["modbus"];

const KINDS: [SourceKind; 3] = [SourceKind::Mqtt, SourceKind::Opcua, SourceKind::Modbus];

/// The kind's name in the configuration, what to call it, its source and its tag keys.
fn kind_info(
    kind: SourceKind,
) -> (
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
) {
    match kind {
        SourceKind::Mqtt => ("mqtt", "MQTT", MQTT_SOURCE_KEYS, MQTT_TAG_KEYS),
        SourceKind::Opcua => ("opcua", "OPC UA", OPCUA_SOURCE_KEYS, OPCUA_TAG_KEYS),
        SourceKind::Modbus => ("modbus", "Modbus", MODBUS_SOURCE_KEYS, MODBUS_TAG_KEYS),
    }
}

/// Errors for keys of another kind, at `prefix.KEY`.
fn foreign_keys(k: &mut Check<'_>, prefix: &str, keys: &[String], kind: SourceKind, what: &str) {
    let (name, _, _, _) = kind_info(kind);
    for other in KINDS.into_iter().filter(|o| *o != kind) {
        let (_, label, source_keys, tag_keys) = kind_info(other);
        let (foreign, whose) = if what == "source" {
            (source_keys, format!("an {label} source"))
        } else {
            (tag_keys, format!("a tag of an {label} source"))
        };
        for key in keys.iter().filter(|key| foreign.contains(&key.as_str())) {
            k.err(
                format!("{prefix}.{key}"),
                format!("is a key of {whose}; this {what}'s kind is \"{name}\""),
            );
        }
    }
}

const NAME_RULE: &str = "must be non-empty and use only letters, digits, `_`, `-` and `.`";

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
        .filter_map(|s| s.broker.as_deref())
        .chain(c.sinks.alerts.iter().map(|a| a.broker.as_str()))
        .chain(c.sinks.upstream.iter().map(|u| u.broker.as_str()))
        .collect();
    for (name, o) in &c.opcua_servers {
        for (key, msg) in o.problems() {
            k.err(format!("opcua_servers.{name}.{key}"), msg);
        }
        if !c.sources.iter().any(|s| s.server.as_deref() == Some(name)) {
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
        if let Some(keys) = c.source_keys.get(i) {
            foreign_keys(&mut k, &p, keys, s.kind, "source");
        }
        if !source_ids.insert(s.id.as_str()) {
            k.err(format!("{p}.id"), format!("duplicate source id {:?}", s.id));
        }
        match (s.kind, &s.broker, &s.server) {
            (SourceKind::Mqtt, Some(b), _) => {
                if reportable(c, "brokers", b) {
                    k.broker_ref(format!("{p}.broker"), b, &brokers);
                }
            }
            (SourceKind::Mqtt, None, _) => {
                k.err(format!("{p}.broker"), "is required for kind = \"mqtt\"")
            }
            (SourceKind::Opcua, _, Some(name)) => {
                let servers = c.opcua_servers.keys().map(String::as_str).collect();
                if reportable(c, "opcua_servers", name) {
                    k.named_ref(format!("{p}.server"), "OPC UA server", name, &servers);
                }
                if s.publishing_interval_ms == 0 {
                    k.err(format!("{p}.publishing_interval_ms"), "must be >= 1");
                }
                if s.create_chunk_size == 0 {
                    k.err(format!("{p}.create_chunk_size"), "must be >= 1");
                }
                if !(1..=MAX_NOTIFICATIONS_PER_PUBLISH).contains(&s.max_notifications_per_publish) {
                    k.err(
                        format!("{p}.max_notifications_per_publish"),
                        format!("must be 1..={MAX_NOTIFICATIONS_PER_PUBLISH}"),
                    );
                }
            }
            (SourceKind::Opcua, _, None) => {
                k.err(format!("{p}.server"), "is required for kind = \"opcua\"")
            }
            (SourceKind::Modbus, _, _) => match &s.device {
                Some(d) if reportable(c, "modbus_devices", d) => {
                    let devices = c.modbus_devices.keys().map(String::as_str).collect();
                    k.named_ref(format!("{p}.device"), "Modbus device", d, &devices);
                }
                Some(_) => {}
                None => k.err(format!("{p}.device"), "is required for kind = \"modbus\""),
            },
        }
        k.qos(format!("{p}.qos"), s.qos);
        if s.max_batch_samples == 0 {
            k.err(format!("{p}.max_batch_samples"), "must be >= 1");
        }
        if s.flush_interval_ms == 0 {
            k.err(format!("{p}.flush_interval_ms"), "must be >= 1");
        }
        if s.max_payload_bytes == 0
            || s.max_payload_bytes > pdtf_connectors::mqtt::MQTT_MAX_PACKET_BYTES
        {
            k.err(
                format!("{p}.max_payload_bytes"),
                format!(
                    "must be 1..={}",
                    pdtf_connectors::mqtt::MQTT_MAX_PACKET_BYTES
                ),
            );
        }
        for (j, f) in s.topics.iter().enumerate() {
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
        if let Some(s) = c.sources.iter().find(|s| s.id == t.source) {
            foreign_keys(&mut k, &p, &o.keys, s.kind, "tag");
        }
        match c.sources.iter().find(|s| s.id == t.source) {
            None if !reportable(c, "sources", &t.source) => {}
            None => k.err(
                format!("{p}.source"),
                format!("no source with id {:?}", t.source),
            ),
            Some(s) if s.kind == SourceKind::Mqtt => match &t.topic {
                None => k.err(
                    format!("{p}.topic"),
                    format!("is required: source {:?} is mqtt", s.id),
                ),
                Some(topic) if topic.is_empty() || topic.contains(['+', '#']) => k.err(
                    format!("{p}.topic"),
                    "must be an exact topic name (no wildcards)",
                ),
                Some(topic) => {
                    if !s.topics.is_empty() && !s.topics.iter().any(|f| matches_filter(f, topic)) {
                        k.err(
                            format!("{p}.topic"),
                            format!(
                                "{topic:?} is not covered by any of sources[id={}].topics",
                                s.id
                            ),
                        );
                    }
                }
            },
            Some(s) if s.kind == SourceKind::Modbus => {
                k.errs.extend(super::modbus::tag(c, s, t, &o.file, &p));
            }
            Some(s) => {
                match &t.node {
                    None => k.err(
                        format!("{p}.node"),
                        format!("is required: source {:?} is opcua", s.id),
                    ),
                    Some(n) => {
                        if let Err(e) = n.parse::<NodeAddr>() {
                            k.err(format!("{p}.node"), e);
                        }
                    }
                }

                if t.sampling_interval_ms
                    .is_some_and(|v| !(v.is_finite() && v >= 0.0))
                {
                    k.err(format!("{p}.sampling_interval_ms"), "must be a number >= 0");
                }
                if t.queue_size == 0 {
                    k.err(format!("{p}.queue_size"), "must be >= 1");
                }
                if let Some(d) = t.opcua_deadband {
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
        }
        for (key, ptr) in [
            ("value_pointer", &t.value_pointer),
            ("time_pointer", &t.time_pointer),
            ("quality_pointer", &t.quality_pointer),
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
        if t.value_pointer.is_none() && (t.time_pointer.is_some() || t.quality_pointer.is_some()) {
            k.err(
                format!("{p}.value_pointer"),
                "is required when time_pointer or quality_pointer is set (the payload is JSON)",
            );
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
        if let Some(l) = &t.limits {
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
                k.err(format!("{p}.limits"), "sets none of lolo, lo, hi, hihi");
            }
            for (n, v) in &set {
                if !v.is_finite() {
                    k.err(format!("{p}.limits.{n}"), "must be a finite number");
                }
            }
            for w in set.windows(2) {
                if w[1].1 <= w[0].1 {
                    k.err(
                        format!("{p}.limits.{}", w[1].0),
                        format!("must be > {} ({})", w[0].0, w[0].1),
                    );
                }
            }
            if !(l.deadband.is_finite() && l.deadband >= 0.0) {
                k.err(
                    format!("{p}.limits.deadband"),
                    "must be a finite number >= 0",
                );
            }
        }
        errs.extend(k.errs);
    }
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
