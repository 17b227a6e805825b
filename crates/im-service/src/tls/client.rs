//! TLS on the calls between the services (`tls.ca_file`,
//! `tls.server_name`): a gateway to its node, a node to the gateways' push
//! API and to the user service. In a deployment that serves TLS every
//! service does, so a process that serves it also calls with it.

use std::sync::Arc;

use anyhow::Context;
use im_config::TlsConfig;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// How this process calls the other services: in clear, or TLS trusting
/// `tls.ca_file` (else the system's roots).
#[derive(Clone, Debug, Default)]
pub struct CallTls(Option<Arc<ClientTlsConfig>>);

impl CallTls {
    /// Clear text.
    pub fn none() -> Self {
        Self(None)
    }

    pub fn from_config(tls: &TlsConfig) -> anyhow::Result<Self> {
        if !tls.calls_use_tls() {
            return Ok(Self::none());
        }
        let mut config = ClientTlsConfig::new();
        config = match &tls.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("tls.ca_file (TLS_CA_FILE): cannot read {}", path.display()))?;
                config.ca_certificate(Certificate::from_pem(pem))
            }
            None => config.with_native_roots(),
        };
        if !tls.server_name.is_empty() {
            config = config.domain_name(tls.server_name.clone());
        }
        Ok(Self(Some(Arc::new(config))))
    }

    /// The URL scheme of a call.
    pub fn scheme(&self) -> &'static str {
        if self.0.is_some() { "https" } else { "http" }
    }

    /// `endpoint` speaking TLS when this process calls with it.
    pub fn apply(&self, endpoint: Endpoint) -> Result<Endpoint, tonic::transport::Error> {
        match &self.0 {
            Some(config) => endpoint.tls_config(config.as_ref().clone()),
            None => Ok(endpoint),
        }
    }
}
