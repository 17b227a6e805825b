//! What imctl trusts for `wss://` and `https://` URLs: the CA bundle of
//! `--ca` (a private CA, or a test's), or else the system's roots. URLs
//! with `ws://` and `http://` stay in clear.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_tungstenite::Connector;
use tonic::transport::{Certificate, ClientTlsConfig};

/// A CA bundle read once, for every connection of the command.
#[derive(Clone)]
pub struct CaBundle {
    pem: Arc<Vec<u8>>,
    websocket: Arc<ClientConfig>,
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaBundle").field("bytes", &self.pem.len()).finish()
    }
}

impl CaBundle {
    /// The certificates of `path` (PEM); `--ca`'s value parser.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let pem = std::fs::read(path).with_context(|| format!("cannot read the CA file {}", path.display()))?;
        Self::from_pem(pem).with_context(|| format!("CA file {}", path.display()))
    }

    pub fn from_pem(pem: Vec<u8>) -> anyhow::Result<Self> {
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            roots.add(certificate.context("not a PEM certificate")?).context("not a usable CA certificate")?;
        }
        anyhow::ensure!(!roots.is_empty(), "no CERTIFICATE block in it");
        let provider = Arc::new(ring_provider());
        let websocket = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { pem: Arc::new(pem), websocket: Arc::new(websocket) })
    }
}

/// rustls's ring provider: the build has no aws-lc-rs (it needs cmake), and
/// ring is what tonic's and the KMS client's TLS use here too. Deprecated
/// in rustls 0.23.48 for its lack of post-quantum key exchange.
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The TLS settings of a gRPC channel to an `https://` URL.
pub fn grpc(ca: Option<&CaBundle>) -> ClientTlsConfig {
    match ca {
        Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem.as_ref())),
        None => ClientTlsConfig::new().with_native_roots(),
    }
}

/// The connector of a WebSocket: with `--ca`, one that trusts it; without,
/// tungstenite's own (the system's roots for `wss://`, clear for `ws://`).
pub fn websocket(ca: Option<&CaBundle>) -> Option<Connector> {
    ca.map(|ca| Connector::Rustls(ca.websocket.clone()))
}
