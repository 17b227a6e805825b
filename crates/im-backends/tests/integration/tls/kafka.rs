//! `kafka.security_protocol = ssl` against the shared broker (tansu at
//! 127.0.0.1:9092, plaintext only, `scripts/servers.sh`): the TLS handshake
//! never completes, so nothing gets through within the timeout. Proof that
//! the setting reaches librdkafka; the mapping itself is unit-tested in
//! `kafka::security`.

use std::time::Duration;

use im_backends::KafkaBus;
use im_config::{KafkaConfig, KafkaProducerConfig, KafkaSecurityProtocol};
use im_core::error::BackendError;

const BROKER: &str = "127.0.0.1:9092";

fn config(security_protocol: KafkaSecurityProtocol) -> KafkaConfig {
    KafkaConfig {
        brokers: vec![BROKER.to_owned()],
        producer: KafkaProducerConfig { timeout: Duration::from_secs(3), ..KafkaProducerConfig::default() },
        security_protocol,
        ..KafkaConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_against_a_plaintext_broker_does_not_connect() {
    // The same broker answers in plaintext: the failure below is TLS's.
    let plain = KafkaBus::new(&config(KafkaSecurityProtocol::Plaintext)).unwrap();
    plain.ping().await.unwrap_or_else(|e| panic!("the broker at {BROKER} ({e}); start it with scripts/servers.sh"));

    let ssl = KafkaBus::new(&config(KafkaSecurityProtocol::Ssl)).unwrap();
    let error = ssl.ping().await.expect_err("no TLS handshake with a plaintext broker");
    // The handshake fails (transport failure), or, on a slow machine, the
    // metadata request times out first: unavailable either way.
    let message = error.to_string();
    assert!(matches!(error, BackendError::Unavailable(_)), "{message}");
    assert!(message.contains("BrokerTransportFailure") || message.contains("TimedOut"), "{message}");
}
