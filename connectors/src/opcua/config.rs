//! `[opcua_servers.NAME]`: how to reach and trust one OPC UA server.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SecurityPolicy {
    #[default]
    None,
    Basic256Sha256,
    #[serde(rename = "Aes128-Sha256-RsaOaep")]
    Aes128Sha256RsaOaep,
    #[serde(rename = "Aes256-Sha256-RsaPss")]
    Aes256Sha256RsaPss,
}

impl SecurityPolicy {
    pub fn to_opcua(self) -> opcua::crypto::SecurityPolicy {
        use opcua::crypto::SecurityPolicy as P;
        match self {
            SecurityPolicy::None => P::None,
            SecurityPolicy::Basic256Sha256 => P::Basic256Sha256,
            SecurityPolicy::Aes128Sha256RsaOaep => P::Aes128Sha256RsaOaep,
            SecurityPolicy::Aes256Sha256RsaPss => P::Aes256Sha256RsaPss,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SecurityMode {
    #[default]
    None,
    Sign,
    SignAndEncrypt,
}

impl SecurityMode {
    pub fn to_opcua(self) -> opcua::types::MessageSecurityMode {
        use opcua::types::MessageSecurityMode as M;
        match self {
            SecurityMode::None => M::None,
            SecurityMode::Sign => M::Sign,
            SecurityMode::SignAndEncrypt => M::SignAndEncrypt,
        }
    }
}

/// Who the agent is to the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Identity {
    #[default]
    Anonymous,
    /// The password comes from `password` (which must be a `${ENV}` reference) or from the
    /// first line of `password_file`.
    UserPassword {
        user: String,
        password: Option<String>,
        password_file: Option<PathBuf>,
    },
    /// An X.509 user certificate (DER or PEM) and its private key (PEM).
    X509 { cert: PathBuf, key: PathBuf },
}

const fn default_retry_initial_ms() -> u64 {
    500
}
const fn default_retry_max_ms() -> u64 {
    30_000
}
const fn default_keep_alive_ms() -> u64 {
    5_000
}
const fn default_session_timeout_ms() -> u32 {
    60_000
}
const fn default_request_timeout_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcuaServerConfig {
    /// `opc.tcp://host:port/path`.
    pub endpoint: String,
    #[serde(default)]
    pub security_policy: SecurityPolicy,
    #[serde(default)]
    pub security_mode: SecurityMode,
    #[serde(default)]
    pub identity: Identity,
    /// Holds `own/cert.der` + `private/private.pem` (created on first start when missing),
    /// `trusted/` (server certificates the operator trusts) and `rejected/` (unknown server
    /// certificates, saved there for review). Default: `STATE_DIR/pki`.
    pub pki_dir: Option<PathBuf>,
    /// First reconnect delay; doubles per failed attempt up to `retry_max_ms`, plus a
    /// random delay of up to `retry_initial_ms` before each attempt. Retries never stop.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Session keep-alive (a read of the server state) interval; missed keep-alives end
    /// the connection and start a reconnect.
    #[serde(default = "default_keep_alive_ms")]
    pub keep_alive_ms: u64,
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u32,
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

impl OpcuaServerConfig {
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            security_policy: SecurityPolicy::None,
            security_mode: SecurityMode::None,
            identity: Identity::Anonymous,
            pki_dir: None,
            retry_initial_ms: default_retry_initial_ms(),
            retry_max_ms: default_retry_max_ms(),
            keep_alive_ms: default_keep_alive_ms(),
            session_timeout_ms: default_session_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
        }
    }

    pub fn retry_initial(&self) -> Duration {
        Duration::from_millis(self.retry_initial_ms)
    }

    /// Problems a config file can have that serde does not catch; `(key, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !self.endpoint.starts_with("opc.tcp://") {
            out.push((
                "endpoint",
                format!("`{}` is not an opc.tcp:// URL", self.endpoint),
            ));
        }
        let none_policy = self.security_policy == SecurityPolicy::None;
        let none_mode = self.security_mode == SecurityMode::None;
        if none_policy != none_mode {
            out.push((
                "security_mode",
                "security_policy None goes with security_mode None, and every other policy with Sign or SignAndEncrypt".into(),
            ));
        }
        if let Identity::UserPassword {
            password,
            password_file,
            ..
        } = &self.identity
        {
            if password.is_some() == password_file.is_some() {
                out.push((
                    "identity",
                    "user_password needs exactly one of `password` (a ${ENV} reference) or `password_file`".into(),
                ));
            }
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            out.push((
                "retry_max_ms",
                "retry_initial_ms must be > 0 and retry_max_ms >= retry_initial_ms".into(),
            ));
        }
        out
    }
}
