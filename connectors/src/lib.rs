//! PDTF Edge protocol I/O: sources that turn protocol traffic into `Sample` batches, and
//! sinks that publish accepted records (SCADA alarm topics, upstream sync).
//!
//! Every task here takes a `CancellationToken` and returns when it fires. Every channel is
//! bounded; a full channel blocks the sender (sources slow down, nothing is dropped).

pub mod alert;
pub mod backoff;
pub mod malformed;
pub mod modbus;
pub mod mqtt;
pub mod opcua;
pub mod repeat;
pub mod secret;
pub mod shared;
pub mod source;
pub mod stats;
pub mod upstream;

pub use backoff::Backoff;
pub use shared::{Shared, TagNames};
pub use source::{Outage, SourceMsg, SOURCE_CHANNEL_BATCHES};
pub use stats::Stats;
