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
pub use tls::{TlsError, TlsSettings};
