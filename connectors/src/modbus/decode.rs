//! Registers to an engineering value. Pure.

use super::config::{DataType, ModbusTagConfig, Order};
use pdtf_models::Value;

/// A decoded value, or why the registers hold none (a NaN or infinite float).
pub type Decoded = Result<Value, &'static str>;

/// The tag's value from its own registers (`words.len() == spec.width()`).
pub fn registers(spec: &ModbusTagConfig, words: &[u16]) -> Decoded {
    let mut w: Vec<u16> = words
        .iter()
        .map(|&x| match spec.byte_order {
            Order::Big => x,
            Order::Little => x.swap_bytes(),
        })
        .collect();
    let bytes_of = |w: &[u16]| -> Vec<u8> { w.iter().flat_map(|x| x.to_be_bytes()).collect() };
    if spec.data_type == DataType::String {
        let b = bytes_of(&w);
        let text = String::from_utf8_lossy(&b);
        return Ok(Value::Text(text.trim_end_matches(['\0', ' ']).to_owned()));
    }
    if spec.word_order == Order::Little {
        w.reverse();
    }
    let b = bytes_of(&w);
    let raw = match spec.data_type {
        DataType::Bit => {
            let bit = spec.bit.unwrap_or(0);
            return Ok(Value::Bool((w[0] >> bit) & 1 == 1));
        }
        DataType::U16 => f64::from(w[0]),
        DataType::I16 => f64::from(w[0] as i16),
        DataType::U32 => f64::from(u32::from_be_bytes(arr(&b))),
        DataType::I32 => f64::from(i32::from_be_bytes(arr(&b))),
        // Exact up to 2^53; beyond, the nearest double (a counter that large is rare).
        DataType::U64 => u64::from_be_bytes(arr(&b)) as f64,
        DataType::I64 => i64::from_be_bytes(arr(&b)) as f64,
        DataType::F32 => f64::from(f32::from_be_bytes(arr(&b))),
        DataType::F64 => f64::from_be_bytes(arr(&b)),
        DataType::Bool | DataType::String => unreachable!("handled above or by bits()"),
    };
    if !raw.is_finite() {
        return Err("the registers hold a NaN or infinite float");
    }
    Ok(Value::Num(raw * spec.scale + spec.offset))
}

/// A coil or discrete input.
pub fn bit(on: bool) -> Decoded {
    Ok(Value::Bool(on))
}

fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::config::Table;

    fn spec(t: DataType, words: Order, bytes: Order) -> ModbusTagConfig {
        let mut s = ModbusTagConfig::new(Table::Holding, 0, t);
        s.word_order = words;
        s.byte_order = bytes;
        s
    }

    /// The registers a device with `words`/`bytes` order holds for big-endian bytes `be`.
    fn encode(be: &[u8], words: Order, bytes: Order) -> Vec<u16> {
        let mut w: Vec<u16> = be
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        if words == Order::Little {
            w.reverse();
        }
        if bytes == Order::Little {
            w.iter_mut().for_each(|x| *x = x.swap_bytes());
        }
        w
    }

    #[test]
    fn every_numeric_type_in_every_order_decodes_to_its_value() {
        let cases: Vec<(DataType, Vec<u8>, f64)> = vec![
            (DataType::U16, 54_321u16.to_be_bytes().to_vec(), 54_321.0),
            (DataType::I16, (-1234i16).to_be_bytes().to_vec(), -1234.0),
            (DataType::U32, 4_000_000_000u32.to_be_bytes().to_vec(), 4e9),
            (
                DataType::I32,
                (-70_000i32).to_be_bytes().to_vec(),
                -70_000.0,
            ),
            (
                DataType::U64,
                (1u64 << 40).to_be_bytes().to_vec(),
                (1u64 << 40) as f64,
            ),
            (
                DataType::I64,
                (-(1i64 << 41)).to_be_bytes().to_vec(),
                -((1i64 << 41) as f64),
            ),
            (DataType::F32, 21.5f32.to_be_bytes().to_vec(), 21.5),
            (DataType::F64, (-0.125f64).to_be_bytes().to_vec(), -0.125),
        ];
        for (t, be, want) in cases {
            for words in [Order::Big, Order::Little] {
                for bytes in [Order::Big, Order::Little] {
                    let s = spec(t, words, bytes);
                    let regs = encode(&be, words, bytes);
                    assert_eq!(regs.len(), usize::from(s.width()), "{t:?}");
                    assert_eq!(
                        registers(&s, &regs),
                        Ok(Value::Num(want)),
                        "{t:?} words {words:?} bytes {bytes:?} from {regs:04x?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_common_word_swapped_float_of_a_real_device() {
        // 123.456 as f32 is 0x42F6E979; "CDAB" devices send 0xE979 first.
        let s = spec(DataType::F32, Order::Little, Order::Big);
        let Ok(Value::Num(v)) = registers(&s, &[0xE979, 0x42F6]) else {
            panic!()
        };
        assert!((v - 123.456).abs() < 1e-4, "{v}");
    }

    #[test]
    fn scale_offset_bits_text_and_non_finite_floats() {
        let mut s = spec(DataType::I16, Order::Big, Order::Big);
        s.scale = 0.1;
        s.offset = -40.0;
        assert_eq!(registers(&s, &[650]), Ok(Value::Num(650.0 * 0.1 - 40.0)));

        let mut b = spec(DataType::Bit, Order::Big, Order::Big);
        b.bit = Some(9);
        assert_eq!(registers(&b, &[0x0200]), Ok(Value::Bool(true)));
        assert_eq!(registers(&b, &[0xFDFF]), Ok(Value::Bool(false)));
        b.byte_order = Order::Little;
        assert_eq!(registers(&b, &[0x0002]), Ok(Value::Bool(true)));

        let mut t = spec(DataType::String, Order::Big, Order::Big);
        t.length = Some(4);
        let regs = [
            u16::from_be_bytes(*b"LO"),
            u16::from_be_bytes(*b"T-"),
            u16::from_be_bytes(*b"42"),
            0,
        ];
        assert_eq!(registers(&t, &regs), Ok(Value::Text("LOT-42".into())));
        t.byte_order = Order::Little;
        let swapped: Vec<u16> = regs.iter().map(|r| r.swap_bytes()).collect();
        assert_eq!(registers(&t, &swapped), Ok(Value::Text("LOT-42".into())));

        let f = spec(DataType::F32, Order::Big, Order::Big);
        assert!(registers(&f, &[0x7FC0, 0x0000]).is_err(), "NaN");
        assert_eq!(bit(true), Ok(Value::Bool(true)));
    }
}
