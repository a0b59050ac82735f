//! The embedded MQTT broker (rumqttd) used by `pdtf-agent demo` and the end-to-end tests.
//!
//! rumqttd binds inside its own thread and does not report the bound address, so a free
//! loopback port is picked first and handed to it. The port comes from 20000–31999, outside
//! Linux's ephemeral range (32768–60999): a port-0 bind elsewhere in the process (a proxy, a
//! client socket) can then never take it between the check and rumqttd's bind. Each call
//! in a process gets a different port. rumqttd has no stop call: the broker lives until the
//! process exits.

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Largest payload the embedded broker accepts (upstream batches are capped well below).
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

const PORT_BASE: u16 = 20_000;
const PORT_SPAN: u16 = 12_000;
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A free port on 127.0.0.1 outside the ephemeral range, never the same twice in a process.
pub fn free_port() -> std::io::Result<u16> {
    let start = (std::process::id() % u32::from(PORT_SPAN)) as u16;
    for _ in 0..PORT_SPAN {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = PORT_BASE + (start.wrapping_add(n.wrapping_mul(7)) % PORT_SPAN);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free port in 20000-31999",
    ))
}

/// Starts a broker on `127.0.0.1:port` (0 = pick one) and waits until it accepts connections.
pub fn start_embedded(port: u16) -> std::io::Result<u16> {
    let port = if port == 0 { free_port()? } else { port };
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let server = ServerSettings {
        name: format!("v4-{port}"),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: MAX_PAYLOAD_BYTES,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 1_000,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name(format!("mqtt-broker-{port}"))
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, port, "Embedded MQTT broker stopped.");
            }
        })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect_timeout(&listen, Duration::from_millis(200)) {
            Ok(_) => return Ok(port),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
