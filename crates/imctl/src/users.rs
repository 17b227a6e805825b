//! Users as the command line names them (a numeric id, or a name), and as
//! imctl shows them (a name, or the id when the name cannot be found): both
//! looked up in the user directory (`--grpc-url`) with the caller's own token.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use im_proto::user::get_user_request::Key;
use im_proto::user::user_service_client::UserServiceClient;
use im_proto::user::{GetUserRequest, User};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::cli::GlobalArgs;
use crate::error::RemoteError;
use crate::grpc;

/// A user named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Id(u64),
    Name(String),
}

/// The most characters of a user name (as `CreateUser` accepts them).
const MAX_NAME_CHARS: usize = 64;

impl UserRef {
    /// Digits are an id (at least 1); anything else must be a user name:
    /// 1-64 letters, digits, '_', '-' or '.'.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<u64>() {
                Ok(id) if id >= 1 => Ok(Self::Id(id)),
                _ => Err(format!("{text} is not a user id (1 to {})", u64::MAX)),
            };
        }
        let valid = text.chars().count() <= MAX_NAME_CHARS
            && !text.is_empty()
            && text.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err(format!(
                "{text:?} is neither a user id nor a user name (1-{MAX_NAME_CHARS} letters, digits, '_', '-', '.')"
            ));
        }
        Ok(Self::Name(text.to_owned()))
    }

    /// The user directory's key for this user.
    pub fn key(&self) -> Key {
        match self {
            Self::Id(id) => Key::Id(*id),
            Self::Name(name) => Key::Name(name.clone()),
        }
    }
}

/// The user directory at `--grpc-url`, called with one user's token. It is
/// connected on first use, so a command that needs no lookup never connects.
struct Directory<'a> {
    global: &'a GlobalArgs,
    token: &'a str,
    open: Option<(UserServiceClient<Channel>, MetadataValue<Ascii>)>,
}

impl Directory<'_> {
    /// `GetUser`. The outer error: the directory could not be asked (not
    /// reachable, a token unfit for a header); the inner one: its refusal.
    async fn get_user(&mut self, key: Key) -> anyhow::Result<Result<User, RemoteError>> {
        let (client, authorization) = match &mut self.open {
            Some(open) => open,
            None => {
                let authorization = grpc::bearer(self.token, "the token of --token")?;
                let global = self.global;
                let channel =
                    grpc::channel(&global.grpc_url, global.timeout, global.ca.as_ref(), "user service").await?;
                self.open.insert((UserServiceClient::new(channel), authorization))
            }
        };
        let request = grpc::authorized(GetUserRequest { key: Some(key) }, authorization);
        Ok(grpc::answer(client.get_user(request).await))
    }
}

/// How many names a [`UserNames`] keeps: a chat in a big group meets many
/// senders over hours, and its memory must stay bounded.
const NAMES_CACHED: usize = 1024;

/// After a failed lookup, how long names are not looked up (ids are shown):
/// a directory that is down then costs one wait now and then, not one per
/// message, and names come back once it is up again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Users by name and names by id, looked up in the user directory as the
/// user of `--token`, over one connection. Finding an id is an error when it
/// fails (the command cannot go on); finding a name is not (the id is shown
/// instead), and names found are cached.
pub struct UserNames<'a> {
    directory: Directory<'a>,
    cache: NameCache,
    /// No name is looked up before this (see [`RETRY_AFTER`]).
    paused_until: Option<Instant>,
    /// Whether the first failed lookup was reported (later ones are not: a chat would repeat it).
    warned: bool,
}

impl<'a> UserNames<'a> {
    pub fn new(global: &'a GlobalArgs, token: &'a str) -> Self {
        Self {
            directory: Directory { global, token, open: None },
            cache: NameCache::new(NAMES_CACHED),
            paused_until: None,
            warned: false,
        }
    }

    /// The id of `user`: as given, or looked up by name (a user may look up
    /// any user). The name is remembered for [`Self::name_of`].
    pub async fn id_of(&mut self, user: &UserRef) -> anyhow::Result<u64> {
        let name = match user {
            UserRef::Id(id) => return Ok(*id),
            UserRef::Name(name) => name,
        };
        match self.directory.get_user(user.key()).await? {
            Ok(found) => {
                self.cache.insert(found.id, Some(found.name));
                Ok(found.id)
            }
            Err(refused) if refused.code == "NOT_FOUND" => bail!("no user is named {name:?}"),
            Err(refused) => Err(refused)
                .with_context(|| format!("looking up the user {name:?} at {}", self.directory.global.grpc_url)),
        }
    }

    /// The ids of `users`, in order: [`Self::id_of`] of each.
    pub async fn ids_of(&mut self, users: &[UserRef]) -> anyhow::Result<Vec<u64>> {
        let mut ids = Vec::with_capacity(users.len());
        for user in users {
            ids.push(self.id_of(user).await?);
        }
        Ok(ids)
    }

    /// The name of user `id`; `None` when the directory does not know it or
    /// could not be asked (reported once on stderr).
    pub async fn lookup(&mut self, id: u64) -> Option<String> {
        if let Some(known) = self.cache.get(id) {
            return known.clone();
        }
        if self.paused_until.is_some_and(|until| Instant::now() < until) {
            return None;
        }
        let found = match self.directory.get_user(Key::Id(id)).await {
            Ok(Ok(user)) => Some(user.name).filter(|name| !name.is_empty()),
            Ok(Err(refused)) if refused.code == "NOT_FOUND" => None,
            Ok(Err(refused)) => {
                let url = &self.directory.global.grpc_url;
                return self.failed(anyhow::Error::from(refused).context(format!("looking up user {id} at {url}")));
            }
            Err(unreachable) => return self.failed(unreachable),
        };
        self.cache.insert(id, found.clone());
        found
    }

    /// Pauses lookups after `error`, and reports the first.
    fn failed(&mut self, error: anyhow::Error) -> Option<String> {
        self.paused_until = Some(Instant::now() + RETRY_AFTER);
        if !std::mem::replace(&mut self.warned, true) {
            eprintln!("warning: user ids are shown instead of names: {error:#}");
        }
        None
    }

    /// The name of user `id`, or `user {id}` when it cannot be found.
    pub async fn name_of(&mut self, id: u64) -> String {
        self.lookup(id).await.unwrap_or_else(|| unnamed(id))
    }

    /// `alice (3)`, or `user 3` when the name cannot be found.
    pub async fn label(&mut self, id: u64) -> String {
        label(id, self.lookup(id).await.as_deref())
    }

    /// The names of `ids` that can be found, one lookup after another.
    pub async fn names(&mut self, ids: &[u64]) -> Names {
        let mut names = Names::default();
        for &id in ids {
            if let Some(name) = self.lookup(id).await {
                names.0.insert(id, name);
            }
        }
        names
    }
}

/// Who user `id` is when the name is unknown.
pub fn unnamed(id: u64) -> String {
    format!("user {id}")
}

/// A user as a person and an id: `alice (3)`, or `user 3` without a name.
pub fn label(id: u64, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{name} ({id})"),
        None => unnamed(id),
    }
}

/// Names found for some ids ([`UserNames::names`]); an id without one is absent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Names(HashMap<u64, String>);

impl Names {
    pub fn get(&self, id: u64) -> Option<&str> {
        self.0.get(&id).map(String::as_str)
    }

    /// [`label`] of `id`.
    pub fn label(&self, id: u64) -> String {
        label(id, self.get(id))
    }
}

impl FromIterator<(u64, String)> for Names {
    fn from_iter<I: IntoIterator<Item = (u64, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// Names by id, at most `capacity` of them: the oldest goes first.
#[derive(Debug)]
struct NameCache {
    capacity: usize,
    /// `None`: the directory has no such user (not asked again either).
    names: HashMap<u64, Option<String>>,
    /// The ids cached, oldest first.
    order: VecDeque<u64>,
}

impl NameCache {
    fn new(capacity: usize) -> Self {
        Self { capacity, names: HashMap::new(), order: VecDeque::new() }
    }

    fn get(&self, id: u64) -> Option<&Option<String>> {
        self.names.get(&id)
    }

    fn insert(&mut self, id: u64, name: Option<String>) {
        if self.names.insert(id, name).is_some() {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.names.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_ids_and_the_rest_are_checked_names() {
        assert_eq!(UserRef::parse("7"), Ok(UserRef::Id(7)));
        assert_eq!(UserRef::parse("bob"), Ok(UserRef::Name("bob".into())));
        assert_eq!(UserRef::parse("b.o_b-2"), Ok(UserRef::Name("b.o_b-2".into())));
        assert_eq!(UserRef::parse("7bob"), Ok(UserRef::Name("7bob".into())));
        for bad in ["0", "", "bob smith", "<b>", "99999999999999999999999", &"x".repeat(65)] {
            assert!(UserRef::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(UserRef::parse(&"x".repeat(64)), Ok(UserRef::Name("x".repeat(64))));
    }

    #[test]
    fn the_cache_drops_its_oldest_name_beyond_its_capacity() {
        let mut cache = NameCache::new(2);
        cache.insert(1, Some("alice".into()));
        cache.insert(2, None);
        cache.insert(1, Some("alice".into()));
        assert_eq!((cache.get(1), cache.get(2)), (Some(&Some("alice".into())), Some(&None)));
        cache.insert(3, Some("carol".into()));
        assert_eq!(cache.get(1), None, "the oldest went");
        assert_eq!((cache.get(2), cache.get(3)), (Some(&None), Some(&Some("carol".into()))));
        assert_eq!((cache.names.len(), cache.order.len()), (2, 2));
    }

    #[test]
    fn users_show_as_name_and_id_or_the_id_alone() {
        let names: Names = [(3, "carol".to_owned())].into_iter().collect();
        assert_eq!((names.label(3), names.label(9)), ("carol (3)".to_owned(), "user 9".to_owned()));
        assert_eq!((names.get(3), names.get(9)), (Some("carol"), None));
        assert_eq!(unnamed(17), "user 17");
    }
}
