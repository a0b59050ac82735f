//! Building an OPC UA client and session from `OpcuaServerConfig`, shared by the source,
//! `pdtf-agent opcua browse` and `pdtf-agent opcua trust`.

use super::{Identity, OpcuaServerConfig};
use opcua::client::transport::{
    Connector, OutgoingMessage, SecureChannelState, TcpConnector, TransportConfiguration,
};
use opcua::client::{
    Client, ClientBuilder, ConnectionSource, IdentityToken, Password, Session, SessionEventLoop,
};
use opcua::types::{EndpointDescription, Error, StatusCode};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The PKI directory of a server config: its own, or `state_dir/pki`.
pub fn pki_dir(cfg: &OpcuaServerConfig, state_dir: &Path) -> PathBuf {
    cfg.pki_dir.clone().unwrap_or_else(|| state_dir.join("pki"))
}

/// The longest array the client decodes: the notifications of one publish response, or one
/// array value (a spectrum). The library's default (1,000) drops the connection on the first
/// busy publish response, so every subscription of more than 1,000 changing items broke.
pub const MAX_ARRAY_LENGTH: usize = 100_000;
/// The most notifications per publish response the agent may ask for.
pub const MAX_NOTIFICATIONS_PER_PUBLISH: u32 = MAX_ARRAY_LENGTH as u32;
/// The largest message the client accepts (the library's default is 320 KiB).
pub const MAX_MESSAGE_SIZE: usize = 64 << 20;

/// Two clients with the agent's application identity: `session` reconnects its session
/// forever; `discovery` asks for the server's endpoints with a single attempt, so an
/// unreachable server is reported at once (the library would otherwise retry inside
/// GetEndpoints forever, with no outage and no health problem shown) and the caller's own
/// backoff takes over.
pub struct Clients {
    pub session: Client,
    pub discovery: Client,
}

/// The agent's certificate and key are created in `pki/own` and `pki/private` on first use.
/// Unknown server certificates are never trusted: they land in `pki/rejected/` and the
/// connection fails. `chunk` monitored items go in one request when the library recreates a
/// subscription on a new session.
pub fn clients(
    cfg: &OpcuaServerConfig,
    pki: &Path,
    agent_id: &str,
    chunk: usize,
) -> Result<Clients, String> {
    let build = |b: ClientBuilder| {
        b.client()
            .map_err(|errs| format!("OPC UA client configuration: {}", errs.join("; ")))
    };
    Ok(Clients {
        session: build(
            builder(cfg, pki, agent_id)
                .session_retry_limit(-1)
                .recreate_monitored_items_chunk(chunk.max(1)),
        )?,
        discovery: build(builder(cfg, pki, agent_id).session_retry_limit(0))?,
    })
}

fn builder(cfg: &OpcuaServerConfig, pki: &Path, agent_id: &str) -> ClientBuilder {
    ClientBuilder::new()
        .application_name(format!("PDTF Edge agent {agent_id}"))
        .application_uri(format!("urn:pdtf-edge:{agent_id}"))
        .product_uri("urn:pdtf-edge")
        .pki_dir(pki)
        .create_sample_keypair(true)
        .trust_server_certs(false)
        .verify_server_certs(true)
        .session_retry_initial(cfg.retry_initial())
        .session_retry_max(Duration::from_millis(cfg.retry_max_ms))
        .keep_alive_interval(Duration::from_millis(cfg.keep_alive_ms))
        .session_timeout(cfg.session_timeout_ms)
        .request_timeout(Duration::from_millis(cfg.request_timeout_ms))
        .session_name(format!("pdtf-edge {agent_id}"))
        .max_array_length(MAX_ARRAY_LENGTH)
        .max_message_size(MAX_MESSAGE_SIZE)
        .max_chunk_count(0)
}

pub fn identity_token(cfg: &OpcuaServerConfig) -> Result<IdentityToken, String> {
    Ok(match &cfg.identity {
        Identity::Anonymous => IdentityToken::Anonymous,
        Identity::UserPassword {
            user,
            password,
            password_file,
        } => {
            let pw = match (password, password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) => crate::secret::read_password_file(f)
                    .map_err(|e| format!("identity.password_file: {e}"))?,
                (None, None) => return Err("identity: no password given".into()),
            };
            IdentityToken::UserName(user.clone(), Password::new(pw))
        }
        Identity::X509 { cert, key } => IdentityToken::new_x509_path(cert, key).map_err(|e| {
            format!(
                "identity x509 ({} / {}): {e}",
                cert.display(),
                key.display()
            )
        })?,
    })
}

/// The endpoint the config asks for, among those the server offers; the error lists them.
pub fn pick_endpoint(
    cfg: &OpcuaServerConfig,
    offered: &[EndpointDescription],
) -> Result<EndpointDescription, String> {
    let policy = cfg.security_policy.to_opcua();
    let mode = cfg.security_mode.to_opcua();
    if let Some(e) = Client::find_matching_endpoint(offered, &cfg.endpoint, policy, mode) {
        return Ok(e);
    }
    // Servers often announce their own host name; match on policy and mode alone then.
    if let Some(e) = offered
        .iter()
        .find(|e| e.security_policy_uri.as_ref() == policy.to_uri() && e.security_mode == mode)
    {
        let mut e = e.clone();
        e.endpoint_url = cfg.endpoint.as_str().into();
        return Ok(e);
    }
    let list: Vec<String> = offered
        .iter()
        .map(|e| {
            let p = e.security_policy_uri.as_ref();
            format!(
                "{} {:?}",
                p.rsplit('#').next().unwrap_or(p),
                e.security_mode
            )
        })
        .collect();
    Err(format!(
        "the server offers no endpoint with security_policy {:?} and security_mode {:?}; it offers: {}",
        cfg.security_policy,
        cfg.security_mode,
        list.join(", ")
    ))
}

/// Adds a random delay of up to `max` before each connection attempt, so that many agents
/// do not reconnect to a restarted server in lock-step (the library's backoff has no jitter).
pub struct Jitter {
    pub max: Duration,
}

pub struct JitterConnector {
    inner: TcpConnector,
    max: Duration,
}

impl ConnectionSource for Jitter {
    type Builder = JitterConnector;
    fn get_connector(&self, endpoint: &EndpointDescription) -> Result<JitterConnector, Error> {
        Ok(JitterConnector {
            inner: TcpConnector::new(endpoint.endpoint_url.as_ref())?,
            max: self.max,
        })
    }
}

impl Connector for JitterConnector {
    type Transport = <TcpConnector as Connector>::Transport;

    async fn connect(
        &self,
        channel: Arc<SecureChannelState>,
        outgoing_recv: tokio::sync::mpsc::Receiver<OutgoingMessage>,
        config: TransportConfiguration,
    ) -> Result<Self::Transport, Error> {
        let ms = self.max.as_millis() as u64;
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=ms))).await;
        }
        self.inner.connect(channel, outgoing_recv, config).await
    }

    fn default_endpoint(&self) -> EndpointDescription {
        self.inner.default_endpoint()
    }
}

pub struct Connection {
    pub session: Arc<Session>,
    pub event_loop: SessionEventLoop<JitterConnector>,
    /// The file name the server's certificate gets in `pki/trusted` or `pki/rejected`.
    pub server_cert_file: Option<String>,
}

/// Asks the server for its endpoints (over an unsecured discovery channel, as OPC UA
/// clients do) and builds a session for the configured one. Nothing is connected until the
/// event loop is polled.
pub async fn connect(
    clients: &Clients,
    cfg: &OpcuaServerConfig,
    token: IdentityToken,
) -> Result<Connection, (StatusCode, String)> {
    let client = &clients.session;
    let offered = clients
        .discovery
        .get_server_endpoints_from_url(cfg.endpoint.as_str())
        .await
        .map_err(|e| (e.status(), format!("GetEndpoints at {}: {e}", cfg.endpoint)))?;
    let endpoint =
        pick_endpoint(cfg, &offered).map_err(|m| (StatusCode::BadConfigurationError, m))?;
    let server_cert_file = opcua::crypto::X509::from_byte_string(&endpoint.server_certificate)
        .ok()
        .map(|c| opcua::crypto::CertificateStore::cert_file_name(&c));
    let (session, event_loop) = client
        .session_builder()
        .with_endpoints(offered)
        .user_identity_token(token)
        .connect_to_endpoint_directly(endpoint)
        .map_err(|e| (e.status(), e.to_string()))?
        .with_connector(Jitter {
            max: cfg.retry_initial(),
        })
        .build(client.certificate_store().clone())
        .map_err(|e| (e.status(), e.to_string()))?;
    Ok(Connection {
        session,
        event_loop,
        server_cert_file,
    })
}

/// Turns a connection failure into what an operator can act on. When the server's
/// certificate sits in `pki/rejected` (the library put it there, or an operator did), that is
/// the reason, whatever status code the attempt ended with; the message names the file.
pub fn explain(
    status: StatusCode,
    detail: &str,
    pki: &Path,
    server_cert_file: Option<&str>,
) -> String {
    let rejected = server_cert_file
        .map(|f| pki.join("rejected").join(f))
        .filter(|p| p.exists());
    if rejected.is_some() || status == StatusCode::BadCertificateUntrusted {
        let what = rejected.map_or_else(
            || format!("It was saved in {}", pki.join("rejected").display()),
            |p| format!("It is {}", p.display()),
        );
        return format!(
            "the server's certificate is not trusted. {what}; if it is the right server, move it to {tru} (or run `pdtf-agent opcua trust --config FILE --server NAME`). ({status}: {detail})",
            tru = pki.join("trusted").display(),
        );
    }
    format!("{status}: {detail}")
}

/// A server's application certificate, as offered in its endpoint description.
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub subject: String,
    pub thumbprint: String,
    pub file_name: String,
    der: Vec<u8>,
}

/// Asks the server (GetEndpoints, unsecured as discovery is) for the certificate of the
/// configured endpoint.
pub async fn server_cert(clients: &Clients, cfg: &OpcuaServerConfig) -> Result<ServerCert, String> {
    let offered = clients
        .discovery
        .get_server_endpoints_from_url(cfg.endpoint.as_str())
        .await
        .map_err(|e| format!("GetEndpoints at {}: {e}", cfg.endpoint))?;
    let e = pick_endpoint(cfg, &offered)?;
    if e.server_certificate.is_null_or_empty() {
        return Err(
            "the endpoint carries no server certificate (security_policy None needs no trust)"
                .into(),
        );
    }
    let cert = opcua::crypto::X509::from_byte_string(&e.server_certificate)
        .map_err(|err| format!("the server certificate does not parse: {err}"))?;
    Ok(ServerCert {
        subject: cert.subject_name(),
        thumbprint: cert.thumbprint().as_hex_string(),
        file_name: opcua::crypto::CertificateStore::cert_file_name(&cert),
        der: cert.to_der().map_err(|err| err.to_string())?,
    })
}

/// Puts `cert` in `pki/trusted/` (and removes it from `pki/rejected/`).
pub fn trust(pki: &Path, cert: &ServerCert) -> Result<PathBuf, String> {
    let dir = pki.join("trusted");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(&cert.file_name);
    std::fs::write(&path, &cert.der).map_err(|e| format!("{}: {e}", path.display()))?;
    let rejected = pki.join("rejected").join(&cert.file_name);
    if rejected.exists() {
        std::fs::remove_file(&rejected).map_err(|e| format!("{}: {e}", rejected.display()))?;
    }
    Ok(path)
}
