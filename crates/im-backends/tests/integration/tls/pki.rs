//! Test certificates and the servers that present them.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tempfile::TempDir;

/// A CA, a server certificate it signed, and a second CA that signed
/// nothing (for "wrong CA" cases), as PEM files in a temp dir.
pub struct Pki {
    pub dir: TempDir,
    /// The CA that signed `cert`.
    pub ca: PathBuf,
    /// A CA unrelated to `cert`.
    pub other_ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A server certificate for `names` (host names or IP addresses).
    pub fn new(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = ca("im test CA");
        let other_ca = ca_pem("im test other CA");
        let server_key = KeyPair::generate().expect("a key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).expect("names");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let cert = params.signed_by(&server_key, &ca).expect("a server certificate");

        let write = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };
        let ca_path = write("ca.pem", &ca.pem());
        let other_ca_path = write("other-ca.pem", &other_ca);
        let cert_path = write("server.pem", &cert.pem());
        let key_path = write("server-key.pem", &server_key.serialize_pem());
        Self { dir, ca: ca_path, other_ca: other_ca_path, cert: cert_path, key: key_path }
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key")).expect("a CA")
}

fn ca_pem(name: &str) -> String {
    ca(name).pem()
}

/// A server run as a child process, killed (`-9`) when dropped.
pub struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Runs `command` (its output into `log`) and waits until it listens on
    /// `port` of 127.0.0.1. Panics, with the log, when the binary is missing,
    /// exits, or does not listen within 20 s.
    pub fn start(name: &'static str, mut command: Command, log: &Path, port: u16) -> Self {
        let out = std::fs::File::create(log).expect("a log file");
        let err = out.try_clone().expect("a log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {name} ({e}): install it with scripts/servers.sh"));
        let mut server = Self { child, log: log.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{name} exited ({status}) before listening on {port}:\n{}", server.log());
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            if Instant::now() > deadline {
                panic!("{name} did not listen on 127.0.0.1:{port} within 20 s:\n{}", server.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
