//! How the bus reaches the brokers: `kafka.security_protocol`,
//! `kafka.ssl_ca_file` and the `kafka.sasl_*` settings as librdkafka
//! properties, set on the one base config every producer, consumer and
//! admin client of the bus is cloned from.
//!
//! Only what applies is set, so a plaintext config stays exactly as before.
//! With TLS, librdkafka verifies the chain (`enable.ssl.certificate.verification`)
//! and that the certificate names the broker (`ssl.endpoint.identification.algorithm=https`),
//! both its defaults; without `kafka.ssl_ca_file`, the statically built
//! OpenSSL probes the system's usual CA paths.
//!
//! The SASL password goes into the `ClientConfig` only: rdkafka leaves
//! `sasl.password` out of that type's `Debug`, and nothing here logs it.

use im_config::KafkaConfig;
use im_core::ports::BackendResult;
use rdkafka::ClientConfig;

use crate::tls::CaSetting;

/// Sets the security properties of `config` on `client`.
pub(super) fn apply(config: &KafkaConfig, client: &mut ClientConfig) -> BackendResult<()> {
    let protocol = config.security_protocol;
    client.set("security.protocol", protocol.as_str());
    if protocol.uses_tls()
        && let Some(ca) = &config.ssl_ca_file
    {
        // Read here for an error naming the setting; librdkafka reads the
        // path itself (when each client is created).
        CaSetting::KAFKA.read(ca)?;
        client.set("ssl.ca.location", ca.to_string_lossy());
    }
    if protocol.uses_sasl() {
        client
            .set("sasl.mechanism", config.sasl_mechanism.librdkafka_name())
            .set("sasl.username", &config.sasl_username)
            .set("sasl.password", config.sasl_password.expose());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use im_config::{KafkaSaslMechanism, KafkaSecurityProtocol};

    use super::*;

    const KEYS: [&str; 5] =
        ["security.protocol", "ssl.ca.location", "sasl.mechanism", "sasl.username", "sasl.password"];

    fn applied(config: &KafkaConfig) -> ClientConfig {
        let mut client = ClientConfig::new();
        apply(config, &mut client).unwrap();
        client
    }

    fn values(client: &ClientConfig) -> Vec<Option<&str>> {
        KEYS.iter().map(|key| client.get(key)).collect()
    }

    #[test]
    fn only_what_the_protocol_uses_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let ca_path = ca.to_str().unwrap();

        let plaintext = KafkaConfig::default();
        assert_eq!(values(&applied(&plaintext)), [Some("plaintext"), None, None, None, None]);

        let ssl = KafkaConfig {
            security_protocol: KafkaSecurityProtocol::Ssl,
            ssl_ca_file: Some(ca.clone()),
            ..KafkaConfig::default()
        };
        assert_eq!(values(&applied(&ssl)), [Some("ssl"), Some(ca_path), None, None, None]);
        let ssl_system_roots = KafkaConfig { ssl_ca_file: None, ..ssl };
        assert_eq!(values(&applied(&ssl_system_roots)), [Some("ssl"), None, None, None, None]);

        let sasl = KafkaConfig {
            security_protocol: KafkaSecurityProtocol::SaslPlaintext,
            sasl_mechanism: KafkaSaslMechanism::ScramSha512,
            sasl_username: "im".to_owned(),
            sasl_password: "hunter2-secret".into(),
            ..KafkaConfig::default()
        };
        assert_eq!(
            values(&applied(&sasl)),
            [Some("sasl_plaintext"), None, Some("SCRAM-SHA-512"), Some("im"), Some("hunter2-secret")]
        );

        let sasl_ssl = KafkaConfig {
            security_protocol: KafkaSecurityProtocol::SaslSsl,
            ssl_ca_file: Some(ca.clone()),
            sasl_mechanism: KafkaSaslMechanism::Plain,
            ..sasl
        };
        let client = applied(&sasl_ssl);
        assert_eq!(
            values(&client),
            [Some("sasl_ssl"), Some(ca_path), Some("PLAIN"), Some("im"), Some("hunter2-secret")]
        );
        // The password shows nowhere a log line could take it from.
        let shown = format!("{client:?} {sasl_ssl:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("sasl.username"), "{shown}");
    }

    #[test]
    fn an_unreadable_ca_names_the_setting() {
        let config = KafkaConfig {
            security_protocol: KafkaSecurityProtocol::Ssl,
            ssl_ca_file: Some("/nonexistent/kafka-ca.pem".into()),
            ..KafkaConfig::default()
        };
        let error = apply(&config, &mut ClientConfig::new()).unwrap_err().to_string();
        assert!(
            error.contains("kafka.ssl_ca_file (KAFKA_SSL_CA_FILE): cannot read /nonexistent/kafka-ca.pem"),
            "{error}"
        );
    }
}
