//! sqlx errors as [`BackendError`]: what may pass (the pool is exhausted, the
//! disk is full or failing, another process holds the lock) is `Unavailable`,
//! everything else (a constraint broken by a bug, corrupt data) is `Other`.

use im_core::error::BackendError;

// SQLite primary result codes that describe the environment, not the request.
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;

pub(super) fn map_sqlx(e: sqlx::Error) -> BackendError {
    let transient = match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            // The driver reports extended codes; the primary code is the low byte.
            .is_some_and(|code| {
                matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN)
            }),
        _ => false,
    };
    if transient { BackendError::unavailable(e) } else { BackendError::other(e) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_timeouts_are_unavailable_and_decoding_errors_are_not() {
        assert!(matches!(map_sqlx(sqlx::Error::PoolTimedOut), BackendError::Unavailable(_)));
        assert!(matches!(map_sqlx(sqlx::Error::RowNotFound), BackendError::Other(_)));
    }
}
