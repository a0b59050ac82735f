//! PDTF Edge protocol I/O: sources that turn protocol traffic into `Sample` batches, and
//! sinks that publish accepted records (SCADA alarm topics, upstream sync).
//!
//! Every task here takes a `CancellationToken` and returns when it fires. Every channel is
//! bounded; a full channel blocks the sender (sources slow down, nothing is dropped).

pub mod alert;
pub mod backoff;
pub mod command;
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

/// `samples` in order, in batches of at most `max` (at least 1): how every source kind
/// honours `max_batch_samples`.
pub fn batches(mut samples: Vec<pdtf_models::Sample>, max: usize) -> Vec<Vec<pdtf_models::Sample>> {
    let max = max.max(1);
    if samples.len() <= max {
        return vec![samples];
    }
    let mut out = Vec::with_capacity(samples.len().div_ceil(max));
    while samples.len() > max {
        let rest = samples.split_off(max);
        out.push(std::mem::replace(&mut samples, rest));
    }
    out.push(samples);
    out
}

#[cfg(test)]
mod tests {
    use super::batches;
    use pdtf_models::{Quality, Sample, TagId, Timestamp};

    #[test]
    fn a_large_delivery_goes_in_batches_of_at_most_max_in_order() {
        let at = Timestamp::from_unix_millis(0);
        let cycle: Vec<Sample> = (0..7)
            .map(|i| Sample::new(TagId(i), f64::from(i), Quality::Good, None, at))
            .collect();
        let split = batches(cycle.clone(), 3);
        assert_eq!(
            split.iter().map(Vec::len).collect::<Vec<_>>(),
            [3, 3, 1],
            "batch sizes"
        );
        assert_eq!(split.concat(), cycle, "nothing lost or reordered");
        assert_eq!(batches(cycle.clone(), 500), vec![cycle.clone()]);
        assert_eq!(batches(cycle, 0).len(), 7, "0 is taken as 1");
    }
}
