//! The key layout: `{prefix}/users/{user_id}/{gateway_id}`, one key per user
//! and gateway. The gateway id is the rest of the key, so it may contain `/`.

use im_core::{GatewayId, UserId};

#[derive(Clone, Debug)]
pub(super) struct Keys {
    /// `{prefix}/users/`: every registration starts with it.
    users: String,
}

impl Keys {
    /// `prefix` without a trailing `/` (one is ignored).
    pub fn new(prefix: &str) -> Self {
        Self { users: format!("{}/users/", prefix.trim_end_matches('/')) }
    }

    /// The prefix every registration key starts with, for listing and watching.
    pub fn users(&self) -> &str {
        &self.users
    }

    pub fn registration(&self, user: UserId, gateway: &GatewayId) -> String {
        format!("{}{user}/{gateway}", self.users)
    }

    /// The user and gateway a registration key names; `None` for a key under
    /// the prefix that is not one (written by something else).
    pub fn parse(&self, key: &[u8]) -> Option<(UserId, GatewayId)> {
        let rest = std::str::from_utf8(key.strip_prefix(self.users.as_bytes())?).ok()?;
        let (user, gateway) = rest.split_once('/')?;
        if gateway.is_empty() {
            return None;
        }
        Some((UserId(user.parse().ok()?), GatewayId(gateway.to_owned())))
    }
}

/// The first key after every key that starts with `prefix` (etcd's range end
/// for a prefix).
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_key_parses_back_to_its_user_and_gateway() {
        let keys = Keys::new("/im/");
        let gateway = GatewayId("gw/east-1".to_owned());
        let key = keys.registration(UserId(42), &gateway);
        assert_eq!(key, "/im/users/42/gw/east-1");
        assert_eq!(keys.parse(key.as_bytes()), Some((UserId(42), gateway)));
    }

    #[test]
    fn foreign_keys_under_the_prefix_are_ignored() {
        let keys = Keys::new("/im");
        for key in ["/im/users/42", "/im/users/42/", "/im/users/x/gw", "/im/other/42/gw", "/imx/users/1/gw"] {
            assert_eq!(keys.parse(key.as_bytes()), None, "{key}");
        }
    }

    #[test]
    fn the_prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/im/users/"), b"/im/users0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
