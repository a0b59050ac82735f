//! TLS for MQTT links with rustls (ring provider): a CA file, optional client certificate
//! authentication, and hostname (or IP) verification against `host`.
//!
//! Fails closed: there is no plaintext fallback and no "accept any certificate" switch. The
//! files are read at each connection attempt, so renewed certificates apply on the next
//! reconnect without a restart.

use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `[brokers.NAME.tls]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the CA certificate(s) that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM certificate chain for client authentication (with `client_key_file`).
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
}

/// A TLS setup problem: the operator must fix a file or a key. `key` names the TOML key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

fn err(key: &'static str, message: impl Into<String>) -> TlsError {
    TlsError {
        key,
        message: message.into(),
    }
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(key, format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(key, format!("{} is not valid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(err(key, format!("{} holds no certificate", path.display())));
    }
    Ok(certs)
}

impl TlsSettings {
    /// Builds the rustls client configuration (reads the files).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in certs("tls.ca_file", &self.ca_file)? {
            roots
                .add(c)
                .map_err(|e| err("tls.ca_file", format!("{}: {e}", self.ca_file.display())))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err("tls", e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&self.client_cert_file, &self.client_key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = certs("tls.client_cert_file", cert)?;
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| err("tls.client_key_file", format!("{}: {e}", key.display())))?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    err(
                        "tls.client_key_file",
                        format!("does not match the certificate: {e}"),
                    )
                })?
            }
            (Some(_), None) => {
                return Err(err(
                    "tls.client_key_file",
                    "is required with client_cert_file",
                ))
            }
            (None, Some(_)) => {
                return Err(err(
                    "tls.client_cert_file",
                    "is required with client_key_file",
                ))
            }
        };
        Ok(Arc::new(config))
    }

    pub fn transport(&self) -> Result<Transport, TlsError> {
        Ok(Transport::tls_with_config(TlsConfiguration::Rustls(
            self.client_config()?,
        )))
    }
}
