//! Connecting to etcd from `etcd.*` config: the one place that decides
//! plain or TLS, and how several members are used (`failover`), for every
//! client this module opens (the registry, the user status board, the node
//! claim).
//!
//! TLS follows the endpoints' scheme (`https://` on all or none of them, as
//! the config's validation demands): the endpoints are passed on as they are,
//! so the client keeps the scheme and speaks TLS to each. The certificate is
//! verified against `etcd.tls_ca_file`, or the system's roots without it,
//! and must name the endpoint's host (tonic takes the name from the URL).

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, TlsOptions};
use im_config::EtcdConfig;
use im_core::error::BackendError;
use im_core::ports::BackendResult;

use super::error::map_etcd;
use super::failover::FailoverChannel;
use crate::tls::CaSetting;

const HTTPS: &str = "https://";

/// The client options every connection starts from: TLS when the endpoints
/// say so. Callers add their timeouts.
pub(super) fn base_options(config: &EtcdConfig) -> BackendResult<ConnectOptions> {
    let options = ConnectOptions::new();
    Ok(match tls_options(config)? {
        Some(tls) => options.with_tls(tls),
        None => options,
    })
}

/// Connects to `config.endpoints` with `options` (from [`base_options`]),
/// through the [`FailoverChannel`]: one member at a time, the next one when
/// it fails or gives no answer within `timeout`.
pub(super) async fn connect(config: &EtcdConfig, options: ConnectOptions, timeout: Duration) -> BackendResult<Client> {
    if config.endpoints.is_empty() {
        return Err(BackendError::other("etcd.endpoints is empty"));
    }
    let mut client =
        Client::connect_with_balanced_channel(&config.endpoints, Some(options), FailoverChannel { timeout })
            .await
            .map_err(map_etcd)?;
    // Starts on a member that answers: each failed status request moves the
    // channel to the next member, so a member listed first that is down
    // does not fail the first real request (a process starting while one
    // member is down). When none answers, the first request says so.
    for _ in &config.endpoints {
        if let Ok(Ok(_)) = tokio::time::timeout(timeout, client.status()).await {
            break;
        }
    }
    Ok(client)
}

fn tls_options(config: &EtcdConfig) -> BackendResult<Option<TlsOptions>> {
    let secure = config.endpoints.iter().filter(|endpoint| endpoint.starts_with(HTTPS)).count();
    if secure == 0 {
        // The client refuses TLS options with `http://` endpoints, and would
        // speak TLS to scheme-less ones if given any.
        return Ok(None);
    }
    if secure != config.endpoints.len() {
        return Err(BackendError::other(
            "etcd.endpoints (ETCD_ENDPOINTS): https:// on some endpoints only; all or none must be https://",
        ));
    }
    // HTTP/2 is what gRPC speaks, whether or not the server names it in ALPN.
    let tls = TlsOptions::new().assume_http2(true);
    Ok(Some(match &config.tls_ca_file {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(CaSetting::ETCD.read(ca)?)),
        None => tls.with_native_roots(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoints: &[&str]) -> EtcdConfig {
        EtcdConfig { endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(), tls_ca_file: None }
    }

    #[test]
    fn tls_follows_the_scheme_of_the_endpoints() {
        assert!(tls_options(&config(&["http://a:2379", "b:2379"])).unwrap().is_none());
        assert!(tls_options(&config(&["https://a:2379", "https://b:2379"])).unwrap().is_some());
        let mixed = tls_options(&config(&["https://a:2379", "http://b:2379"])).unwrap_err().to_string();
        assert!(mixed.contains("etcd.endpoints (ETCD_ENDPOINTS)"), "{mixed}");
    }

    #[test]
    fn an_unreadable_ca_names_the_setting() {
        let config =
            EtcdConfig { tls_ca_file: Some("/nonexistent/etcd-ca.pem".into()), ..config(&["https://127.0.0.1:2379"]) };
        let error = base_options(&config).expect_err("no such file").to_string();
        assert!(error.contains("etcd.tls_ca_file (ETCD_TLS_CA_FILE): cannot read /nonexistent/etcd-ca.pem"), "{error}");
    }
}
