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
    /// Or a file whose first line is the password (systemd `LoadCredential=`:
    /// `"${CREDENTIALS_DIRECTORY}/plant-mqtt-password"`); read when the config is loaded.
    pub password_file: Option<std::path::PathBuf>,
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// First reconnect delay; doubles per failed attempt up to `backoff_max_ms`, with jitter.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    #[serde(default = "default_max_packet_bytes")]
    pub max_packet_bytes: usize,
    /// TLS (`[brokers.NAME.tls]`); absent = plain TCP. Never falls back to plaintext.
    pub tls: Option<super::tls::TlsSettings>,
}

impl BrokerConfig {
    /// Options for one connection. `role` names the connection in the client id. Fails when
    /// the TLS files cannot be used (the caller retries with backoff and reports it).
    pub fn options(&self, agent_id: &str, role: &str) -> Result<MqttOptions, super::tls::TlsError> {
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
        if let Some(tls) = &self.tls {
            o.set_transport(tls.transport()?);
        }
        Ok(o)
    }

    pub fn backoff(&self) -> super::Backoff {
        super::Backoff::new(
            Duration::from_millis(self.backoff_initial_ms),
            Duration::from_millis(self.backoff_max_ms),
        )
    }

    /// For logs: never includes credentials.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}
