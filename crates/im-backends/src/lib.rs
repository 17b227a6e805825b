//! Implementations of the `im-core` ports, and the conformance suites that every
//! implementation of a port passes.
//!
//! - [`sqlite`]: [`SqliteStore`], the embedded durable store: messages (with
//!   the filter's audit records), receipts, seq ceilings, users, groups and the
//!   wrapped data keys of encryption at rest in one SQLite file (WAL,
//!   `synchronous=FULL`).
//! - [`mysql`]: [`MysqlStore`], the production durable store: the same ports,
//!   tables and keys in MySQL 8 or MariaDB 10.11 (InnoDB, one transaction per batch).
//! - [`memory`]: in-process backends: [`MemorySeqAllocator`], [`MemoryCeilingStore`],
//!   [`MemoryDedupCache`], [`MemoryBus`], [`MemoryRegistry`]. None of them is durable
//!   across a process restart; the allocator keeps G2 by reserving seqs in a
//!   durable [`CeilingStore`](im_core::ports::CeilingStore).
//! - [`conformance`]: one generic test suite per port, written only against the
//!   trait, and the macros that stamp a suite out as `#[tokio::test]`s for a backend.
//! - [`redis`]: [`RedisSeqAllocator`] (counters in Redis under the durable
//!   ceilings and an allocator epoch, shared by every node) and
//!   [`RedisDedupCache`], over one [`RedisConnection`].
//! - [`kafka`]: [`KafkaBus`], the production bus: an idempotent producer
//!   (`acks=all`), and a [`KafkaConsumer`] per subscription in a consumer group
//!   with manual commits and a lag probe.
//! - [`etcd`]: [`EtcdRegistry`], the production registry: registrations under
//!   one lease per process, lookups from a local cache kept by a watch.
//! - `batch` (private): in-batch duplicate resolution, shared by SQL stores.
//! - `sql` (private): what the SQL stores share: multi-row statements, and
//!   the rules and steps of group changes.
//! - `tls` (private): the CA bundles of TLS to MySQL, Redis, etcd and Kafka,
//!   read and checked the same way, errors naming the setting.

mod batch;
pub mod conformance;
pub mod etcd;
pub mod kafka;
pub mod memory;
pub mod mysql;
pub mod redis;
mod sql;
pub mod sqlite;
pub mod telemetry;
mod tls;

pub use self::redis::{RedisConnection, RedisDedupCache, RedisSeqAllocator};
pub use etcd::{EtcdRegistry, EtcdRegistryOptions};
pub use kafka::{KafkaBus, KafkaConsumer};
pub use memory::{MemoryBus, MemoryCeilingStore, MemoryDedupCache, MemoryRegistry, MemorySeqAllocator};
pub use mysql::MysqlStore;
pub use sqlite::SqliteStore;
