//! End-to-end tests: the real `im-service` binary, clients over WebSocket
//! and gRPC. One test binary for all of them keeps link time down.

mod broker;
mod broker_restart;
mod cluster;
mod config;
mod crash;
mod data_dir;
mod degrade;
mod encryption;
mod etcd_trio;
mod fanout_recovery;
mod faults;
mod filter;
mod groups;
mod groups_cluster;
mod ha_etcd;
mod harness;
mod hung_gateway;
mod keys;
mod limits;
mod migrate;
mod observability;
mod offline;
mod offline_outbox;
mod otlp;
mod private;
mod probe;
mod reencrypt;
mod registry_outage;
mod retention;
mod support;
mod tcp_proxy;
mod tls;
mod traces;
mod user_outage;
mod user_status;
