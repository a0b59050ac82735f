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

mod batch;
mod interpolate;
mod kinds;
mod lines;
mod load;
mod modbus;
mod recipes;
mod sources;
mod tags;
mod validate;

pub use batch::BatchConfig;
pub use load::{load, load_str, state_dir};
pub use recipes::{
    Marker, MaterialConfig, PhaseConfig, QualityConfig, RecipeConfig, TrajectoryConfig,
    MAX_TRAJECTORY_BYTES,
};
pub(crate) use sources::SourceCommon;
pub use sources::{
    ModbusSourceConfig, MqttSourceConfig, OpcuaSourceConfig, SourceConfig, SourceKind, SourceSpec,
};
pub use tags::{
    AlarmConfig, DeadbandKind, LimitsConfig, MqttAddress, OpcuaAddress, OpcuaDeadbandConfig,
    TagAddress, TagConfig,
};
pub(crate) use tags::{ModbusAddress, TagCommon};
pub use validate::{matches_filter, validate};

use pdtf_connectors::modbus::ModbusDeviceConfig;
use pdtf_connectors::mqtt::BrokerConfig;
use pdtf_connectors::opcua::OpcuaServerConfig;
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
    /// How the line's batch twin is driven (`[lines.batch]`); none: no batch tracking.
    pub batch: Option<BatchConfig>,
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
    /// Take operator actions on each line's `P/cmd/alarm` (ack, shelve, …) and QA's
    /// dispositions of deviations on `P/cmd/deviation` (answered on
    /// `P/cmd/reply/{request_id}`).
    #[serde(default)]
    pub commands: bool,
    /// Action name (`ack`, `shelve`, …, `disposition`) → the users allowed to send it; an
    /// action not listed is open to all.
    #[serde(default)]
    pub allow_users: BTreeMap<String, Vec<String>>,
    /// The longest timed shelf an operator may ask for, in seconds.
    #[serde(default = "default_max_shelve_s")]
    pub max_shelve_s: u64,
    /// While an alarm chatters (3 or more activations in 60 s), its retained message is
    /// republished at most once per this many seconds (0: every change). The records and
    /// `P/events` keep every transition; holding back is itself an audit record.
    #[serde(default)]
    pub chatter_republish_s: u64,
}

const fn default_max_shelve_s() -> u64 {
    8 * 3600
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
    /// `[[recipes]]`: the master recipes batches run against.
    pub recipes: Vec<RecipeConfig>,
    /// `[batch]`: the batch twin of an agent without `[[lines]]`.
    pub batch: Option<BatchConfig>,
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
            batch: self.batch.clone(),
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

/// A one-source MQTT configuration for unit tests: `extra` goes after the source table,
/// `tags` after that. Panics on an invalid result (a broken test fixture).
#[cfg(test)]
pub(crate) fn test_config(tags: &str, extra: &str) -> Config {
    let text = format!(
        r#"
[agent]
id = "a"
site = "s"
area = "r"
line = "l"
state_dir = "/tmp/none"
[brokers.b]
host = "127.0.0.1"
[[sources]]
id = "plc"
kind = "mqtt"
broker = "b"
{extra}
{tags}
"#
    );
    load_str(&text, std::path::Path::new("/etc/pdtf/agent.toml"), &|_| {
        None
    })
    .unwrap_or_else(|e| panic!("invalid test configuration: {e:?}"))
}
