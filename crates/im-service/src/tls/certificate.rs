//! The listeners' certificate: read from `tls.cert_file` and `tls.key_file`,
//! and read again every `tls.reload_interval`, so a renewed pair (a
//! cert-manager secret, a certbot renewal) is served to new connections
//! without a restart.
//!
//! The files are polled rather than watched: the pair changes in two writes
//! (or two swapped links), and between them the certificate and the key do
//! not match. A poll that finds them mismatched, or unreadable, keeps the
//! pair in service, counts the failure, logs it, and tries again at the next
//! interval, by which time the second write has landed.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use parking_lot::RwLock;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where the pair is read from.
#[derive(Clone, Debug)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertificateFiles {
    /// The files as they are now, and a fingerprint of their bytes (to tell
    /// a change without keeping a second copy of the key).
    fn read(&self) -> anyhow::Result<(Vec<u8>, Vec<u8>, u64)> {
        let cert = read(&self.cert, "tls.cert_file (TLS_CERT_FILE)")?;
        let key = read(&self.key, "tls.key_file (TLS_KEY_FILE)")?;
        let mut hasher = DefaultHasher::new();
        (&cert, &key).hash(&mut hasher);
        Ok((cert, key, hasher.finish()))
    }
}

fn read(path: &Path, key: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{key}: cannot read {}", path.display()))
}

/// The certificate chain and key in `cert` and `key` (PEM), checked to
/// belong together.
pub fn certified_key(cert: &[u8], key: &[u8]) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("tls.cert_file (TLS_CERT_FILE): not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        anyhow::bail!("tls.cert_file (TLS_CERT_FILE): no CERTIFICATE block in the file");
    }
    // The error never quotes the key: only what kind of problem it has.
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| anyhow::anyhow!("tls.key_file (TLS_KEY_FILE): not a PEM private key: {e}"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow::anyhow!("tls.key_file (TLS_KEY_FILE): unsupported key: {e}"))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        anyhow::anyhow!("tls.key_file (TLS_KEY_FILE) is not the key of tls.cert_file (TLS_CERT_FILE): {e}")
    })?;
    Ok(certified)
}

/// What a reload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files are as they were.
    Unchanged,
    /// A new pair is in service.
    Replaced,
}

/// The pair in service, for every handshake of every listener.
#[derive(Debug)]
pub struct ReloadingCertificate {
    files: CertificateFiles,
    current: RwLock<(Arc<CertifiedKey>, u64)>,
}

impl ReloadingCertificate {
    /// Reads the pair; an error here stops the process from starting.
    pub fn load(files: CertificateFiles) -> anyhow::Result<Self> {
        let (cert, key, fingerprint) = files.read()?;
        let certified = certified_key(&cert, &key)?;
        Ok(Self { files, current: RwLock::new((Arc::new(certified), fingerprint)) })
    }

    /// Reads the files again and puts a changed pair in service. On an
    /// error the pair in service stays.
    pub fn reload(&self) -> anyhow::Result<Reload> {
        let (cert, key, fingerprint) = self.files.read()?;
        if self.current.read().1 == fingerprint {
            return Ok(Reload::Unchanged);
        }
        let certified = certified_key(&cert, &key)?;
        *self.current.write() = (Arc::new(certified), fingerprint);
        Ok(Reload::Replaced)
    }

    /// The pair served to the next handshake.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().0.clone()
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    /// A self-signed certificate for localhost and its key, as PEM.
    fn pair() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn files(dir: &Path, (cert, key): &(String, String)) -> CertificateFiles {
        let files = CertificateFiles { cert: dir.join("tls.crt"), key: dir.join("tls.key") };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        files
    }

    #[test]
    fn a_pair_must_be_readable_pem_and_belong_together() {
        let (first, second) = (pair(), pair());
        assert!(certified_key(first.0.as_bytes(), first.1.as_bytes()).is_ok());

        let mismatched = certified_key(first.0.as_bytes(), second.1.as_bytes()).unwrap_err().to_string();
        assert!(mismatched.contains("TLS_KEY_FILE") && mismatched.contains("TLS_CERT_FILE"), "{mismatched}");
        let no_cert = certified_key(first.1.as_bytes(), first.1.as_bytes()).unwrap_err().to_string();
        assert!(no_cert.contains("no CERTIFICATE"), "{no_cert}");
        let no_key = certified_key(first.0.as_bytes(), b"not a key").unwrap_err().to_string();
        assert!(no_key.contains("TLS_KEY_FILE") && !no_key.contains("not a key"), "{no_key}");

        let dir = tempfile::tempdir().unwrap();
        let missing = CertificateFiles { cert: dir.path().join("absent.crt"), key: dir.path().join("absent.key") };
        let error = ReloadingCertificate::load(missing).unwrap_err().to_string();
        assert!(error.contains("TLS_CERT_FILE") && error.contains("absent.crt"), "{error}");
    }

    #[test]
    fn a_reload_replaces_a_changed_pair_and_keeps_the_one_in_service_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (pair(), pair());
        let certificate = ReloadingCertificate::load(files(dir.path(), &first)).unwrap();
        let served_first = certificate.current();
        assert_eq!(certificate.reload().unwrap(), Reload::Unchanged);
        assert!(Arc::ptr_eq(&certificate.current(), &served_first));

        // Half a renewal: the new certificate with the old key.
        std::fs::write(&certificate.files.cert, &second.0).unwrap();
        assert!(certificate.reload().is_err());
        assert!(Arc::ptr_eq(&certificate.current(), &served_first), "the pair in service stays");

        std::fs::write(&certificate.files.key, &second.1).unwrap();
        assert_eq!(certificate.reload().unwrap(), Reload::Replaced);
        let served_second = certificate.current();
        assert_ne!(served_second.cert, served_first.cert);
        assert_eq!(
            served_second.cert[0].as_ref(),
            CertificateDer::from_pem_slice(second.0.as_bytes()).unwrap().as_ref()
        );
    }
}
