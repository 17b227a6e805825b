//! End-to-end tests: the real `im-service` binary, clients over WebSocket
//! and gRPC. One test binary for all of them keeps link time down.

mod broker;
mod cluster;
mod config;
mod crash;
mod encryption;
mod faults;
mod filter;
mod groups;
mod groups_cluster;
mod harness;
mod keys;
mod migrate;
mod observability;
mod offline;
mod otlp;
mod private;
mod reencrypt;
mod retention;
mod support;
mod traces;
