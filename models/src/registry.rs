//! The tag registry: the durable names behind `TagId`s.
//!
//! A `TagId` is given to a tag *name* once and never reused: ids do not depend on the order
//! of today's configuration files. A tag removed from the configuration keeps its id (records
//! that name it stay truthful); a tag that comes back gets its old id again. The journal holds
//! the registry and stores it in the same transaction as the audit record of each change.
//!
//! Stored format (frozen; a change is a new version with a migration):
//! ```text
//! [version: u8 = 1][bincode 2 (standard) of (names: Vec<String>, configured: Vec<bool>)]
//! ```
//! `names[i]` is the name of `TagId(i)`; `configured[i]` says whether the last configuration
//! applied names it (so a change can say what was removed).

use crate::TagId;
use std::collections::HashMap;

const REGISTRY_FORMAT: u8 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagRegistry {
    names: Vec<String>,
    configured: Vec<bool>,
}

/// What applying a configuration changed, for the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryChange {
    /// Configured now and not before: new names (new ids) or names that came back (old ids).
    pub added: Vec<(TagId, String)>,
    /// Configured before and not now. Their ids stay taken.
    pub removed: Vec<(TagId, String)>,
}

impl RegistryChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

impl TagRegistry {
    /// Every name ever registered, by id.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, id: TagId) -> Option<&str> {
        self.names.get(id.index()).map(String::as_str)
    }

    /// Ids of the tags the last applied configuration names.
    pub fn configured(&self) -> impl Iterator<Item = TagId> + '_ {
        self.configured
            .iter()
            .enumerate()
            .filter(|(_, c)| **c)
            .map(|(i, _)| TagId(i as u32))
    }

    /// Applies a configuration naming exactly `names` (unique): known names keep their ids,
    /// new ones get the next free ids. Returns the id of each name, in the order given.
    pub fn configure(&mut self, names: &[&str]) -> (Vec<TagId>, RegistryChange) {
        let mut by_name: HashMap<&str, TagId> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), TagId(i as u32)))
            .collect();
        let mut ids = Vec::with_capacity(names.len());
        let mut now = vec![false; self.names.len()];
        let mut fresh = Vec::new();
        for name in names {
            let id = match by_name.get(name) {
                Some(id) => *id,
                None => {
                    let id = TagId((self.names.len() + fresh.len()) as u32);
                    fresh.push((*name).to_owned());
                    by_name.insert(name, id);
                    id
                }
            };
            ids.push(id);
        }
        now.resize(self.names.len() + fresh.len(), false);
        for id in &ids {
            now[id.index()] = true;
        }
        self.names.extend(fresh);
        self.configured.resize(self.names.len(), false);
        let mut change = RegistryChange::default();
        for (i, (was, is)) in self.configured.iter().zip(&now).enumerate() {
            let entry = || (TagId(i as u32), self.names[i].clone());
            match (was, is) {
                (false, true) => change.added.push(entry()),
                (true, false) => change.removed.push(entry()),
                _ => {}
            }
        }
        self.configured = now;
        (ids, change)
    }

    /// True when `self` keeps every id of `stored` for the same name: the only kind of
    /// registry a journal accepts over the one it holds.
    pub fn extends(&self, stored: &TagRegistry) -> bool {
        self.names.len() >= stored.names.len() && self.names[..stored.names.len()] == stored.names
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![REGISTRY_FORMAT];
        out.extend(
            bincode::serde::encode_to_vec(
                (&self.names, &self.configured),
                bincode::config::standard(),
            )
            .expect("strings and bools serialise"),
        );
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&REGISTRY_FORMAT, rest)) => {
                let ((names, configured), _): ((Vec<String>, Vec<bool>), _) =
                    bincode::serde::decode_from_slice(rest, bincode::config::standard())
                        .map_err(|e| format!("tag registry does not decode: {e}"))?;
                if names.len() != configured.len() {
                    return Err("tag registry: names and flags differ in length".into());
                }
                Ok(Self { names, configured })
            }
            Some((v, _)) => Err(format!("tag registry format {v} is not known")),
            None => Err("tag registry is empty".into()),
        }
    }

    /// One line for the audit trail: counts, the change, a bounded list of names.
    pub fn describe(&self, change: &RegistryChange) -> String {
        const SHOWN: usize = 50;
        let list = |v: &[(TagId, String)]| {
            let mut s: Vec<String> = v
                .iter()
                .take(SHOWN)
                .map(|(id, n)| format!("{n}=#{}", id.0))
                .collect();
            if v.len() > SHOWN {
                s.push(format!("and {} more", v.len() - SHOWN));
            }
            s.join(", ")
        };
        format!(
            "{} tags configured, {} ids registered; added: [{}]; removed: [{}]",
            self.configured().count(),
            self.names.len(),
            list(&change.added),
            list(&change.removed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_names_not_positions() {
        let mut r = TagRegistry::default();
        let (ids, c) = r.configure(&["temp", "flow"]);
        assert_eq!(ids, vec![TagId(0), TagId(1)]);
        assert_eq!(c.added.len(), 2);
        // A file that sorts earlier adds `aaa` first; `flow` is removed.
        let (ids, c) = r.configure(&["aaa", "temp"]);
        assert_eq!(ids, vec![TagId(2), TagId(0)]);
        assert_eq!(c.added, vec![(TagId(2), "aaa".into())]);
        assert_eq!(c.removed, vec![(TagId(1), "flow".into())]);
        assert_eq!(
            r.name(TagId(1)),
            Some("flow"),
            "a removed tag keeps its name"
        );
        // `flow` comes back under its old id; nothing is reused.
        let (ids, c) = r.configure(&["flow", "aaa", "temp"]);
        assert_eq!(ids, vec![TagId(1), TagId(2), TagId(0)]);
        assert_eq!(c.added, vec![(TagId(1), "flow".into())]);
        assert!(r.configure(&["flow", "aaa", "temp"]).1.is_empty());
        assert_eq!(r.configured().count(), 3);
    }

    #[test]
    fn round_trips_and_checks_extension() {
        let mut r = TagRegistry::default();
        r.configure(&["a", "b"]);
        let stored = r.clone();
        r.configure(&["c"]);
        assert_eq!(TagRegistry::decode(&r.encode()).unwrap(), r);
        assert!(r.extends(&stored));
        assert!(!stored.extends(&r), "ids are never taken back");
        let mut other = TagRegistry::default();
        other.configure(&["b", "a"]);
        assert!(!other.extends(&stored), "same names, other ids");
        assert!(TagRegistry::decode(&[9, 0]).is_err());
        assert!(TagRegistry::decode(&[]).is_err());
    }

    #[test]
    fn the_description_is_bounded() {
        let names: Vec<String> = (0..500).map(|i| format!("t{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut r = TagRegistry::default();
        let (_, c) = r.configure(&refs);
        let d = r.describe(&c);
        assert!(d.contains("and 450 more"), "{d}");
        assert!(d.len() < 1_000, "{}", d.len());
    }
}
