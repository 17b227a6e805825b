//! The CA bundles of TLS to the dependencies (`database.tls_ca_file`,
//! `redis.tls_ca_file`, `etcd.tls_ca_file`, `kafka.ssl_ca_file`), checked
//! the same way for every client.
//!
//! Each client library reports a missing or malformed bundle in its own
//! words, late (at the first connection) and without naming our setting; so
//! the file is read here first, and a failure names the setting and its
//! environment variable.

use std::path::Path;

use im_core::error::BackendError;
use im_core::ports::BackendResult;

/// What opens every certificate in a PEM bundle.
const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";

/// A setting that names a CA bundle, as the operator knows it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CaSetting {
    /// The config key, e.g. `redis.tls_ca_file`.
    pub key: &'static str,
    /// Its environment variable, e.g. `REDIS_TLS_CA_FILE`.
    pub env: &'static str,
}

impl CaSetting {
    pub(crate) const DATABASE: Self = Self { key: "database.tls_ca_file", env: "DB_TLS_CA_FILE" };
    pub(crate) const REDIS: Self = Self { key: "redis.tls_ca_file", env: "REDIS_TLS_CA_FILE" };
    pub(crate) const ETCD: Self = Self { key: "etcd.tls_ca_file", env: "ETCD_TLS_CA_FILE" };
    pub(crate) const KAFKA: Self = Self { key: "kafka.ssl_ca_file", env: "KAFKA_SSL_CA_FILE" };

    /// An error about this setting: `redis.tls_ca_file (REDIS_TLS_CA_FILE): …`.
    pub(crate) fn error(self, why: impl std::fmt::Display) -> BackendError {
        BackendError::other(format!("{} ({}): {why}", self.key, self.env))
    }

    /// The bundle's bytes, if the file can be read and holds at least one
    /// PEM certificate. (Whether each certificate parses is left to the TLS
    /// library; a bundle of only garbage is what this catches, e.g. a key
    /// file given by mistake.)
    pub(crate) fn read(self, path: &Path) -> BackendResult<Vec<u8>> {
        let pem = std::fs::read(path).map_err(|e| self.error(format!("cannot read {}: {e}", path.display())))?;
        if !contains(&pem, PEM_CERTIFICATE.as_bytes()) {
            return Err(self.error(format!("{} holds no PEM certificate ({PEM_CERTIFICATE})", path.display())));
        }
        Ok(pem)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_must_be_readable_and_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = CaSetting::REDIS.read(&missing).unwrap_err().to_string();
        assert!(error.contains("redis.tls_ca_file (REDIS_TLS_CA_FILE): cannot read"), "{error}");
        assert!(error.contains("missing.pem"), "{error}");

        let key = dir.path().join("key.pem");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
        let error = CaSetting::ETCD.read(&key).unwrap_err().to_string();
        assert!(error.contains("etcd.tls_ca_file (ETCD_TLS_CA_FILE)"), "{error}");
        assert!(error.contains("holds no PEM certificate"), "{error}");

        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        assert!(CaSetting::DATABASE.read(&ca).is_ok());
    }
}
