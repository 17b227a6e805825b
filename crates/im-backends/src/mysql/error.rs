//! sqlx errors as [`BackendError`]: what may pass (the server is unreachable,
//! restarting, read-only during a failover, out of connections or disk; a
//! lock wait or deadlock; a timeout) is `Unavailable`, so callers answer
//! UNAVAILABLE and the client retries; everything else (a constraint broken by
//! a bug, a refused login, corrupt data) is `Other`.

use im_core::error::BackendError;
use sqlx::migrate::MigrateError;
use sqlx::mysql::MySqlDatabaseError;

use super::primary::note_read_only;

// Server error numbers that describe the server's state, not the request.
// MySQL's numbers (MariaDB shares them) unless marked.
const ER_DISK_FULL: u16 = 1021;
const ER_CON_COUNT_ERROR: u16 = 1040;
const ER_SERVER_SHUTDOWN: u16 = 1053;
/// "The table is full": out of disk for the tablespace.
const ER_RECORD_FILE_FULL: u16 = 1114;
const ER_TOO_MANY_USER_CONNECTIONS: u16 = 1203;
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
/// InnoDB rolled the whole transaction back; running it again may succeed.
const ER_LOCK_DEADLOCK: u16 = 1213;
/// `--read-only` (and MySQL's `super_read_only`): a primary being demoted,
/// or a replica not yet promoted.
const ER_OPTION_PREVENTS_STATEMENT: u16 = 1290;
const ER_QUERY_INTERRUPTED: u16 = 1317;
/// "Running in read-only mode".
const ER_READ_ONLY_MODE: u16 = 1836;
/// MariaDB.
const ER_CONNECTION_KILLED: u16 = 1927;
/// MariaDB's `max_statement_time`.
const ER_STATEMENT_TIMEOUT: u16 = 1969;
/// MySQL's `max_execution_time`.
const ER_QUERY_TIMEOUT: u16 = 3024;
/// MySQL: the server closed an idle session (`wait_timeout`).
const ER_CLIENT_INTERACTION_TIMEOUT: u16 = 4031;

/// Whether a server error number says "try again later".
fn transient(number: u16) -> bool {
    matches!(
        number,
        ER_DISK_FULL
            | ER_CON_COUNT_ERROR
            | ER_SERVER_SHUTDOWN
            | ER_RECORD_FILE_FULL
            | ER_TOO_MANY_USER_CONNECTIONS
            | ER_LOCK_WAIT_TIMEOUT
            | ER_LOCK_DEADLOCK
            | ER_OPTION_PREVENTS_STATEMENT
            | ER_READ_ONLY_MODE
            | ER_QUERY_INTERRUPTED
            | ER_CONNECTION_KILLED
            | ER_STATEMENT_TIMEOUT
            | ER_QUERY_TIMEOUT
            | ER_CLIENT_INTERACTION_TIMEOUT
    )
}

/// Whether a server error number says "this server takes no writes": it is
/// not (or no longer) the primary.
fn read_only(number: u16) -> bool {
    matches!(number, ER_OPTION_PREVENTS_STATEMENT | ER_READ_ONLY_MODE)
}

/// Also tells the pool (`primary::note_read_only`) when the server refused a
/// statement as read-only, so it connects again after a failover.
pub(super) fn map_sqlx(e: sqlx::Error) -> BackendError {
    let transient = match &e {
        // Refused, reset or timed out sockets, and connections the pool could
        // not open or hand out within `conn_timeout`.
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.try_downcast_ref::<MySqlDatabaseError>().is_some_and(|mysql| {
            if read_only(mysql.number()) {
                note_read_only();
            }
            transient(mysql.number())
        }),
        _ => false,
    };
    if transient { BackendError::unavailable(e) } else { BackendError::other(e) }
}

/// A failed migration keeps the kind of the sqlx error behind it: a server
/// that went away while migrating is unavailable, a bad migration is not.
pub(super) fn map_migrate(e: MigrateError) -> BackendError {
    match e {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => in_context(map_sqlx(e), "migrating"),
        other => BackendError::Other(format!("migrating: {other}")),
    }
}

/// Says what was being done, keeping the error's kind.
pub(super) fn in_context(error: BackendError, doing: &str) -> BackendError {
    match error {
        BackendError::Unavailable(cause) => BackendError::Unavailable(format!("{doing}: {cause}")),
        BackendError::Other(cause) => BackendError::Other(format!("{doing}: {cause}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_servers_are_unavailable_and_decoding_errors_are_not() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(matches!(map_sqlx(sqlx::Error::Io(refused)), BackendError::Unavailable(_)));
        assert!(matches!(map_sqlx(sqlx::Error::PoolTimedOut), BackendError::Unavailable(_)));
        assert!(matches!(map_sqlx(sqlx::Error::RowNotFound), BackendError::Other(_)));
    }

    #[test]
    fn lock_trouble_is_transient_and_a_duplicate_key_is_not() {
        assert!(transient(ER_LOCK_DEADLOCK) && transient(ER_LOCK_WAIT_TIMEOUT));
        // ER_DUP_ENTRY, ER_ACCESS_DENIED_ERROR, ER_BAD_DB_ERROR.
        assert!(!transient(1062) && !transient(1045) && !transient(1049));
    }

    #[test]
    fn a_read_only_server_is_transient_and_not_a_primary() {
        for number in [ER_OPTION_PREVENTS_STATEMENT, ER_READ_ONLY_MODE] {
            assert!(transient(number) && read_only(number), "{number}");
        }
        // A lock wait passes on the same primary: no reason to reconnect.
        assert!(!read_only(ER_LOCK_WAIT_TIMEOUT) && !read_only(1062));
    }
}
