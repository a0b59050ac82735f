//! `[[sources]]` and `[[tags]]` tables into their closed per-kind types.
//!
//! A table is split into the keys every source (or tag) takes and the rest; the rest must be
//! keys of the table's own kind: a key of another kind is reported as such (`queue_size` on
//! a tag of an MQTT source), any other key as unknown, each at its TOML path. A required
//! key of the kind that is missing is reported at its own path too. The key lists come from
//! the types themselves (`fields_of`), so they cannot drift from what serde accepts.

use super::load::{as_table, de_at};
use super::{
    ConfigError, ModbusAddress, ModbusSourceConfig, MqttAddress, MqttSourceConfig, OpcuaAddress,
    OpcuaSourceConfig, SourceCommon, SourceConfig, SourceKind, SourceSpec, TagAddress, TagCommon,
    TagConfig,
};
use serde::de::{self, DeserializeOwned, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::{Table, Value};

/// The field names of a struct that derives `Deserialize`, as serde sees them.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// A source's keys of its kind.
fn source_fields(kind: SourceKind) -> &'static [&'static str] {
    match kind {
        SourceKind::Mqtt => fields_of::<MqttSourceConfig>(),
        SourceKind::Opcua => fields_of::<OpcuaSourceConfig>(),
        SourceKind::Modbus => fields_of::<ModbusSourceConfig>(),
    }
}

/// A tag's keys for the kind of its source.
fn tag_fields(kind: SourceKind) -> &'static [&'static str] {
    match kind {
        SourceKind::Mqtt => fields_of::<MqttAddress>(),
        SourceKind::Opcua => fields_of::<OpcuaAddress>(),
        SourceKind::Modbus => fields_of::<ModbusAddress>(),
    }
}

/// What a table is, for the messages: "source" or "tag".
#[derive(Clone, Copy, PartialEq)]
enum What {
    Source,
    Tag,
}

impl What {
    fn name(self) -> &'static str {
        match self {
            What::Source => "source",
            What::Tag => "tag",
        }
    }

    fn fields(self, kind: SourceKind) -> &'static [&'static str] {
        match self {
            What::Source => source_fields(kind),
            What::Tag => tag_fields(kind),
        }
    }

    fn common(self) -> &'static [&'static str] {
        match self {
            What::Source => fields_of::<SourceCommon>(),
            What::Tag => fields_of::<TagCommon>(),
        }
    }
}

/// Splits `table` into the common keys and the rest.
fn split(table: Table, common: &[&str]) -> (Table, Table) {
    table
        .into_iter()
        .partition(|(k, _)| common.contains(&k.as_str()))
}

/// Keeps the keys of `kind` in `rest`; reports every other key at `path.KEY`. The flag says
/// whether one of them was unknown to every kind (a misspelling, most likely).
fn own_keys(
    rest: Table,
    what: What,
    kind: SourceKind,
    file: &str,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> (Table, bool) {
    let own = what.fields(kind);
    let mut unknown = false;
    let mut kept = Table::new();
    for (key, v) in rest {
        if own.contains(&key.as_str()) {
            kept.insert(key, v);
            continue;
        }
        let foreign = SourceKind::ALL
            .into_iter()
            .find(|o| *o != kind && what.fields(*o).contains(&key.as_str()));
        let message = match (foreign, what) {
            (Some(o), What::Source) => format!(
                "is a key of {} {} source; this source's kind is \"{}\"",
                o.article(),
                o.label(),
                kind.name()
            ),
            (Some(o), What::Tag) => format!(
                "is a key of a tag of {} {} source; this tag's kind is \"{}\"",
                o.article(),
                o.label(),
                kind.name()
            ),
            (None, _) => {
                unknown = true;
                let expected: Vec<String> = what
                    .common()
                    .iter()
                    .chain(own)
                    .map(|f| format!("`{f}`"))
                    .collect();
                format!(
                    "unknown field `{key}`, expected one of {} (a {} of kind \"{}\")",
                    expected.join(", "),
                    what.name(),
                    kind.name()
                )
            }
        };
        errs.push(ConfigError::new(file, format!("{path}.{key}"), message));
    }
    (kept, unknown)
}

/// Deserialises the kind's part; a missing required key is reported at its own path with
/// `required(key)` as the message, unless the table has an unknown key (the misspelling of
/// it: one mistake, one error).
fn de_kind<T: DeserializeOwned>(
    (rest, unknown): (Table, bool),
    file: &str,
    path: &str,
    required: &dyn Fn(&str) -> String,
    errs: &mut Vec<ConfigError>,
) -> Option<T> {
    match de_at(Value::Table(rest), file, path) {
        Ok(t) => Some(t),
        Err(mut e) => {
            let missing = e
                .message
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'))
                .map(str::to_owned);
            if let (Some(key), true) = (missing, e.path == path) {
                if unknown {
                    return None;
                }
                e.path = format!("{path}.{key}");
                e.message = required(&key);
            }
            errs.push(e);
            None
        }
    }
}

/// One `[[sources]]` table at `path` (`sources[i]`).
pub(super) fn source(
    item: Value,
    file: &str,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<SourceConfig> {
    let table = as_table(item, file, path, errs)?;
    let (common, rest) = split(table, What::Source.common());
    let common: SourceCommon = match de_at(Value::Table(common), file, path) {
        Ok(c) => c,
        Err(e) => {
            errs.push(e);
            return None;
        }
    };
    let kind = common.kind;
    let rest = own_keys(rest, What::Source, kind, file, path, errs);
    let required = |_: &str| format!("is required for kind = \"{}\"", kind.name());
    let spec = match kind {
        SourceKind::Mqtt => SourceSpec::Mqtt(de_kind(rest, file, path, &required, errs)?),
        SourceKind::Opcua => SourceSpec::Opcua(de_kind(rest, file, path, &required, errs)?),
        SourceKind::Modbus => SourceSpec::Modbus(de_kind(rest, file, path, &required, errs)?),
    };
    Some(SourceConfig {
        id: common.id,
        max_batch_samples: common.max_batch_samples,
        flush_interval_ms: common.flush_interval_ms,
        spec,
    })
}

/// The kind of each `[[sources]]` table by id, read from the raw tables so that a tag of a
/// source with an error of its own is still checked against its kind (`None`: the source's
/// `kind` is itself wrong). Tags refer to the first source of an id, as validation does.
pub(super) fn raw_source_kinds(v: Option<&Value>) -> BTreeMap<String, Option<SourceKind>> {
    let Some(Value::Array(items)) = v else {
        return BTreeMap::new();
    };
    let mut kinds = BTreeMap::new();
    for i in items {
        let Some(id) = i.get("id").and_then(Value::as_str) else {
            continue;
        };
        let kind = i
            .get("kind")
            .and_then(|k| SourceKind::deserialize(k.clone()).ok());
        // A duplicate id is an error of its own; tags refer to the first.
        kinds.entry(id.to_owned()).or_insert(kind);
    }
    kinds
}

/// A duplicate source id between two tables that did not both parse (validation reports
/// the others: it sees only parsed sources).
pub(super) fn duplicate_ids(
    ids: &[Option<String>],
    parsed: &[bool],
    file: &str,
) -> Vec<ConfigError> {
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    let mut errs = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let Some(id) = id.as_deref() else { continue };
        match first.get(id) {
            Some(&j) if !(parsed[i] && parsed[j]) => errs.push(ConfigError::new(
                file,
                format!("sources[{i}].id"),
                format!("duplicate source id {id:?}"),
            )),
            Some(_) => {}
            None => {
                first.insert(id, i);
            }
        }
    }
    errs
}

/// The message for a tag whose source does not exist.
pub(super) fn no_source(id: &str) -> String {
    format!("no source with id {id:?}")
}

/// One `[[tags]]` table at `path` (`tags[i]`) in `file`. Its kind is its source's; for a tag
/// whose source does not exist, the kind its keys name (its other errors are reported too),
/// or, when they name none, only the missing source is reported.
pub(super) fn tag(
    item: Value,
    file: &str,
    path: &str,
    kinds: &BTreeMap<String, Option<SourceKind>>,
    errs: &mut Vec<ConfigError>,
) -> Option<TagConfig> {
    let table = as_table(item, file, path, errs)?;
    let (common, rest) = split(table, What::Tag.common());
    let source = common
        .get("source")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let common: Option<TagCommon> = match de_at(Value::Table(common), file, path) {
        Ok(c) => Some(c),
        Err(e) => {
            errs.push(e);
            None
        }
    };
    let inferred = || {
        let named: Vec<SourceKind> = SourceKind::ALL
            .into_iter()
            .filter(|k| {
                rest.keys()
                    .any(|key| tag_fields(*k).contains(&key.as_str()))
            })
            .collect();
        (named.len() == 1).then(|| named[0])
    };
    let kind = match source.as_deref().map(|s| (s, kinds.get(s))) {
        Some((_, Some(Some(k)))) => *k,
        // The source's own error says why it has no kind.
        Some((_, Some(None))) => inferred()?,
        Some((id, None)) => match inferred() {
            Some(k) => k,
            None => {
                errs.push(ConfigError::new(
                    file,
                    format!("{path}.source"),
                    no_source(id),
                ));
                return None;
            }
        },
        // Its absence is reported with the common keys.
        None => inferred()?,
    };
    let rest = own_keys(rest, What::Tag, kind, file, path, errs);
    let id = source.unwrap_or_default();
    let required = |key: &str| {
        match kind {
        SourceKind::Modbus => format!(
            "is required: source {id:?} is modbus (e.g. {key} = {{ table = \"holding\", address = 0, type = \"u16\" }})"
        ),
        k => format!("is required: source {id:?} is {}", k.name()),
    }
    };
    let address = match kind {
        SourceKind::Mqtt => TagAddress::Mqtt(de_kind(rest, file, path, &required, errs)?),
        SourceKind::Opcua => TagAddress::Opcua(de_kind(rest, file, path, &required, errs)?),
        SourceKind::Modbus => {
            let m: ModbusAddress = de_kind(rest, file, path, &required, errs)?;
            TagAddress::Modbus(m.modbus)
        }
    };
    Some(TagConfig::new(common?, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_lists_are_the_types_fields() {
        assert_eq!(
            fields_of::<MqttSourceConfig>(),
            ["broker", "qos", "topics", "max_payload_bytes"]
        );
        assert_eq!(fields_of::<ModbusAddress>(), ["modbus"]);
        assert!(fields_of::<TagCommon>().contains(&"limits"));
        // Every kind's keys are its own: no key is shared between two kinds, or a key of
        // another kind could not be told from one of this kind.
        for what in [What::Source, What::Tag] {
            for a in SourceKind::ALL {
                for b in SourceKind::ALL.into_iter().filter(|b| *b != a) {
                    for f in what.fields(a) {
                        assert!(!what.fields(b).contains(f), "{f} on {a:?} and {b:?}");
                    }
                }
                for f in what.fields(a) {
                    assert!(!what.common().contains(f), "{f} is common and {a:?}'s");
                }
            }
        }
    }
}
