//! Coalescing: the tags of one device, table and poll interval become as few read requests
//! as possible. Pure.

use super::config::{ModbusDeviceConfig, ModbusTagConfig, Table};
use pdtf_models::TagId;
use std::collections::BTreeMap;
use std::time::Duration;

/// One tag to poll.
#[derive(Debug, Clone, PartialEq)]
pub struct PollTag {
    pub tag: TagId,
    pub spec: ModbusTagConfig,
}

/// One read request and the tags it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    /// Indices into the device's tag list.
    pub tags: Vec<usize>,
}

impl std::fmt::Display for Read {
    /// `holding 0+25`: the table, the first address and the count.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}+{}", self.table.name(), self.start, self.count)
    }
}

/// The reads due together, every `interval`.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub interval: Duration,
    pub reads: Vec<Read>,
}

/// The poll plan of one device: per interval, the reads in table and address order. A read
/// spans unmapped addresses of at most `max_gap`, and never more than the device's
/// per-request maximum.
pub fn plan(tags: &[PollTag], device: &ModbusDeviceConfig) -> Vec<Group> {
    let mut by: BTreeMap<(u64, Table), Vec<usize>> = BTreeMap::new();
    for (i, t) in tags.iter().enumerate() {
        by.entry((t.spec.poll_interval_ms, t.spec.table))
            .or_default()
            .push(i);
    }
    let mut groups: BTreeMap<u64, Vec<Read>> = BTreeMap::new();
    for ((interval, table), mut idx) in by {
        let max = u32::from(if table.is_bits() {
            device.max_bits_per_request
        } else {
            device.max_registers_per_request
        });
        idx.sort_by_key(|&i| (tags[i].spec.address, tags[i].spec.width()));
        let reads = groups.entry(interval).or_default();
        let mut cur: Option<(u32, u32, Vec<usize>)> = None;
        for i in idx {
            let a = u32::from(tags[i].spec.address);
            let b = a + u32::from(tags[i].spec.width());
            cur = match cur {
                Some((start, end, mut members))
                    if a <= end + u32::from(device.max_gap) && b.max(end) - start <= max =>
                {
                    members.push(i);
                    Some((start, b.max(end), members))
                }
                other => {
                    if let Some(done) = other {
                        reads.push(read(table, done));
                    }
                    Some((a, b, vec![i]))
                }
            };
        }
        if let Some(done) = cur {
            reads.push(read(table, done));
        }
    }
    groups
        .into_iter()
        .map(|(ms, reads)| Group {
            interval: Duration::from_millis(ms),
            reads,
        })
        .collect()
}

fn read(table: Table, (start, end, tags): (u32, u32, Vec<usize>)) -> Read {
    Read {
        table,
        start: start as u16,
        count: (end - start) as u16,
        tags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::config::DataType;

    fn tag(i: u32, table: Table, address: u16, t: DataType) -> PollTag {
        PollTag {
            tag: TagId(i),
            spec: ModbusTagConfig::new(table, address, t),
        }
    }

    fn shape(groups: &[Group]) -> Vec<(u64, Table, u16, u16, usize)> {
        groups
            .iter()
            .flat_map(|g| {
                g.reads.iter().map(|r| {
                    (
                        g.interval.as_millis() as u64,
                        r.table,
                        r.start,
                        r.count,
                        r.tags.len(),
                    )
                })
            })
            .collect()
    }

    #[test]
    fn neighbours_join_gaps_up_to_max_gap_split_and_tables_never_mix() {
        let dev = ModbusDeviceConfig::tcp("h", 502); // max_gap 8
        let tags = vec![
            tag(0, Table::Holding, 0, DataType::F32),  // 0..2
            tag(1, Table::Holding, 2, DataType::U16),  // 2..3
            tag(2, Table::Holding, 11, DataType::U16), // gap 8: joins
            tag(3, Table::Holding, 21, DataType::U16), // gap 9: new read
            tag(4, Table::Input, 1, DataType::U16),    // other table
            tag(5, Table::Coil, 0, DataType::Bool),
            tag(6, Table::Coil, 5, DataType::Bool),
        ];
        assert_eq!(
            shape(&plan(&tags, &dev)),
            vec![
                (1000, Table::Coil, 0, 6, 2),
                (1000, Table::Input, 1, 1, 1),
                (1000, Table::Holding, 0, 12, 3),
                (1000, Table::Holding, 21, 1, 1),
            ]
        );
    }

    #[test]
    fn a_read_never_exceeds_the_device_maximum() {
        let mut dev = ModbusDeviceConfig::tcp("h", 502);
        let tags: Vec<_> = (0..300)
            .map(|i| tag(i, Table::Holding, i as u16, DataType::U16))
            .collect();
        let counts: Vec<u16> = plan(&tags, &dev)[0].reads.iter().map(|r| r.count).collect();
        assert_eq!(counts, [125, 125, 50]);
        dev.max_registers_per_request = 16;
        let g = plan(&tags, &dev);
        assert_eq!(g[0].reads.len(), 19);
        assert!(g[0].reads.iter().all(|r| r.count <= 16));
        // A 4-register value is never split across two reads.
        let f64s: Vec<_> = (0..10)
            .map(|i| tag(i, Table::Holding, (i * 4) as u16, DataType::F64))
            .collect();
        dev.max_registers_per_request = 10;
        let counts: Vec<u16> = plan(&f64s, &dev)[0].reads.iter().map(|r| r.count).collect();
        assert_eq!(counts, [8, 8, 8, 8, 8]);
    }

    #[test]
    fn intervals_are_separate_groups_and_bits_of_one_register_share_it() {
        let dev = ModbusDeviceConfig::tcp("h", 502);
        let mut fast = tag(0, Table::Holding, 0, DataType::U16);
        fast.spec.poll_interval_ms = 100;
        let mut b0 = tag(1, Table::Holding, 7, DataType::Bit);
        b0.spec.bit = Some(0);
        let mut b5 = tag(2, Table::Holding, 7, DataType::Bit);
        b5.spec.bit = Some(5);
        let slow = tag(3, Table::Holding, 1, DataType::U16);
        let g = plan(&[fast, b0, b5, slow], &dev);
        assert_eq!(
            shape(&g),
            vec![
                (100, Table::Holding, 0, 1, 1),
                (1000, Table::Holding, 1, 7, 3)
            ]
        );
    }
}
