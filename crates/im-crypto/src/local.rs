//! [`LocalMasterKey`]: embedded mode's master key, 32 random bytes in a file only its owner can read.
//!
//! The file holds the raw key and nothing else. Wrapped data keys are
//! `[0x01] [nonce: 12 random bytes] [AES-256-GCM ciphertext of the 32-byte key] [tag: 16 bytes]`,
//! with the master key's id (`local:<fingerprint>`) as associated data, so a wrapped key taken
//! from another deployment's table fails to unwrap instead of yielding a wrong key.
//!
//! Losing the file loses every body encrypted under it: back it up with the database, and keep
//! the two backups apart (either alone reveals nothing).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::master_key::{KmsError, MasterKey};

const KEY_LEN: usize = 32;
const WRAP_VERSION: u8 = 0x01;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const WRAPPED_LEN: usize = 1 + NONCE_LEN + KEY_LEN + TAG_LEN;
/// The associated data of the fingerprint computation (a key check value, see [`fingerprint`]).
const FINGERPRINT_AAD: &[u8] = b"im-crypto local master key fingerprint";

/// Embedded mode's master key: a 32-byte key in a file (e.g. `<data_dir>/master.key`), created on
/// first use with mode 0600. Wraps data keys with AES-256-GCM (random nonce, key id as AAD).
pub struct LocalMasterKey {
    key_id: String,
    path: PathBuf,
    cipher: Aes256Gcm,
}

impl LocalMasterKey {
    /// Loads the key at `path`, or creates it there (mode 0600) when no file exists.
    ///
    /// Refuses an existing file that group or others may read or write (`PermissionDenied`), and
    /// one that is not exactly 32 bytes (`InvalidData`). Two processes starting together both end
    /// up with the same key: the file appears whole, by a hard link, or not at all.
    pub fn load_or_create(path: &Path) -> io::Result<Self> {
        let key = match load(path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => match create(path) {
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => load(path)?,
                created => created?,
            },
            loaded => loaded?,
        };
        let cipher = Aes256Gcm::new((&*key).into());
        let key_id = format!("local:{}", fingerprint(&cipher));
        Ok(Self { key_id, path: path.to_owned(), cipher })
    }

    fn wrap(&self, data_key: &[u8; KEY_LEN]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut wrapped = Vec::with_capacity(WRAPPED_LEN);
        wrapped.push(WRAP_VERSION);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(data_key);
        let tag = self
            .cipher
            .encrypt_in_place_detached((&nonce).into(), self.key_id.as_bytes(), &mut wrapped[1 + NONCE_LEN..])
            .expect("32 bytes are within AES-GCM's length limit");
        wrapped.extend_from_slice(&tag);
        wrapped
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, KmsError> {
        if wrapped.len() != WRAPPED_LEN || wrapped[0] != WRAP_VERSION {
            return Err(KmsError::Rejected(format!(
                "wrapped data key is malformed ({} bytes, expected {WRAPPED_LEN} starting with version {WRAP_VERSION})",
                wrapped.len()
            )));
        }
        let nonce: &[u8; NONCE_LEN] = wrapped[1..1 + NONCE_LEN].try_into().expect("12 bytes");
        let (ciphertext, tag) = wrapped[1 + NONCE_LEN..].split_at(KEY_LEN);
        let tag: &[u8; TAG_LEN] = tag.try_into().expect("16 bytes");
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(ciphertext);
        self.cipher.decrypt_in_place_detached(nonce.into(), self.key_id.as_bytes(), &mut key[..], tag.into()).map_err(
            |_| {
                KmsError::Rejected(format!(
                    "wrapped data key does not open under master key {} (corrupt, or wrapped by another key)",
                    self.key_id
                ))
            },
        )?;
        Ok(key)
    }
}

impl fmt::Debug for LocalMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalMasterKey").field("key_id", &self.key_id).field("path", &self.path).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl MasterKey for LocalMasterKey {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    async fn generate_data_key(&self) -> Result<(Zeroizing<[u8; 32]>, Vec<u8>), KmsError> {
        let mut data_key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(&mut data_key[..]);
        let wrapped = self.wrap(&data_key);
        Ok((data_key, wrapped))
    }

    async fn unwrap_data_key(&self, wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, KmsError> {
        self.unwrap(wrapped)
    }

    async fn rewrap_data_key(&self, wrapped: &[u8]) -> Result<Vec<u8>, KmsError> {
        // Only keys this master key wrapped can be re-wrapped: a local key file has no history.
        // The point is a fresh nonce, and the same call as KMS for `imctl keys rewrap`.
        let data_key = self.unwrap(wrapped)?;
        Ok(self.wrap(&data_key))
    }

    async fn check(&self) -> Result<(), KmsError> {
        Ok(())
    }
}

/// A short public name for a key: the first 8 bytes of an AES-256-GCM tag over nothing, under
/// the key, with a zero nonce (a key check value). It tells keys apart without revealing them.
fn fingerprint(cipher: &Aes256Gcm) -> String {
    let tag = cipher
        .encrypt_in_place_detached((&[0; NONCE_LEN]).into(), FINGERPRINT_AAD, &mut [])
        .expect("an empty message is within AES-GCM's length limit");
    tag[..8].iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Reads an existing key file, refusing one others can read.
fn load(path: &Path) -> io::Result<Zeroizing<[u8; KEY_LEN]>> {
    let mut file = File::open(path)?;
    let metadata = file.metadata()?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "master key file {} has mode {mode:03o}: group or others may access it; \
                 run `chmod 600` on it (and check who could have read it)",
                path.display()
            ),
        ));
    }
    if metadata.len() != KEY_LEN as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("master key file {} is {} bytes, expected {KEY_LEN}", path.display(), metadata.len()),
        ));
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    file.read_exact(&mut key[..])?;
    Ok(key)
}

/// Writes a new random key to a private temporary file, then links it into place: the key file
/// is never seen half-written, and an existing one is never replaced (`AlreadyExists`).
fn create(path: &Path) -> io::Result<Zeroizing<[u8; KEY_LEN]>> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    rand::rng().fill_bytes(&mut key[..]);

    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("master key path {} has no file name", path.display()))
    })?;
    let mut temp_name = file_name.to_owned();
    temp_name.push(format!(".tmp-{}-{}", std::process::id(), rand::rng().next_u64()));
    let temp = path.with_file_name(temp_name);

    let written = (|| -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp)?;
        // The umask cannot widen 0600, but a filesystem may ignore modes: check what we got.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(&key[..])?;
        file.sync_all()?;
        fs::hard_link(&temp, path)
    })();
    let _ = fs::remove_file(&temp);
    written?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        // Make the new directory entry durable before any data key is wrapped under this key.
        File::open(dir)?.sync_all()?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[tokio::test]
    async fn creates_the_file_private_and_reloads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let created = LocalMasterKey::load_or_create(&path).unwrap();
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        assert_eq!(metadata.len(), 32);
        assert!(created.key_id().starts_with("local:") && created.key_id().len() == "local:".len() + 16);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left behind");

        let (data_key, wrapped) = created.generate_data_key().await.unwrap();
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        assert!(!wrapped.windows(8).any(|w| data_key.windows(8).any(|k| k == w)));

        let reloaded = LocalMasterKey::load_or_create(&path).unwrap();
        assert_eq!(reloaded.key_id(), created.key_id());
        assert_eq!(*reloaded.unwrap_data_key(&wrapped).await.unwrap(), *data_key);

        let rewrapped = reloaded.rewrap_data_key(&wrapped).await.unwrap();
        assert_ne!(rewrapped, wrapped, "a fresh nonce");
        assert_eq!(*created.unwrap_data_key(&rewrapped).await.unwrap(), *data_key);
        reloaded.check().await.unwrap();
    }

    #[tokio::test]
    async fn two_files_are_two_keys() {
        let dir = tempfile::tempdir().unwrap();
        let a = LocalMasterKey::load_or_create(&dir.path().join("a.key")).unwrap();
        let b = LocalMasterKey::load_or_create(&dir.path().join("b.key")).unwrap();
        assert_ne!(a.key_id(), b.key_id());
        let (_, wrapped) = a.generate_data_key().await.unwrap();
        assert!(matches!(b.unwrap_data_key(&wrapped).await, Err(KmsError::Rejected(_))));
    }

    #[test]
    fn refuses_a_file_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        LocalMasterKey::load_or_create(&path).unwrap();
        for mode in [0o640, 0o604, 0o620, 0o644] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let error = LocalMasterKey::load_or_create(&path).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::PermissionDenied, "mode {mode:o}");
            assert!(error.to_string().contains("chmod 600"), "{error}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        LocalMasterKey::load_or_create(&path).unwrap();
    }

    #[test]
    fn refuses_a_file_of_the_wrong_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
        file.write_all(&[7; 31]).unwrap();
        let error = LocalMasterKey::load_or_create(&path).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_corrupted_wrapped_key_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let key = LocalMasterKey::load_or_create(&dir.path().join("master.key")).unwrap();
        let (_, wrapped) = key.generate_data_key().await.unwrap();
        for byte in 0..wrapped.len() {
            let mut corrupted = wrapped.clone();
            corrupted[byte] ^= 0x01;
            assert!(matches!(key.unwrap_data_key(&corrupted).await, Err(KmsError::Rejected(_))), "byte {byte}");
            assert!(matches!(key.rewrap_data_key(&corrupted).await, Err(KmsError::Rejected(_))), "byte {byte}");
        }
        for cut in [0, 1, WRAPPED_LEN - 1] {
            assert!(matches!(key.unwrap_data_key(&wrapped[..cut]).await, Err(KmsError::Rejected(_))));
        }
    }

    #[test]
    fn debug_shows_the_id_and_path_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = LocalMasterKey::load_or_create(&dir.path().join("master.key")).unwrap();
        let debug = format!("{key:?}");
        assert!(debug.contains(key.key_id()) && debug.contains("master.key"), "{debug}");
        assert!(!debug.contains("cipher"), "{debug}");
    }
}
