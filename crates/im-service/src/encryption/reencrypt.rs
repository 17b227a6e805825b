//! `imctl keys reencrypt`: stored bodies sealed again under the active data
//! key, one window of the store at a time. The caller drives the walk and
//! sets its pace; this node only does one window per call, so the walk
//! holds nothing between calls and any node can serve the next window.

use im_core::ports::{Reseal, ResealStore};
use im_core::{ErrorCode, ImError};

use super::BodyCipher;

/// The most rows one window examines (`limit` is capped to it).
pub const MAX_WINDOW: u32 = 1000;
/// The window when the caller names none.
pub const DEFAULT_WINDOW: u32 = 200;

/// What one window did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReencryptStep {
    /// The key the window's bodies were sealed with.
    pub key: u64,
    /// Rows not sealed with `key` when read.
    pub examined: u64,
    pub resealed: u64,
    /// Rows whose key changed between the read and the write.
    pub changed_meanwhile: u64,
    /// The rows that cannot be decrypted, each named (`DATA_LOSS`); left as
    /// they are.
    pub failures: Vec<String>,
    /// Where the next window starts.
    pub next: u64,
    /// No row after `next` needs re-encrypting.
    pub done: bool,
}

impl BodyCipher {
    /// Seals under the active key the next `limit` stored bodies after
    /// position `after` that are not sealed with it (clear ones included).
    /// The whole window is opened before anything is written: with the KMS
    /// away it fails `UNAVAILABLE` and writes nothing. A row that cannot be
    /// decrypted is reported and skipped, never rewritten.
    pub async fn reencrypt_window(
        &self,
        store: &dyn ResealStore,
        after: u64,
        limit: u32,
    ) -> Result<ReencryptStep, ImError> {
        if !self.seals() {
            return Err(ImError::new(
                ErrorCode::FailedPrecondition,
                "this node does not seal bodies (ENCRYPTION_ENABLED is off): nothing to re-encrypt with",
            ));
        }
        let limit = match limit {
            0 => DEFAULT_WINDOW,
            n => n.min(MAX_WINDOW),
        };
        // The store's active key, not only the one this node adopted at its
        // last check: a rotation on another node is followed at once.
        let active = self.check_rotation(crate::clock::unix_ms()).await?;
        let key = self.key(active.id).await?;
        let window = store.bodies_to_reseal(active.id, after, limit).await?;
        let mut step = ReencryptStep {
            key: active.id,
            examined: window.len() as u64,
            next: window.last().map_or(after, |row| row.position),
            done: window.len() < limit as usize,
            ..ReencryptStep::default()
        };
        let mut reseals = Vec::with_capacity(window.len());
        for row in window {
            let expected = row.message.sealed_with;
            let mut clear = [row.message];
            match self.open(&mut clear).await {
                Ok(()) => {}
                Err(e) if e.code == ErrorCode::DataLoss => {
                    step.failures.push(e.message);
                    continue;
                }
                Err(e) => return Err(e),
            }
            let [sealed] = <[_; 1]>::try_from(Self::seal(&key, &clear)).expect("one body in, one out");
            reseals.push(Reseal { position: row.position, expected, body: sealed.body, sealed_with: active.id });
        }
        step.resealed = store.reseal(&reseals).await?;
        step.changed_meanwhile = reseals.len() as u64 - step.resealed;
        self.metrics.reencrypted_rows.inc_by(step.resealed);
        Ok(step)
    }
}
