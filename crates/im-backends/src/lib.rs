//! Implementations of the `im-core` ports, and the conformance suites that every
//! implementation of a port passes.
//!
//! - [`sqlite`]: [`SqliteStore`], the embedded durable store: messages, receipts,
//!   seq ceilings and users in one SQLite file (WAL, `synchronous=FULL`).
//! - [`memory`]: in-process backends: [`MemorySeqAllocator`], [`MemoryCeilingStore`],
//!   [`MemoryDedupCache`], [`MemoryBus`], [`MemoryRegistry`]. None of them is durable
//!   across a process restart; the allocator keeps G2 by reserving seqs in a
//!   durable [`CeilingStore`](im_core::ports::CeilingStore).
//! - [`conformance`]: one generic test suite per port, written only against the
//!   trait, and the macros that stamp a suite out as `#[tokio::test]`s for a backend.
//! - `batch` (private): in-batch duplicate resolution, shared by SQL stores.
//!
//! Production backends (MySQL, Redis, Kafka, etcd) come as sibling modules and
//! run the same suites.

mod batch;
pub mod conformance;
pub mod etcd;
pub mod kafka;
pub mod memory;
pub mod mysql;
pub mod redis;
pub mod sqlite;

pub use memory::{MemoryBus, MemoryCeilingStore, MemoryDedupCache, MemoryRegistry, MemorySeqAllocator};
pub use sqlite::SqliteStore;
