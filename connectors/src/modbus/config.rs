//! `[modbus_devices.NAME]` and a tag's `modbus = { … }` table: what to poll, and how to turn
//! registers into an engineering value.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The protocol's per-request maxima (Modbus Application Protocol v1.1b3, 6.1–6.4).
pub const MAX_REGISTERS_PER_REQUEST: u16 = 125;
pub const MAX_BITS_PER_REQUEST: u16 = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Rtu,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

const fn default_port() -> u16 {
    502
}
const fn default_unit_id() -> u8 {
    1
}
const fn default_timeout_ms() -> u64 {
    1_000
}
const fn default_retry_initial_ms() -> u64 {
    500
}
const fn default_retry_max_ms() -> u64 {
    30_000
}
const fn default_baud() -> u32 {
    19_200
}
const fn default_data_bits() -> u8 {
    8
}
const fn default_stop_bits() -> u8 {
    1
}
const fn default_max_registers() -> u16 {
    MAX_REGISTERS_PER_REQUEST
}
const fn default_max_bits() -> u16 {
    MAX_BITS_PER_REQUEST
}
const fn default_max_gap() -> u16 {
    8
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDeviceConfig {
    pub transport: Transport,
    /// tcp: the device's (or gateway's) address.
    pub host: Option<String>,
    #[serde(default = "default_port")]
    pub port: u16,
    /// rtu: the serial port, e.g. `/dev/ttyUSB0`. Devices on one port share the bus.
    pub serial: Option<PathBuf>,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Unit (slave) id; over TCP to a plain device usually 1 (or 255), behind a gateway the
    /// RTU address of the device.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// One request's longest wait for its reply; a timeout is a link problem.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// First reconnect delay after a link problem; doubles per failed attempt up to
    /// `retry_max_ms`, each drawn from [d/2, d]. Retries never stop.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Largest read of registers per request (many devices accept less than 125).
    #[serde(default = "default_max_registers")]
    pub max_registers_per_request: u16,
    /// Largest read of coils or discrete inputs per request (protocol maximum 2,000).
    #[serde(default = "default_max_bits")]
    pub max_bits_per_request: u16,
    /// Unmapped registers (or bits) a read may span to join two tags into one request.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
}

impl ModbusDeviceConfig {
    pub fn tcp(host: impl Into<String>, port: u16) -> Self {
        Self {
            transport: Transport::Tcp,
            host: Some(host.into()),
            port,
            serial: None,
            baud: default_baud(),
            parity: Parity::None,
            data_bits: default_data_bits(),
            stop_bits: default_stop_bits(),
            unit_id: default_unit_id(),
            timeout_ms: default_timeout_ms(),
            retry_initial_ms: default_retry_initial_ms(),
            retry_max_ms: default_retry_max_ms(),
            max_registers_per_request: default_max_registers(),
            max_bits_per_request: default_max_bits(),
            max_gap: default_max_gap(),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Devices with the same bus key share one connection and one task (an RTU line);
    /// every TCP device has a bus of its own.
    pub fn bus_key(&self, name: &str) -> String {
        match (self.transport, &self.serial) {
            (Transport::Rtu, Some(p)) => format!("rtu:{}", p.display()),
            _ => format!("tcp:{name}"),
        }
    }

    /// Problems serde does not catch; `(key, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match self.transport {
            Transport::Tcp => {
                if self.host.as_deref().is_none_or(str::is_empty) {
                    out.push(("host", "is required for transport = \"tcp\"".into()));
                }
                if self.serial.is_some() {
                    out.push(("serial", "is a key of transport = \"rtu\"".into()));
                }
            }
            Transport::Rtu => {
                if self.serial.is_none() {
                    out.push(("serial", "is required for transport = \"rtu\"".into()));
                }
                if self.host.is_some() {
                    out.push(("host", "is a key of transport = \"tcp\"".into()));
                }
                if !(5..=8).contains(&self.data_bits) {
                    out.push(("data_bits", "must be 5, 6, 7 or 8".into()));
                }
                if !(1..=2).contains(&self.stop_bits) {
                    out.push(("stop_bits", "must be 1 or 2".into()));
                }
                if self.baud == 0 {
                    out.push(("baud", "must be >= 1".into()));
                }
                if !(1..=247).contains(&self.unit_id) {
                    out.push(("unit_id", "an RTU unit id is 1..=247".into()));
                }
            }
        }
        if self.timeout_ms == 0 {
            out.push(("timeout_ms", "must be >= 1".into()));
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            out.push((
                "retry_max_ms",
                "retry_initial_ms must be > 0 and retry_max_ms >= retry_initial_ms".into(),
            ));
        }
        if !(1..=MAX_REGISTERS_PER_REQUEST).contains(&self.max_registers_per_request) {
            out.push((
                "max_registers_per_request",
                format!("must be 1..={MAX_REGISTERS_PER_REQUEST} (the protocol's maximum)"),
            ));
        }
        if !(1..=MAX_BITS_PER_REQUEST).contains(&self.max_bits_per_request) {
            out.push((
                "max_bits_per_request",
                format!("must be 1..={MAX_BITS_PER_REQUEST} (the protocol's maximum)"),
            ));
        }
        out
    }
}

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// 0xxxx, function 1.
    Coil,
    /// 1xxxx, function 2.
    DiscreteInput,
    /// 3xxxx, function 4.
    Input,
    /// 4xxxx, function 3.
    Holding,
}

impl Table {
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete_input",
            Table::Input => "input",
            Table::Holding => "holding",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// A coil or discrete input.
    Bool,
    /// One bit (`bit` = 0..=15, 0 the least significant) of a register.
    Bit,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// ASCII text of `length` registers, two characters per register; trailing NULs and
    /// spaces are trimmed.
    String,
}

impl DataType {
    /// Registers (or bits) the type spans; `None` for a string (its `length` says).
    pub fn width(self) -> Option<u16> {
        match self {
            DataType::Bool | DataType::Bit | DataType::U16 | DataType::I16 => Some(1),
            DataType::U32 | DataType::I32 | DataType::F32 => Some(2),
            DataType::U64 | DataType::I64 | DataType::F64 => Some(4),
            DataType::String => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::Bit => "bit",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::String => "string",
        }
    }
}

/// Order of the parts of a value: `big` puts the most significant first (the Modbus
/// convention for the bytes of a register; many devices also order words so, some not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Big,
    Little,
}

const fn default_scale() -> f64 {
    1.0
}
const fn default_poll_interval_ms() -> u64 {
    1_000
}

/// A tag's `modbus = { … }` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusTagConfig {
    pub table: Table,
    /// 0-based protocol address: holding register 40001 in the 4xxxx convention is
    /// `table = "holding"`, `address = 0`.
    pub address: u16,
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// `type = "bit"`: which bit of the register, 0 the least significant.
    pub bit: Option<u8>,
    /// `type = "string"`: registers of text.
    pub length: Option<u16>,
    /// Order of the registers of a 32/64-bit value.
    #[serde(default)]
    pub word_order: Order,
    /// Order of the two bytes within each register.
    #[serde(default)]
    pub byte_order: Order,
    /// Engineering value = raw × scale + offset (numbers only).
    #[serde(default = "default_scale")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
}

impl ModbusTagConfig {
    pub fn new(table: Table, address: u16, data_type: DataType) -> Self {
        Self {
            table,
            address,
            data_type,
            bit: None,
            length: None,
            word_order: Order::Big,
            byte_order: Order::Big,
            scale: 1.0,
            offset: 0.0,
            poll_interval_ms: default_poll_interval_ms(),
        }
    }

    /// Registers (or bits) the tag spans.
    pub fn width(&self) -> u16 {
        self.data_type
            .width()
            .unwrap_or_else(|| self.length.unwrap_or(1))
    }

    /// Problems of the tag on `device`; `(key under modbus., message)`.
    pub fn problems(&self, device: &ModbusDeviceConfig) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let t = self.data_type;
        if self.table.is_bits() != (t == DataType::Bool) {
            out.push((
                "type",
                format!(
                    "{} is not a type of table {:?}: coils and discrete inputs are `bool`, registers any other type",
                    t.name(),
                    self.table.name()
                ),
            ));
        }
        match (t, self.bit) {
            (DataType::Bit, None) => out.push(("bit", "is required for type = \"bit\"".into())),
            (DataType::Bit, Some(b)) if b > 15 => out.push((
                "bit",
                format!("{b} is not a bit of a 16-bit register (0..=15)"),
            )),
            (DataType::Bit, _) => {}
            (_, Some(_)) => out.push(("bit", "is only for type = \"bit\"".into())),
            (_, None) => {}
        }
        let max = if self.table.is_bits() {
            device.max_bits_per_request
        } else {
            device.max_registers_per_request
        };
        match (t.width(), self.length) {
            (None, None) => out.push(("length", "is required for type = \"string\"".into())),
            (None, Some(n)) if n == 0 || n > max => out.push((
                "length",
                format!("must be 1..={max} (the device's max_registers_per_request)"),
            )),
            (Some(w), Some(n)) if n != w => out.push((
                "length",
                format!(
                    "{} spans {w} register{}, not {n}",
                    t.name(),
                    if w == 1 { "" } else { "s" }
                ),
            )),
            _ => {}
        }
        if self.width() > max && t.width().is_some() {
            out.push((
                "type",
                format!(
                    "{} spans {} registers, more than the device's max_registers_per_request {max}",
                    t.name(),
                    self.width()
                ),
            ));
        }
        if u32::from(self.address) + u32::from(self.width()) > 65_536 {
            out.push((
                "address",
                format!(
                    "{} + {} registers runs past the last address 65535",
                    self.address,
                    self.width()
                ),
            ));
        }
        if !(self.scale.is_finite() && self.scale != 0.0 && self.offset.is_finite()) {
            out.push((
                "scale",
                "scale must be a finite non-zero number and offset finite".into(),
            ));
        }
        if self.poll_interval_ms == 0 {
            out.push(("poll_interval_ms", "must be >= 1".into()));
        }
        out
    }

    /// Whether two tags of one device read the same registers (bits of one register may
    /// share it; nothing else may).
    pub fn overlaps(&self, other: &ModbusTagConfig) -> bool {
        if self.table != other.table {
            return false;
        }
        if self.data_type == DataType::Bit
            && other.data_type == DataType::Bit
            && self.address == other.address
        {
            return self.bit == other.bit;
        }
        let (a0, a1) = (
            u32::from(self.address),
            u32::from(self.address) + u32::from(self.width()),
        );
        let (b0, b1) = (
            u32::from(other.address),
            u32::from(other.address) + u32::from(other.width()),
        );
        a0 < b1 && b0 < a1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> ModbusDeviceConfig {
        ModbusDeviceConfig::tcp("127.0.0.1", 502)
    }

    #[test]
    fn a_32_bit_type_on_one_register_and_other_mistakes_are_named() {
        let mut t = ModbusTagConfig::new(Table::Holding, 10, DataType::U32);
        t.length = Some(1);
        let p = t.problems(&dev());
        assert_eq!(p[0].0, "length");
        assert!(p[0].1.contains("u32 spans 2 registers, not 1"), "{p:?}");

        let t = ModbusTagConfig::new(Table::Coil, 0, DataType::U16);
        assert_eq!(t.problems(&dev())[0].0, "type");
        let t = ModbusTagConfig::new(Table::Holding, 0, DataType::Bit);
        assert_eq!(t.problems(&dev())[0].0, "bit");
        let t = ModbusTagConfig::new(Table::Holding, 65_534, DataType::F64);
        assert_eq!(t.problems(&dev())[0].0, "address");
        let mut t = ModbusTagConfig::new(Table::Holding, 0, DataType::String);
        assert_eq!(t.problems(&dev())[0].0, "length");
        t.length = Some(8);
        t.poll_interval_ms = 0;
        assert_eq!(
            t.problems(&dev()),
            vec![("poll_interval_ms", "must be >= 1".into())]
        );
        let mut small = dev();
        small.max_registers_per_request = 4;
        assert_eq!(t.problems(&small)[0].0, "length");
        assert!(ModbusTagConfig::new(Table::Input, 3, DataType::F32)
            .problems(&dev())
            .is_empty());
    }

    #[test]
    fn overlap_is_shared_registers_except_distinct_bits_of_one() {
        let a = ModbusTagConfig::new(Table::Holding, 10, DataType::U32);
        let b = ModbusTagConfig::new(Table::Holding, 11, DataType::U16);
        let c = ModbusTagConfig::new(Table::Holding, 12, DataType::U16);
        let other_table = ModbusTagConfig::new(Table::Input, 10, DataType::U16);
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c) && !a.overlaps(&other_table));
        let mut bit0 = ModbusTagConfig::new(Table::Holding, 20, DataType::Bit);
        bit0.bit = Some(0);
        let mut bit1 = bit0.clone();
        bit1.bit = Some(1);
        assert!(!bit0.overlaps(&bit1));
        assert!(bit0.overlaps(&bit0.clone()));
    }

    #[test]
    fn device_problems_name_their_keys() {
        let mut d = dev();
        d.host = None;
        d.max_registers_per_request = 126;
        d.timeout_ms = 0;
        let keys: Vec<_> = d.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["host", "timeout_ms", "max_registers_per_request"]);
        let mut r = dev();
        r.transport = Transport::Rtu;
        r.unit_id = 0;
        let keys: Vec<_> = r.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["serial", "host", "unit_id"]);
    }
}
