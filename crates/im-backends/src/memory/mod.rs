//! In-process backends: the embedded column of DESIGN.md §1, and the reference
//! implementations the conformance suites are first run against.
//!
//! - `seq`: [`MemorySeqAllocator`], counters in memory, ceilings in a durable
//!   [`CeilingStore`](im_core::ports::CeilingStore).
//! - `ceilings`: [`MemoryCeilingStore`], a ceiling store for tests only.
//! - `dedup`: [`MemoryDedupCache`], bounded by size and age.
//! - `bus`: [`MemoryBus`], topics and consumer groups.
//! - `registry`: [`MemoryRegistry`], user → gateways.
//! - `sharded`: a map split into independently locked shards.
//! - `user_status`: [`MemoryUserStatusBoard`], users' standing in process,
//!   and the table the etcd board shares.
//!
//! Nothing here survives a process restart. That is safe for the allocator
//! (it resumes above the stored ceiling) and for the dedup cache (the store's
//! unique key stands behind it); the bus and the registry are rebuilt by the
//! process that owns them.

mod bus;
mod ceilings;
mod dedup;
mod registry;
mod seq;
mod sharded;
pub(crate) mod user_status;

pub use bus::MemoryBus;
pub use ceilings::MemoryCeilingStore;
pub use dedup::MemoryDedupCache;
pub use registry::MemoryRegistry;
pub use seq::MemorySeqAllocator;
pub use user_status::MemoryUserStatusBoard;
