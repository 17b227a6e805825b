//! Conformance of the mysql backend against the real server (scripts/servers.sh starts it). Work in progress.
