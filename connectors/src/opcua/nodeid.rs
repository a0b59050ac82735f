//! Node addresses as written in tag maps: `ns=2;s=Line1.Granulator.InletTemp`, `ns=3;i=1001`,
//! `i=2258`, `ns=1;g=…`, `ns=1;b=…`, and `nsu=URI;s=…`. A namespace URI survives the server
//! reordering its namespace table; it is resolved against the table at every subscription.

use opcua::types::{NamespaceMap, NodeId};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    Index(u16),
    Uri(String),
}

/// A parsed node address: the namespace part and the identifier part (`s=…`, `i=…`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    pub namespace: Namespace,
    /// `i=…`, `s=…`, `g=…` or `b=…`, checked to parse.
    identifier: String,
}

impl FromStr for NodeAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (namespace, rest) = if let Some(rest) = s.strip_prefix("nsu=") {
            let (uri, id) = rest
                .split_once(';')
                .ok_or_else(|| format!("`{s}`: expected `nsu=URI;s=…` (or i=, g=, b=)"))?;
            if uri.is_empty() {
                return Err(format!("`{s}`: the namespace URI is empty"));
            }
            (Namespace::Uri(uri.to_owned()), id)
        } else if let Some(rest) = s.strip_prefix("ns=") {
            let (ns, id) = rest
                .split_once(';')
                .ok_or_else(|| format!("`{s}`: expected `ns=N;s=…` (or i=, g=, b=)"))?;
            let ns = ns
                .parse::<u16>()
                .map_err(|_| format!("`{s}`: namespace index `{ns}` is not a number 0..65535"))?;
            (Namespace::Index(ns), id)
        } else {
            (Namespace::Index(0), s)
        };
        // Let the library check the identifier part, in namespace 0.
        NodeId::from_str(rest).map_err(|_| {
            format!("`{s}`: `{rest}` is not a node identifier (expected i=NUMBER, s=STRING, g=GUID or b=BASE64)")
        })?;
        Ok(Self {
            namespace,
            identifier: rest.to_owned(),
        })
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Namespace::Index(0) => write!(f, "{}", self.identifier),
            Namespace::Index(n) => write!(f, "ns={n};{}", self.identifier),
            Namespace::Uri(u) => write!(f, "nsu={u};{}", self.identifier),
        }
    }
}

impl NodeAddr {
    /// The node id on a server whose namespace table is `namespaces`.
    pub fn resolve(&self, namespaces: &NamespaceMap) -> Result<NodeId, String> {
        let ns = match &self.namespace {
            Namespace::Index(n) => *n,
            Namespace::Uri(u) => namespaces
                .get_index(u)
                .ok_or_else(|| format!("the server has no namespace `{u}` (node `{self}`)"))?,
        };
        NodeId::from_str(&format!("ns={ns};{}", self.identifier)).map_err(|_| format!("`{self}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_forms_parse_and_print_back() {
        for s in [
            "ns=2;s=Line1.Granulator.InletTemp",
            "ns=3;i=1001",
            "i=2258",
            "nsu=urn:pdtf:demo;s=Granulator.Temp",
            "ns=1;g=72962b91-fa75-4ae6-8d28-b404dc7daf63",
        ] {
            assert_eq!(s.parse::<NodeAddr>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn bad_forms_say_what_is_wrong() {
        for (s, want) in [
            ("ns=x;s=a", "not a number"),
            ("ns=2", "expected `ns=N;"),
            ("nsu=;s=a", "URI is empty"),
            ("ns=2;q=a", "not a node identifier"),
            ("ns=2;i=abc", "not a node identifier"),
        ] {
            let e = s.parse::<NodeAddr>().unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn uris_resolve_against_the_servers_table() {
        let mut map = NamespaceMap::new();
        map.add_namespace("urn:a");
        let b = map.add_namespace("urn:b");
        let a: NodeAddr = "nsu=urn:b;s=T".parse().unwrap();
        assert_eq!(a.resolve(&map).unwrap(), NodeId::new(b, "T"));
        let missing: NodeAddr = "nsu=urn:zzz;i=5".parse().unwrap();
        assert!(missing
            .resolve(&map)
            .unwrap_err()
            .contains("no namespace `urn:zzz`"));
        let idx: NodeAddr = "ns=7;i=5".parse().unwrap();
        assert_eq!(idx.resolve(&map).unwrap(), NodeId::new(7, 5u32));
    }
}
