//! One MQTT connection: a client handle plus a task that pumps the event loop into a bounded
//! channel, so callers can `select!` on events without cancelling `EventLoop::poll` midway.
//!
//! A `Link` lives for exactly one connection: the pump stops at the first connection error
//! and the owner builds a new `Link` after its backoff. That keeps rumqttc's RAM-only
//! retransmission queue out of the picture: what must be resent is resent from the journal.

use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Events buffered between the pump and the owner. Full = the pump waits (TCP back-pressure).
const EVENT_BUFFER: usize = 256;

pub struct Link {
    pub client: AsyncClient,
    pub events: mpsc::Receiver<Result<Event, ConnectionError>>,
    pump: JoinHandle<()>,
}

impl Link {
    /// Starts connecting. The first event is `ConnAck` on success or the connection error.
    pub fn open(options: MqttOptions, request_capacity: usize) -> Self {
        let (client, mut eventloop) = AsyncClient::new(options, request_capacity);
        let (tx, events) = mpsc::channel(EVENT_BUFFER);
        let pump = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let failed = ev.is_err();
                if tx.send(ev).await.is_err() || failed {
                    break;
                }
            }
        });
        Self {
            client,
            events,
            pump,
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.pump.abort();
    }
}
