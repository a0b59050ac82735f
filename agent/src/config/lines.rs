//! `[[lines]]`: every source on exactly one line, names usable in topics, one Modbus bus on
//! one line (a bus is polled by one task, which feeds one pipeline).

use super::{Config, ConfigError};
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn check(c: &Config, name_rule: &dyn Fn(&str) -> bool, rule: &str) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    let mut err = |path: String, msg: String| errs.push(ConfigError::new(&c.file, path, msg));
    if c.lines.is_empty() {
        return errs;
    }
    let known: BTreeSet<&str> = c.sources.iter().map(|s| s.id.as_str()).collect();
    let mut ids = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut line_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, l) in c.lines.iter().enumerate() {
        let p = format!("lines[{i}]");
        if !name_rule(&l.id) {
            err(format!("{p}.id"), format!("{:?} {rule}", l.id));
        }
        if !ids.insert(l.id.as_str()) {
            err(format!("{p}.id"), format!("duplicate line id {:?}", l.id));
        }
        if let Some(n) = &l.line {
            if !name_rule(n) {
                err(format!("{p}.line"), format!("{n:?} {rule}"));
            }
        }
        if !names.insert(l.name()) {
            err(
                format!("{p}.line"),
                format!(
                    "line name {:?} is used by another line (alarm topics would collide)",
                    l.name()
                ),
            );
        }
        if l.sources.is_empty() {
            err(
                format!("{p}.sources"),
                "must name at least one source".into(),
            );
        }
        for (j, s) in l.sources.iter().enumerate() {
            let sp = format!("{p}.sources[{j}]");
            if !known.contains(s.as_str()) {
                if !c.unparsed.contains(&format!("sources.{s}")) {
                    let list: Vec<&str> = known.iter().copied().collect();
                    err(
                        sp,
                        format!("no source with id {s:?} (defined: {})", list.join(", ")),
                    );
                }
                continue;
            }
            if let Some(other) = line_of.insert(s, i) {
                err(
                    sp,
                    format!(
                        "source {s:?} is already on lines[{other}] (id {:?}); a source feeds one line",
                        c.lines[other].id
                    ),
                );
            }
        }
    }
    for (i, s) in c.sources.iter().enumerate() {
        if !line_of.contains_key(s.id.as_str()) {
            err(
                format!("sources[{i}]"),
                format!(
                    "source {:?} is on no line: list it in one [[lines]] sources",
                    s.id
                ),
            );
        }
    }
    // Modbus sources sharing one bus (an RTU serial line, or one TCP device) are polled by
    // one task, so they must feed one line.
    let mut buses: BTreeMap<String, (usize, &str)> = BTreeMap::new();
    for (i, s) in c.sources.iter().enumerate() {
        let Some(d) = s.device() else {
            continue;
        };
        let (Some(device), Some(line)) = (c.modbus_devices.get(d), line_of.get(s.id.as_str()))
        else {
            continue;
        };
        let key = device.bus_key(d);
        match buses.get(&key) {
            Some((other, id)) if other != line => err(
                format!("sources[{i}]"),
                format!(
                    "modbus source {:?} shares its bus with source {id:?} on another line; one bus is polled by one task and feeds one line",
                    s.id
                ),
            ),
            Some(_) => {}
            None => {
                buses.insert(key, (*line, s.id.as_str()));
            }
        }
    }
    errs
}
