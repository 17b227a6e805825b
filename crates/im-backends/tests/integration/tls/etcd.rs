//! `https://` etcd endpoints and `etcd.tls_ca_file`, against an `etcd` of
//! each test that serves clients over TLS only.

use std::process::Command;
use std::time::Duration;

use im_backends::conformance::fixtures::{unique_name, users};
use im_backends::etcd::{EtcdRegistry, EtcdRegistryOptions, NodeClaim};
use im_config::EtcdConfig;
use im_core::GatewayId;
use im_core::ports::Registry;

use super::pki::{Pki, Server};
use crate::fixtures::free_port;

struct TlsEtcd {
    endpoint: String,
    _server: Server,
    pki: Pki,
}

impl TlsEtcd {
    fn start() -> Self {
        let pki = Pki::new(&["localhost", "127.0.0.1"]);
        let (port, peer_port) = (free_port(), free_port());
        let client_url = format!("https://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut command = Command::new("etcd");
        command
            .args(["--name", "tls-test", "--data-dir"])
            .arg(pki.dir.path().join("etcd"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .arg("--cert-file")
            .arg(&pki.cert)
            .arg("--key-file")
            .arg(&pki.key)
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("tls-test={peer_url}")]);
        let server = Server::start("etcd", command, &pki.dir.path().join("etcd.log"), port);
        Self { endpoint: client_url, _server: server, pki }
    }

    fn config(&self, ca: &std::path::Path) -> EtcdConfig {
        EtcdConfig { endpoints: vec![self.endpoint.clone()], tls_ca_file: Some(ca.to_owned()) }
    }
}

fn options(prefix: &str) -> EtcdRegistryOptions {
    EtcdRegistryOptions {
        prefix: prefix.to_owned(),
        lease_ttl: Duration::from_secs(10),
        // A fresh single-member cluster elects itself within about a second.
        request_timeout: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_and_the_node_claim_work_over_tls() {
    let server = TlsEtcd::start();
    let config = server.config(&server.pki.ca);
    let prefix = format!("/im-tls/{}", unique_name("registry"));
    let registering = EtcdRegistry::connect(&config, options(&prefix))
        .await
        .unwrap_or_else(|e| panic!("etcd over TLS at {}: {e}\n{}", server.endpoint, server._server.log()));
    let [user] = users();
    let gateway = GatewayId(unique_name("gw"));
    registering.register(user, &gateway).await.unwrap();
    // A second client finds it in etcd (its first listing), not in a cache.
    let reading = EtcdRegistry::connect(&config, options(&prefix)).await.unwrap();
    assert_eq!(reading.gateways_of(user), vec![gateway]);

    let claim = NodeClaim::acquire(&config, &prefix, 3, Duration::from_secs(5), Duration::from_secs(5))
        .await
        .expect("the node claim connects with the same TLS settings");
    claim.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let server = TlsEtcd::start();
    let options = EtcdRegistryOptions { request_timeout: Duration::from_secs(3), ..options("/im-tls/refused") };
    let error = EtcdRegistry::connect(&server.config(&server.pki.other_ca), options)
        .await
        .err()
        .expect("the server's certificate does not chain to the CA given");
    let message = error.to_string();
    assert!(message.contains("invalid peer certificate: UnknownIssuer"), "{message}");
}
