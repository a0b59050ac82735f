//! Settings of one MQTT broker connection (`[brokers.NAME]` in the agent file).

use rumqttc::MqttOptions;
use serde::Deserialize;
use std::time::Duration;

const fn default_port() -> u16 {
    1883
}
const fn default_keep_alive_s() -> u64 {
    30
}
const fn default_backoff_initial_ms() -> u64 {
    500
}
const fn default_backoff_max_ms() -> u64 {
    30_000
}
const fn default_max_packet_bytes() -> usize {
    1024 * 1024
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Defaults to `{agent.id}-{role}` so several connections of one agent never collide.
    pub client_id: Option<String>,
    pub username: Option<String>,
    /// Use `${ENV_VAR}`: secrets never belong in the file itself.
    pub password: Option<String>,
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// First reconnect delay; doubles per failed attempt up to `backoff_max_ms`, with jitter.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    #[serde(default = "default_max_packet_bytes")]
    pub max_packet_bytes: usize,
}

impl BrokerConfig {
    /// Plain-TCP options for one connection. `role` names the connection in the client id.
    pub fn options(&self, agent_id: &str, role: &str) -> MqttOptions {
        let id = match &self.client_id {
            Some(id) => format!("{id}-{role}"),
            None => format!("{agent_id}-{role}"),
        };
        let mut o = MqttOptions::new(id, self.host.clone(), self.port);
        o.set_keep_alive(Duration::from_secs(self.keep_alive_s.max(5)));
        o.set_max_packet_size(self.max_packet_bytes, self.max_packet_bytes);
        o.set_clean_session(true);
        if let Some(user) = &self.username {
            o.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        o
    }

    pub fn backoff(&self) -> super::Backoff {
        super::Backoff::new(
            Duration::from_millis(self.backoff_initial_ms),
            Duration::from_millis(self.backoff_max_ms),
        )
    }

    /// For logs: never includes credentials.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}
