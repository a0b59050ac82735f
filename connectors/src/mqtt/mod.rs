//! MQTT: broker settings, the connection pump, reconnect backoff, and the tag source.

pub mod config;
pub mod link;
pub mod mapping;
pub mod source;
pub mod tls;

pub use crate::backoff::Backoff;
pub use config::BrokerConfig;
pub use link::{link_down, link_up, Link, LinkError};
pub use mapping::{TopicBinding, TopicMap};
pub use source::MqttSource;

/// The largest packet MQTT can carry (remaining length 268,435,455 plus a 5-byte header).
pub const MQTT_MAX_PACKET_BYTES: usize = 268_435_460;
pub use tls::{TlsError, TlsSettings};
