//! The client protocol's `users` request: names for ids, ids for names, so
//! that a client (the browser app) shows people, not numbers.
//!
//! Users are never deleted or renamed, so every user found is remembered
//! for the life of the process, up to [`MAX_REMEMBERED`] (then the memory
//! starts over). Users not found are not remembered: they may be created
//! later.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use im_core::ports::{BackendResult, User, UserStore};
use im_core::{ImError, UserId};
use im_proto::client::{UserInfo, UserList, UsersRequest};
use parking_lot::RwLock;

/// Ids and names one request may ask for, together.
pub const MAX_USERS_PER_REQUEST: usize = 256;

/// Users remembered (about 100 bytes each).
pub const MAX_REMEMBERED: usize = 100_000;

/// Directory calls one request has in flight at once.
const LOOKUPS_AT_ONCE: usize = 8;

/// The longest name worth asking for (names are validated at creation to be
/// shorter); a longer one is simply not found.
const MAX_NAME_BYTES: usize = 256;

/// One user to ask the directory for.
enum Key {
    Id(UserId),
    Name(String),
}

async fn fetch(directory: &dyn UserStore, key: Key) -> BackendResult<Option<User>> {
    match key {
        Key::Id(id) => directory.user_by_id(id).await,
        Key::Name(name) => directory.user_by_name(&name).await,
    }
}

#[derive(Default)]
struct Remembered {
    names: HashMap<UserId, Arc<str>>,
    ids: HashMap<Arc<str>, UserId>,
}

/// Users by id and by name, through the user directory.
pub struct UserNames {
    directory: Arc<dyn UserStore>,
    remembered: RwLock<Remembered>,
    max: usize,
}

impl UserNames {
    pub fn new(directory: Arc<dyn UserStore>) -> Self {
        Self::with_limit(directory, MAX_REMEMBERED)
    }

    pub fn with_limit(directory: Arc<dyn UserStore>, max: usize) -> Self {
        Self { directory, remembered: RwLock::default(), max: max.max(1) }
    }

    /// The users of `request` that exist, each once. A directory that
    /// cannot be reached fails the request (`UNAVAILABLE`) unless every
    /// user asked for is remembered.
    pub async fn lookup(&self, request: UsersRequest) -> Result<UserList, ImError> {
        let asked = request.ids.len() + request.names.len();
        if asked > MAX_USERS_PER_REQUEST {
            return Err(ImError::invalid(format!(
                "{asked} users asked for at once; at most {MAX_USERS_PER_REQUEST} (ids and names together)"
            )));
        }
        let mut found: HashMap<UserId, Arc<str>> = HashMap::new();
        let mut missing_ids = Vec::new();
        let mut missing_names = Vec::new();
        {
            let remembered = self.remembered.read();
            for id in request.ids {
                match remembered.names.get(&UserId(id)) {
                    Some(name) => {
                        found.insert(UserId(id), name.clone());
                    }
                    None if id != 0 => missing_ids.push(UserId(id)),
                    None => {}
                }
            }
            for name in request.names {
                match remembered.ids.get(name.as_str()) {
                    Some(&id) => {
                        found.insert(id, remembered.names[&id].clone());
                    }
                    None if !name.is_empty() && name.len() <= MAX_NAME_BYTES => missing_names.push(name),
                    None => {}
                }
            }
        }
        missing_ids.sort_unstable();
        missing_ids.dedup();
        missing_names.sort_unstable();
        missing_names.dedup();

        let keys = missing_ids.into_iter().map(Key::Id).chain(missing_names.into_iter().map(Key::Name));
        let mut lookups =
            futures::stream::iter(keys.map(|key| fetch(&*self.directory, key))).buffer_unordered(LOOKUPS_AT_ONCE);
        while let Some(result) = lookups.next().await {
            if let Some(user) = result.map_err(ImError::from)? {
                found.insert(user.id, self.remember(&user));
            }
        }
        Ok(UserList {
            users: found.into_iter().map(|(id, name)| UserInfo { id: id.0, name: name.to_string() }).collect(),
        })
    }

    fn remember(&self, user: &User) -> Arc<str> {
        let name: Arc<str> = user.name.as_str().into();
        let mut remembered = self.remembered.write();
        if remembered.names.len() >= self.max {
            *remembered = Remembered::default();
        }
        remembered.names.insert(user.id, name.clone());
        remembered.ids.insert(name.clone(), user.id);
        name
    }

    /// How many users are remembered.
    pub fn remembered(&self) -> usize {
        self.remembered.read().names.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use im_core::ErrorCode;
    use im_core::error::BackendError;
    use im_core::ports::CreateUser;

    use super::*;

    /// Users 1..=3 named alice, bob, carol; counts the calls; can be down.
    #[derive(Default)]
    struct Directory {
        calls: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
    }

    const NAMES: [&str; 3] = ["alice", "bob", "carol"];

    fn user(id: u64) -> User {
        User { id: UserId(id), name: NAMES[id as usize - 1].to_owned(), created_at_ms: 0, status: Default::default() }
    }

    impl Directory {
        fn answer(&self) -> BackendResult<()> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if self.down.load(Ordering::Relaxed) {
                return Err(BackendError::unavailable("directory down"));
            }
            Ok(())
        }
    }

    #[async_trait]
    impl UserStore for Directory {
        async fn create_user(&self, _name: &str) -> BackendResult<CreateUser> {
            unreachable!("a lookup creates no user")
        }
        async fn user_by_id(&self, id: UserId) -> BackendResult<Option<User>> {
            self.answer()?;
            Ok((1..=3).contains(&id.0).then(|| user(id.0)))
        }
        async fn user_by_name(&self, name: &str) -> BackendResult<Option<User>> {
            self.answer()?;
            Ok(NAMES.iter().position(|n| *n == name).map(|i| user(i as u64 + 1)))
        }
    }

    fn sorted(list: UserList) -> Vec<(u64, String)> {
        let mut users: Vec<_> = list.users.into_iter().map(|u| (u.id, u.name)).collect();
        users.sort();
        users
    }

    fn request(ids: &[u64], names: &[&str]) -> UsersRequest {
        UsersRequest { ids: ids.to_vec(), names: names.iter().map(|n| (*n).to_owned()).collect() }
    }

    #[tokio::test]
    async fn ids_and_names_are_answered_once_each_and_unknown_ones_left_out() {
        let directory = Arc::new(Directory::default());
        let names = UserNames::new(directory.clone());
        let list = names.lookup(request(&[1, 2, 2, 9, 0], &["carol", "bob", "nobody", ""])).await.unwrap();
        assert_eq!(sorted(list), [(1, "alice".into()), (2, "bob".into()), (3, "carol".into())]);
        // 1, 2, 9 by id; carol, bob, nobody by name: duplicates and empties are not asked.
        assert_eq!(directory.calls.load(Ordering::Relaxed), 6);
    }

    #[tokio::test]
    async fn users_found_are_remembered_and_answered_while_the_directory_is_down() {
        let directory = Arc::new(Directory::default());
        let names = UserNames::new(directory.clone());
        names.lookup(request(&[1], &["bob"])).await.unwrap();
        directory.down.store(true, Ordering::Relaxed);
        let calls = directory.calls.load(Ordering::Relaxed);
        let list = names.lookup(request(&[2], &["alice"])).await.unwrap();
        assert_eq!(sorted(list), [(1, "alice".into()), (2, "bob".into())]);
        assert_eq!(directory.calls.load(Ordering::Relaxed), calls, "answered from memory");

        let error = names.lookup(request(&[3], &[])).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::Unavailable);
    }

    #[tokio::test]
    async fn too_many_at_once_is_refused_before_the_directory_is_asked() {
        let directory = Arc::new(Directory::default());
        let names = UserNames::new(directory.clone());
        let ids: Vec<u64> = (1..=200).collect();
        let error = names.lookup(request(&ids, &["a"; 57])).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert_eq!(directory.calls.load(Ordering::Relaxed), 0);
        names.lookup(request(&ids, &["a"; 56])).await.unwrap();
    }

    #[tokio::test]
    async fn memory_is_bounded() {
        let names = UserNames::with_limit(Arc::new(Directory::default()), 2);
        names.lookup(request(&[1, 2], &[])).await.unwrap();
        assert_eq!(names.remembered(), 2);
        names.lookup(request(&[3], &[])).await.unwrap();
        assert!(names.remembered() <= 2);
    }
}
