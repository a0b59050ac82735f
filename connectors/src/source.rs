//! What a source sends to its line pipeline.

use pdtf_models::{Gap, Malformed, Sample, TagId, Timestamp};
use tokio::sync::mpsc;

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
}

/// A source's outage, shared by every protocol: the first loss of the link sends `LinkDown`
/// (the tags go Bad at once), and the first moment data can flow again sends the `Gap` with
/// the outage's start, end and first reason. Repeated failures in between send nothing.
#[derive(Debug, Default)]
pub struct Outage {
    since: Option<(Timestamp, String)>,
}

impl Outage {
    pub fn is_down(&self) -> bool {
        self.since.is_some()
    }

    /// The link is lost (or never came up). Returns false when the pipeline is gone.
    pub async fn begin(
        &mut self,
        out: &mpsc::Sender<SourceMsg>,
        source: &str,
        tags: &[TagId],
        reason: &str,
        at: Timestamp,
    ) -> bool {
        if self.since.is_some() {
            return true;
        }
        self.since = Some((at, reason.to_owned()));
        let msg = SourceMsg::LinkDown {
            source: source.to_owned(),
            tags: tags.to_vec(),
            at,
        };
        out.send(msg).await.is_ok()
    }

    /// Data flows again: the gap to record, if there was an outage.
    pub fn end(&mut self, source: &str, tags: &[TagId], at: Timestamp) -> Option<Gap> {
        let (start, reason) = self.since.take()?;
        Some(Gap {
            source: source.to_owned(),
            start,
            end: at,
            reason,
            tags: tags.to_vec(),
        })
    }
}
