//! `pdtf-agent opcua browse`: walk a server's address space and print it, or a tag-map TOML
//! skeleton for the variables found.

use super::ValueType;
use opcua::client::Session;
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDescriptionResultMask, BrowseDirection, DataTypeId,
    NamespaceMap, NodeClass, NodeClassMask, NodeId, ReadValueId, ReferenceTypeId,
    TimestampsToReturn, Variant,
};
use std::collections::HashSet;
use std::fmt::Write;

#[derive(Debug, Clone, PartialEq)]
pub struct BrowsedNode {
    pub depth: usize,
    /// In `nsu=` form outside namespace 0, so a tag map survives namespace reordering.
    pub node: String,
    pub browse_name: String,
    pub display_name: String,
    pub class: NodeClass,
    /// Variables only: the tag-map type the data type and value rank suggest, if any.
    pub value_type: Option<ValueType>,
    pub data_type: Option<String>,
}

fn stable_id(id: &NodeId, ns: &NamespaceMap) -> String {
    let text = id.to_string();
    if id.namespace == 0 {
        return text;
    }
    let uri = ns
        .known_namespaces()
        .iter()
        .find(|(_, i)| **i == id.namespace)
        .map(|(u, _)| u.clone());
    match (uri, text.split_once(';')) {
        (Some(u), Some((_, rest))) => format!("nsu={u};{rest}"),
        _ => text,
    }
}

/// The tag-map type for a variable's DataType and ValueRank. Ranks that allow both scalars
/// and arrays (0 one-or-more dimensions, -2 any, -3 scalar-or-one-dimension; servers such as
/// asyncua leave arrays at 0) are settled by the shape of the current value (`array`).
fn suggest(data_type: &NodeId, value_rank: i32, array: bool) -> Option<ValueType> {
    use DataTypeId as D;
    let numeric = [
        D::SByte,
        D::Byte,
        D::Int16,
        D::UInt16,
        D::Int32,
        D::UInt32,
        D::Int64,
        D::UInt64,
        D::Float,
        D::Double,
    ]
    .iter()
    .any(|d| data_type == &NodeId::from(*d));
    let value_rank = match value_rank {
        0 | -2 | -3 if array => 1,
        -2 | -3 => -1,
        r => r,
    };
    match (value_rank, numeric) {
        (-1, true) => Some(ValueType::Number),
        (1, true) => Some(ValueType::NumberArray),
        (-1, false) if data_type == &NodeId::from(D::Boolean) => Some(ValueType::Bool),
        (-1, false) if data_type == &NodeId::from(D::String) => Some(ValueType::String),
        _ => None,
    }
}

/// Walks hierarchical references from `start` down to `depth` levels (objects and variables).
pub async fn browse(
    session: &Session,
    start: &NodeId,
    depth: usize,
) -> Result<Vec<BrowsedNode>, String> {
    let ns = session
        .read_namespace_array()
        .await
        .map_err(|e| format!("reading the namespace array: {e}"))?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![(start.clone(), 0usize)];
    while let Some((node, d)) = stack.pop() {
        if d >= depth || !seen.insert(node.clone()) {
            continue;
        }
        let desc = BrowseDescription {
            node_id: node.clone(),
            browse_direction: BrowseDirection::Forward,
            reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
            include_subtypes: true,
            node_class_mask: (NodeClassMask::OBJECT | NodeClassMask::VARIABLE).bits(),
            result_mask: BrowseDescriptionResultMask::all().bits(),
        };
        let mut refs = Vec::new();
        let mut results = session
            .browse(&[desc], 1000, None)
            .await
            .map_err(|e| format!("Browse {node}: {e}"))?;
        while let Some(r) = results.pop() {
            refs.extend(r.references.unwrap_or_default());
            if r.continuation_point.is_null() {
                break;
            }
            results = session
                .browse_next(false, &[r.continuation_point])
                .await
                .map_err(|e| format!("BrowseNext {node}: {e}"))?;
        }
        let mut children = Vec::new();
        for r in refs {
            let id = r.node_id.node_id.clone();
            let mut b = BrowsedNode {
                depth: d,
                node: stable_id(&id, &ns),
                browse_name: r.browse_name.name.as_ref().to_owned(),
                display_name: r.display_name.text.as_ref().to_owned(),
                class: r.node_class,
                value_type: None,
                data_type: None,
            };
            if r.node_class == NodeClass::Variable {
                let read = [
                    AttributeId::DataType,
                    AttributeId::ValueRank,
                    AttributeId::Value,
                ]
                .map(|a| ReadValueId::new(id.clone(), a));
                if let Ok(v) = session.read(&read, TimestampsToReturn::Neither, 0.0).await {
                    if let (Some(Variant::NodeId(dt)), Some(Variant::Int32(rank))) =
                        (&v[0].value, &v[1].value)
                    {
                        let array = matches!(v[2].value, Some(Variant::Array(_)));
                        b.value_type = suggest(dt, *rank, array);
                        b.data_type = Some(dt.to_string());
                    }
                }
            }
            children.push((id, b));
        }
        children.sort_by(|a, b| b.1.browse_name.cmp(&a.1.browse_name));
        for (id, b) in children {
            out.push(b);
            // Depth-first, in name order: push after recording so the output reads as a tree.
            stack.push((id, d + 1));
        }
    }
    Ok(out)
}

/// An indented listing.
pub fn render_tree(nodes: &[BrowsedNode]) -> String {
    let mut s = String::new();
    for n in nodes {
        let kind = match (n.class, n.value_type) {
            (NodeClass::Variable, Some(t)) => format!("variable, {t:?}"),
            (NodeClass::Variable, None) => format!(
                "variable, {} (no tag-map type)",
                n.data_type.as_deref().unwrap_or("unknown type")
            ),
            (c, _) => format!("{c:?}").to_lowercase(),
        };
        let _ = writeln!(
            s,
            "{}{}  [{}]  {}",
            "  ".repeat(n.depth),
            n.browse_name,
            kind,
            n.node
        );
    }
    s
}

/// Tag names from browse paths: lower case, `[A-Za-z0-9_.-]` only, made unique.
fn tag_name(path: &str, used: &mut HashSet<String>) -> String {
    let mut base: String = path
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if base.is_empty() {
        base = "tag".into();
    }
    let mut name = base.clone();
    let mut i = 2;
    while !used.insert(name.clone()) {
        name = format!("{base}_{i}");
        i += 1;
    }
    name
}

/// A tag-map skeleton: one `[[tags]]` per variable with a supported type.
pub fn render_tag_map(nodes: &[BrowsedNode], source: &str) -> String {
    let mut s = String::from(
        "# Generated by `pdtf-agent opcua browse --toml`. Review names, units and limits.\n",
    );
    let mut used = HashSet::new();
    let mut path: Vec<&str> = Vec::new();
    let mut skipped = 0;
    for n in nodes {
        path.truncate(n.depth);
        path.push(&n.browse_name);
        if n.class != NodeClass::Variable {
            continue;
        }
        let Some(t) = n.value_type else {
            skipped += 1;
            continue;
        };
        let ty = match t {
            ValueType::Number => "number",
            ValueType::Bool => "bool",
            ValueType::String => "string",
            ValueType::NumberArray => "number_array",
        };
        let name = tag_name(&path.join("."), &mut used);
        let _ = write!(
            s,
            "\n[[tags]]\nname = \"{name}\"\nsource = \"{source}\"\nnode = \"{}\"\nvalue_type = \"{ty}\"\ndescription = \"{}\"\n",
            n.node.replace('\\', "\\\\").replace('"', "\\\""),
            n.display_name.replace('\\', "\\\\").replace('"', "\\\""),
        );
    }
    if skipped > 0 {
        let _ = writeln!(
            s,
            "\n# {skipped} variable(s) skipped: their data type has no tag-map value_type."
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_types_follow_data_type_rank_and_the_current_shape() {
        let double = NodeId::from(DataTypeId::Double);
        let boolean = NodeId::from(DataTypeId::Boolean);
        assert_eq!(suggest(&double, -1, false), Some(ValueType::Number));
        assert_eq!(suggest(&double, 1, true), Some(ValueType::NumberArray));
        // Ranks that allow either: the current value decides.
        for rank in [0, -2, -3] {
            assert_eq!(suggest(&double, rank, true), Some(ValueType::NumberArray));
        }
        assert_eq!(suggest(&double, -2, false), Some(ValueType::Number));
        assert_eq!(suggest(&double, -3, false), Some(ValueType::Number));
        assert_eq!(suggest(&boolean, -1, false), Some(ValueType::Bool));
        // Matrices and arrays of booleans have no tag-map type.
        assert_eq!(suggest(&double, 2, true), None);
        assert_eq!(suggest(&boolean, 0, true), None);
    }
}
