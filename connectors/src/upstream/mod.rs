//! Upstream sync: accepted records, in order and batched, to an upstream MQTT broker (QoS 1).
//!
//! The journal is the delivery guarantee. The cursor (`"upstream"`) is the last sequence
//! number the broker acknowledged; it advances only on PUBACK and only over a contiguous
//! prefix. Every connection starts a fresh client and replays from cursor + 1, so a broker
//! that lost its session, or a PUBACK lost with the link, costs duplicates, never a hole.
//! Each message says `agent_id`, `first_seq` and `last_seq`: consumers drop seqs they have.
//!
//! A state machine, one `async fn` per mode, each returning the next:
//! - `Offline`: wait out the jittered backoff, then connect (a fresh `Link`).
//! - `Live`: the backlog is small; send as fast as the broker acknowledges.
//! - `Backlogged`: more than `backlog_threshold_records` wait; send at most
//!   `max_drain_records_per_s` (when set) so a reconnecting fleet does not flood the broker.
//!
//! Live alarms never wait behind a backlog: alarm records also go out at once on
//! `.../events`, on a connection of their own (`live.rs` says why), best effort; the ordered
//! stream still carries them. That channel is bounded and, when full, the live copy is dropped
//! and counted — the ordered copy is in the journal.
//!
//! This task never awaits the MQTT client: range publishes use `try_publish` (the window
//! bounds them below the request queue's capacity), so it always gets back to draining the
//! connection's events. Awaiting a full request queue while the event pump waits on this task
//! to take its events was a deadlock: acks stopped for good and SIGTERM went unheard.

mod live;
mod rate;
mod window;

pub use live::{LiveCopies, LiveLink};
pub use rate::DrainRate;
pub use window::AckWindow;

use crate::mqtt::{link_down, Backoff, BrokerConfig, Link, LinkError};
use crate::repeat::{Repeats, Report};
use crate::Stats;
use pdtf_models::{Journal, Record, RecordBody, Seq};
use rumqttc::{Event, Outgoing, Packet, QoS};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub const CURSOR: &str = "upstream";

/// Live alarm copies waiting for `.../events`.
pub const LIVE_EVENTS_CAPACITY: usize = 256;

/// How often an advanced cursor is written to the journal while acks stream in. Losing up to
/// this much progress on a crash costs only duplicates. The first advance of a connection is
/// written at once: after a restart the replayed backlog is acknowledged quickly, and an agent
/// that keeps crashing young must not replay its whole backlog every time.
const CURSOR_PERSIST_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub agent_id: String,
    pub topic: String,
    /// Topic for live alarm copies (`pdtf/{site}/{area}/{line}/events`).
    pub events_topic: String,
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
    pub max_inflight: usize,
    pub backlog_threshold_records: u64,
    pub max_drain_records_per_s: Option<u64>,
    /// Tag names by `TagId`, so each message names the tags its records refer to (replaced
    /// by a tag-map reload; the registry only grows, so an older snapshot names every id
    /// committed before it).
    pub tag_names: Arc<crate::TagNames>,
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
            RecordBody::Samples(b) => ids.extend(b.iter().map(|s| s.tag)),
            RecordBody::Alarm(a) => ids.extend(a.tag()),
            RecordBody::Lifecycle(l) => ids.extend(l.condition.tag()),
            RecordBody::Deviation(d) => ids.extend(d.condition.tag()),
            RecordBody::Gap(g) => ids.extend(&g.tags),
            RecordBody::Batch(e) => {
                if let pdtf_models::batch::Actor::Tag(t) = e.by {
                    ids.push(t);
                }
            }
            RecordBody::BatchSnapshot(s) => {
                ids.extend(s.trajectories.iter().flat_map(|t| t.tags.iter().copied()))
            }
            RecordBody::Malformed(_) | RecordBody::Audit(_) | RecordBody::Command(_) => {}
        }
    }
    ids.into_iter()
        .filter_map(|t| names.get(t.index()).map(|n| (t.0, n.as_str())))
        .collect()
}

/// Mode gauge values (`pdtf_upstream_mode`).
pub const MODE_OFFLINE: u64 = 0;
pub const MODE_LIVE: u64 = 1;
pub const MODE_BACKLOGGED: u64 = 2;

/// One connection's state, carried between `Live` and `Backlogged`.
struct Conn {
    /// Carries record ranges only: every publish on it is in `win`.
    link: Link,
    live: LiveLink,
    win: AckWindow,
    persisted: u64,
    /// Nothing persisted on this connection yet: the first advance is written at once.
    first_persist_due: bool,
    connected: bool,
    rate: Option<DrainRate>,
    /// Set when the drain rate held sending back: try again then.
    resume_at: Option<Instant>,
    /// Failed cursor writes (a full disk fails them all): logged once, then counted.
    cursor_log: Repeats,
}

enum Mode {
    Offline(String),
    Live(Conn),
    Backlogged(Conn),
    Stop,
}

/// What one event means for the connection.
enum Next {
    Stay,
    Stop,
    Offline(String),
}

pub struct UpstreamSync {
    pub settings: UpstreamSettings,
    pub broker: BrokerConfig,
    pub journal: Arc<dyn Journal>,
    /// Last committed seq, published by the pipeline after each commit.
    pub committed: watch::Receiver<u64>,
    /// Alarm records as they commit, for `.../events`.
    pub live: mpsc::Receiver<Record>,
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
        let mut mode = self.connect(&backoff).await;
        let mut pipeline_running = true;
        loop {
            mode = match mode {
                Mode::Offline(reason) => self.offline(reason, &mut backoff, &shutdown).await,
                Mode::Live(c) => {
                    self.serve(c, false, &shutdown, &mut backoff, &mut pipeline_running)
                        .await
                }
                Mode::Backlogged(c) => {
                    self.serve(c, true, &shutdown, &mut backoff, &mut pipeline_running)
                        .await
                }
                Mode::Stop => return,
            };
        }
    }

    async fn offline(
        &mut self,
        reason: String,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> Mode {
        Stats::set(&self.stats.upstream_mode, MODE_OFFLINE);
        Stats::set_flag(&self.stats.upstream_connected, false);
        Stats::add(&self.stats.upstream_reconnects, 1);
        let delay = backoff.next_delay();
        tracing::debug!(broker = %self.broker.endpoint(), %reason, retry_in_ms = delay.as_millis() as u64, "Upstream offline; records stay in the journal.");
        tokio::select! {
            _ = shutdown.cancelled() => Mode::Stop,
            _ = tokio::time::sleep(delay) => self.connect(backoff).await,
        }
    }

    async fn connect(&mut self, backoff: &Backoff) -> Mode {
        let j = self.journal.clone();
        let start = match blocking(move || j.cursor(CURSOR)).await {
            Ok(s) => s.0,
            Err(e) => return Mode::Offline(format!("cannot read upstream cursor: {e}")),
        };
        let inflight = self.settings.max_inflight.clamp(1, u16::MAX as usize);
        let mut opts = match self.broker.options(&self.settings.agent_id, "upstream") {
            Ok(o) => o,
            Err(e) => {
                let endpoint = self.broker.endpoint();
                return Mode::Offline(link_down(
                    &self.stats,
                    "upstream",
                    &endpoint,
                    LinkError::Setup(&e),
                    backoff,
                ));
            }
        };
        opts.set_inflight(inflight as u16);
        let link = Link::open(opts, inflight + 8);
        let live = LiveLink::open(
            self.broker.clone(),
            self.settings.agent_id.clone(),
            self.settings.events_topic.clone(),
        );
        let conn = Conn {
            link,
            live,
            win: AckWindow::new(start),
            persisted: start,
            first_persist_due: true,
            connected: false,
            rate: None,
            resume_at: None,
            cursor_log: Repeats::default(),
        };
        Mode::Live(conn)
    }

    fn backlog(&self, c: &Conn) -> u64 {
        self.committed
            .borrow()
            .saturating_sub(c.win.acked_through())
    }

    async fn persist(&self, c: &mut Conn) {
        let seq = c.win.acked_through();
        if seq <= c.persisted {
            return;
        }
        let j = self.journal.clone();
        match blocking(move || j.set_cursor(CURSOR, Seq(seq))).await {
            Ok(()) => {
                c.persisted = seq;
                if let Some(ended) = c.cursor_log.succeeded(std::time::Instant::now()) {
                    info!(
                        seq,
                        failures = ended.failures,
                        secs = ended.lasting.as_secs(),
                        "Upstream cursor persisted again."
                    );
                }
            }
            Err(e) => match c.cursor_log.failed(&e, std::time::Instant::now()) {
                Report::First => {
                    error!(error = %e, seq, "Upstream cursor not persisted; after a restart these records are sent again. Repeats are counted, not logged.")
                }
                Report::Summary { failures, lasting } => {
                    warn!(error = %e, seq, failures, secs = lasting.as_secs(), "Upstream cursor still not persisted.")
                }
                Report::Quiet => {}
            },
        }
    }

    /// `Live` (`throttled = false`) and `Backlogged` (`throttled = true`) share this loop; it
    /// returns when the backlog crosses the threshold or the link goes.
    async fn serve(
        &mut self,
        mut c: Conn,
        throttled: bool,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
        pipeline_running: &mut bool,
    ) -> Mode {
        let s = &self.settings;
        c.rate = match (throttled, s.max_drain_records_per_s) {
            (true, Some(r)) => Some(DrainRate::new(
                r,
                s.max_batch_records,
                Instant::now().into_std(),
            )),
            _ => None,
        };
        c.resume_at = None;
        Stats::set(
            &self.stats.upstream_mode,
            if throttled {
                MODE_BACKLOGGED
            } else {
                MODE_LIVE
            },
        );
        if c.connected {
            info!(
                backlog = self.backlog(&c),
                mode = if throttled { "backlogged" } else { "live" },
                "Upstream mode changed."
            );
        }
        let mut tick = tokio::time::interval(CURSOR_PERSIST_INTERVAL);
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => Next::Stop,
                _ = tick.tick() => {
                    self.persist(&mut c).await;
                    Next::Stay
                }
                _ = tokio::time::sleep_until(c.resume_at.unwrap_or_else(Instant::now)), if c.resume_at.is_some() => {
                    c.resume_at = None;
                    Next::Stay
                }
                changed = self.committed.changed(), if c.connected && *pipeline_running => {
                    // The pipeline drops its sender when it stops; acks still need processing.
                    *pipeline_running = changed.is_ok();
                    Next::Stay
                }
                live = self.live.recv(), if c.live.connected() => {
                    if let Some(r) = live {
                        self.publish_live(&mut c.live, r);
                    }
                    Next::Stay
                }
                ev = c.live.next_event() => {
                    c.live.on_event(ev, &self.stats);
                    Next::Stay
                }
                ev = c.link.events.recv() => self.on_event(&mut c, ev, backoff),
            };
            if c.first_persist_due && c.win.acked_through() > c.persisted {
                c.first_persist_due = false;
                self.persist(&mut c).await;
            }
            match next {
                Next::Stay => {}
                Next::Stop => {
                    self.persist(&mut c).await;
                    c.live.close(&self.stats);
                    return Mode::Stop;
                }
                Next::Offline(reason) => {
                    self.persist(&mut c).await;
                    c.live.close(&self.stats);
                    return Mode::Offline(reason);
                }
            }
            if c.connected {
                if let Err(e) = self.fill(&mut c).await {
                    self.persist(&mut c).await;
                    c.live.close(&self.stats);
                    return Mode::Offline(e);
                }
                let backlogged = self.backlog(&c) > s.backlog_threshold_records;
                if backlogged != throttled {
                    return if backlogged {
                        Mode::Backlogged(c)
                    } else {
                        Mode::Live(c)
                    };
                }
            }
        }
    }

    fn on_event(
        &self,
        c: &mut Conn,
        ev: Option<Result<Event, rumqttc::ConnectionError>>,
        backoff: &mut Backoff,
    ) -> Next {
        match ev {
            None => Next::Offline("connection task stopped".into()),
            Some(Err(e)) => Next::Offline(link_down(
                &self.stats,
                "upstream",
                &self.broker.endpoint(),
                LinkError::Connection(&e),
                backoff,
            )),
            Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                c.connected = true;
                backoff.reset();
                crate::mqtt::link_up(&self.stats, "upstream");
                Stats::set_flag(&self.stats.upstream_connected, true);
                info!(broker = %self.broker.endpoint(), from_seq = c.win.next_to_send(), "Upstream connected; sending from the cursor.");
                Next::Stay
            }
            Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                c.win.on_outgoing(pkid);
                Next::Stay
            }
            Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                if let Some(acked) = c.win.on_puback(ack.pkid) {
                    Stats::set(&self.stats.upstream_acked_seq, acked);
                }
                Stats::add(&self.stats.upstream_messages_acked, 1);
                Next::Stay
            }
            Some(Ok(_)) => Next::Stay,
        }
    }

    fn publish_live(&self, live: &mut LiveLink, r: Record) {
        let mut one = vec![r];
        let payload = encode_batch(
            &self.settings.agent_id,
            &self.settings.tag_names.get(),
            &mut one,
            usize::MAX,
        );
        live.publish(payload, &self.stats);
    }

    /// Sends journal records from `next_to_send` while the in-flight window (and, when
    /// backlogged, the drain rate) has room.
    async fn fill(&self, c: &mut Conn) -> Result<(), String> {
        let s = &self.settings;
        while c.win.in_flight() < s.max_inflight && c.resume_at.is_none() {
            let last_committed = *self.committed.borrow();
            let from = c.win.next_to_send();
            if from > last_committed {
                return Ok(());
            }
            let mut max = s.max_batch_records;
            if let Some(rate) = &mut c.rate {
                let now = Instant::now();
                max = max.min(rate.available(now.into_std()));
                if max == 0 {
                    c.resume_at = Some(Instant::from_std(rate.next_at(now.into_std())));
                    return Ok(());
                }
            }
            let j = self.journal.clone();
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
            let payload = encode_batch(
                &s.agent_id,
                &s.tag_names.get(),
                &mut records,
                s.max_batch_bytes,
            );
            let (first, last) = (records[0].seq.0, records[records.len() - 1].seq.0);
            // Never await the client (see the module header). A full queue cannot happen
            // while the window stays below its capacity; if it does, the range is read again
            // after the next event, when the event loop has taken requests.
            if c.link
                .client
                .try_publish(s.topic.clone(), QoS::AtLeastOnce, false, payload)
                .is_err()
            {
                return Ok(());
            }
            if let Some(rate) = &mut c.rate {
                rate.take(records.len());
            }
            c.win.on_sent(first, last);
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
