//! Tag-map reload without a restart: on `SIGHUP`, or when a watched configuration file
//! changes (the `notify` crate).
//!
//! A reload loads and validates the whole configuration again. It is refused — every error
//! logged with its file and TOML path, a `config_reload_refused` audit record, the running
//! configuration untouched — when the files are invalid, or when anything but the tags
//! changed (brokers, sources, sinks, journal…: those need a restart, and saying so beats
//! applying half a change). A valid tag change goes to the line pipeline, which commits the
//! grown tag registry with a `config_reload` audit record (the diff: added, removed and
//! changed tags with the keys that changed, and the new config digest) before anything uses
//! it; then the sources take their new topic maps and monitored items in place, on their
//! live connections. Nothing buffered or in flight is dropped: the pipeline's channel and
//! the journal are never touched, and each source flushes its batch before switching.
//!
//! Removed tags keep their ids (the registry never forgets a name); an alarm active on a tag
//! that is removed, or loses its limits, is cleared on the record.

use crate::config::{self, Config, TagAddress, TagConfig};
use crate::pipeline::{Control, TagPlan};
use crate::runtime::{opcua_items, topic_map, Agent};
use crate::startup::{config_digest, line_tag_table, tag_table};
use pdtf_connectors::mqtt::TopicMap;
use pdtf_connectors::opcua::OpcuaItem;
use pdtf_connectors::Stats;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

/// The reload handles of the running sources, by source id.
#[derive(Default)]
pub struct Feeds {
    pub mqtt: BTreeMap<String, watch::Sender<TopicMap>>,
    pub opcua: BTreeMap<String, watch::Sender<Vec<OpcuaItem>>>,
    pub modbus: crate::modbus::Feeds,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied; the seq of its `config_reload` audit record and the diff.
    Applied { seq: u64, diff: String },
    /// Valid, and the tags are as they were (e.g. only a comment changed): nothing recorded.
    Unchanged,
    /// Refused, with every reason; the running configuration stays.
    Refused(Vec<String>),
}

/// How the tags of two configurations differ, by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TagDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Each changed tag with the keys that differ.
    pub changed: Vec<(String, Vec<&'static str>)>,
}

impl TagDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl std::fmt::Display for TagDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 50;
        fn list(f: &mut std::fmt::Formatter<'_>, items: &[String]) -> std::fmt::Result {
            let shown: Vec<&str> = items.iter().take(SHOWN).map(String::as_str).collect();
            write!(f, "[{}", shown.join(", "))?;
            if items.len() > SHOWN {
                write!(f, ", and {} more", items.len() - SHOWN)?;
            }
            write!(f, "]")
        }
        write!(f, "added: ")?;
        list(f, &self.added)?;
        write!(f, "; removed: ")?;
        list(f, &self.removed)?;
        write!(f, "; changed: ")?;
        let changed: Vec<String> = self
            .changed
            .iter()
            .map(|(n, keys)| format!("{n} ({})", keys.join(", ")))
            .collect();
        list(f, &changed)
    }
}

/// The keys in which two definitions of one tag differ (`address` when its source moved to
/// another kind).
fn changed_keys(a: &TagConfig, b: &TagConfig) -> Vec<&'static str> {
    let mut keys = Vec::new();
    macro_rules! compare {
        ($a:expr, $b:expr; $($key:ident),*) => {
            {$( if $a.$key != $b.$key { keys.push(stringify!($key)); } )*}
        };
    }
    compare!(a, b; unit, description, source);
    match (&a.address, &b.address) {
        (TagAddress::Mqtt(x), TagAddress::Mqtt(y)) => {
            compare!(x, y; topic, value_pointer, time_pointer, quality_pointer)
        }
        (TagAddress::Opcua(x), TagAddress::Opcua(y)) => compare!(
            x, y; node, value_type, sampling_interval_ms, queue_size, discard_oldest, opcua_deadband
        ),
        (TagAddress::Modbus(x), TagAddress::Modbus(y)) => {
            if x != y {
                keys.push("modbus");
            }
        }
        _ => keys.push("address"),
    }
    compare!(a, b; limits, compression);
    keys
}

/// Added, removed and changed tags from `old` to `new` (each in its configuration order).
pub fn diff_tags(old: &[TagConfig], new: &[TagConfig]) -> TagDiff {
    let before: BTreeMap<&str, &TagConfig> = old.iter().map(|t| (t.name.as_str(), t)).collect();
    let after: BTreeMap<&str, &TagConfig> = new.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut d = TagDiff::default();
    for t in new {
        match before.get(t.name.as_str()) {
            None => d.added.push(t.name.clone()),
            Some(was) => {
                let keys = changed_keys(was, t);
                if !keys.is_empty() {
                    d.changed.push((t.name.clone(), keys));
                }
            }
        }
    }
    d.removed = old
        .iter()
        .filter(|t| !after.contains_key(t.name.as_str()))
        .map(|t| t.name.clone())
        .collect();
    d
}

/// The sections other than the tags that differ: a reload cannot apply those.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut sections = Vec::new();
    // A password from a file is read at load: a rotated credential file is not a change to
    // refuse the tag maps for (the running link keeps the password it connected with; the
    // next start uses the new one).
    let file_passwords_hidden = |c: &Config| {
        let mut b = c.brokers.clone();
        for broker in b.values_mut().filter(|b| b.password_file.is_some()) {
            broker.password = None;
        }
        b
    };
    if file_passwords_hidden(old) != file_passwords_hidden(new) {
        sections.push("brokers");
    }
    macro_rules! compare {
        ($($section:ident),*) => {
            $( if old.$section != new.$section { sections.push(stringify!($section)); } )*
        };
    }
    compare!(
        agent,
        opcua_servers,
        modbus_devices,
        sources,
        lines,
        sinks,
        recipes,
        batch,
        journal,
        health,
        clock
    );
    sections
        .into_iter()
        .map(|s| {
            format!(
                "{}: [{s}] changed: a reload applies tag maps only; restart the agent to apply it",
                new.file
            )
        })
        .collect()
}

/// Directories holding the agent file and the tag-map files it loaded.
fn watched_dirs(c: &Config) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::iter::once(c.file.as_str())
        .chain(c.tag_origins.iter().map(|o| o.file.as_str()))
        .filter_map(|f| {
            let dir = Path::new(f).parent()?;
            Some(if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir.to_path_buf()
            })
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Watches the directories of the configuration's files (so an editor's write-and-rename is
/// seen too): every change to a `.toml` file there sends on `changed`. A tag-map file in a
/// directory the configuration did not load from before is seen after the next reload (or
/// with `SIGHUP`).
pub fn watch(c: &Config, changed: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        let relevant = matches!(
            ev.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        ) && ev
            .paths
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "toml"));
        if relevant {
            let _full = changed.try_send(()); // one pending reload is enough
        }
    })?;
    for dir in watched_dirs(c) {
        w.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    Ok(w)
}

/// How long the files must be quiet before a watched change is reloaded: an editor or a
/// deployment tool writes several files, or one file in several steps.
pub const SETTLE: Duration = Duration::from_millis(300);

impl Agent {
    /// Reloads the configuration at `path` (see the module header).
    pub async fn reload(&mut self, path: &Path) -> Outcome {
        let p = path.to_path_buf();
        let loaded = tokio::task::spawn_blocking(move || config::load(&p))
            .await
            .unwrap_or_else(|e| {
                Err(vec![config::ConfigError::new(
                    path.display().to_string(),
                    "",
                    format!("reading the configuration failed: {e}"),
                )])
            });
        let new = match loaded {
            Ok(new) => new,
            Err(errs) => {
                return self
                    .refuse(errs.iter().map(ToString::to_string).collect())
                    .await
            }
        };
        let outside = restart_only_changes(&self.config, &new);
        if !outside.is_empty() {
            return self.refuse(outside).await;
        }
        let diff = diff_tags(&self.config.tags, &new.tags);
        if diff.is_empty() {
            info!("Configuration reloaded: the tags are unchanged; nothing to apply.");
            self.config = new;
            return Outcome::Unchanged;
        }
        match self.apply(new, &diff).await {
            Ok(seq) => {
                Stats::add(&self.stats.config_reloads, 1);
                info!(seq, %diff, "Tag map reloaded and applied.");
                Outcome::Applied {
                    seq,
                    diff: diff.to_string(),
                }
            }
            Err(why) => self.refuse(vec![why]).await,
        }
    }

    async fn apply(&mut self, new: Config, diff: &TagDiff) -> Result<u64, String> {
        let mut registry = self.registry.clone();
        let names: Vec<&str> = new.tags.iter().map(|t| t.name.as_str()).collect();
        let (ids, change) = registry.configure(&names);
        let space = registry.len();
        let tags = tag_table(&new, &ids, space);
        let old: BTreeMap<&str, &TagConfig> = self
            .config
            .tags
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        let detail = format!(
            "config={} config_sha256={} tags={}; {diff}; registry: {}",
            new.file,
            config_digest(&new),
            ids.len(),
            registry.describe(&change)
        );
        // Names first: the registry only grows, so records committed before still resolve.
        if let Some(n) = &self.names {
            n.set(registry.names().into());
        }
        // One plan per line; the primary's commits the registry and the audit record, the
        // others only the samples their changed compressors held.
        let mut plans = Vec::new();
        for i in 0..new.lines().len() {
            // Compressors to replace on this line: a tag whose compression on this line
            // differs (added, changed, moved to or from the line), and every removed tag.
            let spec_on = |c: &Config, t: &TagConfig| {
                (c.line_of(&t.source) == i)
                    .then(|| crate::runtime::compression_spec(t))
                    .flatten()
            };
            let mut compressors: Vec<_> = new
                .tags
                .iter()
                .zip(&ids)
                .filter_map(|(t, id)| {
                    let want = spec_on(&new, t);
                    let had = old
                        .get(t.name.as_str())
                        .and_then(|o| spec_on(&self.config, o));
                    (want != had || !old.contains_key(t.name.as_str())).then_some((*id, want))
                })
                .collect();
            compressors.extend(change.removed.iter().map(|(id, _)| (*id, None)));
            plans.push(TagPlan {
                registry: registry.clone(),
                tags: line_tag_table(&new, &ids, space, Some(i)),
                configured: crate::lines::line_ids(&new, &ids, i),
                compressors,
                alarm_settings: crate::alarms::settings(&new, &ids, space),
                critical: crate::alarms::critical(&new, &ids, space),
                detail: detail.clone(),
                primary: i == 0,
            });
        }
        let mut seq = 0;
        for (plan, line) in plans.into_iter().zip(&self.controls) {
            let (done, reply) = oneshot::channel();
            let msg = Control::Reload {
                plan: Box::new(plan),
                done,
            };
            if line.send(msg).await.is_err() {
                return Err("a line pipeline is not running".into());
            }
            let s = reply
                .await
                .map_err(|_| "a line pipeline stopped during the reload".to_owned())??;
            seq = seq.max(s);
        }
        // Names and units for SCADA once the change is durable (the alarms of new tags come
        // only after the sources switch, below; a removed tag keeps its name and unit).
        if let Some(b) = &self.board {
            let units = registry
                .names()
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let id = pdtf_models::TagId(i as u32);
                    let spec = tags.get(id).or_else(|| self.tags.get(id));
                    (
                        name.clone(),
                        spec.map(|s| s.unit.clone()).unwrap_or_default(),
                    )
                })
                .collect();
            b.set_tags(units);
            b.set_prefixes(crate::lines::tag_prefixes(&new, &ids, space));
        }
        // The ids are durable now: the sources may deliver under them.
        for (id, feed) in &self.feeds.mqtt {
            let map = topic_map(&new, &ids, id);
            feed.send_if_modified(|m| std::mem::replace(m, map.clone()) != map);
        }
        for (id, feed) in &self.feeds.modbus {
            let tags = crate::modbus::poll_tags(&new, &ids, id);
            feed.send_if_modified(|m| std::mem::replace(m, tags.clone()) != tags);
        }
        for (id, feed) in &self.feeds.opcua {
            let items = opcua_items(&new, &ids, id);
            feed.send_if_modified(|m| std::mem::replace(m, items.clone()) != items);
        }
        self.config = new;
        self.tags = tags;
        self.tag_ids = ids;
        self.registry = registry;
        Ok(seq)
    }

    async fn refuse(&mut self, errors: Vec<String>) -> Outcome {
        Stats::add(&self.stats.config_reloads_refused, 1);
        for e in &errors {
            error!("{e}");
        }
        warn!(
            errors = errors.len(),
            "Configuration reload refused; the running configuration stays."
        );
        const SHOWN: usize = 20;
        let mut detail = errors
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if errors.len() > SHOWN {
            detail.push_str(&format!("; and {} more", errors.len() - SHOWN));
        }
        let msg = Control::Audit {
            event: "config_reload_refused".into(),
            detail,
        };
        let sent = match self.controls.first() {
            Some(primary) => primary.send(msg).await.is_ok(),
            None => false,
        };
        if !sent {
            warn!("The refused reload was not recorded: the line pipeline is not running.");
        }
        Outcome::Refused(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(tags: &str, extra: &str) -> Config {
        config::test_config(tags, extra)
    }

    const TAGS: &str = r#"
[[tags]]
name = "temp"
source = "plc"
topic = "t"
limits = { hi = 80.0 }
[[tags]]
name = "flow"
source = "plc"
topic = "f"
"#;

    #[test]
    fn a_rotated_password_file_is_not_a_broker_change_but_a_new_password_or_host_is() {
        let mut old = cfg(TAGS, "");
        let file = PathBuf::from("/run/credentials/pdtf-agent.service/b-password");
        let b = old.brokers.get_mut("b").unwrap();
        (b.password_file, b.password) = (Some(file), Some("before".into()));
        let mut rotated = old.clone();
        rotated.brokers.get_mut("b").unwrap().password = Some("after".into());
        assert_eq!(restart_only_changes(&old, &rotated), Vec::<String>::new());
        let mut moved = rotated.clone();
        moved.brokers.get_mut("b").unwrap().host = "10.0.0.9".into();
        assert_eq!(restart_only_changes(&old, &moved).len(), 1);
        assert!(restart_only_changes(&old, &moved)[0].contains("[brokers] changed"));
        // A password written as ${ENV} is still compared: a new value needs the restart.
        let mut env_old = cfg(TAGS, "");
        env_old.brokers.get_mut("b").unwrap().password = Some("before".into());
        let mut env_new = env_old.clone();
        env_new.brokers.get_mut("b").unwrap().password = Some("after".into());
        assert_eq!(restart_only_changes(&env_old, &env_new).len(), 1);
    }

    #[test]
    fn diff_names_added_removed_and_the_keys_that_changed() {
        let old = cfg(TAGS, "");
        let new = cfg(
            r#"
[[tags]]
name = "temp"
source = "plc"
topic = "t2"
unit = "C"
limits = { hi = 90.0 }
[[tags]]
name = "level"
source = "plc"
topic = "l"
"#,
            "",
        );
        let d = diff_tags(&old.tags, &new.tags);
        assert_eq!(d.added, vec!["level"]);
        assert_eq!(d.removed, vec!["flow"]);
        assert_eq!(
            d.changed,
            vec![("temp".to_owned(), vec!["unit", "topic", "limits"])]
        );
        assert_eq!(
            d.to_string(),
            "added: [level]; removed: [flow]; changed: [temp (unit, topic, limits)]"
        );
        assert!(diff_tags(&old.tags, &old.tags).is_empty());
    }

    #[test]
    fn a_tag_moved_to_another_kind_of_source_changes_its_address() {
        const UA: &str = r#"
[[sources]]
id = "ua"
kind = "opcua"
server = "s"
[opcua_servers.s]
endpoint = "opc.tcp://127.0.0.1:4840/"
"#;
        let old = cfg(TAGS, UA);
        let moved = TAGS.replacen(
            "source = \"plc\"\ntopic = \"t\"",
            "source = \"ua\"\nnode = \"ns=2;s=Temp\"",
            1,
        );
        assert_ne!(moved, TAGS, "the fixture must move the tag");
        let d = diff_tags(&old.tags, &cfg(&moved, UA).tags);
        assert_eq!(
            d.changed,
            vec![("temp".to_owned(), vec!["source", "address"])]
        );
        // A node re-pointed on the same OPC UA server is a key-level change.
        let repointed = moved.replace("s=Temp", "s=Temp2");
        let d = diff_tags(&cfg(&moved, UA).tags, &cfg(&repointed, UA).tags);
        assert_eq!(d.changed, vec![("temp".to_owned(), vec!["node"])]);
    }

    #[test]
    fn changes_outside_the_tags_need_a_restart() {
        let old = cfg(TAGS, "");
        assert!(restart_only_changes(&old, &cfg("", "")).is_empty());
        let new = cfg(TAGS, "qos = 0");
        let why = restart_only_changes(&old, &new);
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].contains("[sources] changed"), "{why:?}");
        assert!(why[0].starts_with("/etc/pdtf/agent.toml: "), "{why:?}");
        let recipe = "[[recipes]]\nid = \"r\"\nversion = 1\nproduct = \"P\"\nproduct_code = \"P1\"\n[[recipes.phases]]\nname = \"a\"\n";
        let why = restart_only_changes(&old, &cfg(TAGS, recipe));
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].contains("[recipes] changed"), "{why:?}");
    }

    #[test]
    fn watches_each_directory_once() {
        let mut c = cfg(TAGS, "");
        c.tag_origins[0].file = "/etc/pdtf/tags.d/a.toml".into();
        c.tag_origins[1].file = "/etc/pdtf/tags.d/b.toml".into();
        assert_eq!(
            watched_dirs(&c),
            vec![
                PathBuf::from("/etc/pdtf"),
                PathBuf::from("/etc/pdtf/tags.d")
            ]
        );
    }
}
