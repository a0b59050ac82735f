//! Rules for `[modbus_devices.NAME]` and the `modbus` tables of Modbus sources' tags (the
//! source's `device` reference is checked with the other references, in `validate.rs`).
//! Pure: every problem with its TOML path.

use super::{Config, ConfigError, SourceConfig, TagConfig};
use pdtf_connectors::modbus::Transport;
use std::collections::BTreeMap;

/// Each device's own rules, whether a source uses it, and the rules of an RTU line the
/// devices on one serial port share.
pub(super) fn devices(c: &Config) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    let mut err = |path: String, msg: String| errs.push(ConfigError::new(&c.file, path, msg));
    let mut lines: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, d) in &c.modbus_devices {
        for (key, msg) in d.problems() {
            err(format!("modbus_devices.{name}.{key}"), msg);
        }
        let users = c
            .sources
            .iter()
            .filter(|s| s.device() == Some(name.as_str()))
            .count();
        match users {
            0 => err(
                format!("modbus_devices.{name}"),
                "is not used by any source".into(),
            ),
            1 => {}
            n => err(
                format!("modbus_devices.{name}"),
                format!("is used by {n} sources; each device is polled by exactly one"),
            ),
        }
        if d.transport == Transport::Rtu {
            lines.entry(d.bus_key(name)).or_default().push(name);
        }
    }
    for names in lines.values().filter(|n| n.len() > 1) {
        let first = &c.modbus_devices[names[0]];
        let mut units = BTreeMap::new();
        for name in names {
            let d = &c.modbus_devices[*name];
            let same_line = (d.baud, d.parity, d.data_bits, d.stop_bits)
                == (first.baud, first.parity, first.data_bits, first.stop_bits);
            if !same_line {
                err(
                    format!("modbus_devices.{name}.baud"),
                    format!(
                        "shares serial port {} with {}, so baud, parity, data_bits and stop_bits must match",
                        d.serial.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
                        names[0]
                    ),
                );
            }
            if let Some(other) = units.insert(d.unit_id, *name) {
                err(
                    format!("modbus_devices.{name}.unit_id"),
                    format!(
                        "unit id {} is also {other}'s on the same serial line",
                        d.unit_id
                    ),
                );
            }
        }
    }
    errs
}

/// A tag of Modbus source `s`, at `p` (`tags[i]`) in `file`; also that no other tag of the
/// device reads the same registers.
pub(super) fn tag(
    c: &Config,
    s: &SourceConfig,
    t: &TagConfig,
    file: &str,
    p: &str,
) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    let Some(m) = t.modbus() else {
        return errs;
    };
    let Some(device) = s.device().and_then(|d| c.modbus_devices.get(d)) else {
        return errs;
    };
    for (key, msg) in m.problems(device) {
        errs.push(ConfigError::new(file, format!("{p}.modbus.{key}"), msg));
    }
    let earlier = c
        .tags
        .iter()
        .take_while(|o| !std::ptr::eq(*o, t))
        .filter(|o| o.source == t.source)
        .find(|o| o.modbus().is_some_and(|om| om.overlaps(m)));
    if let Some(o) = earlier {
        errs.push(ConfigError::new(
            file,
            format!("{p}.modbus.address"),
            format!(
                "{} {}+{} overlaps tag {:?} on the same device",
                m.table.name(),
                m.address,
                m.width(),
                o.name
            ),
        ));
    }
    errs
}
