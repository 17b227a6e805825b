//! TLS from the backends' clients to MySQL, Redis, etcd and Kafka
//! (`database.tls_*`, `redis.tls*`, `etcd` `https://` endpoints and
//! `etcd.tls_ca_file`, `kafka.security_protocol`/`ssl_ca_file`).
//!
//! The shared servers of `scripts/servers.sh` speak plain TCP, so each
//! positive case starts a server of its own with TLS: `mariadbd`,
//! `redis-server` or `etcd` as a child process in a temp dir, on a free port,
//! with a CA and server certificate made here (`pki`). A missing binary or a
//! server that does not come up fails the test: nothing is skipped.
//!
//! - `pki`: the certificates, and [`pki::Server`], a child process killed on drop.
//! - `mysql`: `required` against the shared server without TLS fails,
//!   `preferred` connects; every mode against a private TLS server.
//! - `redis`: the dedup cache over TLS; a wrong CA fails naming the certificate.
//! - `etcd`: the registry over `https://`; a wrong CA fails.
//! - `kafka`: `ssl` against the plaintext broker never gets through.

mod etcd;
mod kafka;
mod mysql;
mod pki;
mod redis;
