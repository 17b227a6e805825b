//! Conformance of the redis backend against the real server (scripts/servers.sh starts it). Work in progress.
