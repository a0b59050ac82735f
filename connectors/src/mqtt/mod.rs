//! MQTT: broker settings, the connection pump, reconnect backoff, and the tag source.

pub mod backoff;
pub mod config;
pub mod link;
pub mod mapping;
pub mod source;

pub use backoff::Backoff;
pub use config::BrokerConfig;
pub use link::Link;
pub use mapping::{TopicBinding, TopicMap};
pub use source::MqttSource;
