//! Conformance of the etcd backend against the real server (scripts/servers.sh starts it). Work in progress.
