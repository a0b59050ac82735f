//! OPC UA data values → samples: the status code decides the quality (and is kept), both
//! OPC UA timestamps are kept beside the agent's receive time, and a value whose type is not
//! the one the tag map declares is recorded as Bad (`BadTypeMismatch`), never coerced.

use opcua::types::{DataValue, DateTime, Variant};
use pdtf_models::{status, Quality, Sample, TagId, Timestamp, Value};
use serde::Deserialize;

/// The type a tag map declares for an OPC UA tag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// Any integer or floating-point type.
    #[default]
    Number,
    Bool,
    String,
    /// A one-dimensional array of numbers (spectra, profiles).
    NumberArray,
}

/// 100 ns ticks between 1601-01-01 (OPC UA epoch) and 1970-01-01.
const TICKS_TO_UNIX: i64 = 116_444_736_000_000_000;

pub fn timestamp(t: &DateTime) -> Option<Timestamp> {
    let ticks = t.ticks();
    // OPC UA's "no time" is tick 0 (DateTime::null()).
    (ticks > 0).then(|| Timestamp::from_unix_nanos((ticks - TICKS_TO_UNIX).saturating_mul(100)))
}

fn number(v: &Variant) -> Option<f64> {
    Some(match v {
        Variant::SByte(x) => f64::from(*x),
        Variant::Byte(x) => f64::from(*x),
        Variant::Int16(x) => f64::from(*x),
        Variant::UInt16(x) => f64::from(*x),
        Variant::Int32(x) => f64::from(*x),
        Variant::UInt32(x) => f64::from(*x),
        Variant::Int64(x) => *x as f64,
        Variant::UInt64(x) => *x as f64,
        Variant::Float(x) => f64::from(*x),
        Variant::Double(x) => *x,
        _ => return None,
    })
}

/// The declared type's value, or `None` when the variant is of another type.
fn typed(v: &Variant, ty: ValueType) -> Option<Value> {
    match (ty, v) {
        (ValueType::Number, v) => number(v).map(Value::Num),
        (ValueType::Bool, Variant::Boolean(b)) => Some(Value::Bool(*b)),
        (ValueType::String, Variant::String(s)) => Some(Value::Text(s.as_ref().to_owned())),
        (ValueType::NumberArray, Variant::Array(a)) => a
            .values
            .iter()
            .map(number)
            .collect::<Option<Vec<f64>>>()
            .map(Value::Array),
        _ => None,
    }
}

pub fn to_sample(dv: &DataValue, tag: TagId, ty: ValueType, now: Timestamp) -> Sample {
    let mut code = dv.status.map_or(status::GOOD, |s| s.bits());
    let value = match &dv.value {
        None | Some(Variant::Empty) => Value::Empty,
        Some(v) => typed(v, ty).unwrap_or_else(|| {
            code = status::BAD_TYPE_MISMATCH;
            Value::Empty
        }),
    };
    Sample {
        tag,
        value,
        quality: Quality::from_status_code(code),
        status: code,
        source_time: dv.source_timestamp.as_ref().and_then(timestamp),
        server_time: dv.server_timestamp.as_ref().and_then(timestamp),
        agent_time: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua::types::{StatusCode, UAString};

    const NOW: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

    fn dv(v: Variant, status: StatusCode) -> DataValue {
        DataValue {
            value: Some(v),
            status: Some(status),
            source_timestamp: Some(DateTime::ymd_hms(2026, 1, 2, 3, 4, 5)),
            server_timestamp: Some(DateTime::ymd_hms(2026, 1, 2, 3, 4, 6)),
            ..Default::default()
        }
    }

    #[test]
    fn types_convert_and_times_are_kept() {
        let s = to_sample(
            &dv(Variant::Int32(-4), StatusCode::Good),
            TagId(1),
            ValueType::Number,
            NOW,
        );
        assert_eq!(
            (s.value, s.quality, s.status),
            (Value::Num(-4.0), Quality::Good, 0)
        );
        let src = s.source_time.unwrap().as_nanos();
        assert_eq!(s.server_time.unwrap().as_nanos() - src, 1_000_000_000);
        assert_eq!(src, 1_767_323_045_000_000_000, "2026-01-02T03:04:05Z");
        assert_eq!(s.agent_time, NOW);
        let b = to_sample(
            &dv(Variant::Boolean(true), StatusCode::Good),
            TagId(1),
            ValueType::Bool,
            NOW,
        );
        assert_eq!(b.value, Value::Bool(true));
        let t = to_sample(
            &dv(Variant::String(UAString::from("B-9")), StatusCode::Good),
            TagId(1),
            ValueType::String,
            NOW,
        );
        assert_eq!(t.value, Value::Text("B-9".into()));
        let arr = Variant::from(vec![1.5f64, 2.0, 3.25]);
        let a = to_sample(
            &dv(arr, StatusCode::Good),
            TagId(1),
            ValueType::NumberArray,
            NOW,
        );
        assert_eq!(a.value, Value::Array(vec![1.5, 2.0, 3.25]));
    }

    #[test]
    fn status_codes_decide_quality_and_are_kept() {
        let u = StatusCode::UncertainLastUsableValue;
        let s = to_sample(
            &dv(Variant::Double(1.0), u),
            TagId(0),
            ValueType::Number,
            NOW,
        );
        assert_eq!((s.quality, s.status), (Quality::Uncertain, u.bits()));
        let b = StatusCode::BadSensorFailure;
        let s = to_sample(
            &dv(Variant::Double(1.0), b),
            TagId(0),
            ValueType::Number,
            NOW,
        );
        assert_eq!((s.quality, s.status), (Quality::Bad, b.bits()));
    }

    #[test]
    fn wrong_types_are_bad_not_coerced() {
        for (v, ty) in [
            (Variant::Boolean(true), ValueType::Number),
            (Variant::Double(1.0), ValueType::Bool),
            (Variant::String(UAString::from("12.5")), ValueType::Number),
            (Variant::Double(1.0), ValueType::NumberArray),
            (
                Variant::from(vec![UAString::from("a")]),
                ValueType::NumberArray,
            ),
        ] {
            let s = to_sample(&dv(v.clone(), StatusCode::Good), TagId(0), ty, NOW);
            assert_eq!(
                (s.value, s.quality, s.status),
                (Value::Empty, Quality::Bad, status::BAD_TYPE_MISMATCH),
                "{v:?} as {ty:?}"
            );
        }
    }
}
