//! TLS on the listeners (`TLS_CERT_FILE`, `TLS_KEY_FILE`) with certificates
//! made here (`rcgen`), against the real binaries, through imctl's own
//! clients with `--ca` (wss:// and https:// gRPC):
//!
//! - a standalone node serves wss, gRPC and its probes over TLS only: a
//!   client in clear, or one that does not trust the CA, gets nothing;
//! - a renewed pair is served to new connections within a reload interval,
//!   while open connections go on; a broken pair is refused and the one in
//!   service stays;
//! - a production cluster (im-user, two nodes, two gateways) speaks TLS on
//!   every hop: gateway to node, node to the gateways' push API, node and
//!   gateway to im-user.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use imctl::admin::{Admin, resolve_admin_token};
use imctl::client::{Client, ConnectOptions, Event, Events, Recipient};
use imctl::tls::CaBundle;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::harness::{ClusterBuilder, unique};
use crate::support::{Node, http_get, http_get_with, metric_with};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A CA and the server certificate it signed for localhost and 127.0.0.1,
/// written to `dir` as `{prefix}-ca.pem`, `{prefix}.crt`, `{prefix}.key`.
struct Issued {
    ca: PathBuf,
    cert: String,
    key: String,
}

fn issue(dir: &Path, prefix: &str) -> Issued {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, format!("{prefix} CA"));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca).unwrap();
    let ca_path = dir.join(format!("{prefix}-ca.pem"));
    std::fs::write(&ca_path, ca.pem()).unwrap();
    Issued { ca: ca_path, cert: cert.pem(), key: key.serialize_pem() }
}

/// The listener files a process is configured with.
struct Served {
    cert: PathBuf,
    key: PathBuf,
}

impl Served {
    fn install(dir: &Path, issued: &Issued) -> Self {
        let served = Self { cert: dir.join("tls.crt"), key: dir.join("tls.key") };
        served.replace(issued);
        served
    }

    /// Writes the pair as a renewal does: each file replaced whole.
    fn replace(&self, issued: &Issued) {
        for (path, pem) in [(&self.cert, &issued.cert), (&self.key, &issued.key)] {
            let next = path.with_extension("next");
            std::fs::write(&next, pem).unwrap();
            std::fs::rename(&next, path).unwrap();
        }
    }

    fn env(&self, ca: &Path) -> Vec<(String, String)> {
        let path = |p: &Path| p.display().to_string();
        vec![
            ("TLS_CERT_FILE".to_owned(), path(&self.cert)),
            ("TLS_KEY_FILE".to_owned(), path(&self.key)),
            ("TLS_CA_FILE".to_owned(), path(ca)),
            ("TLS_RELOAD_INTERVAL".to_owned(), "300ms".to_owned()),
        ]
    }
}

fn ca_bundle(path: &Path) -> CaBundle {
    CaBundle::load(path).unwrap()
}

/// A connection as a new device: a device that connects again replaces
/// its older connection.
async fn connect(url: &str, token: &str, ca: Option<&CaBundle>) -> anyhow::Result<(Client, Events)> {
    static DEVICES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let device = DEVICES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let options = ConnectOptions {
        url: url.to_owned(),
        token: token.to_owned(),
        device: Some(format!("tls-{device}")),
        timeout: TIMEOUT,
        ca: ca.cloned(),
    };
    Client::connect(&options).await
}

async fn admin(url: &str, data_dir: &Path, ca: Option<&CaBundle>) -> anyhow::Result<Admin> {
    Admin::connect(url, resolve_admin_token(None, None, data_dir)?, TIMEOUT, ca).await
}

/// Sends `text` from `sender` to `to` and waits for `receiver` to be pushed it.
async fn exchange(sender: &Client, to: u64, receiver: &mut Events, text: &str) {
    let body = Bytes::from(text.to_owned());
    let ack = sender
        .send(Recipient::User(to).message(imctl::client::random_client_msg_id(), body.clone(), String::new()))
        .await
        .expect("the send is acked");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, receiver.recv()).await {
            Ok(Some(Event::Message(message))) if message.seq == ack.seq => {
                assert_eq!(message.body, body);
                return;
            }
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the receiver's connection closed"),
            Err(_) => panic!("{text:?} was not pushed within {TIMEOUT:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_node_serves_only_tls_and_renews_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first = issue(dir.path(), "first");
    let served = Served::install(dir.path(), &first);
    let env = served.env(&first.ca);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let node = Node::start_with(&dir.path().join("data"), &env).await;
    let trusted = ca_bundle(&first.ca);
    let (grpc, ws) = (format!("https://localhost:{}", node.grpc_port), format!("wss://localhost:{}/ws", node.ws_port));

    // gRPC over TLS: the admin creates two users.
    let mut users = admin(&grpc, &node.data_dir, Some(&trusted)).await.expect("admin over TLS");
    let alice = users.create_user("alice").await.unwrap();
    let bob = users.create_user("bob").await.unwrap();
    let (alice_id, bob_id) = (alice.user.unwrap().id, bob.user.unwrap().id);

    // wss: a message goes from alice to bob, both over TLS.
    let (alice_client, _alice_events) = connect(&ws, &alice.token, Some(&trusted)).await.expect("wss for alice");
    let (_bob_client, mut bob_events) = connect(&ws, &bob.token, Some(&trusted)).await.expect("wss for bob");
    exchange(&alice_client, bob_id, &mut bob_events, "over tls").await;

    // Nothing in clear, nothing for a client that does not trust the CA.
    let failures = "im_tls_handshake_failures_total ";
    let before = metric_with(node.http_port, failures, Some(&first.ca)).await;
    assert!(connect(&format!("ws://localhost:{}/ws", node.ws_port), &alice.token, None).await.is_err());
    assert!(connect(&ws, &alice.token, None).await.is_err(), "the system's roots do not hold the test CA");
    let refused_in_clear = match admin(&format!("http://localhost:{}", node.grpc_port), &node.data_dir, None).await {
        // The channel may connect its socket; the first call fails.
        Ok(mut clear) => clear.create_user("eve").await.is_err(),
        Err(_) => true,
    };
    assert!(refused_in_clear, "a gRPC call in clear is refused");
    assert!(http_get(node.http_port, "/health").await.map(|(status, _)| status).unwrap_or(0) != 200);
    let after = metric_with(node.http_port, failures, Some(&first.ca)).await;
    assert!(after >= before + 3.0, "refused handshakes are counted: {before} then {after}");

    // A renewal from another CA: new connections get it within a reload
    // interval; the connections already open go on.
    let second = issue(dir.path(), "second");
    served.replace(&second);
    let renewed = ca_bundle(&second.ca);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (bob_renewed, _bob_renewed_events) = loop {
        match connect(&ws, &bob.token, Some(&renewed)).await {
            Ok(connected) => break connected,
            Err(error) => {
                assert!(Instant::now() < deadline, "the renewed certificate is not served after 5 s: {error:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // A fresh client (no session to resume) trusting the first CA only.
    let first_only = ca_bundle(&first.ca);
    assert!(connect(&ws, &alice.token, Some(&first_only)).await.is_err(), "the old certificate is gone");
    exchange(&alice_client, bob_id, &mut bob_events, "still open").await;
    let (_alice_again, mut alice_events) = connect(&ws, &alice.token, Some(&renewed)).await.unwrap();
    exchange(&bob_renewed, alice_id, &mut alice_events, "new").await;
    let reloads = metric_with(node.http_port, "im_tls_certificate_reloads_total ", Some(&second.ca)).await;
    assert_eq!(reloads, 1.0);

    // A broken pair (the first certificate with the second key) is refused:
    // the renewed pair stays in service, and the failure is counted.
    std::fs::write(&served.cert, &first.cert).unwrap();
    let failed = "im_tls_certificate_reload_failures_total ";
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric_with(node.http_port, failed, Some(&second.ca)).await < 1.0 {
        assert!(Instant::now() < deadline, "the mismatched pair was not noticed within 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    connect(&ws, &bob.token, Some(&renewed)).await.expect("the pair in service stays");
    assert_eq!(http_get_with(node.http_port, "/ready", Some(&second.ca)).await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hop_of_a_production_cluster_speaks_tls() {
    let dir = tempfile::tempdir().unwrap();
    let issued = issue(dir.path(), "cluster");
    let served = Served::install(dir.path(), &issued);
    let mut builder = ClusterBuilder::new();
    for (key, value) in served.env(&issued.ca) {
        builder = builder.env_all(&key, value);
    }
    // Every process serves TLS only: a call in clear anywhere would fail.
    let cluster = builder.start().await;
    let ca = ca_bundle(&issued.ca);

    let (user_addr, admin_token) = cluster.user_service();
    let token = resolve_admin_token(Some(admin_token), None, dir.path()).unwrap();
    let mut users = Admin::connect(&format!("https://{user_addr}"), token, TIMEOUT, Some(&ca)).await.unwrap();
    let alice = users.create_user(&unique("alice")).await.expect("im-user over TLS");
    let bob = users.create_user(&unique("bob")).await.unwrap();
    let bob_id = bob.user.unwrap().id;

    // Alice on gateway 1 (node 1), Bob on gateway 2 (node 2): gateway to
    // node, node to im-user (is Bob a user?), node to Bob's gateway's push API.
    let wss = |gateway: usize| cluster.ws_url(gateway).replacen("ws://", "wss://", 1);
    let (alice_client, _alice_events) = connect(&wss(0), &alice.token, Some(&ca)).await.expect("wss, gateway 1");
    let (_bob_client, mut bob_events) = connect(&wss(1), &bob.token, Some(&ca)).await.expect("wss, gateway 2");
    exchange(&alice_client, bob_id, &mut bob_events, "across the cluster").await;

    // A group through node 1's group API: node to im-user's group directory.
    let node = format!("https://127.0.0.1:{}", cluster.node_grpc_port(0));
    let channel = imctl::grpc::channel(&node, TIMEOUT, Some(&ca), "IM service").await.unwrap();
    let mut groups = imctl::group::GroupApi::on(channel, &alice.token).unwrap();
    let roster = groups.create_group("tls", vec![bob_id], false).await.expect("a group over TLS");
    let group = roster.group.expect("the group").id;
    let ack = alice_client
        .send(Recipient::Group(group).message(imctl::client::random_client_msg_id(), "team".into(), String::new()))
        .await
        .expect("a group send");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, bob_events.recv()).await.expect("the group message is pushed to Bob") {
            Some(Event::Message(message))
                if message.seq == ack.seq && message.conversation_id == format!("g:{group}") =>
            {
                break;
            }
            Some(_) => continue,
            None => panic!("Bob's connection closed"),
        }
    }
}
