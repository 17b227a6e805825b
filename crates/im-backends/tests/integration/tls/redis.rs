//! `redis.tls` and `redis.tls_ca_file` against a `redis-server` of each
//! test with a TLS port only (`--port 0`): whatever connects spoke TLS.

use std::process::Command;
use std::time::Duration;

use im_backends::conformance::fixtures::{private, unique_name, users};
use im_backends::{RedisConnection, RedisDedupCache};
use im_config::RedisConfig;
use im_core::ports::DedupCache;
use im_core::{Ack, ClientMsgId, FirstSend, MessageId, RequestDigest, Seq, UserId};

use super::pki::{Pki, Server};
use crate::fixtures::free_port;

struct TlsRedis {
    port: u16,
    _server: Server,
    pki: Pki,
}

impl TlsRedis {
    fn start() -> Self {
        let pki = Pki::new(&["localhost", "127.0.0.1"]);
        let port = free_port();
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&pki.cert)
            .arg("--tls-key-file")
            .arg(&pki.key)
            // Redis wants a CA even when it asks clients for no certificate.
            .arg("--tls-ca-cert-file")
            .arg(&pki.ca)
            .args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(pki.dir.path());
        let server = Server::start("redis-server", command, &pki.dir.path().join("redis.log"), port);
        Self { port, _server: server, pki }
    }

    fn config(&self, host: &str, ca: &std::path::Path) -> RedisConfig {
        RedisConfig {
            addr: format!("{host}:{}", self.port),
            dial_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            tls: true,
            tls_ca_file: Some(ca.to_owned()),
            ..RedisConfig::default()
        }
    }
}

fn first_send(a: UserId, b: UserId) -> FirstSend {
    let ack = Ack {
        msg_id: MessageId(70),
        conversation: private(a, b),
        seq: Seq(7),
        server_time_ms: 1007,
        body_masked: false,
    };
    FirstSend { ack, digest: Some(RequestDigest(7)) }
}

#[tokio::test]
async fn the_dedup_cache_works_over_tls_verified_against_the_ca() {
    let server = TlsRedis::start();
    for host in ["127.0.0.1", "localhost"] {
        let redis = RedisConnection::open(&server.config(host, &server.pki.ca)).unwrap();
        redis.ping().await.unwrap_or_else(|e| panic!("PING over TLS at {host}: {e}"));
        let dedup = RedisDedupCache::new(redis, Duration::from_secs(60), unique_name("tls"));
        let [a, b] = users();
        let key = ClientMsgId::parse("tls-1").unwrap();
        let first = first_send(a, b);
        assert_eq!(dedup.put_if_absent(a, &key, first).await.unwrap(), first);
        assert_eq!(dedup.get(a, &key).await.unwrap(), Some(first));
    }
}

#[tokio::test]
async fn a_wrong_ca_or_a_missing_one_fails_with_a_clear_error() {
    let server = TlsRedis::start();
    let redis = RedisConnection::open(&server.config("127.0.0.1", &server.pki.other_ca)).unwrap();
    let error = redis.ping().await.expect_err("a certificate from another CA is refused").to_string();
    assert!(error.contains("(TLS)") && error.contains("UnknownIssuer"), "{error}");

    let missing = server.pki.dir.path().join("missing.pem");
    let error = RedisConnection::open(&server.config("127.0.0.1", &missing)).expect_err("no CA file").to_string();
    assert!(error.contains("redis.tls_ca_file (REDIS_TLS_CA_FILE): cannot read"), "{error}");
}
