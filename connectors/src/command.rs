//! Commands in, replies out: one MQTT connection that subscribes to each line's command
//! topics (`P/cmd/batch`) and publishes the replies the lines hand back
//! (`P/cmd/reply/{request_id}`, QoS 1, not retained).
//!
//! It only carries bytes: reading, deciding and recording a command is the line pipeline's
//! (commit first, then act, then answer). The session is clean: a command sent while the
//! agent is down is not queued for it (a late `start` is worse than none); the sender gets
//! no reply and retries with the same `request_id`, which the agent answers once and
//! applies once. The connection reconnects with backoff and subscribes again.

use crate::mqtt::{link_down, link_up, BrokerConfig, Link, LinkError};
use crate::repeat::{Repeats, Report};
use crate::Stats;
use rumqttc::{Event, Packet, QoS};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A command as it arrived, for line number `line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub line: usize,
    pub topic: String,
    pub payload: Vec<u8>,
}

pub struct CommandLink {
    pub agent_id: String,
    pub broker: BrokerConfig,
    /// Each command topic with the line it belongs to.
    pub topics: Vec<(String, usize)>,
}

const COMPONENT: &str = "commands";

impl CommandLink {
    /// Runs until `shutdown`. Commands go to `out`; replies come from `replies`. When `out`
    /// is full (a line stalled on a failing commit) a command is dropped and counted
    /// (`commands_dropped`), never waited for: waiting would stop the connection's keep-alive
    /// and the replies with it. A dropped command is neither recorded nor answered, like one
    /// sent while the agent is down; the sender retries with its request id.
    pub async fn run(
        self,
        out: mpsc::Sender<Incoming>,
        mut replies: mpsc::Receiver<(String, Vec<u8>)>,
        stats: Arc<Stats>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = self.broker.backoff();
        loop {
            let reason = match self.broker.options(&self.agent_id, COMPONENT) {
                Err(e) => link_down(
                    &stats,
                    COMPONENT,
                    &self.broker.endpoint(),
                    LinkError::Setup(&e),
                    &backoff,
                ),
                Ok(o) => {
                    let link = Link::open(o, 64);
                    match self
                        .connected(link, &out, &mut replies, &stats, &shutdown, &mut backoff)
                        .await
                    {
                        Some(reason) => reason,
                        None => return,
                    }
                }
            };
            tracing::debug!(broker = %self.broker.endpoint(), %reason, "Command link reconnecting.");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// Serves one connection; `None` on shutdown (or when the lines are gone), else why the
    /// link went.
    async fn connected(
        &self,
        mut link: Link,
        out: &mpsc::Sender<Incoming>,
        replies: &mut mpsc::Receiver<(String, Vec<u8>)>,
        stats: &Stats,
        shutdown: &CancellationToken,
        backoff: &mut crate::mqtt::Backoff,
    ) -> Option<String> {
        let mut up = false;
        let mut replies_open = true;
        let mut dropped = Repeats::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                r = replies.recv(), if up && replies_open => {
                    // Closed (and drained): the lines have stopped, the agent is shutting
                    // down; the link stays until it is told to stop.
                    let Some((topic, payload)) = r else {
                        replies_open = false;
                        continue;
                    };
                    if let Err(e) = link.client.publish(topic, QoS::AtLeastOnce, false, payload).await {
                        return Some(format!("reply publish failed: {e}"));
                    }
                }
                ev = link.events.recv() => match ev {
                    None => return Some("connection task stopped".to_owned()),
                    Some(Err(e)) => {
                        return Some(link_down(stats, COMPONENT, &self.broker.endpoint(), LinkError::Connection(&e), backoff));
                    }
                    Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        backoff.reset();
                        link_up(stats, COMPONENT);
                        for (topic, _) in &self.topics {
                            if let Err(e) = link.client.subscribe(topic.clone(), QoS::AtLeastOnce).await {
                                return Some(format!("subscribe to {topic} failed: {e}"));
                            }
                        }
                        up = true;
                        info!(broker = %self.broker.endpoint(), topics = self.topics.len(), "Command link connected; listening for commands.");
                    }
                    Some(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        let Some(&(_, line)) = self.topics.iter().find(|(t, _)| *t == p.topic) else {
                            warn!(topic = %p.topic, "Message on a topic the command link did not subscribe to; ignored.");
                            continue;
                        };
                        let cmd = Incoming { line, topic: p.topic.clone(), payload: p.payload.to_vec() };
                        let now = std::time::Instant::now();
                        match out.try_send(cmd) {
                            Ok(()) => {
                                if let Some(e) = dropped.succeeded(now) {
                                    info!(dropped = e.failures, "Command intake takes commands again.");
                                }
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => {} // the lines have stopped: shutting down
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                Stats::add(&stats.commands_dropped, 1);
                                if dropped.failed("intake full", now) != Report::Quiet {
                                    warn!(dropped = dropped.failures(), "Command intake full (a line is not keeping up): commands dropped, neither recorded nor answered; the sender retries with its request id.");
                                }
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    }
}
