//! The `[[sources]]` tables: the keys every kind takes and each kind's own closed type.

use super::{
    default_flush_interval_ms, default_max_batch_samples, default_max_payload_bytes, default_qos,
};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Mqtt,
    Opcua,
    Modbus,
}

impl SourceKind {
    pub const ALL: [SourceKind; 3] = [SourceKind::Mqtt, SourceKind::Opcua, SourceKind::Modbus];

    /// The name in the configuration (`kind = "…"`).
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Mqtt => "mqtt",
            SourceKind::Opcua => "opcua",
            SourceKind::Modbus => "modbus",
        }
    }

    /// "a" or "an", before `label`.
    pub fn article(self) -> &'static str {
        match self {
            SourceKind::Modbus => "a",
            SourceKind::Mqtt | SourceKind::Opcua => "an",
        }
    }

    /// What to call it in a message.
    pub fn label(self) -> &'static str {
        match self {
            SourceKind::Mqtt => "MQTT",
            SourceKind::Opcua => "OPC UA",
            SourceKind::Modbus => "Modbus",
        }
    }
}

const fn default_publishing_interval_ms() -> u64 {
    500
}
const fn default_create_chunk_size() -> usize {
    200
}
const fn default_max_notifications_per_publish() -> u32 {
    1_000
}

/// One `[[sources]]` table: the keys every kind takes, and the kind's own (`spec`).
///
/// Each kind is its own closed type, so a key of another kind cannot be carried along
/// unnoticed: the loader splits the table into the common keys and the kind's, reports a
/// key of another kind by name, and the runtime gets a reference it can use as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    pub id: String,
    pub max_batch_samples: usize,
    pub flush_interval_ms: u64,
    pub spec: SourceSpec,
}

impl SourceConfig {
    pub fn kind(&self) -> SourceKind {
        match self.spec {
            SourceSpec::Mqtt(_) => SourceKind::Mqtt,
            SourceSpec::Opcua(_) => SourceKind::Opcua,
            SourceSpec::Modbus(_) => SourceKind::Modbus,
        }
    }

    /// The `[modbus_devices.NAME]` a Modbus source polls.
    pub fn device(&self) -> Option<&str> {
        match &self.spec {
            SourceSpec::Modbus(m) => Some(&m.device),
            _ => None,
        }
    }
}

/// The keys of a `[[sources]]` table that every kind takes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceCommon {
    pub id: String,
    pub kind: SourceKind,
    #[serde(default = "default_max_batch_samples")]
    pub max_batch_samples: usize,
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    Mqtt(MqttSourceConfig),
    Opcua(OpcuaSourceConfig),
    Modbus(ModbusSourceConfig),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// Name of a `[brokers.NAME]` section.
    pub broker: String,
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Subscription filters (wildcards allowed). Empty: subscribe to the mapped topics.
    #[serde(default)]
    pub topics: Vec<String>,
    /// A larger payload is recorded as malformed (topic and size) and skipped, never
    /// decoded; the link stays up.
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpcuaSourceConfig {
    /// Name of an `[opcua_servers.NAME]` section.
    pub server: String,
    /// The subscription's publishing interval.
    #[serde(default = "default_publishing_interval_ms")]
    pub publishing_interval_ms: u64,
    /// Monitored items per CreateMonitoredItems request (some PLCs slow down badly with
    /// large requests).
    #[serde(default = "default_create_chunk_size")]
    pub create_chunk_size: usize,
    /// The most value changes the server may put in one publish response; more go in
    /// further responses the agent asks for at once (bounded messages on both ends).
    #[serde(default = "default_max_notifications_per_publish")]
    pub max_notifications_per_publish: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModbusSourceConfig {
    /// Name of a `[modbus_devices.NAME]` section.
    pub device: String,
}
