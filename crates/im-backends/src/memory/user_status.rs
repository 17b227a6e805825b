//! Users' standing as one process knows it: [`StatusTable`], the map every
//! token check reads and the listeners told of each change (shared by the
//! in-process board here and the etcd one), and [`MemoryUserStatusBoard`],
//! the embedded board: publishing is applying, since every reader is in
//! this process.

use std::collections::HashMap;

use async_trait::async_trait;
use im_core::ports::{BackendResult, StatusListener, UserStatusBoard, UserStatusView};
use im_core::{UserId, UserStatus};
use parking_lot::RwLock;

/// User → status for the users whose status is not the default (those an
/// admin stopped once; everyone else needs no entry), and who to tell of
/// changes.
#[derive(Default)]
pub(crate) struct StatusTable {
    statuses: RwLock<HashMap<UserId, UserStatus>>,
    listeners: RwLock<Vec<StatusListener>>,
}

impl StatusTable {
    pub fn status(&self, user: UserId) -> UserStatus {
        self.statuses.read().get(&user).copied().unwrap_or_default()
    }

    pub fn on_change(&self, listener: StatusListener) {
        self.listeners.write().push(listener);
    }

    /// Records `status` for `user` and tells the listeners if it changed
    /// (a watch echoing this process's own write tells nobody twice).
    pub fn apply(&self, user: UserId, status: UserStatus) {
        let previous = {
            let mut statuses = self.statuses.write();
            if status.is_default() { statuses.remove(&user) } else { statuses.insert(user, status) }
        };
        if previous.unwrap_or_default() != status {
            self.notify(user, status);
        }
    }

    /// Replaces everything with `entries` (a fresh listing), telling the
    /// listeners of every user whose status differs from before: changes
    /// made while the listing could not be kept current still close
    /// connections.
    pub fn replace_all(&self, entries: impl IntoIterator<Item = (UserId, UserStatus)>) {
        let fresh: HashMap<UserId, UserStatus> = entries.into_iter().filter(|(_, s)| !s.is_default()).collect();
        let previous = std::mem::replace(&mut *self.statuses.write(), fresh.clone());
        for (user, status) in &fresh {
            if previous.get(user) != Some(status) {
                self.notify(*user, *status);
            }
        }
        for user in previous.keys().filter(|user| !fresh.contains_key(user)) {
            self.notify(*user, UserStatus::default());
        }
    }

    fn notify(&self, user: UserId, status: UserStatus) {
        for listener in self.listeners.read().iter() {
            listener(user, status);
        }
    }
}

/// The embedded `UserStatusBoard`: loaded from the store at start, and
/// changed by the in-process user directory.
#[derive(Default)]
pub struct MemoryUserStatusBoard {
    table: StatusTable,
}

impl MemoryUserStatusBoard {
    /// A board holding `statuses` (the store's changed users).
    pub fn new(statuses: impl IntoIterator<Item = (UserId, UserStatus)>) -> Self {
        let board = Self::default();
        board.table.replace_all(statuses);
        board
    }
}

impl UserStatusView for MemoryUserStatusBoard {
    fn status(&self, user: UserId) -> UserStatus {
        self.table.status(user)
    }

    fn on_change(&self, listener: StatusListener) {
        self.table.on_change(listener);
    }
}

#[async_trait]
impl UserStatusBoard for MemoryUserStatusBoard {
    async fn publish(&self, user: UserId, status: UserStatus) -> BackendResult<()> {
        self.table.apply(user, status);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use im_core::StatusChange;
    use parking_lot::Mutex;

    use super::*;

    fn recorder(table: &StatusTable) -> Arc<Mutex<Vec<(UserId, UserStatus)>>> {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let sink = heard.clone();
        table.on_change(Box::new(move |user, status| sink.lock().push((user, status))));
        heard
    }

    #[test]
    fn listeners_hear_each_change_once() {
        let table = StatusTable::default();
        let heard = recorder(&table);
        let disabled = UserStatus::default().after(StatusChange::Disable);
        table.apply(UserId(1), disabled);
        table.apply(UserId(1), disabled);
        assert_eq!(table.status(UserId(1)), disabled);
        table.apply(UserId(1), UserStatus::default());
        assert_eq!(*heard.lock(), vec![(UserId(1), disabled), (UserId(1), UserStatus::default())]);
        assert!(table.statuses.read().is_empty(), "default statuses take no room");
    }

    #[test]
    fn a_listing_tells_of_what_changed_while_it_was_not_watched() {
        let table = StatusTable::default();
        let revoked = UserStatus::default().after(StatusChange::RevokeTokens);
        let disabled = UserStatus::default().after(StatusChange::Disable);
        table.apply(UserId(1), disabled);
        table.apply(UserId(2), revoked);
        let heard = recorder(&table);
        table.replace_all([(UserId(2), revoked), (UserId(3), disabled)]);
        let mut heard = heard.lock().clone();
        heard.sort_by_key(|(user, _)| *user);
        assert_eq!(heard, vec![(UserId(1), UserStatus::default()), (UserId(3), disabled)]);
        assert_eq!(table.status(UserId(1)), UserStatus::default());
    }

    #[tokio::test]
    async fn the_memory_board_starts_from_the_store_and_publishing_is_applying() {
        let disabled = UserStatus::default().after(StatusChange::Disable);
        let board = MemoryUserStatusBoard::new([(UserId(4), disabled)]);
        assert_eq!(board.status(UserId(4)), disabled);
        let heard = recorder(&board.table);
        board.publish(UserId(4), UserStatus::default()).await.unwrap();
        assert_eq!(board.status(UserId(4)), UserStatus::default());
        assert_eq!(heard.lock().len(), 1);
    }
}
