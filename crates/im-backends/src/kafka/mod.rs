//! Kafka bus (production). Work in progress.
