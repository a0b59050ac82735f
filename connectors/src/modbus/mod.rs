//! Modbus TCP and RTU sources (tokio-modbus): coalesced, read-only polling; a device's
//! refusal (exception) told apart from a link that is down.

mod config;
pub mod decode;
pub mod plan;
mod source;

pub use config::{
    DataType, ModbusDeviceConfig, ModbusTagConfig, Order, Parity, Table, Transport,
    MAX_BITS_PER_REQUEST, MAX_REGISTERS_PER_REQUEST,
};
pub use plan::PollTag;
pub use source::{exception_status, ModbusBus, ModbusUnit};
