//! The `[[tags]]` tables: what every tag takes (name, unit, limits, compression) and the
//! address of each kind of source.

use super::CompressionConfig;
use pdtf_connectors::modbus::ModbusTagConfig;
use pdtf_connectors::opcua::ValueType;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub lolo: Option<f64>,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    pub hihi: Option<f64>,
    #[serde(default)]
    pub deadband: f64,
    #[serde(default)]
    pub on_delay_ms: u64,
}

/// One `[[tags]]` table: the keys every tag takes, and the address in its source's kind.
#[derive(Debug, Clone, PartialEq)]
pub struct TagConfig {
    /// Unique; used in alarm topics, so no `/`, `+`, `#` or spaces.
    pub name: String,
    pub unit: String,
    pub description: String,
    /// Id of the source that delivers this tag.
    pub source: String,
    pub limits: Option<LimitsConfig>,
    /// Thins the *recorded* samples (detectors still see all of them).
    pub compression: Option<CompressionConfig>,
    /// Where the value comes from; its kind is the kind of `source`.
    pub address: TagAddress,
}

impl TagConfig {
    pub(crate) fn new(common: TagCommon, address: TagAddress) -> Self {
        let TagCommon {
            name,
            unit,
            description,
            source,
            limits,
            compression,
        } = common;
        Self {
            name,
            unit,
            description,
            source,
            limits,
            compression,
            address,
        }
    }

    /// The Modbus registers of a tag of a Modbus source.
    pub fn modbus(&self) -> Option<&ModbusTagConfig> {
        match &self.address {
            TagAddress::Modbus(m) => Some(m),
            _ => None,
        }
    }
}

/// The keys of a `[[tags]]` table that every tag takes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TagCommon {
    pub name: String,
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub description: String,
    pub source: String,
    pub limits: Option<LimitsConfig>,
    pub compression: Option<CompressionConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TagAddress {
    Mqtt(MqttAddress),
    Opcua(OpcuaAddress),
    Modbus(ModbusTagConfig),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttAddress {
    /// Exact MQTT topic the value arrives on.
    pub topic: String,
    /// RFC 6901 pointer to the value in a JSON payload; absent = the payload is a bare number.
    pub value_pointer: Option<String>,
    pub time_pointer: Option<String>,
    pub quality_pointer: Option<String>,
    /// The value is text (batch ids, phase names): the whole payload, or the JSON string at
    /// `value_pointer`. Default: a number (a JSON boolean is 0/1).
    #[serde(default)]
    pub text: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpcuaAddress {
    /// Node id, `ns=2;s=Line1.Temp`, `ns=3;i=1001` or `nsu=URI;s=…`.
    pub node: String,
    /// The type the value must have; another type is recorded as Bad.
    #[serde(default)]
    pub value_type: ValueType,
    /// Sampling interval (absent: the subscription's publishing interval).
    pub sampling_interval_ms: Option<f64>,
    /// Server-side queue of the monitored item.
    #[serde(default = "default_queue_size")]
    pub queue_size: u32,
    /// When the queue is full, drop the oldest (true) or the newest value.
    #[serde(default = "default_true")]
    pub discard_oldest: bool,
    /// Server-side deadband filter.
    pub opcua_deadband: Option<OpcuaDeadbandConfig>,
}

/// A Modbus tag's keys: its `modbus = { … }` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModbusAddress {
    pub modbus: ModbusTagConfig,
}

const fn default_queue_size() -> u32 {
    10
}
const fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum DeadbandKind {
    Absolute,
    /// Percent of the variable's EURange.
    Percent,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpcuaDeadbandConfig {
    pub kind: DeadbandKind,
    pub value: f64,
}
