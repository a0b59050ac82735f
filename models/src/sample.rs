//! A sample is one observed value of one tag, with its quality and both clocks.

use crate::{TagId, Timestamp};
use serde::{Deserialize, Serialize};

/// OPC UA style quality. `code` keeps the source's own status code when it sent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Good,
    Uncertain,
    Bad,
}

impl Quality {
    /// Maps an OPC UA status code by its severity bits (Part 4, 7.34.1).
    pub const fn from_status_code(code: u32) -> Self {
        match code >> 30 {
            0 => Quality::Good,
            1 => Quality::Uncertain,
            _ => Quality::Bad,
        }
    }

    /// Parses the names a publisher is likely to send ("good", "GOOD", "uncertain", "bad").
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "good" | "ok" => Some(Quality::Good),
            "uncertain" => Some(Quality::Uncertain),
            "bad" => Some(Quality::Bad),
            _ => None,
        }
    }

    /// Whether a value of this quality may drive detectors (Bad values never raise or clear).
    pub const fn is_usable(self) -> bool {
        !matches!(self, Quality::Bad)
    }
}

/// A sample's value. Detectors and compression use numbers only; every type is recorded.
///
/// In JSON (upstream messages) a value is plain: a number, `true`, a string, an array of
/// numbers, or `null`. In the stored binary format it is a tagged enum.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Num(f64),
    Bool(bool),
    Text(String),
    Array(Vec<f64>),
    /// No value: the source sent none, or one of the wrong type (the status says which).
    Empty,
}

/// The stored (non-human-readable) form of `Value`.
#[derive(Serialize, Deserialize)]
enum Tagged<T, A> {
    Num(f64),
    Bool(bool),
    Text(T),
    Array(A),
    Empty,
}

/// The JSON form of `Value`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Plain<T, A> {
    Num(f64),
    Bool(bool),
    Text(T),
    Array(A),
    Empty(()),
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            match self {
                Value::Num(x) => Plain::Num(*x),
                Value::Bool(b) => Plain::Bool(*b),
                Value::Text(t) => Plain::Text(t.as_str()),
                Value::Array(a) => Plain::Array(a.as_slice()),
                Value::Empty => Plain::Empty(()),
            }
            .serialize(s)
        } else {
            match self {
                Value::Num(x) => Tagged::Num(*x),
                Value::Bool(b) => Tagged::Bool(*b),
                Value::Text(t) => Tagged::Text(t.as_str()),
                Value::Array(a) => Tagged::Array(a.as_slice()),
                Value::Empty => Tagged::Empty,
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(if d.is_human_readable() {
            match Plain::<String, Vec<f64>>::deserialize(d)? {
                Plain::Num(x) => Value::Num(x),
                Plain::Bool(b) => Value::Bool(b),
                Plain::Text(t) => Value::Text(t),
                Plain::Array(a) => Value::Array(a),
                Plain::Empty(()) => Value::Empty,
            }
        } else {
            match Tagged::<String, Vec<f64>>::deserialize(d)? {
                Tagged::Num(x) => Value::Num(x),
                Tagged::Bool(b) => Value::Bool(b),
                Tagged::Text(t) => Value::Text(t),
                Tagged::Array(a) => Value::Array(a),
                Tagged::Empty => Value::Empty,
            }
        })
    }
}

impl Value {
    /// The value as a number for detectors: numbers as they are, booleans as 0 / 1.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Num(v) => Some(*v),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            _ => None,
        }
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Num(v)
    }
}

/// OPC UA status codes the agent sets itself (Part 6, StatusCode.csv).
pub mod status {
    pub const GOOD: u32 = 0;
    pub const UNCERTAIN: u32 = 0x4000_0000;
    pub const BAD: u32 = 0x8000_0000;
    /// The value's type is not the one the tag map declares.
    pub const BAD_TYPE_MISMATCH: u32 = 0x8074_0000;
    /// The source's link is down.
    pub const BAD_NOT_CONNECTED: u32 = 0x808A_0000;

    /// The generic code of a quality, for sources that send a quality but no code.
    pub const fn of(q: super::Quality) -> u32 {
        match q {
            super::Quality::Good => GOOD,
            super::Quality::Uncertain => UNCERTAIN,
            super::Quality::Bad => BAD,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub tag: TagId,
    pub value: Value,
    pub quality: Quality,
    /// The source's own status code (OPC UA); for sources without one, `status::of(quality)`.
    pub status: u32,
    /// Time the device or publisher stamped, when it sent one.
    pub source_time: Option<Timestamp>,
    /// Time the OPC UA server stamped, when it sent one.
    pub server_time: Option<Timestamp>,
    /// Time this agent received the value.
    pub agent_time: Timestamp,
}

impl Sample {
    /// A numeric sample with only a quality (MQTT, simulations): the status is the quality's.
    pub fn new(
        tag: TagId,
        value: f64,
        quality: Quality,
        source_time: Option<Timestamp>,
        agent_time: Timestamp,
    ) -> Self {
        Self {
            tag,
            value: Value::Num(value),
            quality,
            status: status::of(quality),
            source_time,
            server_time: None,
            agent_time,
        }
    }

    /// The value as a number, if it has one (see `Value::as_f64`).
    pub fn number(&self) -> Option<f64> {
        self.value.as_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_by_severity_bits() {
        assert_eq!(Quality::from_status_code(0), Quality::Good);
        assert_eq!(Quality::from_status_code(0x4092_0000), Quality::Uncertain);
        assert_eq!(Quality::from_status_code(0x8034_0000), Quality::Bad);
        assert_eq!(Quality::from_status_code(0xC000_0000), Quality::Bad);
    }

    #[test]
    fn values_are_plain_in_json() {
        let cases = [
            (Value::Num(1.5), "1.5"),
            (Value::Bool(true), "true"),
            (Value::Text("B-1".into()), "\"B-1\""),
            (Value::Array(vec![1.0, 2.0]), "[1.0,2.0]"),
            (Value::Empty, "null"),
        ];
        for (v, json) in cases {
            assert_eq!(serde_json::to_string(&v).unwrap(), json);
            assert_eq!(serde_json::from_str::<Value>(json).unwrap(), v);
        }
    }

    #[test]
    fn names_are_case_insensitive_and_unknown_is_none() {
        assert_eq!(Quality::from_name(" GOOD "), Some(Quality::Good));
        assert_eq!(Quality::from_name("Uncertain"), Some(Quality::Uncertain));
        assert_eq!(Quality::from_name("weird"), None);
    }
}
