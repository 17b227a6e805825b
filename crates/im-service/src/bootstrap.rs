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

/// Creates the data directory if missing, readable by its owner only: it
/// holds the database and the secrets.
pub fn data_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir).with_context(|| format!("creating the data directory {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
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
        assert!(tokens.verify(&token).unwrap().admin);
    }
}
