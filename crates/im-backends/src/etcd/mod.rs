//! etcd registry (production). Work in progress.
