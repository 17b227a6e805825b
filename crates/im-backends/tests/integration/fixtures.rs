//! Fresh backends, each with what must outlive it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use im_backends::conformance::SeqAllocatorHarness;
use im_backends::{MemoryBus, MemoryCeilingStore, MemoryDedupCache, MemoryRegistry, MemorySeqAllocator, SqliteStore};
use im_core::ports::{BackendResult, CeilingStore, SeqAllocator};
use tempfile::TempDir;

/// A store in a new temp dir, removed when the dir guard drops.
pub async fn sqlite() -> (Arc<SqliteStore>, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("im.db")).await.expect("open the SQLite store");
    (Arc::new(store), dir)
}

pub async fn memory_ceilings() -> (Arc<MemoryCeilingStore>, ()) {
    (Arc::new(MemoryCeilingStore::new()), ())
}

pub async fn memory_dedup() -> (Arc<MemoryDedupCache>, ()) {
    (Arc::new(MemoryDedupCache::new(10_000, Duration::from_secs(600))), ())
}

pub async fn memory_bus() -> (Arc<MemoryBus>, ()) {
    (Arc::new(MemoryBus::new()), ())
}

pub async fn memory_registry() -> (Arc<MemoryRegistry>, ()) {
    (Arc::new(MemoryRegistry::new()), ())
}

/// One in-process board: every reader is in the writer's process.
pub async fn memory_user_status_board() -> (im_backends::conformance::user_status_board::BoardPair, ()) {
    let board = Arc::new(im_backends::memory::MemoryUserStatusBoard::default());
    (im_backends::conformance::user_status_board::BoardPair { writer: board.clone(), reader: board }, ())
}

/// `MemorySeqAllocator`s over one ceiling store: a restart is a new allocator.
pub struct MemoryAllocators {
    ceilings: Arc<dyn CeilingStore>,
    interval: u64,
}

impl MemoryAllocators {
    pub fn new(ceilings: Arc<dyn CeilingStore>, interval: u64) -> Self {
        Self { ceilings, interval }
    }
}

#[async_trait]
impl SeqAllocatorHarness for MemoryAllocators {
    async fn start(&self) -> BackendResult<Arc<dyn SeqAllocator>> {
        Ok(Arc::new(MemorySeqAllocator::new(self.ceilings.clone(), self.interval)))
    }

    fn ceilings(&self) -> &dyn CeilingStore {
        &*self.ceilings
    }

    fn interval(&self) -> u64 {
        self.interval
    }
}

/// A small interval, so the suite crosses many ceilings.
const TEST_INTERVAL: u64 = 7;

pub async fn allocators_over_memory() -> (Arc<MemoryAllocators>, ()) {
    (Arc::new(MemoryAllocators::new(Arc::new(MemoryCeilingStore::new()), TEST_INTERVAL)), ())
}

pub async fn allocators_over_sqlite() -> (Arc<MemoryAllocators>, TempDir) {
    let (store, dir) = sqlite().await;
    (Arc::new(MemoryAllocators::new(store, TEST_INTERVAL)), dir)
}

/// A loopback port nothing listens on (for a moment: the server started next
/// takes it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}
