//! Conformance of the kafka backend against the real server (scripts/servers.sh starts it). Work in progress.
