//! [`KnownUsers`]: which user ids exist, for the send path's recipient
//! check, without a round trip to the user directory per message.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};

use im_core::ports::{MessageStore, UserStore};
use im_core::{ImError, UserId};

/// The most user ids remembered (about 32 MB); past it the set starts
/// again from empty (the ids are asked for again as they are used).
pub const MAX_KNOWN_USERS: usize = 1_000_000;

/// Users are never deleted, so a positive answer is remembered for the life
/// of the process. While the directory cannot be asked (im-user down), a
/// user this node has not seen yet still counts as existing when the
/// message store holds a conversation of theirs; only a user with neither is
/// refused (with the directory's error, `UNAVAILABLE`).
pub struct KnownUsers {
    directory: Arc<dyn UserStore>,
    messages: Arc<dyn MessageStore>,
    known: RwLock<HashSet<UserId>>,
    max: usize,
}

impl KnownUsers {
    pub fn new(directory: Arc<dyn UserStore>, messages: Arc<dyn MessageStore>) -> Self {
        Self::with_limit(directory, messages, MAX_KNOWN_USERS)
    }

    pub fn with_limit(directory: Arc<dyn UserStore>, messages: Arc<dyn MessageStore>, max: usize) -> Self {
        Self { directory, messages, known: RwLock::default(), max }
    }

    pub async fn exists(&self, user: UserId) -> Result<bool, ImError> {
        if self.known.read().unwrap_or_else(PoisonError::into_inner).contains(&user) {
            return Ok(true);
        }
        let found = match self.directory.user_by_id(user).await {
            Ok(found) => found.is_some(),
            Err(e) => {
                // The directory is away: a user the store has conversations
                // of exists; anyone else cannot be checked now.
                let stored = self.messages.conversations_of(user).await.map_err(ImError::from)?;
                if stored.is_empty() {
                    return Err(e.into());
                }
                tracing::debug!(user = user.0, "user directory unavailable: the user is known from the store");
                true
            }
        };
        if found {
            self.remember(user);
        }
        Ok(found)
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.known.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remember(&self, user: UserId) {
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= self.max {
            known.clear();
        }
        known.insert(user);
    }
}
