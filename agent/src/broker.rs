//! The embedded MQTT broker (rumqttd) used by `pdtf-agent demo` and the end-to-end tests.
//!
//! rumqttd binds inside its own thread and does not report the bound address, so a free
//! loopback port is picked first (bind to port 0, read it, release it) and handed to it.
//! rumqttd has no stop call: the broker lives until the process exits.

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Largest payload the embedded broker accepts (upstream batches are capped well below).
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// A free port on 127.0.0.1 (racy by nature, but only with other processes on this host).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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
