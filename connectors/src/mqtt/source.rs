//! MQTT tag source: subscribe, decode, batch, and turn outages into gap records.
//!
//! Modes: *connecting* (a fresh `Link`, backoff between attempts) and *subscribed*. The first
//! loss of the link sends `LinkDown` (tags go Bad in the twin); the first SUBACK after it sends
//! the `Gap` with the outage's start and end. Samples are flushed by availability: as soon as
//! no further message is waiting, when a batch is full, at the latest when the flush interval
//! passes, and always before a `Malformed` or `Gap` so order is kept.
//!
//! A tag-map reload arrives on `reload` as a whole new `TopicMap`: the batch decoded under the
//! old map is flushed first, then the new map decodes, and when the subscriptions follow the
//! mapped topics, the added topics are subscribed and the removed ones unsubscribed on the
//! same connection (no reconnect, so nothing in flight at the broker is lost).

use super::{BrokerConfig, Link, LinkError, TopicMap};
use crate::malformed::MalformedGate;
use crate::stats::{SourceEvent, SourceStats};
use crate::{Outage, SourceMsg, Stats};
use pdtf_models::{Malformed, Sample, TagId, Timestamp};
use rumqttc::{ConnectReturnCode, Event, Packet, QoS, SubscribeFilter, SubscribeReasonCode};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub struct MqttSource {
    pub id: String,
    pub agent_id: String,
    pub broker: BrokerConfig,
    /// Subscription filters; the mapped topics when empty.
    pub filters: Vec<String>,
    pub qos: QoS,
    pub map: TopicMap,
    pub max_batch_samples: usize,
    pub flush_interval: Duration,
    /// Larger payloads are recorded as malformed (topic, size) and skipped undecoded. The
    /// client itself takes packets up to the protocol's maximum, so an oversized publish
    /// never tears the link down (and the good messages around it are not lost with it).
    pub max_payload_bytes: usize,
    /// Tag-map reloads: each new value replaces `map` while the source runs.
    pub reload: Option<watch::Receiver<TopicMap>>,
}

/// What a reload may change while the source runs.
struct Mapped {
    map: TopicMap,
    tags: Vec<TagId>,
    reload: Option<watch::Receiver<TopicMap>>,
}

impl Mapped {
    /// Takes the latest map (`pending`: only if not seen yet). True when it took one.
    fn take_reload(&mut self, pending: bool) -> bool {
        let Some(r) = &mut self.reload else {
            return false;
        };
        // `changed()` marks the value seen as it returns: after it, take it regardless.
        if pending && !r.has_changed().unwrap_or(false) {
            return false;
        }
        self.map = r.borrow_and_update().clone();
        self.tags = self.map.tags();
        true
    }
}

enum Exit {
    Shutdown,
    LinkLost(String),
}

fn now() -> Timestamp {
    Timestamp::from_system(SystemTime::now())
}

struct Session<'a> {
    src: &'a MqttSource,
    out: &'a mpsc::Sender<SourceMsg>,
    stats: SourceStats<'a>,
    batch: Vec<Sample>,
    /// Outlives the session: a flood's window goes on across reconnects.
    malformed: &'a mut MalformedGate,
    mapped: &'a mut Mapped,
}

impl Session<'_> {
    /// Returns false when the pipeline is gone (the agent is shutting down).
    async fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::replace(
            &mut self.batch,
            Vec::with_capacity(self.src.max_batch_samples),
        );
        self.out.send(SourceMsg::Samples(batch)).await.is_ok()
    }

    async fn send(&mut self, msg: SourceMsg) -> bool {
        self.flush().await && self.out.send(msg).await.is_ok()
    }

    async fn on_publish(&mut self, topic: &str, payload: &[u8]) -> bool {
        let before = self.batch.len();
        let errors = if payload.len() > self.src.max_payload_bytes {
            vec![format!(
                "payload over max_payload_bytes: {} bytes, the limit is {}; not decoded",
                payload.len(),
                self.src.max_payload_bytes
            )]
        } else {
            self.mapped
                .map
                .decode(topic, payload, now(), &mut self.batch)
        };
        self.stats
            .count(SourceEvent::Samples, (self.batch.len() - before) as u64);
        for reason in errors {
            self.stats.count(SourceEvent::Malformed, 1);
            let m = Malformed::new(&self.src.id, topic, reason, payload);
            let Some(m) = self.malformed.offer(m, now()) else {
                continue; // counted into the window's summary
            };
            warn!(source = %self.src.id, topic, reason = %m.reason, "Payload skipped; recorded as malformed.");
            if !self.send(SourceMsg::Malformed(m)).await {
                return false;
            }
        }
        self.batch.len() < self.src.max_batch_samples || self.flush().await
    }

    /// Sends the flood summaries that are due (all of them when `all`).
    async fn summaries(&mut self, all: bool) -> bool {
        let due = if all {
            self.malformed.drain()
        } else {
            self.malformed.due(now())
        };
        for m in due {
            warn!(source = %self.src.id, reason = %m.reason, "Malformed inputs summarised.");
            if !self.send(SourceMsg::Malformed(m)).await {
                return false;
            }
        }
        true
    }
}

/// A subscription change a reload asks of the live connection.
enum Change {
    Subscribe(Vec<String>),
    Unsubscribe(String),
}

impl MqttSource {
    /// Hands queued subscription changes to the client without waiting: awaiting a full
    /// request queue here would stop this loop from draining the link's events, which the
    /// link's pump waits on before it takes requests again. What does not fit now goes after
    /// the next event.
    fn send_changes(
        &self,
        link: &Link,
        requests: &mut VecDeque<Change>,
        subscribing: &mut VecDeque<Vec<String>>,
    ) {
        while let Some(change) = requests.front() {
            let sent = match change {
                Change::Unsubscribe(f) => link.client.try_unsubscribe(f.clone()).is_ok(),
                Change::Subscribe(added) => {
                    let subs = added
                        .iter()
                        .map(|f| SubscribeFilter::new(f.clone(), self.qos));
                    link.client.try_subscribe_many(subs).is_ok()
                }
            };
            if !sent {
                return;
            }
            if let Some(Change::Subscribe(added)) = requests.pop_front() {
                subscribing.push_back(added);
            }
        }
    }

    fn filters(&self, map: &TopicMap) -> Vec<String> {
        if self.filters.is_empty() {
            let mut t: Vec<String> = map.topics().map(str::to_owned).collect();
            t.sort();
            t
        } else {
            self.filters.clone()
        }
    }

    /// Runs until `shutdown`. Reconnects forever with capped, jittered backoff.
    pub async fn run(
        mut self,
        out: mpsc::Sender<SourceMsg>,
        stats: Arc<Stats>,
        shutdown: CancellationToken,
    ) {
        let map = std::mem::take(&mut self.map);
        let mut mapped = Mapped {
            tags: map.tags(),
            map,
            reload: self.reload.take(),
        };
        let mut backoff = self.broker.backoff();
        let mut outage = Outage::default();
        let mut malformed = MalformedGate::default();
        let role = format!("src-{}", self.id);
        let own = stats.source(&self.id);
        let counts = SourceStats {
            all: &stats,
            own: &own,
        };
        loop {
            mapped.take_reload(true);
            let exit = match self.broker.options(&self.agent_id, &role) {
                Ok(mut o) => {
                    // Incoming packets up to the protocol's maximum: rumqttc tears the link
                    // down on a larger one, losing what is in flight; the payload limit is
                    // ours (`max_payload_bytes`). Outgoing stays at the broker's setting.
                    o.set_max_packet_size(
                        super::MQTT_MAX_PACKET_BYTES,
                        self.broker.max_packet_bytes,
                    );
                    let link = Link::open(o, 64);
                    self.session(
                        link,
                        &out,
                        counts,
                        &shutdown,
                        &mut mapped,
                        (&mut outage, &mut malformed),
                        &mut backoff,
                    )
                    .await
                }
                Err(e) => Exit::LinkLost(super::link_down(
                    &stats,
                    &format!("source {}", self.id),
                    &self.broker.endpoint(),
                    LinkError::Setup(&e),
                    &backoff,
                )),
            };
            let reason = match exit {
                Exit::Shutdown => return,
                Exit::LinkLost(reason) => reason,
            };
            counts.count(SourceEvent::Reconnect, 1);
            if !outage.is_down() {
                warn!(source = %self.id, broker = %self.broker.endpoint(), %reason, "Source link lost; its tags are Bad until it is back.");
            } else {
                debug!(source = %self.id, %reason, "Reconnect attempt failed.");
            }
            if !outage
                .begin(&out, &self.id, &mapped.tags, &reason, now())
                .await
            {
                return;
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn session(
        &self,
        mut link: Link,
        out: &mpsc::Sender<SourceMsg>,
        stats: SourceStats<'_>,
        shutdown: &CancellationToken,
        mapped: &mut Mapped,
        (outage, malformed): (&mut Outage, &mut MalformedGate),
        backoff: &mut super::Backoff,
    ) -> Exit {
        let mut s = Session {
            src: self,
            out,
            stats,
            batch: Vec::with_capacity(self.max_batch_samples),
            malformed,
            mapped,
        };
        let mut filters = self.filters(&s.mapped.map);
        // The filters of each SUBSCRIBE sent, in order: a SUBACK answers the oldest.
        let mut subscribing: VecDeque<Vec<String>> = VecDeque::new();
        let mut connected = false;
        // Subscription changes of a reload not yet taken by the client's request queue.
        let mut requests: VecDeque<Change> = VecDeque::new();
        let mut tick = tokio::time::interval(self.flush_interval.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    s.flush().await;
                    s.summaries(true).await;
                    return Exit::Shutdown;
                }
                _ = tick.tick() => {
                    if !s.flush().await || !s.summaries(false).await {
                        return Exit::Shutdown;
                    }
                }
                changed = async { s.mapped.reload.as_mut().expect("guarded").changed().await }, if s.mapped.reload.is_some() => {
                    if changed.is_err() {
                        s.mapped.reload = None; // the agent dropped its handle: no more reloads
                        continue;
                    }
                    if !s.flush().await {
                        return Exit::Shutdown;
                    }
                    s.mapped.take_reload(false);
                    let now_filters = self.filters(&s.mapped.map);
                    let added: Vec<String> = now_filters.iter().filter(|f| !filters.contains(f)).cloned().collect();
                    let removed: Vec<&String> = filters.iter().filter(|f| !now_filters.contains(f)).collect();
                    info!(source = %self.id, tags = s.mapped.tags.len(), subscribed = added.len(), unsubscribed = removed.len(), "Tag map reloaded.");
                    if connected {
                        requests.extend(removed.into_iter().cloned().map(Change::Unsubscribe));
                        if !added.is_empty() {
                            requests.push_back(Change::Subscribe(added));
                        }
                        self.send_changes(&link, &mut requests, &mut subscribing);
                    }
                    filters = now_filters;
                }
                ev = link.events.recv() => {
                    let ev = match ev {
                        None => return Exit::LinkLost("connection task stopped".into()),
                        Some(Err(e)) => {
                            s.flush().await;
                            let component = format!("source {}", self.id);
                            return Exit::LinkLost(super::link_down(stats.all, &component, &self.broker.endpoint(), LinkError::Connection(&e), backoff));
                        }
                        Some(Ok(ev)) => ev,
                    };
                    match ev {
                        Event::Incoming(Packet::ConnAck(ack)) => {
                            if ack.code != ConnectReturnCode::Success {
                                return Exit::LinkLost(format!("broker refused connection: {:?}", ack.code));
                            }
                            super::link_up(stats.all, &format!("source {}", self.id));
                            stats.link_up();
                            connected = true;
                            let subs = filters.iter().map(|f| SubscribeFilter::new(f.clone(), self.qos));
                            if let Err(e) = link.client.subscribe_many(subs).await {
                                return Exit::LinkLost(format!("subscribe failed: {e}"));
                            }
                            subscribing.push_back(filters.clone());
                        }
                        Event::Incoming(Packet::SubAck(ack)) => {
                            let asked = subscribing.pop_front().unwrap_or_default();
                            for (code, filter) in ack.return_codes.iter().zip(&asked) {
                                if matches!(code, SubscribeReasonCode::Failure) {
                                    error!(source = %self.id, filter, "Broker refused the subscription; its tags get no data. Check the broker's ACL.");
                                }
                            }
                            backoff.reset();
                            info!(source = %self.id, broker = %self.broker.endpoint(), filters = asked.len(), "Source subscribed.");
                            if let Some(gap) = outage.end(&self.id, &s.mapped.tags, now()) {
                                stats.count(SourceEvent::Gap, 1);
                                if !s.send(SourceMsg::Gap(gap)).await {
                                    return Exit::Shutdown;
                                }
                            }
                        }
                        Event::Incoming(Packet::Publish(p)) => {
                            // By availability, not by the timer: when nothing else is waiting,
                            // the batch goes now; under load it grows until the link's queue
                            // is drained or the batch is full (group commit does the rest).
                            let pipeline_alive = s.on_publish(&p.topic, &p.payload).await
                                && (!link.events.is_empty() || s.flush().await);
                            if !pipeline_alive {
                                return Exit::Shutdown;
                            }
                        }
                        _ => {}
                    }
                    if !requests.is_empty() {
                        self.send_changes(&link, &mut requests, &mut subscribing);
                    }
                }
            }
        }
    }
}
