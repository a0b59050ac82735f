//! OPC UA source (async-opcua): secure sessions, subscriptions, truthful outages, browse.

pub mod browse;
pub mod client;
mod config;
mod nodeid;
mod source;
mod value;

pub use config::{Identity, OpcuaServerConfig, SecurityMode, SecurityPolicy};
pub use nodeid::{Namespace, NodeAddr};
pub use source::{Deadband, OpcuaItem, OpcuaSource};
pub use value::{to_sample, ValueType};
