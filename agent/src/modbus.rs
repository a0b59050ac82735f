//! Modbus sources from the configuration: the tags to poll per device, and one polling task
//! per bus (a TCP device alone, or every device on one RTU serial line).

use crate::config::{Config, SourceSpec};
use crate::runtime::StartError;
use pdtf_connectors::modbus::{ModbusBus, ModbusUnit, PollTag};
use pdtf_models::TagId;
use std::collections::BTreeMap;
use tokio::sync::watch;

/// The tags of Modbus source `source`, under their durable ids.
pub(crate) fn poll_tags(c: &Config, ids: &[TagId], source: &str) -> Vec<PollTag> {
    c.tags
        .iter()
        .zip(ids)
        .filter(|(t, _)| t.source == source)
        .filter_map(|(t, id)| {
            Some(PollTag {
                tag: *id,
                spec: t.modbus()?.clone(),
            })
        })
        .collect()
}

/// Each Modbus source's reload feed: its new tag list.
pub(crate) type Feeds = BTreeMap<String, watch::Sender<Vec<PollTag>>>;

/// The buses to run, by bus key, and each source's reload feed.
pub(crate) fn buses(
    c: &Config,
    ids: &[TagId],
) -> Result<(BTreeMap<String, ModbusBus>, Feeds), StartError> {
    let mut buses: BTreeMap<String, ModbusBus> = BTreeMap::new();
    let mut feeds = BTreeMap::new();
    for s in &c.sources {
        let SourceSpec::Modbus(m) = &s.spec else {
            continue;
        };
        let name = m.device.clone();
        let device = crate::runtime::named(&c.modbus_devices, "Modbus device", &name)?.clone();
        let tags = poll_tags(c, ids, &s.id);
        let (feed, reload) = watch::channel(tags.clone());
        feeds.insert(s.id.clone(), feed);
        buses
            .entry(device.bus_key(&name))
            .or_insert_with(|| ModbusBus { units: Vec::new() })
            .units
            .push(ModbusUnit {
                id: s.id.clone(),
                device_name: name,
                device,
                tags,
                reload: Some(reload),
                max_batch_samples: s.max_batch_samples,
            });
    }
    Ok((buses, feeds))
}
