//! TLS to a single node (`rediss://`): the store dials its own TCP streams (see `single.rs`),
//! so it wraps them itself, with rustls. The server's certificate is verified against
//! `REDIS_CA_FILE` when set, else the system roots, and must name the URL's host (SNI and
//! verification both use it). Cluster mode uses redis-rs's own TLS support instead (see
//! `Store::new`).

use std::sync::Arc;

use redis::{ConnectionAddr, RedisError, RedisResult};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::error::InvalidUrl;
use crate::config::CaFile;

/// How to open TLS over a TCP stream to one server.
pub(super) struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
    /// `host:port`, for error messages.
    peer: String,
}

impl Tls {
    /// For `addr` when it is a TLS address (`rediss://`); `None` for any other.
    pub(super) fn for_addr(
        addr: &ConnectionAddr,
        ca: Option<&CaFile>,
    ) -> Result<Option<Tls>, InvalidUrl> {
        let ConnectionAddr::TcpTls { host, port, .. } = addr else {
            return Ok(None);
        };
        let name = ServerName::try_from(host.clone())
            .map_err(|e| InvalidUrl(format!("{host:?} is not a TLS server name: {e}")))?;
        let roots = roots(ca)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| InvalidUrl(format!("TLS configuration: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            name,
            peer: format!("{host}:{port}"),
        }))
    }

    /// The TLS handshake over `stream`; a refused certificate is an error that says so.
    pub(super) async fn handshake(&self, stream: TcpStream) -> RedisResult<TlsStream<TcpStream>> {
        self.connector
            .connect(self.name.clone(), stream)
            .await
            .map_err(|e| {
                RedisError::from(std::io::Error::new(
                    e.kind(),
                    format!("TLS handshake with {} failed: {e}", self.peer),
                ))
            })
    }
}

/// The trust anchors: the certificates of `REDIS_CA_FILE`, or the system's.
fn roots(ca: Option<&CaFile>) -> Result<RootCertStore, InvalidUrl> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(ca) => {
            for cert in CertificateDer::pem_slice_iter(&ca.pem) {
                let cert = cert.map_err(|e| {
                    InvalidUrl(format!("REDIS_CA_FILE {:?} is not PEM: {e}", ca.path))
                })?;
                roots.add(cert).map_err(|e| {
                    InvalidUrl(format!(
                        "REDIS_CA_FILE {:?}: not a CA certificate: {e}",
                        ca.path
                    ))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or(String::new(), |e| format!(" ({e})"));
                return Err(InvalidUrl(format!(
                    "no system root certificates to verify Redis's TLS certificate{why}; \
                     set REDIS_CA_FILE"
                )));
            }
        }
    }
    Ok(roots)
}
