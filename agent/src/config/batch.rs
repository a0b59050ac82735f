//! How a line's batch twin is driven: `[batch]` (an agent with one line) or
//! `[lines.batch]` inside a `[[lines]]` entry.
//!
//! Two ways, which may be combined: **tag-driven** — the equipment or MES publishes the batch
//! id, the phase and/or the procedural state on tags the line names (`batch_id_tag`,
//! `phase_tag` matched against the recipe phases' `start_on`, `state_tag` matched against
//! `state_values`) — and **command-driven** — JSON commands on `P/cmd/batch`
//! (`commands = true`), answered on `P/cmd/reply/{request_id}`.

use super::recipes::Marker;
use super::{Config, ConfigError};
use crate::batch::command::COMMANDS;
use pdtf_models::batch::ProcState;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Accept commands on `P/cmd/batch` (over `[sinks.alerts]`'s broker).
    #[serde(default)]
    pub commands: bool,
    /// The recipe ids this line may run; empty: every configured recipe.
    #[serde(default)]
    pub recipes: Vec<String>,
    /// Tag-driven: a new value of this tag starts a batch with that id (an empty value ends
    /// the running one).
    pub batch_id_tag: Option<String>,
    /// Tag-driven: its value, matched against the phases' `start_on`, changes the phase.
    pub phase_tag: Option<String>,
    /// Tag-driven: its value, matched against `state_values`, sets the procedural state.
    pub state_tag: Option<String>,
    /// The recipe a tag-driven batch runs against (its highest version).
    pub recipe: Option<String>,
    /// State name (`running`, `held`, …) → the value the state tag has in that state.
    #[serde(default)]
    pub state_values: BTreeMap<String, Marker>,
    /// Command name → the users allowed to send it; a command not listed is open to all.
    #[serde(default)]
    pub allow_users: BTreeMap<String, Vec<String>>,
    /// How often the batch state is snapshotted while a batch is open (besides after each
    /// batch event), so a restart loses no trajectory older than this.
    #[serde(default = "default_snapshot_interval_s")]
    pub snapshot_interval_s: u64,
}

const fn default_snapshot_interval_s() -> u64 {
    60
}

impl BatchConfig {
    pub fn tag_driven(&self) -> bool {
        self.batch_id_tag.is_some() || self.phase_tag.is_some() || self.state_tag.is_some()
    }
}

pub(super) fn check(c: &Config) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    let mut err = |path: String, msg: String| errs.push(ConfigError::new(&c.file, path, msg));
    if c.batch.is_some() && !c.lines.is_empty() {
        err(
            "batch".into(),
            "with [[lines]], each line takes its own [lines.batch]".into(),
        );
    }
    let lines = c.lines();
    for (i, l) in lines.iter().enumerate() {
        let Some(b) = &l.batch else { continue };
        let p = if c.lines.is_empty() {
            "batch".to_owned()
        } else {
            format!("lines[{i}].batch")
        };
        // The line's own tags: those of its sources.
        let own: BTreeSet<&str> = c
            .tags
            .iter()
            .filter(|t| l.sources.contains(&t.source))
            .map(|t| t.name.as_str())
            .collect();
        let mut tag = |key: &str, name: &Option<String>| {
            if let Some(n) = name.as_deref().filter(|n| !own.contains(n)) {
                let why = if c.tags.iter().any(|t| t.name == n) {
                    format!("tag {n:?} is not on this line (its source feeds another line)")
                } else {
                    format!("unknown tag {n:?} (no [[tags]] entry has that name)")
                };
                err(format!("{p}.{key}"), why);
            }
        };
        tag("batch_id_tag", &b.batch_id_tag);
        tag("phase_tag", &b.phase_tag);
        tag("state_tag", &b.state_tag);
        let known: BTreeSet<&str> = c.recipes.iter().map(|r| r.id.as_str()).collect();
        for (j, r) in b.recipes.iter().enumerate() {
            if !known.contains(r.as_str()) {
                err(format!("{p}.recipes[{j}]"), format!("no recipe {r:?}"));
            }
        }
        if !b.commands && !b.tag_driven() {
            err(
                p.clone(),
                "drives nothing: set commands = true, or batch_id_tag (and phase_tag, state_tag)"
                    .into(),
            );
        }
        if b.commands && c.sinks.alerts.is_none() {
            err(
                format!("{p}.commands"),
                "commands arrive over [sinks.alerts]'s broker, and there is none".into(),
            );
        }
        if b.tag_driven() {
            if b.batch_id_tag.is_none() && !b.commands {
                err(
                    format!("{p}.batch_id_tag"),
                    "a tag-driven line needs the tag that carries the batch id (or commands = true to start batches)".into(),
                );
            }
            match b.recipe.as_deref() {
                None if b.batch_id_tag.is_some() => err(
                    format!("{p}.recipe"),
                    "a batch started by batch_id_tag needs the recipe it runs against".into(),
                ),
                Some(r) if !known.contains(r) => {
                    err(format!("{p}.recipe"), format!("no recipe {r:?}"))
                }
                Some(r) if !b.recipes.is_empty() && !b.recipes.iter().any(|x| x == r) => err(
                    format!("{p}.recipe"),
                    format!("recipe {r:?} is not in this line's recipes"),
                ),
                _ => {}
            }
        }
        if b.phase_tag.is_some() {
            let runs = |id: &str| b.recipes.is_empty() || b.recipes.iter().any(|r| r == id);
            for (ri, r) in c.recipes.iter().enumerate().filter(|(_, r)| runs(&r.id)) {
                for (pi, ph) in r.phases.iter().enumerate() {
                    if ph.start_on.is_none() {
                        err(
                            format!("recipes[{ri}].phases[{pi}].start_on"),
                            format!(
                                "line {:?} drives phases by {p}.phase_tag: every phase of a recipe it runs needs start_on",
                                l.id
                            ),
                        );
                    }
                }
            }
        }
        if b.state_tag.is_some() && b.state_values.is_empty() {
            err(
                format!("{p}.state_values"),
                "a state tag needs the value of each state it reports".into(),
            );
        }
        if b.state_tag.is_none() && !b.state_values.is_empty() {
            err(
                format!("{p}.state_values"),
                "is set but state_tag is not".into(),
            );
        }
        let mut values: Vec<(&Marker, &str)> = Vec::new();
        for (state, v) in &b.state_values {
            let sp = format!("{p}.state_values.{state}");
            if ProcState::from_name(state).is_none() {
                let names: Vec<&str> = ProcState::ALL.iter().map(|s| s.name()).collect();
                err(
                    sp.clone(),
                    format!("unknown state {state:?} (states: {})", names.join(", ")),
                );
            }
            if let Some((_, other)) = values.iter().find(|(o, _)| *o == v) {
                err(sp, format!("{v} already means {other:?}"));
            }
            values.push((v, state));
        }
        for (command, users) in &b.allow_users {
            let ap = format!("{p}.allow_users.{command}");
            if !COMMANDS.contains(&command.as_str()) {
                err(
                    ap.clone(),
                    format!(
                        "unknown command {command:?} (commands: {})",
                        COMMANDS.join(", ")
                    ),
                );
            }
            if users.is_empty() {
                err(
                    ap,
                    "lists no user: nobody could send it (remove the entry to allow everyone)"
                        .into(),
                );
            }
        }
        if b.snapshot_interval_s == 0 {
            err(format!("{p}.snapshot_interval_s"), "must be >= 1".into());
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_single_line_batch_section_reaches_the_line() {
        let tags = "[[tags]]\nname = \"batch\"\nsource = \"plc\"\ntopic = \"b\"\n\
                    [[tags]]\nname = \"phase\"\nsource = \"plc\"\ntopic = \"p\"\n";
        let c = super::super::test_config(
            tags,
            r#"
[sinks.alerts]
broker = "b"
[batch]
commands = true
batch_id_tag = "batch"
phase_tag = "phase"
recipe = "r"
allow_users = { abort = ["qa-lead"] }
[[recipes]]
id = "r"
version = 1
product = "P"
product_code = "P1"
[[recipes.phases]]
name = "a"
start_on = 10
"#,
        );
        let lines = c.lines();
        let b = lines[0].batch.as_ref().expect("[batch] is the line's");
        assert!(b.commands && b.tag_driven());
        assert_eq!(b.allow_users["abort"], ["qa-lead"]);
        assert_eq!(b.snapshot_interval_s, 60, "the documented default");
    }
}
