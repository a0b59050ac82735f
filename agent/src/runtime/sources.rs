//! Builders that turn a validated configuration's source and tag entries into the connectors'
//! settings (MQTT topic maps, OPC UA monitored items), shared by start-up and reload.

use super::{qos, StartError};
use crate::config::{
    CompressionModeConfig, Config, DeadbandKind, MqttSourceConfig, OpcuaSourceConfig, SourceConfig,
    SourceSpec, TagAddress, TagConfig,
};
use pdtf_connectors::mqtt::{BrokerConfig, MqttSource, TopicBinding, TopicMap};
use pdtf_connectors::opcua::{Deadband, OpcuaItem, OpcuaSource};
use pdtf_models::compress::{CompressionMode, CompressionSpec};
use pdtf_models::TagId;
use std::collections::BTreeMap;
use std::time::Duration;

/// The entry `name` of a named configuration table (`[brokers.NAME]`, `[opcua_servers.NAME]`,
/// `[modbus_devices.NAME]`). Validation proved every reference resolves; a miss here means the
/// configuration changed under us, which refuses to start rather than panics.
pub(crate) fn named<'a, T>(
    table: &'a BTreeMap<String, T>,
    what: &str,
    name: &str,
) -> Result<&'a T, StartError> {
    table
        .get(name)
        .ok_or_else(|| StartError::Unresolved(format!("no {what} named {name:?}")))
}

/// How a tag's recorded samples are thinned, if they are.
pub(crate) fn compression_spec(t: &TagConfig) -> Option<CompressionSpec> {
    t.compression.map(|z| CompressionSpec {
        mode: match z.mode {
            CompressionModeConfig::Deadband => CompressionMode::Deadband,
            CompressionModeConfig::SwingingDoor => CompressionMode::SwingingDoor,
        },
        error: z.error,
        max_interval_ms: z.max_interval_ms,
    })
}

/// The topic map of the MQTT source `source`: its tags, under their durable ids.
pub(crate) fn topic_map(c: &Config, ids: &[TagId], source: &str) -> TopicMap {
    let mut map = TopicMap::default();
    for (t, id) in c.tags.iter().zip(ids).filter(|(t, _)| t.source == source) {
        let TagAddress::Mqtt(a) = &t.address else {
            continue;
        };
        map.insert(
            a.topic.clone(),
            TopicBinding {
                tag: *id,
                value_pointer: a.value_pointer.clone(),
                time_pointer: a.time_pointer.clone(),
                quality_pointer: a.quality_pointer.clone(),
                text: a.text,
            },
        );
    }
    map
}

pub(crate) fn mqtt_source(
    c: &Config,
    ids: &[TagId],
    s: &SourceConfig,
    m: &MqttSourceConfig,
) -> Result<MqttSource, StartError> {
    Ok(MqttSource {
        id: s.id.clone(),
        agent_id: c.agent.id.clone(),
        broker: broker(c, &m.broker)?.clone(),
        filters: m.topics.clone(),
        qos: qos(m.qos),
        map: topic_map(c, ids, &s.id),
        max_batch_samples: s.max_batch_samples,
        flush_interval: Duration::from_millis(s.flush_interval_ms),
        max_payload_bytes: m.max_payload_bytes,
        reload: None,
    })
}

/// The `[brokers.NAME]` a validated configuration refers to.
pub(crate) fn broker<'a>(c: &'a Config, name: &str) -> Result<&'a BrokerConfig, StartError> {
    named(&c.brokers, "broker", name)
}

/// The monitored items of the OPC UA source `source`: its tags, under their durable ids.
pub(crate) fn opcua_items(c: &Config, ids: &[TagId], source: &str) -> Vec<OpcuaItem> {
    let publishing = c
        .sources
        .iter()
        .find(|s| s.id == source)
        .and_then(|s| match &s.spec {
            SourceSpec::Opcua(o) => Some(o.publishing_interval_ms),
            _ => None,
        })
        .unwrap_or_default();
    c.tags
        .iter()
        .zip(ids)
        .filter(|(t, _)| t.source == source)
        .filter_map(|(t, id)| {
            let TagAddress::Opcua(a) = &t.address else {
                return None;
            };
            // Validation proved the node parses.
            let node = a.node.parse().ok()?;
            Some(OpcuaItem {
                tag: *id,
                node,
                value_type: a.value_type,
                sampling_interval_ms: a.sampling_interval_ms.unwrap_or(publishing as f64),
                queue_size: a.queue_size,
                discard_oldest: a.discard_oldest,
                deadband: a.opcua_deadband.map(|d| match d.kind {
                    DeadbandKind::Absolute => Deadband::Absolute(d.value),
                    DeadbandKind::Percent => Deadband::Percent(d.value),
                }),
            })
        })
        .collect()
}

pub(crate) fn opcua_source(
    c: &Config,
    ids: &[TagId],
    s: &SourceConfig,
    o: &OpcuaSourceConfig,
) -> Result<OpcuaSource, StartError> {
    let server = named(&c.opcua_servers, "OPC UA server", &o.server)?.clone();
    let items = opcua_items(c, ids, &s.id);
    Ok(OpcuaSource {
        id: s.id.clone(),
        agent_id: c.agent.id.clone(),
        pki_dir: pdtf_connectors::opcua::client::pki_dir(&server, &c.agent.state_dir),
        server,
        publishing_interval: Duration::from_millis(o.publishing_interval_ms),
        chunk_size: o.create_chunk_size,
        max_notifications_per_publish: o.max_notifications_per_publish,
        items,
        max_batch_samples: s.max_batch_samples,
        flush_interval: Duration::from_millis(s.flush_interval_ms),
        reload: None,
    })
}
