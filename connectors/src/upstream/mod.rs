//! Upstream sync: accepted records, in order and batched, to an upstream MQTT broker (QoS 1).
//!
//! The journal is the delivery guarantee. The cursor (`"upstream"`) is the last sequence
//! number the broker acknowledged; it advances only on PUBACK and only over a contiguous
//! prefix. Every connection starts a fresh client and replays from cursor + 1, so a broker
//! that lost its session, or a PUBACK lost with the link, costs duplicates, never a hole.
//! Each message says `agent_id`, `first_seq` and `last_seq`: consumers drop seqs they have.
//!
//! Modes (one `async fn` each, returning the next): `Online` (connect, replay, follow the
//! journal's commits) and `Offline` (wait out the backoff).

mod window;

pub use window::AckWindow;

use crate::mqtt::{BrokerConfig, Link};
use crate::Stats;
use pdtf_models::{Journal, Record, RecordBody, Seq};
use rumqttc::{Event, Outgoing, Packet, QoS};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub const CURSOR: &str = "upstream";

/// How often an advanced cursor is written to the journal while acks stream in. Losing up to
/// this much progress on a crash costs only duplicates.
const CURSOR_PERSIST_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub agent_id: String,
    pub topic: String,
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
    pub max_inflight: usize,
    /// Tag names by `TagId`, so each message names the tags its records refer to.
    pub tag_names: Arc<[String]>,
}

/// The message schema on `.../records`.
#[derive(Serialize)]
pub struct RecordBatch<'a> {
    pub agent_id: &'a str,
    pub first_seq: u64,
    pub last_seq: u64,
    /// `TagId` → name for every tag referenced in `records`: each message decodes alone.
    pub tags: BTreeMap<u32, &'a str>,
    pub records: &'a [Record],
}

fn referenced_tags<'a>(records: &[Record], names: &'a [String]) -> BTreeMap<u32, &'a str> {
    let mut ids = Vec::new();
    for r in records {
        match &r.body {
            RecordBody::Sample(s) => ids.push(s.tag),
            RecordBody::Alarm(a) => ids.push(a.tag),
            RecordBody::Gap(g) => ids.extend(&g.tags),
            _ => {}
        }
    }
    ids.into_iter()
        .filter_map(|t| names.get(t.index()).map(|n| (t.0, n.as_str())))
        .collect()
}

enum Mode {
    Online,
    Offline(String),
    Stop,
}

pub struct UpstreamSync {
    pub settings: UpstreamSettings,
    pub broker: BrokerConfig,
    pub journal: Arc<dyn Journal>,
    /// Last committed seq, published by the pipeline after each commit.
    pub committed: watch::Receiver<u64>,
    pub stats: Arc<Stats>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, pdtf_models::JournalError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("journal task failed: {e}")),
    }
}

impl UpstreamSync {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = self.broker.backoff();
        let mut mode = Mode::Online;
        loop {
            mode = match mode {
                Mode::Online => self.online(&shutdown, &mut backoff).await,
                Mode::Offline(reason) => {
                    Stats::add(&self.stats.upstream_reconnects, 1);
                    let delay = backoff.next_delay();
                    warn!(broker = %self.broker.endpoint(), %reason, retry_in_ms = delay.as_millis() as u64, "Upstream offline; records stay in the journal.");
                    tokio::select! {
                        _ = shutdown.cancelled() => Mode::Stop,
                        _ = tokio::time::sleep(delay) => Mode::Online,
                    }
                }
                Mode::Stop => return,
            };
        }
    }

    async fn persist(&self, seq: u64) {
        let j = self.journal.clone();
        if let Err(e) = blocking(move || j.set_cursor(CURSOR, Seq(seq))).await {
            error!(error = %e, seq, "Upstream cursor not persisted; after a restart these records are sent again.");
        }
    }

    async fn online(
        &mut self,
        shutdown: &CancellationToken,
        backoff: &mut super::mqtt::Backoff,
    ) -> Mode {
        let j = self.journal.clone();
        let start = match blocking(move || j.cursor(CURSOR)).await {
            Ok(s) => s.0,
            Err(e) => return Mode::Offline(format!("cannot read upstream cursor: {e}")),
        };
        let mut opts = self.broker.options(&self.settings.agent_id, "upstream");
        let inflight = self.settings.max_inflight.clamp(1, u16::MAX as usize);
        opts.set_inflight(inflight as u16);
        let mut link = Link::open(opts, inflight + 8);
        let mut win = AckWindow::new(start);
        let mut persisted = start;
        let mut connected = false;
        // The pipeline drops its sender when it stops; acks must still be processed after.
        let mut pipeline_running = true;
        let mut tick = tokio::time::interval(CURSOR_PERSIST_INTERVAL);
        let mode = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break Mode::Stop,
                _ = tick.tick() => {
                    if win.acked_through() > persisted {
                        persisted = win.acked_through();
                        self.persist(persisted).await;
                    }
                }
                changed = self.committed.changed(), if connected && pipeline_running => {
                    if changed.is_err() {
                        pipeline_running = false;
                    }
                    if let Err(e) = self.fill(&link, &mut win).await {
                        break Mode::Offline(e);
                    }
                }
                ev = link.events.recv() => {
                    match ev {
                        None => break Mode::Offline("connection task stopped".into()),
                        Some(Err(e)) => break Mode::Offline(e.to_string()),
                        Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                            connected = true;
                            backoff.reset();
                            info!(broker = %self.broker.endpoint(), from_seq = start + 1, "Upstream connected; sending from the cursor.");
                        }
                        Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => win.on_outgoing(pkid),
                        Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                            if let Some(acked) = win.on_puback(ack.pkid) {
                                Stats::set(&self.stats.upstream_acked_seq, acked);
                            }
                            Stats::add(&self.stats.upstream_messages_acked, 1);
                        }
                        Some(Ok(_)) => {}
                    }
                    if connected {
                        if let Err(e) = self.fill(&link, &mut win).await {
                            break Mode::Offline(e);
                        }
                    }
                }
            }
        };
        if win.acked_through() > persisted {
            self.persist(win.acked_through()).await;
        }
        mode
    }

    /// Sends journal records from `next_to_send` while the in-flight window has room.
    async fn fill(&self, link: &Link, win: &mut AckWindow) -> Result<(), String> {
        let s = &self.settings;
        while win.in_flight() < s.max_inflight {
            let last_committed = *self.committed.borrow();
            let from = win.next_to_send();
            if from > last_committed {
                return Ok(());
            }
            let j = self.journal.clone();
            let max = s.max_batch_records;
            let mut records = blocking(move || j.read_from(Seq(from), max)).await?;
            if records.is_empty() {
                return Ok(());
            }
            if records[0].seq.0 != from {
                // A hole in the journal is a broken invariant, not a network problem.
                error!(
                    expected = from,
                    found = records[0].seq.0,
                    "Journal sequence gap; upstream stops. Run `pdtf-agent verify`."
                );
                return Err(format!("journal gap at seq {from}"));
            }
            let payload = encode_batch(&s.agent_id, &s.tag_names, &mut records, s.max_batch_bytes);
            let (first, last) = (records[0].seq.0, records[records.len() - 1].seq.0);
            link.client
                .publish(s.topic.clone(), QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|e| format!("publish failed: {e}"))?;
            win.on_sent(first, last);
        }
        Ok(())
    }
}

/// Serialises as many leading records as fit in `max_bytes` (at least one), truncating
/// `records` to those that were sent.
pub fn encode_batch(
    agent_id: &str,
    tag_names: &[String],
    records: &mut Vec<Record>,
    max_bytes: usize,
) -> Vec<u8> {
    loop {
        let batch = RecordBatch {
            agent_id,
            first_seq: records[0].seq.0,
            last_seq: records[records.len() - 1].seq.0,
            tags: referenced_tags(records, tag_names),
            records,
        };
        let bytes = serde_json::to_vec(&batch).expect("records serialise to JSON");
        if bytes.len() <= max_bytes || records.len() == 1 {
            return bytes;
        }
        let keep = (records.len() / 2).max(1);
        records.truncate(keep);
    }
}
