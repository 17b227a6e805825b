//! TLS on the listeners (`tls.cert_file`, `tls.key_file`): one certificate
//! for every listener of the process, renewed without a restart
//! ([`certificate`]), and the handshake run inside each connection
//! ([`transport`]). HTTP/1 listeners (WebSocket, probes, metrics) offer
//! ALPN `http/1.1`, gRPC listeners `h2`, as gRPC clients require.

pub mod certificate;
pub mod client;
pub mod transport;

use std::sync::{Arc, Weak};
use std::time::Duration;

use im_config::TlsConfig;
use prometheus_client::metrics::counter::Counter;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

pub use certificate::{CertificateFiles, Reload, ReloadingCertificate};
pub use client::CallTls;
pub use transport::Transport;

/// rustls's ring provider: the build has no aws-lc-rs (it needs cmake), and
/// ring is what tonic's and the KMS client's TLS use here too. Deprecated
/// in rustls 0.23.48 for its lack of post-quantum key exchange.
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Reads the certificate pair and the CA bundle the way the process will,
/// so a bad file stops it before anything starts (exit 2, as any other bad
/// setting), not after its stores and consumers are up.
pub fn preflight(tls: &TlsConfig) -> anyhow::Result<()> {
    ServerTls::from_config(tls)?;
    CallTls::from_config(tls)?;
    Ok(())
}

/// The TLS side of this process's listeners.
pub struct ServerTls {
    certificate: Arc<ReloadingCertificate>,
    http1: TlsAcceptor,
    grpc: TlsAcceptor,
}

/// Counters of the reloads, for `/metrics`.
#[derive(Clone, Default)]
pub struct ReloadMetrics {
    pub replaced: Counter,
    pub failed: Counter,
}

impl ServerTls {
    /// The listeners' TLS, when `tls` configures a certificate; an
    /// unreadable or mismatched pair is an error (the process does not
    /// start half-secured).
    pub fn from_config(tls: &TlsConfig) -> anyhow::Result<Option<Arc<Self>>> {
        let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) else { return Ok(None) };
        let files = CertificateFiles { cert: cert.clone(), key: key.clone() };
        Ok(Some(Arc::new(Self::new(ReloadingCertificate::load(files)?)?)))
    }

    fn new(certificate: ReloadingCertificate) -> anyhow::Result<Self> {
        let certificate = Arc::new(certificate);
        let config = |alpn: &[u8]| -> anyhow::Result<TlsAcceptor> {
            let provider = Arc::new(ring_provider());
            let mut config = ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(certificate.clone());
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        Ok(Self { http1: config(b"http/1.1")?, grpc: config(b"h2")?, certificate: certificate.clone() })
    }

    pub fn http1(&self) -> &TlsAcceptor {
        &self.http1
    }

    pub fn grpc(&self) -> &TlsAcceptor {
        &self.grpc
    }

    /// Reads the files again every `interval` while anyone holds `this`.
    pub fn spawn_reloads(this: &Arc<Self>, interval: Duration, metrics: ReloadMetrics) {
        let weak: Weak<Self> = Arc::downgrade(this);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(tls) = weak.upgrade() else { return };
                let certificate = tls.certificate.clone();
                drop(tls);
                match tokio::task::spawn_blocking(move || certificate.reload()).await {
                    Ok(Ok(Reload::Unchanged)) => {}
                    Ok(Ok(Reload::Replaced)) => {
                        metrics.replaced.inc();
                        tracing::info!("TLS certificate reloaded: new connections get the new one");
                    }
                    Ok(Err(error)) => {
                        metrics.failed.inc();
                        tracing::error!("TLS certificate not reloaded, the one in service stays: {error:#}");
                    }
                    Err(join) => tracing::error!(error = %join, "TLS certificate reload failed"),
                }
            }
        });
    }
}
