//! PDTF Edge agent: configuration, topology wiring, journal, line pipeline and the demo.
//!
//! Only this crate knows about everything; `pdtf-connectors` does protocol I/O and
//! `pdtf-models` the pure domain logic.

pub mod alarms;
pub mod analytics;
pub mod batch;
#[cfg(feature = "demo")]
pub mod broker;
pub mod clock;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod health;
pub mod housekeeping;
pub mod journal;
mod lines;
pub mod logging;
pub mod memory;
mod modbus;
#[cfg(feature = "demo")]
pub mod modbus_sim;
pub mod opcua_cli;
#[cfg(feature = "demo")]
pub mod opcua_sim;
pub mod pipeline;
pub mod reload;
pub mod runtime;
pub mod startup;
pub mod supervise;
pub mod systemd;
pub mod verified;

pub use runtime::Agent;
