//! Reading the agent file and its includes into a `Config`, collecting every error.

use super::interpolate::interpolate;
use super::kinds::{self, raw_source_kinds};
use super::{validate, Config, ConfigError, Origin, SinksConfig, SourceKind};
use pdtf_connectors::opcua::Identity;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

const AGENT_KEYS: &[&str] = &[
    "agent",
    "include",
    "brokers",
    "opcua_servers",
    "modbus_devices",
    "sources",
    "lines",
    "sinks",
    "recipes",
    "batch",
    "journal",
    "health",
    "clock",
    "tags",
];
const TAGMAP_KEYS: &[&str] = &["tags"];

/// Loads and validates. `Err` holds every problem found, in file order.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError::new(
            &file,
            "",
            format!("cannot read file: {e}"),
        )]
    })?;
    load_str(&text, path, &|name| std::env::var(name).ok())
}

/// Only `agent.state_dir` of an agent file, for the offline commands (`verify`, `migrate`):
/// they touch the journal alone, so neither the secrets (`${ENV}` passwords, credential
/// files) nor the tag maps have to be in reach, and an error elsewhere in the file is not
/// theirs to report.
pub fn state_dir(path: &Path) -> Result<PathBuf, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&file, "", format!("cannot read file: {e}")))?;
    state_dir_str(&text, &file)
}

fn state_dir_str(text: &str, file: &str) -> Result<PathBuf, ConfigError> {
    let table: Table =
        toml::from_str(text).map_err(|e| ConfigError::new(file, "", e.message().to_owned()))?;
    match table.get("agent").and_then(|a| a.get("state_dir")) {
        Some(Value::String(d)) if !d.is_empty() => Ok(PathBuf::from(d)),
        Some(Value::String(_)) => Err(ConfigError::new(
            file,
            "agent.state_dir",
            "must not be empty",
        )),
        Some(_) => Err(ConfigError::new(
            file,
            "agent.state_dir",
            "must be a string (a directory)",
        )),
        None => Err(ConfigError::new(
            file,
            "agent.state_dir",
            "missing (or give --state-dir)",
        )),
    }
}

/// Loads from text; `path` locates includes and names the file in errors; `env` looks up
/// `${NAME}` references (injected so tests need not touch the process environment).
pub fn load_str(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<ConfigError>> {
    let file = path.display().to_string();
    let mut errs = Vec::new();
    let Some(mut table) = parse(text, &file, env, AGENT_KEYS, &mut errs) else {
        return Err(errs);
    };
    let agent = match table.remove("agent") {
        Some(v) => de(v, &file, "agent", &mut errs),
        None => {
            errs.push(ConfigError::new(&file, "agent", "missing section [agent]"));
            None
        }
    };
    // Sections whose own errors are reported: a reference to one is not an error again.
    let raw_names = |key: &str| -> Vec<String> {
        match table.get(key) {
            Some(Value::Table(t)) => t.keys().cloned().collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|i| i.get("id").and_then(Value::as_str).map(str::to_owned))
                .collect(),
            _ => vec![],
        }
    };
    let raw = [
        ("brokers", raw_names("brokers")),
        ("opcua_servers", raw_names("opcua_servers")),
        ("modbus_devices", raw_names("modbus_devices")),
        ("sources", raw_names("sources")),
    ];
    let brokers: BTreeMap<String, super::BrokerConfig> =
        named_sections(&mut table, "brokers", &file, &mut errs);
    let opcua_servers: BTreeMap<String, super::OpcuaServerConfig> =
        named_sections(&mut table, "opcua_servers", &file, &mut errs);
    let modbus_devices: BTreeMap<String, super::ModbusDeviceConfig> =
        named_sections(&mut table, "modbus_devices", &file, &mut errs);
    let source_kinds = raw_source_kinds(table.get("sources"));
    let mut sources = Vec::new();
    if let Some(v) = table.remove("sources") {
        let items = array_of(v, &file, "sources", &mut errs);
        let ids: Vec<Option<String>> = items
            .iter()
            .map(|i| i.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        let mut parsed = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let s = kinds::source(item, &file, &format!("sources[{i}]"), &mut errs);
            parsed.push(s.is_some());
            sources.extend(s);
        }
        errs.extend(kinds::duplicate_ids(&ids, &parsed, &file));
    }
    let lines = table
        .remove("lines")
        .map(|v| de_each(v, &file, "lines", &mut errs))
        .unwrap_or_default();
    let sinks: SinksConfig = table
        .remove("sinks")
        .and_then(|v| de(v, &file, "sinks", &mut errs))
        .unwrap_or_default();

    let recipes = table
        .remove("recipes")
        .map(|v| de_each(v, &file, "recipes", &mut errs))
        .unwrap_or_default();
    let batch = table
        .remove("batch")
        .and_then(|v| de(v, &file, "batch", &mut errs));
    let journal = table
        .remove("journal")
        .and_then(|v| de(v, &file, "journal", &mut errs))
        .unwrap_or_default();
    let health = table
        .remove("health")
        .and_then(|v| de(v, &file, "health", &mut errs));
    let clock = table
        .remove("clock")
        .and_then(|v| de(v, &file, "clock", &mut errs))
        .unwrap_or_default();
    let mut tags = Vec::new();
    let mut tag_origins = Vec::new();
    if let Some(v) = table.remove("tags") {
        collect_tags(
            v,
            &file,
            &source_kinds,
            &mut tags,
            &mut tag_origins,
            &mut errs,
        );
    }
    let includes: Vec<String> = table
        .remove("include")
        .and_then(|v| de(v, &file, "include", &mut errs))
        .unwrap_or_default();
    let base = path.parent().unwrap_or(Path::new("."));
    for (i, pattern) in includes.iter().enumerate() {
        for inc in expand(base, pattern, &file, i, &mut errs) {
            let inc_file = inc.display().to_string();
            match std::fs::read_to_string(&inc) {
                Err(e) => errs.push(ConfigError::new(
                    &inc_file,
                    "",
                    format!("cannot read file: {e}"),
                )),
                Ok(text) => {
                    if let Some(mut t) = parse(&text, &inc_file, env, TAGMAP_KEYS, &mut errs) {
                        if let Some(v) = t.remove("tags") {
                            collect_tags(
                                v,
                                &inc_file,
                                &source_kinds,
                                &mut tags,
                                &mut tag_origins,
                                &mut errs,
                            );
                        }
                    }
                }
            }
        }
    }

    let Some(agent) = agent else {
        return Err(errs);
    };
    let mut unparsed = std::collections::BTreeSet::new();
    for (section, names) in raw {
        for n in names {
            let parsed = match section {
                "brokers" => brokers.contains_key(&n),
                "opcua_servers" => opcua_servers.contains_key(&n),
                "modbus_devices" => modbus_devices.contains_key(&n),
                _ => sources.iter().any(|s: &super::SourceConfig| s.id == n),
            };
            if !parsed {
                unparsed.insert(format!("{section}.{n}"));
            }
        }
    }
    let config = Config {
        agent,
        brokers,
        opcua_servers,
        modbus_devices,
        sources,
        lines,
        sinks,
        recipes,
        batch,
        journal,
        clock,
        health,
        tags,
        tag_origins,
        unparsed,
        file,
    };
    let mut config = config;
    // TLS files: relative to the agent file, and usable (read and parsed) before start.
    for (name, b) in config.brokers.iter_mut() {
        let Some(t) = b.tls.as_mut() else { continue };
        for p in [
            Some(&mut t.ca_file),
            t.client_cert_file.as_mut(),
            t.client_key_file.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Err(e) = t.client_config() {
            errs.push(ConfigError::new(
                &config.file,
                format!("brokers.{name}.{}", e.key),
                e.message,
            ));
        }
    }
    // MQTT passwords from files (systemd credentials): read now, so `validate` proves them.
    for (name, b) in config.brokers.iter_mut() {
        let Some(f) = b.password_file.as_mut() else {
            continue;
        };
        if f.is_relative() {
            *f = base.join(&*f);
        }
        let key = format!("brokers.{name}.password_file");
        if b.password.is_some() {
            errs.push(ConfigError::new(
                &config.file,
                key,
                "set either password or password_file, not both",
            ));
            continue;
        }
        match pdtf_connectors::secret::read_password_file(f) {
            Ok(pw) => b.password = Some(pw),
            Err(e) => errs.push(ConfigError::new(&config.file, key, e)),
        }
    }
    // OPC UA files: relative to the agent file. A password file is read at each connect
    // (a rotated credential is used without a restart); read here too, so `validate` proves it.
    for (name, s) in config.opcua_servers.iter_mut() {
        let mut paths = vec![s.pki_dir.as_mut()];
        match &mut s.identity {
            Identity::UserPassword { password_file, .. } => paths.push(password_file.as_mut()),
            Identity::X509 { cert, key } => paths.extend([Some(cert), Some(key)]),
            Identity::Anonymous => {}
        }
        for p in paths.into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Identity::UserPassword {
            password: None,
            password_file: Some(f),
            ..
        } = &s.identity
        {
            if let Err(e) = pdtf_connectors::secret::read_password_file(f) {
                errs.push(ConfigError::new(
                    &config.file,
                    format!("opcua_servers.{name}.identity.password_file"),
                    e,
                ));
            }
        }
    }
    errs.extend(validate(&config));
    if errs.is_empty() {
        Ok(config)
    } else {
        Err(errs)
    }
}

fn parse(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
    allowed: &[&str],
    errs: &mut Vec<ConfigError>,
) -> Option<Table> {
    let mut table: Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            errs.push(ConfigError::new(
                file,
                "",
                format!("not valid TOML: {}", e.to_string().trim_end()),
            ));
            return None;
        }
    };
    for (k, v) in table.iter_mut() {
        interpolate(v, k, file, env, errs);
    }
    for k in table.keys() {
        if !allowed.contains(&k.as_str()) {
            errs.push(ConfigError::new(
                file,
                k,
                format!("unknown key `{k}`, expected one of {}", allowed.join(", ")),
            ));
        }
    }
    Some(table)
}

/// `[KEY.NAME]` sections, each deserialised on its own so each error has its path.
fn named_sections<T: DeserializeOwned>(
    table: &mut Table,
    key: &str,
    file: &str,
    errs: &mut Vec<ConfigError>,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    let Some(t) = table.remove(key).and_then(|v| as_table(v, file, key, errs)) else {
        return out;
    };
    for (name, v) in t {
        if let Some(b) = de(v, file, &format!("{key}.{name}"), errs) {
            out.insert(name, b);
        }
    }
    out
}

pub(super) fn as_table(
    v: Value,
    file: &str,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<Table> {
    match v {
        Value::Table(t) => Some(t),
        other => {
            errs.push(ConfigError::new(
                file,
                path,
                format!("expected a table, found {}", other.type_str()),
            ));
            None
        }
    }
}

/// Deserialises one value, reporting the full path of the first problem inside it.
fn de<T: DeserializeOwned>(
    v: Value,
    file: &str,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<T> {
    de_at(v, file, path).map_err(|e| errs.push(e)).ok()
}

/// Deserialises one value; the error names the full path of the first problem inside it.
pub(super) fn de_at<T: DeserializeOwned>(
    v: Value,
    file: &str,
    path: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize::<_, T>(v).map_err(|e| {
        let inner = e.path().to_string();
        // toml appends "in `key`" lines that repeat the path: keep the first line.
        let message = e.into_inner().to_string();
        let message = message.lines().next().unwrap_or_default().trim().to_owned();
        let full = if inner == "." || inner.is_empty() {
            path.to_owned()
        } else {
            format!("{path}.{inner}")
        };
        ConfigError::new(file, full, message)
    })
}

fn de_each<T: DeserializeOwned>(
    v: Value,
    file: &str,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> Vec<T> {
    array_of(v, file, path, errs)
        .into_iter()
        .enumerate()
        .filter_map(|(i, item)| de(item, file, &format!("{path}[{i}]"), errs))
        .collect()
}

/// The items of an array of tables (`[[path]]`).
fn array_of(v: Value, file: &str, path: &str, errs: &mut Vec<ConfigError>) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        other => {
            errs.push(ConfigError::new(
                file,
                path,
                format!(
                    "expected an array of tables ([[{path}]]), found {}",
                    other.type_str()
                ),
            ));
            vec![]
        }
    }
}

fn collect_tags(
    v: Value,
    file: &str,
    source_kinds: &BTreeMap<String, Option<SourceKind>>,
    tags: &mut Vec<super::TagConfig>,
    origins: &mut Vec<Origin>,
    errs: &mut Vec<ConfigError>,
) {
    for (i, item) in array_of(v, file, "tags", errs).into_iter().enumerate() {
        if let Some(t) = kinds::tag(item, file, &format!("tags[{i}]"), source_kinds, errs) {
            tags.push(t);
            origins.push(Origin {
                file: file.to_owned(),
                index: i,
            });
        }
    }
}

fn expand(
    base: &Path,
    pattern: &str,
    file: &str,
    i: usize,
    errs: &mut Vec<ConfigError>,
) -> Vec<PathBuf> {
    let full = base.join(pattern);
    let path = format!("include[{i}]");
    let paths = match glob::glob(&full.to_string_lossy()) {
        Ok(p) => p,
        Err(e) => {
            errs.push(ConfigError::new(
                file,
                path,
                format!("bad pattern {pattern:?}: {e}"),
            ));
            return vec![];
        }
    };
    let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
    found.sort();
    if found.is_empty() {
        errs.push(ConfigError::new(
            file,
            path,
            format!(
                "{pattern:?} matches no file (relative to {})",
                base.display()
            ),
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_state_dir_is_read_without_the_secrets_or_the_rest_of_the_file() {
        let dir = super::state_dir_str(
            "[agent]\nstate_dir = \"/var/lib/pdtf\"\n[brokers.plant]\npassword = \"${UNSET_PDTF_SECRET}\"\nbogus = 1\n",
            "a.toml",
        );
        assert_eq!(dir.unwrap(), std::path::PathBuf::from("/var/lib/pdtf"));
        for (text, key) in [
            ("[agent]\nid = \"a\"\n", "agent.state_dir"),
            ("[agent]\nstate_dir = 3\n", "agent.state_dir"),
            ("[agent]\nstate_dir = \"\"\n", "agent.state_dir"),
            ("[agent\n", ""),
        ] {
            let e = super::state_dir_str(text, "a.toml").unwrap_err();
            assert_eq!(
                (e.file.as_str(), e.path.as_str()),
                ("a.toml", key),
                "{text}"
            );
        }
    }

    use super::*;

    #[test]
    fn an_mqtt_password_comes_from_a_credential_file() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        std::fs::write(creds.join("plant-mqtt"), "s3cr3t\n").unwrap();
        std::fs::write(creds.join("empty"), "\n").unwrap();
        let env = |n: &str| (n == "CREDENTIALS_DIRECTORY").then(|| creds.display().to_string());
        let toml = |file: &str, extra: &str| {
            format!(
                "[agent]\nid = \"a\"\nsite = \"s\"\narea = \"a\"\nline = \"l\"\nstate_dir = \"{}\"\n[brokers.plant]\nhost = \"h\"\nusername = \"u\"\npassword_file = \"${{CREDENTIALS_DIRECTORY}}/{file}\"\n{extra}[sinks.alerts]\nbroker = \"plant\"\n",
                dir.path().join("state").display()
            )
        };
        let path = dir.path().join("agent.toml");
        let c = load_str(&toml("plant-mqtt", ""), &path, &env).unwrap();
        assert_eq!(c.brokers["plant"].password.as_deref(), Some("s3cr3t"));

        let errs = |text: String| -> Vec<String> {
            load_str(&text, &path, &env)
                .unwrap_err()
                .iter()
                .map(|e| e.to_string())
                .collect()
        };
        let e = errs(toml("missing", ""));
        assert!(
            e.iter()
                .any(|e| e.contains("brokers.plant.password_file: cannot read")),
            "{e:?}"
        );
        let e = errs(toml("empty", ""));
        assert!(
            e.iter()
                .any(|e| e.contains("brokers.plant.password_file") && e.contains("empty")),
            "{e:?}"
        );
        let e = errs(toml(
            "plant-mqtt",
            "password = \"${CREDENTIALS_DIRECTORY}\"\n",
        ));
        assert!(e.iter().any(|e| e.contains("not both")), "{e:?}");
    }
}
