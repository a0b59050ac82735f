//! Agent configuration: the agent TOML file plus the tag-map files it includes.
//!
//! Loading (`load.rs`) parses, interpolates `${ENV}` and deserialises each section and each
//! tag separately so that *every* error is reported with its file and TOML path; `validate.rs`
//! then checks the cross-references and value rules. Unknown keys are errors everywhere
//! (`deny_unknown_fields`, no `flatten`).
//!
//! Why not the `config` crate: its merged `Value` tree loses the file and the key path of an
//! error and does not reject unknown keys across layered sources, which is exactly what
//! `pdtf-agent validate` must report.

mod interpolate;
mod kinds;
mod lines;
mod load;
mod modbus;
mod validate;

pub use load::{load, load_str, state_dir};
pub use validate::{matches_filter, validate};

use pdtf_connectors::modbus::{ModbusDeviceConfig, ModbusTagConfig};
use pdtf_connectors::mqtt::BrokerConfig;
use pdtf_connectors::opcua::{OpcuaServerConfig, ValueType};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// One configuration problem, with the file and TOML path it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(
        file: impl Into<String>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.message)
        }
    }
}

const fn default_qos() -> u8 {
    1
}
const fn default_max_batch_samples() -> usize {
    500
}
const fn default_max_payload_bytes() -> usize {
    64 * 1024
}
const fn default_flush_interval_ms() -> u64 {
    50
}
const fn default_max_batch_records() -> usize {
    500
}
const fn default_max_batch_bytes() -> usize {
    256 * 1024
}
const fn default_max_inflight() -> usize {
    16
}
const fn default_retention_hours() -> u64 {
    168
}
const fn default_max_size_bytes() -> u64 {
    2 * 1024 * 1024 * 1024
}
const fn default_housekeeping_interval_s() -> u64 {
    10
}
const fn default_max_interval_ms() -> u64 {
    60_000
}

/// What the agent does while the journal is over `max_size_bytes`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Stop recording samples (counted, and the hole becomes a gap record); alarms, gaps and
    /// audit entries still get in. The twin and detectors keep running.
    #[default]
    StopSamples,
    /// Stop reading sources altogether: back-pressure reaches the brokers (a broker session
    /// with QoS 1 then holds the data). Nothing at all is recorded until space is freed.
    Block,
}

/// Storage engine of the journal.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    Redb,
    /// Only in builds with the cargo feature `sled` (kept for the engine comparison).
    Sled,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    #[serde(default)]
    pub engine: Engine,
    /// Acknowledged records older than this are purged (0 = as soon as acknowledged).
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u64,
    /// Quota on stored record data. Over it: the `journal_full` critical alarm, not-ready,
    /// and `full_policy`. Records are never overwritten.
    #[serde(default = "default_max_size_bytes")]
    pub max_size_bytes: u64,
    #[serde(default)]
    pub full_policy: FullPolicy,
    #[serde(default = "default_housekeeping_interval_s")]
    pub housekeeping_interval_s: u64,
    /// redb's page cache in MiB (part of the agent's resident memory; redb's own default
    /// would be 1 GiB).
    #[serde(default = "default_cache_mib")]
    pub cache_mib: u64,
}

const fn default_cache_mib() -> u64 {
    (crate::journal::CACHE_BYTES / (1024 * 1024)) as u64
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            engine: Engine::default(),
            retention_hours: default_retention_hours(),
            max_size_bytes: default_max_size_bytes(),
            full_policy: FullPolicy::default(),
            housekeeping_interval_s: default_housekeeping_interval_s(),
            cache_mib: default_cache_mib(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Loopback address for `/healthz`, `/readyz`, `/metrics`, e.g. "127.0.0.1:9464".
    pub listen: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CompressionModeConfig {
    Deadband,
    SwingingDoor,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    pub mode: CompressionModeConfig,
    /// Error bound in the tag's unit: deadband (hold-last reconstruction) or swinging-door
    /// (linear reconstruction) keeps every dropped sample within it.
    pub error: f64,
    /// At least one sample is recorded per this interval.
    #[serde(default = "default_max_interval_ms")]
    pub max_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Unique per agent in the fleet; upstream consumers de-duplicate by (id, seq).
    pub id: String,
    pub site: String,
    pub area: String,
    pub line: String,
    /// Holds the journal (`journal.redb`). Must be writable by the service user.
    pub state_dir: PathBuf,
}

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

/// One production line (ISA-95 work centre) of a gateway that serves several: its own
/// pipeline task, twin and detectors, fed by the sources it lists (a tag belongs to the line
/// of its source).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// Unique; names the line in logs and in validation errors.
    pub id: String,
    /// The ISA-95 line name in this line's alarm topics (`pdtf/{site}/{area}/{line}/…`) and
    /// the `line` label of its sources' metrics; defaults to `id`.
    pub line: Option<String>,
    /// Ids of the `[[sources]]` that feed this line; every source is on exactly one line.
    pub sources: Vec<String>,
}

impl LineConfig {
    /// The ISA-95 line name (`line`, or `id` when absent).
    pub fn name(&self) -> &str {
        self.line.as_deref().unwrap_or(&self.id)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertSinkConfig {
    pub broker: String,
    #[serde(default = "default_qos")]
    pub qos: u8,
}

const fn default_backlog_threshold_records() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// While more than `backlog_threshold_records` wait, the sync is *backlogged* and sends
    /// at most this many records per second (absent: as fast as the broker acknowledges).
    pub max_drain_records_per_s: Option<u64>,
    #[serde(default = "default_backlog_threshold_records")]
    pub backlog_threshold_records: u64,
    pub broker: String,
    /// Defaults to `pdtf/{site}/{area}/{line}/records`.
    pub topic: Option<String>,
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: usize,
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    pub alerts: Option<AlertSinkConfig>,
    pub upstream: Option<UpstreamConfig>,
}

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

/// Where a tag was defined, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub index: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub agent: AgentSection,
    pub brokers: BTreeMap<String, BrokerConfig>,
    pub opcua_servers: BTreeMap<String, OpcuaServerConfig>,
    pub modbus_devices: BTreeMap<String, ModbusDeviceConfig>,
    pub sources: Vec<SourceConfig>,
    /// `[[lines]]` as written; empty: one line, `agent.line`, with every source (see
    /// `Config::lines`).
    pub lines: Vec<LineConfig>,
    pub sinks: SinksConfig,
    pub journal: JournalConfig,
    pub health: Option<HealthConfig>,
    pub clock: crate::clock::ClockConfig,
    pub tags: Vec<TagConfig>,
    pub tag_origins: Vec<Origin>,
    /// Sections that did not parse (`brokers.NAME`, `opcua_servers.NAME`,
    /// `modbus_devices.NAME`, `sources.ID`):
    /// their errors are reported, so references to them are not reported again.
    pub unparsed: std::collections::BTreeSet<String>,
    /// The agent file itself.
    pub file: String,
}

impl Config {
    /// `pdtf/{site}/{area}/{line}`: the ISA-95 prefix of every topic this agent publishes.
    pub fn topic_prefix(&self) -> String {
        format!(
            "pdtf/{}/{}/{}",
            self.agent.site, self.agent.area, self.agent.line
        )
    }

    /// The lines the agent runs: `[[lines]]`, or one line named `agent.line` with every
    /// source when there is none.
    pub fn lines(&self) -> Vec<LineConfig> {
        if !self.lines.is_empty() {
            return self.lines.clone();
        }
        vec![LineConfig {
            id: self.agent.line.clone(),
            line: None,
            sources: self.sources.iter().map(|s| s.id.clone()).collect(),
        }]
    }

    /// The index in `lines()` of the line source `id` feeds (0 when it is on none, which
    /// validation refuses).
    pub fn line_of(&self, source: &str) -> usize {
        self.lines
            .iter()
            .position(|l| l.sources.iter().any(|s| s == source))
            .unwrap_or(0)
    }

    /// `pdtf/{site}/{area}/{line}` of line `i` of `lines()`.
    pub fn line_prefix(&self, line: &LineConfig) -> String {
        format!(
            "pdtf/{}/{}/{}",
            self.agent.site,
            self.agent.area,
            line.name()
        )
    }
}
