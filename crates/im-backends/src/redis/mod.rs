//! Redis seq allocator and dedup cache (production). Work in progress.
