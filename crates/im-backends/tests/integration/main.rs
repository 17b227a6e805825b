//! The integration tests of im-backends, in one binary to keep link time down.
//!
//! - `fixtures`: fresh backends for the conformance suites.
//! - `conformance`: every suite stamped out for every embedded backend.
//! - `sqlite`: what only the SQLite store promises (durability across reopen).
//! - `properties`: the seq allocator and the dedup cache against trivial
//!   models, on random operation sequences.
//! - `tls`: TLS to MySQL, Redis, etcd and Kafka, against servers started with it.

mod conformance;
mod etcd;
mod fixtures;
mod kafka;
mod mysql;
mod properties;
mod redis;
mod sqlite;
mod tls;
