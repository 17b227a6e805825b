//! Standalone first start: the data directory, the token secret and the admin
//! credential. The secret is created once (random, mode 0600) and kept; the
//! admin credential is re-issued at every start into `admin.token`, where
//! `imctl` finds it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use im_auth::Tokens;
use im_config::JwtKeySource;
use rand::RngCore;

/// The admin credential written at start lives this long.
const ADMIN_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The lock file in the data directory, held while a process uses it.
const LOCK_FILE: &str = "lock";

/// Creates the data directory if missing, and makes it its owner's only (it
/// holds the database and the secrets: 0700, forced on a directory that
/// existed with wider rights), then locks it for this process. Two
/// processes on one data directory would hand out seqs from two counters
/// and lose messages below a reader's cursor, so a second one is refused
/// with [`DataDirInUse`]. The lock is the kernel's (`flock`): it goes with
/// the process, `kill -9` included. Keep the returned guard for as long as
/// the directory is used.
pub fn data_dir(dir: &Path) -> anyhow::Result<DataDirLock> {
    if !dir.exists() {
        fs::create_dir_all(dir).with_context(|| format!("creating the data directory {}", dir.display()))?;
    }
    let mode = fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).with_context(|| {
            format!(
                "the data directory {} is open to other users (mode {:o}) and could not be made 0700",
                dir.display(),
                mode & 0o777
            )
        })?;
        tracing::warn!(dir = %dir.display(), was = format!("{:o}", mode & 0o777), "data directory made 0700");
    }
    lock(dir)
}

/// The data directory's lock; released when dropped or when the process ends.
#[derive(Debug)]
pub struct DataDirLock {
    _file: fs::File,
}

/// Another running process holds the data directory.
#[derive(Debug)]
pub struct DataDirInUse {
    pub dir: std::path::PathBuf,
    /// The holder's pid, as it wrote it in the lock file.
    pub pid: Option<u32>,
}

impl std::fmt::Display for DataDirInUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let holder = self.pid.map_or_else(|| "another process".to_owned(), |pid| format!("process {pid}"));
        write!(
            f,
            "the data directory {} is in use by {holder}; two processes on one directory would lose messages \
             (stop the other, or give this one its own IM_DATA_DIR)",
            self.dir.display()
        )
    }
}

impl std::error::Error for DataDirInUse {}

fn lock(dir: &Path) -> anyhow::Result<DataDirLock> {
    let path = dir.join(LOCK_FILE);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let pid = fs::read_to_string(&path).ok().and_then(|text| text.trim().parse().ok());
            return Err(DataDirInUse { dir: dir.to_owned(), pid }.into());
        }
        Err(fs::TryLockError::Error(e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
    }
    // The holder's pid, for the message a second process prints.
    file.set_len(0)?;
    file.write_all(std::process::id().to_string().as_bytes())?;
    Ok(DataDirLock { _file: file })
}

/// The configured secret, or the one kept at `path` (created on first start).
pub fn token_secret(key: JwtKeySource<'_>, path: &Path) -> anyhow::Result<Tokens> {
    if let JwtKeySource::Configured(secret) = key {
        return Tokens::new(secret.expose().as_bytes())
            .map_err(|e| anyhow::anyhow!("auth.jwt_secret (JWT_SECRET): {e}"));
    }
    let hex = match fs::read_to_string(path) {
        Ok(hex) => hex.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut raw = [0u8; 32];
            rand::rng().fill_bytes(&mut raw);
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            write_private(path, hex.as_bytes())?;
            tracing::info!(path = %path.display(), "created the token secret");
            hex
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if hex.len() < 64 {
        bail!("{} holds a secret shorter than 32 bytes; delete it to make a new one", path.display());
    }
    Tokens::new(hex.as_bytes()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Issues an admin credential and writes it to `path` (mode 0600).
pub fn admin_credential(tokens: &Tokens, path: &Path) -> anyhow::Result<()> {
    write_private(path, tokens.issue_admin(ADMIN_TOKEN_TTL).as_bytes())
}

/// Writes a secret file readable by its owner only, replacing it atomically.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt.secret");
        let first = token_secret(JwtKeySource::DataDir, &path).unwrap();
        let token = first.issue_user(im_core::UserId(1), "a", Duration::from_secs(60));
        let second = token_secret(JwtKeySource::DataDir, &path).unwrap();
        assert_eq!(second.verify(&token).unwrap().user, im_core::UserId(1));
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn admin_credential_verifies_as_admin() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = token_secret(JwtKeySource::DataDir, &dir.path().join("jwt.secret")).unwrap();
        let path = dir.path().join("admin.token");
        admin_credential(&tokens, &path).unwrap();
        let token = fs::read_to_string(path).unwrap();
        assert!(tokens.verify(&token).unwrap().is_admin());
    }

    #[test]
    fn a_second_holder_of_the_data_dir_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let held = data_dir(&data).unwrap();
        let refused = data_dir(&data).unwrap_err();
        let in_use = refused.downcast_ref::<DataDirInUse>().expect("a DataDirInUse");
        assert_eq!(in_use.pid, Some(std::process::id()));
        assert!(refused.to_string().contains(&format!("in use by process {}", std::process::id())), "{refused}");
        // Released with its guard (and with its process).
        drop(held);
        data_dir(&data).unwrap();
    }

    #[test]
    fn a_data_dir_open_to_others_is_made_the_owners_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        let _held = data_dir(&data).unwrap();
        assert_eq!(fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(data.join(LOCK_FILE)).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
