//! Encryption at rest (`ENCRYPTION_ENABLED`): envelope encryption of message
//! bodies.
//!
//! - A data key (DEK, AES-256) comes from the master key (`KMS_ENDPOINT` and
//!   `KMS_KEY_ID`, or a local key file in the data dir); only its wrapped
//!   form is stored (`DataKeyStore`, table `data_keys`). Every node seals
//!   with the one active key: the first node to start creates it, and a race
//!   between nodes ends with one winner (the store's compare-and-swap).
//! - [`BodyCipher::seal`]: the pipeline seals each body before the commit
//!   ([`im_crypto::seal`]: AES-256-GCM, a random nonce, bound to its row by
//!   conversation, seq, sender and msg_id); the row records the key
//!   (`sealed_with`). Group messages travel sealed on `group_msg` too.
//! - [`BodyCipher::open`]: sync and the group fan-out open what they read.
//!   Plaintext keys are kept in memory for `DEK_CACHE_TTL` after they were
//!   unwrapped: with the KMS down, sends and reads go on with the keys in
//!   cache; a key not in cache is `UNAVAILABLE` until the KMS is back.
//! - A body whose ciphertext or wrapped key was altered is `DATA_LOSS`,
//!   naming the message; never garbage, never a crash.
//! - Rotation: a new key becomes active when the active one is older than
//!   `KEY_ROTATION_DAYS` (checked at start and [`ROTATION_CHECK`]ally); old
//!   keys stay readable. On demand too: [`BodyCipher::rotate`].
//! - [`BodyCipher::rewrap_all`]: stored keys wrapped again under the
//!   configured master key (KMS `ReEncrypt`) after the master key changed.
//! - [`BodyCipher::reencrypt_window`] ([`reencrypt`]): stored bodies sealed
//!   again under the active key, one window of the store per call, so old
//!   keys (and clear rows) can be retired from the data.
//! - [`keys_grpc`]: `im.keys.v1.KeyService`, the admin API behind `imctl
//!   keys status|rotate|rewrap|reencrypt`.
//!
//! Key material never reaches a log line, a metric or an error text.

pub mod keys_grpc;
pub mod observer;
pub mod reencrypt;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use im_config::{Config, KeySource};
use im_core::ports::{DataKeyStore, StoredDataKey};
use im_core::{ImError, NewMessage};
use im_crypto::{BodyAad, CryptoError, DataKey, DekCache, KmsError, KmsMasterKey, LocalMasterKey, MasterKey};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How often a node checks whether the active key is due for rotation, and
/// whether another node made a new one active.
pub const ROTATION_CHECK: Duration = Duration::from_secs(60);

/// Seals and opens message bodies.
pub struct BodyCipher {
    master: Arc<dyn MasterKey>,
    keys: Arc<dyn DataKeyStore>,
    cache: DekCache,
    /// The id of the key new bodies are sealed with (0 before the first).
    active: AtomicU64,
    /// `KEY_ROTATION_DAYS`; none: never by age.
    rotate_after: Option<Duration>,
    mode: Mode,
    metrics: Arc<Metrics>,
}

/// What [`BodyCipher::rotate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// The key that was active before, if any.
    pub previous: Option<u64>,
    /// The key active now.
    pub active: StoredDataKey,
}

/// What [`BodyCipher::rewrap_all`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RewrapReport {
    pub rewrapped: u64,
    /// Keys the configured master key already wrapped (left as they are).
    pub already_current: u64,
    /// The keys that could not be re-wrapped, and why (never key material).
    pub failed: Vec<(u64, String)>,
}

enum Rewrapped {
    Now,
    Already,
}

/// What a node does with bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `ENCRYPTION_ENABLED`: new bodies are sealed, sealed ones opened.
    Seal,
    /// Encryption turned off again with its master key still configured
    /// (the KMS settings, or the local key file still in the data dir): new
    /// bodies are stored in clear, and the sealed ones stay readable.
    OpenOnly,
}

/// The master key of this configuration, and what it is used for: the KMS,
/// or the local key file; none when encryption is off and no master key is
/// left to read old bodies with.
pub async fn master_key(config: &Config, metrics: &Arc<Metrics>) -> anyhow::Result<Option<(Arc<dyn MasterKey>, Mode)>> {
    let encryption = &config.encryption;
    let local = config.server.master_key_path();
    let (source, mode) = match config.key_source() {
        KeySource::Disabled if !encryption.kms_endpoint.is_empty() && !encryption.kms_key_id.is_empty() => {
            (KeySource::Kms { endpoint: &encryption.kms_endpoint, key_id: &encryption.kms_key_id }, Mode::OpenOnly)
        }
        KeySource::Disabled if local.exists() => (KeySource::LocalFile, Mode::OpenOnly),
        KeySource::Disabled => return Ok(None),
        source => (source, Mode::Seal),
    };
    let key: Arc<dyn MasterKey> = match source {
        KeySource::Disabled => unreachable!("handled above"),
        KeySource::LocalFile => Arc::new(
            LocalMasterKey::load_or_create(&local)
                .with_context(|| format!("the local master key {}", local.display()))?,
        ),
        KeySource::Kms { endpoint, key_id } => {
            let observer = Arc::new(observer::KmsMetrics(metrics.clone()));
            Arc::new(
                KmsMasterKey::new(endpoint, key_id.expose(), observer)
                    .await
                    .map_err(|e| anyhow::anyhow!("encryption.kms_endpoint (KMS_ENDPOINT): {e}"))?,
            )
        }
    };
    Ok(Some((key, mode)))
}

impl BodyCipher {
    /// Makes sure a key is active (creating the first one, or rotating one
    /// that is due), and returns the cipher. Fails when the master key
    /// cannot make or unwrap a key: a node that cannot seal does not start.
    pub async fn start(
        (master, mode): (Arc<dyn MasterKey>, Mode),
        keys: Arc<dyn DataKeyStore>,
        cache_ttl: Duration,
        rotation_days: u32,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Self>> {
        let rotate_after = (rotation_days > 0).then(|| Duration::from_secs(u64::from(rotation_days) * 24 * 3600));
        let cache = DekCache::new(cache_ttl);
        let cipher = Arc::new(Self { master, keys, cache, active: AtomicU64::new(0), rotate_after, mode, metrics });
        if mode == Mode::OpenOnly {
            return Ok(cipher);
        }
        cipher.check_rotation(crate::clock::unix_ms()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        // The active key unwrapped now: the first sends do not wait for the KMS.
        cipher.key(cipher.active.load(Ordering::Acquire)).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(cipher)
    }

    /// Rotates when the active key is older than `KEY_ROTATION_DAYS` (or
    /// creates the first key), and adopts whatever key is active now.
    pub async fn check_rotation(&self, now_ms: i64) -> Result<StoredDataKey, ImError> {
        let active = self.keys.active_data_key().await?;
        let due = match &active {
            None => true,
            Some(key) => self.rotate_after.is_some_and(|age| now_ms - key.created_ms >= age.as_millis() as i64),
        };
        let active = match (active, due) {
            (Some(key), false) => key,
            (current, _) => self.activate_new(current.map(|key| key.id), now_ms).await?,
        };
        self.adopt(&active, now_ms);
        Ok(active)
    }

    /// A new key made active now (`imctl keys rotate`); when another node
    /// rotated at the same moment, its key is the one.
    pub async fn rotate(&self) -> Result<Rotation, ImError> {
        let previous = self.keys.active_data_key().await?.map(|key| key.id);
        let now_ms = crate::clock::unix_ms();
        let active = self.activate_new(previous, now_ms).await?;
        self.adopt(&active, now_ms);
        Ok(Rotation { previous, active })
    }

    async fn activate_new(&self, expected: Option<u64>, now_ms: i64) -> Result<StoredDataKey, ImError> {
        let (_plaintext, wrapped) = self.master.generate_data_key().await.map_err(kms_error)?;
        let active = self.keys.activate_data_key(expected, &wrapped, self.master.key_id(), now_ms).await?;
        tracing::info!(key = active.id, won = (active.wrapped == wrapped), "data key active");
        Ok(active)
    }

    fn adopt(&self, active: &StoredDataKey, now_ms: i64) {
        let before = self.active.swap(active.id, Ordering::AcqRel);
        if before != active.id && before != 0 {
            tracing::info!(key = active.id, previous = before, "sealing with a new data key");
        }
        self.metrics.encryption_active_dek_age_seconds.set((now_ms - active.created_ms).max(0) / 1000);
    }

    /// Whether new bodies are sealed (else only opened).
    pub fn seals(&self) -> bool {
        self.mode == Mode::Seal
    }

    /// Checks for rotation every [`ROTATION_CHECK`] until `stop` (a node
    /// that only opens bodies makes no keys).
    pub async fn run_rotation(self: Arc<Self>, stop: CancellationToken) {
        if !self.seals() {
            return;
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(ROTATION_CHECK) => {}
            }
            if let Err(error) = self.check_rotation(crate::clock::unix_ms()).await {
                tracing::warn!(%error, "checking the data key rotation failed; sealing with the current key");
            }
        }
    }

    /// The plaintext key `id`: from the cache, or unwrapped by the master key.
    async fn key(&self, id: u64) -> Result<Arc<DataKey>, ImError> {
        if let Some(key) = self.cache.get(id) {
            self.metrics.dek_cache_hits.inc();
            return Ok(key);
        }
        self.metrics.dek_cache_misses.inc();
        let stored = self
            .keys
            .data_key(id)
            .await?
            .ok_or_else(|| ImError::data_loss(format!("data key {id} is not in the key store")))?;
        let plaintext = self.master.unwrap_data_key(&stored.wrapped).await.map_err(|e| match e {
            KmsError::Unavailable(_) => kms_error(e),
            KmsError::Rejected(_) => {
                tracing::error!(key = id, error = %e, "a stored data key cannot be unwrapped");
                ImError::data_loss(format!("data key {id} cannot be unwrapped by the master key"))
            }
        })?;
        Ok(self.cache.insert(DataKey::new(id, plaintext)))
    }

    /// The key new bodies are sealed with, unwrapped. Asked for before a
    /// batch gets its seqs: a batch that cannot be sealed uses none (no gap
    /// for sync to wait on).
    pub async fn sealing_key(&self) -> Result<Arc<DataKey>, ImError> {
        self.key(self.active.load(Ordering::Acquire)).await
    }

    /// The stored form of `messages`: each body sealed with `key`.
    pub fn seal(key: &DataKey, messages: &[NewMessage]) -> Vec<NewMessage> {
        messages
            .iter()
            .map(|m| {
                let conversation = m.conversation.to_string();
                let aad = BodyAad { conversation: &conversation, seq: m.seq.0, sender: m.sender.0, msg_id: m.msg_id.0 };
                NewMessage { body: im_crypto::seal(key, &aad, &m.body), sealed_with: Some(key.id()), ..m.clone() }
            })
            .collect()
    }

    /// Opens every sealed body of `messages` in place.
    pub async fn open(&self, messages: &mut [NewMessage]) -> Result<(), ImError> {
        for m in messages.iter_mut() {
            let Some(id) = m.sealed_with else { continue };
            // A key that is gone or altered: name the message it fails.
            let key = self.key(id).await.map_err(|e| match e.code {
                im_core::ErrorCode::DataLoss => ImError::data_loss(format!(
                    "message {} (seq {} of {}) cannot be decrypted: {}",
                    m.msg_id.0, m.seq.0, m.conversation, e.message
                )),
                _ => e,
            })?;
            let conversation = m.conversation.to_string();
            let aad = BodyAad { conversation: &conversation, seq: m.seq.0, sender: m.sender.0, msg_id: m.msg_id.0 };
            m.body = im_crypto::open(&key, &aad, &m.body).map_err(|e| {
                let what = match e {
                    CryptoError::Malformed => "is not a sealed body",
                    CryptoError::Tampered => "does not match its row or key",
                };
                tracing::error!(msg_id = m.msg_id.0, conversation = %m.conversation, seq = m.seq.0, "a stored body {what}");
                ImError::data_loss(format!(
                    "message {} (seq {} of {}) cannot be decrypted: its stored body {what}",
                    m.msg_id.0, m.seq.0, m.conversation
                ))
            })?;
            m.sealed_with = None;
        }
        Ok(())
    }

    /// The id of the master key new data keys are wrapped by.
    pub fn master_key_id(&self) -> &str {
        self.master.key_id()
    }

    /// Every stored data key, oldest first (`imctl keys status`).
    pub async fn data_keys(&self) -> Result<Vec<StoredDataKey>, ImError> {
        Ok(self.keys.data_keys().await?)
    }

    /// Re-wraps the stored data keys under this node's master key (`imctl
    /// keys rewrap`, after the master key changed): those another master key
    /// wrapped, or every one with `force`. The plaintext keys do not change,
    /// so neither do the bodies nor the keys in cache. One key failing does
    /// not stop the others; each failure is reported.
    pub async fn rewrap_all(&self, force: bool) -> Result<RewrapReport, ImError> {
        let mut report = RewrapReport::default();
        for key in self.keys.data_keys().await? {
            let id = key.id;
            match self.rewrap(key, force).await {
                Ok(Rewrapped::Now) => report.rewrapped += 1,
                Ok(Rewrapped::Already) => report.already_current += 1,
                Err(why) => {
                    tracing::warn!(key = id, %why, "re-wrapping a data key failed");
                    report.failed.push((id, why));
                }
            }
        }
        tracing::info!(
            rewrapped = report.rewrapped,
            already_current = report.already_current,
            failed = report.failed.len(),
            master_key = self.master.key_id(),
            "data keys re-wrapped"
        );
        Ok(report)
    }

    /// Re-wraps one key; the store's compare-and-swap guards against a
    /// concurrent rewrap (another admin, another node): on a lost swap the
    /// key is read again and, if still due, re-wrapped once more.
    async fn rewrap(&self, mut key: StoredDataKey, force: bool) -> Result<Rewrapped, String> {
        let master_key_id = self.master.key_id();
        for _attempt in 0..2 {
            if !force && key.master_key_id == master_key_id {
                return Ok(Rewrapped::Already);
            }
            let rewrapped = self.master.rewrap_data_key(&key.wrapped).await.map_err(|e| e.to_string())?;
            let swapped = self
                .keys
                .rewrap_data_key(key.id, &key.wrapped, &rewrapped, master_key_id)
                .await
                .map_err(|e| format!("the key store: {e}"))?;
            if swapped {
                return Ok(Rewrapped::Now);
            }
            key = match self.keys.data_key(key.id).await.map_err(|e| format!("the key store: {e}"))? {
                Some(key) => key,
                None => return Err("it is no longer in the key store".into()),
            };
            if force && key.master_key_id == master_key_id {
                // Someone else re-wrapped it meanwhile, under this master key.
                return Ok(Rewrapped::Now);
            }
        }
        Err("its stored form changed twice while it was re-wrapped; run the rewrap again".into())
    }

    /// The master key answers (`/ready` lists it as `kms`).
    pub async fn check_master_key(&self) -> Result<(), String> {
        self.master.check().await.map_err(|e| e.to_string())
    }
}

fn kms_error(e: KmsError) -> ImError {
    match e {
        KmsError::Unavailable(cause) => {
            tracing::warn!(%cause, "the key service is unavailable");
            ImError::unavailable("the key service is unavailable, retry later")
        }
        KmsError::Rejected(cause) => {
            tracing::error!(%cause, "the key service refused");
            ImError::internal("the key service refused the request")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use im_backends::SqliteStore;
    use im_core::{ClientMsgId, ConversationId, MessageId, Seq, UserId};

    const DAY_MS: i64 = 24 * 3600 * 1000;

    fn message(seq: u64, body: &'static str) -> NewMessage {
        NewMessage {
            msg_id: MessageId(100 + seq),
            conversation: ConversationId::private(UserId(1), UserId(2)).unwrap(),
            seq: Seq(seq),
            sender: UserId(1),
            client_msg_id: ClientMsgId::parse(&format!("c{seq}")).unwrap(),
            body: bytes::Bytes::from_static(body.as_bytes()),
            content_type: "text/plain".into(),
            server_time_ms: 1,
            sealed_with: None,
        }
    }

    async fn cipher(dir: &std::path::Path, rotation_days: u32) -> Arc<BodyCipher> {
        let store = Arc::new(SqliteStore::open(&dir.join("im.db")).await.unwrap());
        let master: Arc<dyn MasterKey> = Arc::new(LocalMasterKey::load_or_create(&dir.join("master.key")).unwrap());
        BodyCipher::start((master, Mode::Seal), store, Duration::from_secs(60), rotation_days, Arc::new(Metrics::new()))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn bodies_sealed_before_a_rotation_open_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let cipher = cipher(dir.path(), 90).await;
        let first = BodyCipher::seal(&cipher.sealing_key().await.unwrap(), &[message(1, "before")]);
        let first_key = first[0].sealed_with.expect("sealed");
        assert_ne!(first[0].body, message(1, "before").body);

        // Not due yet: the same key.
        let now = crate::clock::unix_ms();
        assert_eq!(cipher.check_rotation(now + 89 * DAY_MS).await.unwrap().id, first_key);
        // Due (time injected, not slept): a new key seals from now on.
        let rotated = cipher.check_rotation(now + 91 * DAY_MS).await.unwrap();
        assert_ne!(rotated.id, first_key);
        let second = BodyCipher::seal(&cipher.sealing_key().await.unwrap(), &[message(2, "after")]);
        assert_eq!(second[0].sealed_with, Some(rotated.id));

        let mut stored = [first[0].clone(), second[0].clone()];
        cipher.open(&mut stored).await.unwrap();
        assert_eq!(stored, [message(1, "before"), message(2, "after")]);
        // On demand too; old keys keep opening.
        let third = cipher.rotate().await.unwrap().active;
        assert!(third.id != rotated.id && third.id != first_key);
        let mut again = [first[0].clone()];
        cipher.open(&mut again).await.unwrap();
        assert_eq!(again[0].body, message(1, "before").body);
    }

    #[tokio::test]
    async fn rewrap_rewraps_keys_of_other_master_keys_or_all_with_force_and_bodies_still_open() {
        let dir = tempfile::tempdir().unwrap();
        let cipher = cipher(dir.path(), 0).await;
        let sealed = BodyCipher::seal(&cipher.sealing_key().await.unwrap(), &[message(1, "one")]);
        let second = cipher.rotate().await.unwrap();
        assert_eq!(second.previous, sealed[0].sealed_with);
        let report = cipher.rewrap_all(false).await.unwrap();
        assert_eq!(report, RewrapReport { rewrapped: 0, already_current: 2, failed: vec![] });

        let before = cipher.data_keys().await.unwrap();
        let report = cipher.rewrap_all(true).await.unwrap();
        assert_eq!(report, RewrapReport { rewrapped: 2, already_current: 0, failed: vec![] });
        let after = cipher.data_keys().await.unwrap();
        for (old, new) in before.iter().zip(&after) {
            assert_eq!((old.id, old.created_ms, old.retired_ms), (new.id, new.created_ms, new.retired_ms));
            assert_ne!(old.wrapped, new.wrapped, "key {} not re-wrapped", old.id);
        }
        // A fresh cipher (no key in cache) unwraps the new forms.
        let fresh = super::tests::cipher(dir.path(), 0).await;
        let mut stored = [sealed[0].clone()];
        fresh.open(&mut stored).await.unwrap();
        assert_eq!(stored[0].body, message(1, "one").body);
    }

    #[tokio::test]
    async fn a_body_moved_to_another_row_is_data_loss_naming_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let cipher = cipher(dir.path(), 0).await;
        let sealed = BodyCipher::seal(&cipher.sealing_key().await.unwrap(), &[message(1, "one"), message(2, "two")]);
        let mut moved = [NewMessage { body: sealed[1].body.clone(), ..sealed[0].clone() }];
        let error = cipher.open(&mut moved).await.unwrap_err();
        assert_eq!(error.code, im_core::ErrorCode::DataLoss);
        assert!(error.message.starts_with("message 101 (seq 1 of p:1:2)"), "{error}");
    }

    #[tokio::test]
    async fn a_node_that_only_opens_makes_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("im.db")).await.unwrap());
        let master: Arc<dyn MasterKey> =
            Arc::new(LocalMasterKey::load_or_create(&dir.path().join("master.key")).unwrap());
        let keys: Arc<dyn DataKeyStore> = store.clone();
        let cipher = BodyCipher::start(
            (master, Mode::OpenOnly),
            keys.clone(),
            Duration::from_secs(60),
            90,
            Arc::new(Metrics::new()),
        )
        .await
        .unwrap();
        assert!(!cipher.seals());
        assert_eq!(keys.active_data_key().await.unwrap(), None);
    }
}
