//! What a source sends to its line pipeline.

use pdtf_models::{Gap, Malformed, Sample, Seq, TagId, Timestamp};

/// Capacity of a line's input channel, in messages (each message is a batch). When it is
/// full, sources wait: back-pressure reaches the protocol (TCP window, poll rate), and
/// nothing is dropped.
pub const SOURCE_CHANNEL_BATCHES: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum SourceMsg {
    /// A batch of samples, in arrival order.
    Samples(Vec<Sample>),
    /// An input that could not be mapped; it is recorded and skipped.
    Malformed(Malformed),
    /// The source lost its link: its tags are Bad from `at` until data flows again.
    LinkDown {
        source: String,
        tags: Vec<TagId>,
        at: Timestamp,
    },
    /// The link is back and subscribed again; the outage is the gap.
    Gap(Gap),
    /// Housekeeping: purge records through `through` (acknowledged upstream and past
    /// retention). The pipeline executes it so the journal keeps one writer.
    Purge {
        through: Seq,
        records: u64,
        oldest: Timestamp,
    },
}
