//! One MQTT connection: a client handle plus a task that pumps the event loop into a bounded
//! channel, so callers can `select!` on events without cancelling `EventLoop::poll` midway.
//!
//! A `Link` lives for exactly one connection: the pump stops at the first connection error
//! and the owner builds a new `Link` after its backoff. That keeps rumqttc's RAM-only
//! retransmission queue out of the picture: what must be resent is resent from the journal.

use super::{Backoff, TlsError};
use crate::Stats;
use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions};
use tracing::{error, warn};

/// Why a link is not up: the connection failed, or it could not even be set up because the
/// TLS settings are unusable (a file the operator must fix).
#[derive(Debug)]
pub enum LinkError<'a> {
    Connection(&'a ConnectionError),
    Setup(&'a TlsError),
}

/// Logs a link failure the way an operator needs it and records TLS problems in the health
/// status (cleared by `link_up`). Returns the reason for the caller's records.
pub fn link_down(
    stats: &Stats,
    component: &str,
    endpoint: &str,
    e: LinkError<'_>,
    backoff: &Backoff,
) -> String {
    let tls = match e {
        LinkError::Connection(ConnectionError::Tls(t)) => {
            Some(format!("TLS handshake failed (no plaintext fallback): {t}"))
        }
        LinkError::Setup(t) => Some(format!("TLS setup: {t}")),
        LinkError::Connection(_) => None,
    };
    match (tls, e) {
        (Some(reason), _) => {
            if backoff.attempts() <= 1 {
                error!(component, broker = endpoint, %reason, "Link refused for security reasons; fix the certificate or the brokers.*.tls settings. Retrying with backoff.");
            }
            stats.problem(component, Some(reason.clone()));
            reason
        }
        (None, LinkError::Connection(c)) => {
            if backoff.attempts() <= 1 {
                warn!(component, broker = endpoint, error = %c, "Link down; reconnecting with backoff.");
            }
            c.to_string()
        }
        (None, LinkError::Setup(t)) => t.to_string(),
    }
}

/// Clears the health problem `link_down` may have set.
pub fn link_up(stats: &Stats, component: &str) {
    stats.problem(component, None);
}

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
        let (tx, events) = mpsc::channel(EVENT_BUFFER);
        let (client, mut eventloop) = AsyncClient::new(options, request_capacity);
        // Small messages that must not wait: Nagle's algorithm against the peer's delayed ACK
        // held alarms back by ~40 ms per hop.
        eventloop.network_options.set_tcp_nodelay(true);
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
