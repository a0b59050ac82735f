//! Live alarm copies on `.../events`, on a connection of their own.
//!
//! Why a second connection: rumqttc reports an outgoing publish by packet id only, so on a
//! shared client a live copy's PUBACK could not be told from a record range's, and the copies
//! competed with the ordered stream for the request queue and the in-flight slots. Here the
//! ordered stream's `AckWindow` sees only range publishes, and a live copy can never move the
//! upstream cursor.
//!
//! Live copies are best effort: the ordered copy of every alarm is in the journal and goes out
//! on `.../records`. What is lost here is counted (`live_events_dropped`): copies refused
//! because the request queue is full, and copies still unacknowledged when the link goes.

use crate::mqtt::{Backoff, BrokerConfig, Link};
use crate::Stats;
use rumqttc::{ConnectionError, Event, Packet, QoS};
use tokio::time::Instant;

/// Publishes in the request queue of the live connection.
const REQUEST_CAPACITY: usize = 64;

/// Accounting of live copies, pure: sent, acknowledged, and lost with a link.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LiveCopies {
    pending: u64,
}

impl LiveCopies {
    pub fn on_sent(&mut self) {
        self.pending += 1;
    }

    pub fn on_puback(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// The link went: copies without a PUBACK are lost. Returns how many.
    pub fn on_link_lost(&mut self) -> u64 {
        std::mem::take(&mut self.pending)
    }

    pub fn pending(&self) -> u64 {
        self.pending
    }
}

/// The live connection: reconnects on its own backoff, never blocks its owner.
pub struct LiveLink {
    broker: BrokerConfig,
    agent_id: String,
    topic: String,
    link: Option<Link>,
    connected: bool,
    copies: LiveCopies,
    backoff: Backoff,
    retry_at: Option<Instant>,
}

impl LiveLink {
    pub fn open(broker: BrokerConfig, agent_id: String, topic: String) -> Self {
        let backoff = broker.backoff();
        let mut l = Self {
            broker,
            agent_id,
            topic,
            link: None,
            connected: false,
            copies: LiveCopies::default(),
            backoff,
            retry_at: None,
        };
        l.reopen();
        l
    }

    pub fn connected(&self) -> bool {
        self.connected
    }

    fn reopen(&mut self) {
        self.retry_at = None;
        match self.broker.options(&self.agent_id, "events") {
            Ok(o) => self.link = Some(Link::open(o, REQUEST_CAPACITY)),
            Err(_) => self.lost(None), // the ordered link reports TLS setup errors
        }
    }

    fn lost(&mut self, stats: Option<&Stats>) {
        let n = self.copies.on_link_lost();
        if let Some(s) = stats {
            Stats::add(&s.live_events_dropped, n);
        }
        self.link = None;
        self.connected = false;
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
    }

    /// The next event of the live connection, reconnecting when the backoff is over.
    /// Cancel-safe: a reconnect not yet due is waited for again by the next call.
    pub async fn next_event(&mut self) -> Option<Result<Event, ConnectionError>> {
        loop {
            if let Some(l) = &mut self.link {
                return l.events.recv().await;
            }
            match self.retry_at {
                Some(at) => {
                    tokio::time::sleep_until(at).await;
                    self.reopen();
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    pub fn on_event(&mut self, ev: Option<Result<Event, ConnectionError>>, stats: &Stats) {
        match ev {
            Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                self.connected = true;
                self.backoff.reset();
            }
            Some(Ok(Event::Incoming(Packet::PubAck(_)))) => self.copies.on_puback(),
            Some(Ok(_)) => {}
            None | Some(Err(_)) => self.lost(Some(stats)),
        }
    }

    /// Queues one copy without waiting; a full queue or a missing link drops it (counted).
    pub fn publish(&mut self, payload: Vec<u8>, stats: &Stats) {
        let sent = self.connected
            && self.link.as_ref().is_some_and(|l| {
                l.client
                    .try_publish(self.topic.clone(), QoS::AtLeastOnce, false, payload)
                    .is_ok()
            });
        if sent {
            self.copies.on_sent();
        } else {
            Stats::add(&stats.live_events_dropped, 1);
        }
    }

    /// Stops the connection; unacknowledged copies are counted as dropped.
    pub fn close(mut self, stats: &Stats) {
        Stats::add(&stats.live_events_dropped, self.copies.on_link_lost());
        self.link = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unacknowledged_copies_count_as_lost_with_the_link() {
        let mut c = LiveCopies::default();
        c.on_sent();
        c.on_sent();
        c.on_sent();
        c.on_puback();
        assert_eq!(c.pending(), 2);
        assert_eq!(c.on_link_lost(), 2);
        assert_eq!(c.on_link_lost(), 0, "lost once, not twice");
        c.on_puback();
        assert_eq!(c.pending(), 0, "a late ack never underflows");
    }
}
