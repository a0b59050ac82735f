//! Topic → tag mapping and payload decoding. Pure: no I/O, time is passed in.
//!
//! A payload maps to samples in one of two ways per binding:
//! - no `value_pointer`: the whole payload is a number (`21.5`, ` 21.5\n`, JSON `21.5`);
//! - `value_pointer` (RFC 6901, e.g. `/v`): the payload is JSON and the pointer selects a
//!   number (a JSON boolean maps to 0/1). Optional `time_pointer` selects epoch milliseconds
//!   or an RFC 3339 string; optional `quality_pointer` selects "good"/"uncertain"/"bad" or an
//!   OPC UA status code.
//!
//! A text binding (the tag's `text = true`: batch ids, recipe names, phase names) takes the
//! whole payload as UTF-8 text (trimmed), or with `value_pointer` a JSON string; at most
//! `MAX_TEXT_BYTES`.
//!
//! Anything else is an error that the caller records as `Malformed`: a wrong type is never
//! coerced into a number.

use pdtf_models::{Quality, Sample, TagId, Timestamp, Value as SampleValue};
use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct TopicBinding {
    pub tag: TagId,
    pub value_pointer: Option<String>,
    pub time_pointer: Option<String>,
    pub quality_pointer: Option<String>,
    /// The value is text, not a number.
    pub text: bool,
}

/// The longest text value kept (a batch id or phase name, not a document).
pub const MAX_TEXT_BYTES: usize = 256;

/// Exact topic → bindings. Several tags may share one topic (one JSON payload, many fields).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicMap {
    by_topic: HashMap<String, Vec<TopicBinding>>,
}

impl TopicMap {
    pub fn insert(&mut self, topic: String, binding: TopicBinding) {
        self.by_topic.entry(topic).or_default().push(binding);
    }

    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.by_topic.keys().map(String::as_str)
    }

    pub fn tags(&self) -> Vec<TagId> {
        let mut t: Vec<TagId> = self.by_topic.values().flatten().map(|b| b.tag).collect();
        t.sort();
        t.dedup();
        t
    }

    /// Decodes one message, appending its samples to `out` (the caller's batch, so the hot
    /// path allocates nothing per message). Samples that decode are kept even when a sibling
    /// binding on the same topic fails; each failure comes back as its own reason.
    pub fn decode(
        &self,
        topic: &str,
        payload: &[u8],
        now: Timestamp,
        out: &mut Vec<Sample>,
    ) -> Vec<String> {
        let Some(bindings) = self.by_topic.get(topic) else {
            return vec!["no tag is mapped to this topic".to_owned()];
        };
        let mut json: Option<Result<Value, String>> = None;
        let mut errors = Vec::new();
        for b in bindings {
            let result = match &b.value_pointer {
                None if b.text => bare_text(payload).map(|v| (v, None, Quality::Good)),
                None => bare_number(payload).map(|v| (SampleValue::Num(v), None, Quality::Good)),
                Some(ptr) => {
                    let doc = json.get_or_insert_with(|| {
                        serde_json::from_slice(payload)
                            .map_err(|e| format!("payload is not JSON: {e}"))
                    });
                    match doc {
                        Ok(doc) => from_json(doc, ptr, b),
                        Err(e) => Err(e.clone()),
                    }
                }
            };
            match result {
                Ok((value, source_time, quality)) => {
                    let mut s = Sample::new(b.tag, 0.0, quality, source_time, now);
                    s.value = value;
                    out.push(s)
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }
}

fn bare_number(payload: &[u8]) -> Result<f64, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "payload is not UTF-8".to_owned())?;
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("payload {:?} is not a number", truncate(text.trim(), 40)))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("payload {v} is not a finite number"))
    }
}

fn bare_text(payload: &[u8]) -> Result<SampleValue, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "payload is not UTF-8".to_owned())?;
    text_value(text.trim())
}

fn text_value(t: &str) -> Result<SampleValue, String> {
    if t.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "text value of {} bytes is over {MAX_TEXT_BYTES}",
            t.len()
        ));
    }
    Ok(SampleValue::Text(t.to_owned()))
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

type Decoded = (SampleValue, Option<Timestamp>, Quality);

fn from_json(doc: &Value, ptr: &str, b: &TopicBinding) -> Result<Decoded, String> {
    let value = match doc.pointer(ptr) {
        Some(Value::String(t)) if b.text => text_value(t.trim())?,
        Some(other) if b.text => {
            return Err(format!(
                "{ptr}: expected a string, found {}",
                type_name(other)
            ))
        }
        Some(Value::Number(n)) => SampleValue::Num(
            n.as_f64()
                .ok_or_else(|| format!("{ptr}: number out of range"))?,
        ),
        Some(Value::Bool(v)) => SampleValue::Num(f64::from(u8::from(*v))),
        Some(other) => {
            return Err(format!(
                "{ptr}: expected a number, found {}",
                type_name(other)
            ))
        }
        None => return Err(format!("{ptr}: no such field in payload")),
    };
    let time = match &b.time_pointer {
        None => None,
        Some(tp) => Some(timestamp(doc, tp)?),
    };
    let quality = match &b.quality_pointer {
        None => Quality::Good,
        Some(qp) => quality(doc, qp)?,
    };
    Ok((value, time, quality))
}

fn timestamp(doc: &Value, ptr: &str) -> Result<Timestamp, String> {
    match doc.pointer(ptr) {
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Timestamp::from_unix_millis)
            .ok_or_else(|| format!("{ptr}: timestamp must be integer epoch milliseconds")),
        Some(Value::String(s)) => humantime::parse_rfc3339_weak(s)
            .map(Timestamp::from_system)
            .map_err(|e| format!("{ptr}: timestamp {s:?} is not RFC 3339: {e}")),
        Some(other) => Err(format!(
            "{ptr}: expected a timestamp, found {}",
            type_name(other)
        )),
        None => Err(format!("{ptr}: no such field in payload")),
    }
}

fn quality(doc: &Value, ptr: &str) -> Result<Quality, String> {
    match doc.pointer(ptr) {
        Some(Value::String(s)) => {
            Quality::from_name(s).ok_or_else(|| format!("{ptr}: unknown quality {s:?}"))
        }
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|c| u32::try_from(c).ok())
            .map(Quality::from_status_code)
            .ok_or_else(|| format!("{ptr}: status code must be a 32-bit unsigned integer")),
        Some(other) => Err(format!(
            "{ptr}: expected a quality, found {}",
            type_name(other)
        )),
        None => Err(format!("{ptr}: no such field in payload")),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> TopicMap {
        let mut m = TopicMap::default();
        m.insert(
            "plant/temp".into(),
            TopicBinding {
                tag: TagId(0),
                value_pointer: None,
                time_pointer: None,
                quality_pointer: None,
                text: false,
            },
        );
        for (tag, ptr) in [(1, "/a/v"), (2, "/b")] {
            m.insert(
                "plant/json".into(),
                TopicBinding {
                    tag: TagId(tag),
                    value_pointer: Some(ptr.into()),
                    time_pointer: Some("/ts".into()),
                    quality_pointer: Some("/q".into()),
                    text: false,
                },
            );
        }
        m
    }

    const NOW: Timestamp = Timestamp::from_unix_millis(5);

    fn decode(m: &TopicMap, topic: &str, payload: &[u8]) -> (Vec<Sample>, Vec<String>) {
        let mut samples = Vec::new();
        let errors = m.decode(topic, payload, NOW, &mut samples);
        (samples, errors)
    }

    #[test]
    fn bare_number_payloads() {
        let (s, e) = decode(&map(), "plant/temp", b" 21.5\n");
        assert!(e.is_empty());
        assert_eq!(
            (s[0].tag, s[0].number(), s[0].agent_time),
            (TagId(0), Some(21.5), NOW)
        );
        for bad in [&b"abc"[..], b"", b"\xff", b"NaN", b"inf"] {
            let (s, e) = decode(&map(), "plant/temp", bad);
            assert!(s.is_empty() && e.len() == 1, "{bad:?} accepted");
        }
    }

    #[test]
    fn text_bindings_take_text_and_refuse_other_types() {
        let mut m = TopicMap::default();
        for (topic, ptr) in [("plant/batch", None), ("plant/batch.json", Some("/v"))] {
            m.insert(
                topic.into(),
                TopicBinding {
                    tag: TagId(7),
                    value_pointer: ptr.map(str::to_owned),
                    time_pointer: None,
                    quality_pointer: None,
                    text: true,
                },
            );
        }
        let text = |s: &[Sample]| s.first().map(|s| s.value.clone());
        let (s, e) = decode(&m, "plant/batch", b" GR-2026-0142\n");
        assert!(e.is_empty());
        assert_eq!(text(&s), Some(SampleValue::Text("GR-2026-0142".into())));
        assert_eq!(s[0].quality, Quality::Good);
        let (s, _) = decode(&m, "plant/batch", b"");
        assert_eq!(text(&s), Some(SampleValue::Text(String::new())), "no batch");
        let (s, e) = decode(&m, "plant/batch.json", br#"{"v":"B-7"}"#);
        assert!(e.is_empty());
        assert_eq!(text(&s), Some(SampleValue::Text("B-7".into())));
        for bad in [&br#"{"v":7}"#[..], br#"{"v":null}"#, b"{"] {
            let (s, e) = decode(&m, "plant/batch.json", bad);
            assert!(s.is_empty() && e.len() == 1, "{bad:?} accepted");
        }
        let long = vec![b'x'; MAX_TEXT_BYTES + 1];
        let (s, e) = decode(&m, "plant/batch", &long);
        assert!(s.is_empty() && e[0].contains("over 256"), "{e:?}");
        let (s, e) = decode(&m, "plant/batch", b"\xff");
        assert!(s.is_empty() && e.len() == 1);
    }

    #[test]
    fn json_pointers_with_time_and_quality() {
        let payload = br#"{"a":{"v":1.5},"b":true,"ts":"2026-01-02T03:04:05.5Z","q":"uncertain"}"#;
        let (s, e) = decode(&map(), "plant/json", payload);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].number(), s[1].number()), (Some(1.5), Some(1.0)));
        assert_eq!(s[0].quality, Quality::Uncertain);
        let ts = s[0].source_time.unwrap();
        assert_eq!(ts.as_nanos() % 1_000_000_000, 500_000_000);
        let (s, _) = decode(
            &map(),
            "plant/json",
            br#"{"a":{"v":1},"b":2,"ts":1000,"q":2150891520}"#,
        );
        assert_eq!(s[0].source_time, Some(Timestamp::from_unix_millis(1000)));
        assert_eq!(s[0].quality, Quality::Bad);
    }

    #[test]
    fn wrong_types_are_errors_not_coercions() {
        let (s, e) = decode(
            &map(),
            "plant/json",
            br#"{"a":{"v":"1.5"},"b":3,"ts":1,"q":"good"}"#,
        );
        assert_eq!(s.len(), 1, "the good sibling still decodes");
        assert_eq!(s[0].tag, TagId(2));
        assert!(e[0].contains("expected a number, found a string"), "{e:?}");
        let (s, e) = decode(&map(), "plant/json", b"{not json");
        assert!(s.is_empty());
        assert_eq!(e.len(), 2);
        assert!(e[0].starts_with("payload is not JSON"));
        let (_, e) = decode(
            &map(),
            "plant/json",
            br#"{"a":{"v":1},"b":3,"ts":1,"q":"meh"}"#,
        );
        assert!(e[0].contains("unknown quality"), "{e:?}");
    }

    #[test]
    fn unknown_topic_is_reported() {
        let (s, e) = decode(&map(), "plant/other", b"1");
        assert!(s.is_empty());
        assert_eq!(e, vec!["no tag is mapped to this topic".to_owned()]);
    }
}
