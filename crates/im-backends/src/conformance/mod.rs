//! One test suite per port, written only against the trait, so every backend
//! of a port (memory, SQLite, and the production ones) runs the very same
//! cases. A suite is a module of `pub async fn`s, one per case, each asserting
//! behaviour the port's doc comments promise; a macro stamps the module out as
//! one `#[tokio::test]` per case for a given backend (after quickwit's
//! `metastore_test_suite!`).
//!
//! A suite's macro takes the path of an `async fn() -> (Arc<B>, G)` making a
//! fresh backend `B`, and a guard `G` kept alive until the case ends (a temp
//! dir, a test database; `()` when there is none). The invoking crate needs
//! `tokio` (with `macros` and `rt-multi-thread`). A backend that needs a
//! server must panic when it cannot reach it, never pass by skipping.
//!
//! ```text
//! async fn sqlite() -> (Arc<SqliteStore>, TempDir) { ... }
//! mod sqlite_message_store {
//!     im_backends::message_store_suite!(super::sqlite);
//! }
//! ```
//!
//! Cases use fresh ids and names ([`fixtures`]), so a backend on a shared
//! server may keep its data between cases.
//!
//! Suites: [`message_store`], [`message_retention`] (needs a store no other
//! case writes to, and a `ReceiptStore`: expiry is store-wide), [`receipt_store`] (needs a `MessageStore` too:
//! unread counts follow read positions), [`ceiling_store`], [`epoch_store`], [`user_store`],
//! [`seq_allocator`] (over a [`SeqAllocatorHarness`]), [`dedup_cache`], [`bus`],
//! [`registry`], [`offline_store`] (needs a `ReceiptStore` too: what is read is
//! not pending), [`group_store`] (needs a `UserStore` too: groups name known
//! users), [`data_key_store`] (needs a store no other case writes to: the
//! active data key is store-wide), [`reseal_store`] (needs a `MessageStore`
//! too: it walks the stored messages), [`user_status_board`] (over a
//! [`user_status_board::BoardPair`]: two views of the same statuses).

pub mod bus;
pub mod ceiling_store;
pub mod data_key_store;
pub mod dedup_cache;
pub mod epoch_store;
pub mod fixtures;
pub mod group_store;
pub mod message_retention;
pub mod message_store;
pub mod offline_store;
pub mod receipt_store;
pub mod registry;
pub mod reseal_store;
pub mod seq_allocator;
pub mod user_status_board;
pub mod user_store;

pub use seq_allocator::SeqAllocatorHarness;

/// Stamps out one `#[tokio::test]` per case of a suite. Multi-threaded, so
/// cases that spawn tasks exercise real parallelism.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($suite:ident, $make:path, [$($case:ident),+ $(,)?]) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (backend, _keep_alive) = $make().await;
                $crate::conformance::$suite::$case(backend).await;
            }
        )+
    };
}
