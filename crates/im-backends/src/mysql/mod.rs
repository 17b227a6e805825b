//! MySQL / MariaDB message store (production). Work in progress.
