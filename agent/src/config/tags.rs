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
    /// A critical process parameter: exceeding a limit while a batch runs opens a GMP
    /// deviation.
    #[serde(default)]
    pub critical: bool,
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
    /// Detectors beyond the limits: `[tags.detect]`.
    pub detect: Option<DetectConfig>,
    /// The lifecycle of the tag's alarms: `[tags.alarm]`.
    pub alarm: Option<AlarmConfig>,
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
            detect,
            alarm,
        } = common;
        Self {
            name,
            unit,
            description,
            source,
            limits,
            compression,
            detect,
            alarm,
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
    pub detect: Option<DetectConfig>,
    pub alarm: Option<AlarmConfig>,
}

/// `[tags.alarm]`: the ISA-18.2 lifecycle of every alarm of the tag (limit, rate, stale, …).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlarmConfig {
    /// A cleared alarm stays until acknowledged (or reset, once acknowledged).
    #[serde(default)]
    pub latching: bool,
    /// Operators may shelve it; `false` for a safety alarm.
    #[serde(default = "yes")]
    pub shelvable: bool,
    /// Suppressed by design while one of these phases runs (still recorded in full).
    #[serde(default)]
    pub suppress_in_phases: Vec<String>,
}

const fn yes() -> bool {
    true
}

impl Default for AlarmConfig {
    fn default() -> Self {
        Self {
            latching: false,
            shelvable: true,
            suppress_in_phases: Vec::new(),
        }
    }
}

/// `[tags.detect]`: a tag's detectors beyond fixed limits, each optional, each its own alarm
/// (`P/alarms/{tag}/{kind}`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Alarm (`stale`) when no new value came for this long, judged every second.
    pub stale_ms: Option<u64>,
    /// Alarm (`frozen`) when a Good value stays within `tolerance` for `window_ms`.
    pub frozen: Option<FrozenConfig>,
    /// Alarm (`rate`) when the change over `window_ms` is faster than `rising` (units per
    /// second, upwards) or `falling` (downwards).
    pub rate: Option<RateConfig>,
    /// Two-sided tabular CUSUM (`cusum`) around `target`, `k` and `h` in units of `sigma`.
    pub cusum: Option<CusumConfig>,
    /// EWMA chart (`ewma`) around `target`, `lambda` and `l` (limits in σ of the statistic).
    pub ewma: Option<EwmaConfig>,
    /// Run rules (`spc`) around `target` ± `sigma`: `we1`..`we4`, `nelson1`..`nelson8`.
    pub spc: Option<SpcConfig>,
    /// Discrete-state alarm (`state`): active while the value is one of `alarm_on`, and,
    /// with `phases`, only while one of them runs.
    pub state: Option<StateConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// The values in alarm: booleans, numbers (an enumeration's codes) or texts.
    pub alarm_on: Vec<StateValue>,
    #[serde(default)]
    pub phases: Vec<String>,
}

/// One value of a discrete-state tag.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum StateValue {
    Bool(bool),
    Number(f64),
    Text(String),
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FrozenConfig {
    pub tolerance: f64,
    pub window_ms: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    pub window_ms: u64,
    pub rising: Option<f64>,
    pub falling: Option<f64>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CusumConfig {
    pub target: f64,
    pub sigma: f64,
    #[serde(default = "default_cusum_k")]
    pub k: f64,
    #[serde(default = "default_cusum_h")]
    pub h: f64,
}

const fn default_cusum_k() -> f64 {
    0.5
}
const fn default_cusum_h() -> f64 {
    5.0
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EwmaConfig {
    pub target: f64,
    pub sigma: f64,
    #[serde(default = "default_ewma_lambda")]
    pub lambda: f64,
    #[serde(default = "default_ewma_l")]
    pub l: f64,
}

const fn default_ewma_lambda() -> f64 {
    0.2
}
const fn default_ewma_l() -> f64 {
    3.0
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpcConfig {
    pub target: f64,
    pub sigma: f64,
    /// Default: Western Electric 1–4.
    #[serde(default = "default_spc_rules")]
    pub rules: Vec<String>,
}

fn default_spc_rules() -> Vec<String> {
    ["we1", "we2", "we3", "we4"].map(String::from).to_vec()
}

impl DetectConfig {
    /// The models' view (rules by name; an unknown name was refused by validation).
    pub fn spec(&self) -> pdtf_models::detect::signals::SignalSpec {
        use pdtf_models::detect::signal::Rule;
        use pdtf_models::detect::signals::{RateSpec, Shift, SignalSpec, SpcSpec, StateSpec};
        use pdtf_models::Value;
        SignalSpec {
            stale_ms: self.stale_ms,
            frozen: self.frozen.map(|f| (f.tolerance, f.window_ms)),
            rate: self.rate.map(|r| RateSpec {
                window_ms: r.window_ms,
                rising: r.rising,
                falling: r.falling,
            }),
            cusum: self.cusum.map(|c| Shift {
                target: c.target,
                sigma: c.sigma,
                a: c.k,
                b: c.h,
            }),
            ewma: self.ewma.map(|e| Shift {
                target: e.target,
                sigma: e.sigma,
                a: e.lambda,
                b: e.l,
            }),
            spc: self.spc.as_ref().map(|p| SpcSpec {
                target: p.target,
                sigma: p.sigma,
                rules: p.rules.iter().filter_map(|r| Rule::from_name(r)).fold(
                    Vec::new(),
                    |mut v, r| {
                        // Each rule once (there are 12: within `RunRules`' 16).
                        if !v.contains(&r) {
                            v.push(r);
                        }
                        v
                    },
                ),
            }),
            state: self.state.as_ref().map(|st| StateSpec {
                values: st
                    .alarm_on
                    .iter()
                    .map(|v| match v {
                        StateValue::Bool(b) => Value::Bool(*b),
                        StateValue::Number(n) => Value::Num(*n),
                        StateValue::Text(t) => Value::Text(t.clone()),
                    })
                    .collect(),
                phases: st.phases.clone(),
            }),
        }
    }
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
