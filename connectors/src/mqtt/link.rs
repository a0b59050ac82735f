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

const TLS_SETUP: &str = "TLS setup: ";

/// Logs a connection failure the way an operator needs it and records TLS problems in the
/// health status (cleared by `link_up`). Returns the reason for the caller's records.
pub fn link_down(
    stats: &Stats,
    component: &str,
    endpoint: &str,
    e: &ConnectionError,
    backoff: &Backoff,
) -> String {
    let tls = match e {
        ConnectionError::Tls(t) => {
            Some(format!("TLS handshake failed (no plaintext fallback): {t}"))
        }
        ConnectionError::Io(io) if io.to_string().starts_with(TLS_SETUP) => Some(io.to_string()),
        _ => None,
    };
    match tls {
        Some(reason) => {
            if backoff.attempts() <= 1 {
                error!(component, broker = endpoint, %reason, "Link refused for security reasons; fix the certificate or the brokers.*.tls settings. Retrying with backoff.");
            }
            stats.problem(component, Some(reason.clone()));
            reason
        }
        None => {
            if backoff.attempts() <= 1 {
                warn!(component, broker = endpoint, error = %e, "Link down; reconnecting with backoff.");
            }
            e.to_string()
        }
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
    /// Starts connecting. The first event is `ConnAck` on success or the connection error;
    /// unusable TLS settings arrive as that first error (`describe` marks them TLS).
    pub fn open(options: Result<MqttOptions, TlsError>, request_capacity: usize) -> Self {
        let (tx, events) = mpsc::channel(EVENT_BUFFER);
        let options = match options {
            Ok(o) => o,
            Err(e) => {
                let (client, _unused) =
                    AsyncClient::new(MqttOptions::new("unused", "localhost", 1), 1);
                let setup = std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{TLS_SETUP}{e}"),
                );
                let _queued = tx.try_send(Err(ConnectionError::Io(setup)));
                return Self {
                    client,
                    events,
                    pump: tokio::spawn(async {}),
                };
            }
        };
        let (client, mut eventloop) = AsyncClient::new(options, request_capacity);
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
