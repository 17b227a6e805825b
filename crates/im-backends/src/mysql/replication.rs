//! What a replica promoted after a crash of the primary may lack: the
//! semi-synchronous replication settings of the primary, read at start and
//! warned about (never refused: a single server without replicas is a valid
//! set-up, and the operator may accept the risk).
//!
//! With asynchronous replication the primary commits, and the node acks,
//! before any replica has the transaction: promoting a replica after a crash
//! loses what it had not received. Semi-sync with the wait point
//! `AFTER_SYNC` makes the commit wait until a replica has the transaction in
//! its relay log, before any session can see it. `AFTER_COMMIT` waits after
//! the commit instead: the ack still waits, but other sessions (a device's
//! sync) may read a message that a promoted replica then lacks. And when no
//! replica answers within `rpl_semi_sync_master_timeout`, the primary falls
//! back to asynchronous replication without failing anything.
//!
//! MariaDB (built in since 10.3) and MySQL before 8.0.26 name the variables
//! `rpl_semi_sync_master_*`; MySQL 8.0.26 and later `rpl_semi_sync_source_*`.
//! Without the semi-sync plugin (MySQL) the variables do not exist: off.

use sqlx::mysql::MySqlConnection;

use super::error::map_sqlx;

/// Where the operator documentation explains the failover.
const DOCS: &str = "docs/high-availability.md";

/// The primary's semi-sync settings.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct SemiSync {
    pub enabled: bool,
    /// `AFTER_SYNC` or `AFTER_COMMIT` (upper case), when the server has it.
    pub wait_point: Option<String>,
    /// How long a commit waits for a replica before the primary falls back
    /// to asynchronous replication, in milliseconds.
    pub timeout_ms: Option<u64>,
}

impl SemiSync {
    /// From `(Variable_name, Value)` rows of `SHOW GLOBAL VARIABLES`, with
    /// either server's names; other rows are ignored.
    pub(super) fn from_variables<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str)>) -> SemiSync {
        let mut settings = SemiSync::default();
        for (name, value) in rows {
            let name = name.to_ascii_lowercase();
            let Some(setting) =
                name.strip_prefix("rpl_semi_sync_master_").or_else(|| name.strip_prefix("rpl_semi_sync_source_"))
            else {
                continue;
            };
            match setting {
                "enabled" => settings.enabled = matches!(value.to_ascii_uppercase().as_str(), "ON" | "1"),
                "wait_point" => settings.wait_point = Some(value.to_ascii_uppercase()),
                "timeout" => settings.timeout_ms = value.parse().ok(),
                _ => {}
            }
        }
        settings
    }

    /// What an acknowledged (or already synced) message may lose in a
    /// failover with these settings; `None` when nothing.
    pub(super) fn weakness(&self) -> Option<&'static str> {
        if !self.enabled {
            return Some(
                "mysql replicates asynchronously (semi-sync is off): messages acknowledged shortly before a crash \
                 of the primary are lost if a replica is promoted",
            );
        }
        if self.wait_point.as_deref() == Some("AFTER_COMMIT") {
            return Some(
                "mysql semi-sync waits for a replica after the commit (wait point AFTER_COMMIT): messages \
                 devices already synced may be missing on a promoted replica (set the wait point to AFTER_SYNC)",
            );
        }
        None
    }
}

/// Warns once when the primary's replication can lose acknowledged messages
/// in a failover. Only for a server writing a binary log: without one it has
/// no replica to promote. Never fails the start: settings it cannot read are
/// warned about too.
pub(super) async fn warn_about_async_replication(conn: &mut MySqlConnection) {
    let rows: Vec<(String, String)> =
        match sqlx::query_as("SHOW GLOBAL VARIABLES LIKE 'rpl_semi_sync_%'").fetch_all(conn).await {
            Ok(rows) => rows,
            Err(e) => {
                let error = map_sqlx(e);
                tracing::warn!(%error, docs = DOCS, "cannot read mysql's semi-sync settings: not checked");
                return;
            }
        };
    let settings = SemiSync::from_variables(rows.iter().map(|(name, value)| (name.as_str(), value.as_str())));
    match settings.weakness() {
        Some(weakness) => tracing::warn!(
            semi_sync_enabled = settings.enabled,
            wait_point = settings.wait_point.as_deref().unwrap_or("none"),
            timeout_ms = settings.timeout_ms,
            docs = DOCS,
            "{weakness}; G1 across a failover needs rpl_semi_sync_master_enabled=ON (MySQL 8.0.26+: \
             rpl_semi_sync_source_enabled) with wait point AFTER_SYNC and a timeout longer than any failover"
        ),
        None => tracing::info!(
            timeout_ms = settings.timeout_ms,
            docs = DOCS,
            "mysql semi-sync replication is on (AFTER_SYNC); past rpl_semi_sync_master_timeout without a \
             replica's answer the primary falls back to asynchronous replication"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_names() {
        let rows = [
            ("rpl_semi_sync_master_enabled", "ON"),
            ("rpl_semi_sync_master_timeout", "10000"),
            ("rpl_semi_sync_master_wait_point", "AFTER_SYNC"),
            ("rpl_semi_sync_master_wait_no_slave", "ON"),
            ("rpl_semi_sync_slave_enabled", "OFF"),
        ];
        let settings = SemiSync::from_variables(rows);
        assert_eq!(
            settings,
            SemiSync { enabled: true, wait_point: Some("AFTER_SYNC".to_owned()), timeout_ms: Some(10000) }
        );
        assert_eq!(settings.weakness(), None);
    }

    #[test]
    fn mysql_8_names() {
        let rows = [
            ("rpl_semi_sync_source_enabled", "ON"),
            ("rpl_semi_sync_source_timeout", "3600000"),
            ("rpl_semi_sync_source_wait_point", "after_commit"),
            ("rpl_semi_sync_replica_enabled", "ON"),
        ];
        let settings = SemiSync::from_variables(rows);
        assert!(settings.enabled);
        assert_eq!(settings.timeout_ms, Some(3_600_000));
        assert!(settings.weakness().is_some_and(|w| w.contains("AFTER_COMMIT")));
    }

    #[test]
    fn off_or_missing_is_asynchronous() {
        let off = SemiSync::from_variables([
            ("rpl_semi_sync_master_enabled", "OFF"),
            ("rpl_semi_sync_master_wait_point", "AFTER_SYNC"),
        ]);
        assert!(!off.enabled);
        // No plugin on MySQL: no variables at all.
        let missing = SemiSync::from_variables([]);
        assert_eq!(missing, SemiSync::default());
        for settings in [off, missing] {
            assert!(settings.weakness().is_some_and(|w| w.contains("asynchronously")));
        }
    }

    #[test]
    fn the_replica_side_alone_is_not_the_primary_on() {
        let settings = SemiSync::from_variables([("rpl_semi_sync_slave_enabled", "ON")]);
        assert!(!settings.enabled);
    }
}
