//! Users as the command line names them: a numeric id, or a name looked up
//! in the user directory (`--grpc-url`) with the caller's own token.

use anyhow::Context;
use im_proto::user::GetUserRequest;
use im_proto::user::get_user_request::Key;
use im_proto::user::user_service_client::UserServiceClient;

use crate::cli::GlobalArgs;
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

/// The id of `user`: as given, or looked up by name in the user directory
/// with `token` (a user may look up any user).
pub async fn user_id(global: &GlobalArgs, token: &str, user: &UserRef) -> anyhow::Result<u64> {
    Ok(user_ids(global, token, std::slice::from_ref(user)).await?[0])
}

/// The ids of `users`, in order: [`user_id`] of each, over one connection
/// to the user directory, opened only when a name needs it.
pub async fn user_ids(global: &GlobalArgs, token: &str, users: &[UserRef]) -> anyhow::Result<Vec<u64>> {
    let mut directory = None;
    let mut ids = Vec::with_capacity(users.len());
    for user in users {
        let name = match user {
            UserRef::Id(id) => {
                ids.push(*id);
                continue;
            }
            UserRef::Name(name) => name,
        };
        let (client, authorization) = match &mut directory {
            Some(open) => open,
            None => {
                let authorization = grpc::bearer(token, "the token of --token")?;
                let channel =
                    grpc::channel(&global.grpc_url, global.timeout, global.ca.as_ref(), "user service").await?;
                directory.insert((UserServiceClient::new(channel), authorization))
            }
        };
        let request = grpc::authorized(GetUserRequest { key: Some(user.key()) }, authorization);
        match grpc::answer(client.get_user(request).await) {
            Ok(found) => ids.push(found.id),
            Err(error) if error.code == "NOT_FOUND" => anyhow::bail!("no user is named {name:?}"),
            Err(error) => {
                return Err(error).with_context(|| format!("looking up the user {name:?} at {}", global.grpc_url));
            }
        }
    }
    Ok(ids)
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
}
