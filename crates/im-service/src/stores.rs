//! The durable store a process runs on, picked by configuration: MySQL when
//! `database.host` (`DB_HOST`) is set, else SQLite in `server.data_dir`. Both
//! implement every storage port; callers get one `Arc<dyn Port>` per port.

use std::sync::Arc;

use anyhow::Context;
use im_backends::{MysqlStore, SqliteStore};
use im_config::{Config, StoreBackend};
use im_core::ports::{
    CeilingStore, DataKeyStore, EpochStore, GroupStore, MessageStore, OfflineStore, PasswordStore, ReceiptStore,
    ResealStore, UserStatusStore, UserStore,
};

use crate::readiness::Probe;

/// argon2id's cost and the sign-in limit, as configured (`AUTH_PASSWORD_*`,
/// `LIMIT_LOGIN_ATTEMPTS_PER_MINUTE`).
pub fn password_params(config: &Config) -> im_user::passwords::PasswordParams {
    let auth = &config.auth;
    im_user::passwords::PasswordParams {
        memory_kib: auth.password_memory_kib,
        iterations: auth.password_iterations,
        parallelism: auth.password_parallelism,
        attempts_per_minute: auth.login_attempts_per_minute,
    }
}

/// The user directory's passwords on this process's store.
pub fn passwords(config: &Config, stores: &Stores) -> anyhow::Result<im_user::passwords::Passwords> {
    im_user::passwords::Passwords::new(stores.passwords.clone(), password_params(config))
        .context("auth.password_* (AUTH_PASSWORD_*)")
}

/// One store, seen through each port.
pub struct Stores {
    /// The dependency's name in `/ready` and the logs.
    pub name: &'static str,
    pub messages: Arc<dyn MessageStore>,
    pub receipts: Arc<dyn ReceiptStore>,
    pub ceilings: Arc<dyn CeilingStore>,
    pub epochs: Arc<dyn EpochStore>,
    pub users: Arc<dyn UserStore>,
    /// Users' standing (disabled, token generation): the user directory's.
    pub statuses: Arc<dyn UserStatusStore>,
    /// Users' password hashes (the user directory's).
    pub passwords: Arc<dyn PasswordStore>,
    /// Groups and their membership (the user directory's).
    pub groups: Arc<dyn GroupStore>,
    pub offline: Arc<dyn OfflineStore>,
    /// The wrapped data keys of envelope encryption, and the active one.
    pub data_keys: Arc<dyn DataKeyStore>,
    /// Stored bodies sealed again under the active key (`imctl keys reencrypt`).
    pub reseal: Arc<dyn ResealStore>,
    backend: Backend,
}

enum Backend {
    Sqlite(Arc<SqliteStore>),
    MySql(Arc<MysqlStore>),
}

fn ports<S>(name: &'static str, store: Arc<S>, backend: Backend) -> Stores
where
    S: MessageStore
        + ReceiptStore
        + CeilingStore
        + EpochStore
        + UserStore
        + UserStatusStore
        + PasswordStore
        + GroupStore
        + OfflineStore
        + DataKeyStore
        + ResealStore,
{
    Stores {
        name,
        messages: store.clone(),
        receipts: store.clone(),
        ceilings: store.clone(),
        epochs: store.clone(),
        users: store.clone(),
        statuses: store.clone(),
        passwords: store.clone(),
        groups: store.clone(),
        offline: store.clone(),
        data_keys: store.clone(),
        reseal: store,
        backend,
    }
}

/// Brings the configured store's schema up to date and returns
/// (`im-service migrate`): MySQL with `database.*`, or the SQLite file in
/// `server.data_dir` (created if missing). Binds nothing and starts nothing
/// else; a node started afterwards finds nothing to migrate, so it needs no
/// DDL rights (docs/operations.md).
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    match config.store() {
        StoreBackend::Sqlite => {
            let _data_dir_lock = crate::bootstrap::data_dir(&config.server.data_dir)?;
            let path = config.server.sqlite_path();
            let store =
                SqliteStore::open(&path).await.map_err(|e| anyhow::anyhow!("migrating {}: {e}", path.display()))?;
            store.close().await;
            tracing::info!(path = %path.display(), "sqlite schema up to date");
        }
        StoreBackend::MySql(database) => {
            MysqlStore::migrate(database).await.with_context(|| {
                format!(
                    "migrating MySQL database {} at {} as {} (DB_HOST)",
                    database.name, database.host, database.user
                )
            })?;
            tracing::info!(host = %database.host, database = %database.name, "mysql schema up to date");
        }
    }
    Ok(())
}

impl Stores {
    /// Opens (and migrates) the configured store.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        match config.store() {
            StoreBackend::Sqlite => {
                let path = config.server.sqlite_path();
                let store = Arc::new(
                    SqliteStore::open_with(&path, &config.cache)
                        .await
                        .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?,
                );
                Ok(ports("sqlite", store.clone(), Backend::Sqlite(store)))
            }
            StoreBackend::MySql(database) => {
                let store = Arc::new(
                    MysqlStore::connect(database)
                        .await
                        .with_context(|| format!("connecting to MySQL at {} (DB_HOST)", database.host))?,
                );
                Ok(ports("mysql", store.clone(), Backend::MySql(store)))
            }
        }
    }

    /// The `/ready` probe of the store.
    /// The store answers; on SQLite, also the disk under the data directory
    /// has room for its writes (a full disk fails every commit while reads
    /// still answer, so a read alone would say ready).
    pub fn probe(&self, config: &Config) -> Probe {
        let store = self.messages.clone();
        let disk = matches!(self.backend, Backend::Sqlite(_))
            .then(|| (config.server.data_dir.clone(), config.server.data_dir_min_free_bytes));
        Box::new(move || {
            let (store, disk) = (store.clone(), disk.clone());
            Box::pin(async move {
                store.ping().await.map_err(|e| e.to_string())?;
                match disk {
                    Some((dir, min_free)) => check_free_space(&dir, min_free),
                    None => Ok(()),
                }
            })
        })
    }

    /// Waits for statements in flight and closes the connections.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(store) => store.close().await,
            Backend::MySql(store) => store.close().await,
        }
    }
}
/// Whether the disk holding `dir` has `min_free` bytes for unprivileged
/// writes (`DATA_DIR_MIN_FREE_BYTES`).
fn check_free_space(dir: &std::path::Path, min_free: u64) -> Result<(), String> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| format!("reading the free space under {}: {e}", dir.display()))?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if free < min_free {
        return Err(format!(
            "{free} bytes free on the disk of {}, under DATA_DIR_MIN_FREE_BYTES ({min_free}): commits would fail",
            dir.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_under_the_minimum_is_reported_with_what_is_free() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check_free_space(dir.path(), 0), Ok(()));
        let error = check_free_space(dir.path(), u64::MAX).unwrap_err();
        assert!(error.contains("DATA_DIR_MIN_FREE_BYTES") && error.contains("bytes free"), "{error}");
        assert!(check_free_space(&dir.path().join("missing"), 0).is_err(), "an unreadable place is not ready");
    }
}
