//! [`RemoteUsers`]: the `UserStore` port over `im.user.v1.UserService`, with
//! a `users` service credential: lookups only. `create_user` needs an admin
//! credential, which a node does not hold: the directory refuses it
//! (`PERMISSION_DENIED`). A node with a remote directory creates no users
//! (imctl calls im-user for that).

use std::time::Duration;

use async_trait::async_trait;
use im_auth::{Scope, Tokens};
use im_core::error::BackendError;
use im_core::ports::{BackendResult, CreateUser, User, UserStore};
use im_core::{UserId, UserStatus};
use im_proto::user::get_user_request::Key;
use im_proto::user::user_service_client::UserServiceClient;
use im_proto::user::{self as pb, CreateUserRequest, GetUserRequest};
use tonic::transport::Channel;

use super::channel::{backend_error, lazy_channel};
use super::credential::ServiceCredential;
use crate::tls::CallTls;

/// The user directory of an `im-user` process.
pub struct RemoteUsers {
    client: UserServiceClient<Channel>,
    credential: ServiceCredential,
}

impl RemoteUsers {
    /// `addr` and `timeout` are `USER_SERVICE_ADDR` and `USER_SERVICE_TIMEOUT`;
    /// calls carry a `users` service credential signed with `tokens`.
    pub fn new(addr: &str, timeout: Duration, tls: &CallTls, tokens: Tokens) -> BackendResult<Self> {
        let credential = ServiceCredential::new(tokens, Scope::Users);
        Ok(Self { client: UserServiceClient::new(lazy_channel(addr, timeout, tls)?), credential })
    }

    #[cfg(test)]
    pub(super) fn credential(&self) -> &ServiceCredential {
        &self.credential
    }

    async fn get(&self, key: Key) -> BackendResult<Option<User>> {
        match self.client.clone().get_user(self.credential.request(GetUserRequest { key: Some(key) })).await {
            Ok(user) => Ok(Some(from_pb(user.into_inner()))),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(backend_error("user service GetUser", &status)),
        }
    }
}

fn from_pb(user: pb::User) -> User {
    User {
        id: UserId(user.id),
        name: user.name,
        created_at_ms: user.created_at_ms,
        status: UserStatus { disabled: user.disabled, token_generation: user.token_generation },
    }
}

#[async_trait]
impl UserStore for RemoteUsers {
    /// Creates a user with a new id; a taken name is a typed outcome.
    async fn create_user(&self, name: &str) -> BackendResult<CreateUser> {
        let request = self.credential.request(CreateUserRequest { name: name.to_owned() });
        match self.client.clone().create_user(request).await {
            Ok(response) => response
                .into_inner()
                .user
                .map(|user| CreateUser::Created(from_pb(user)))
                .ok_or_else(|| BackendError::other("user service answered CreateUser without a user")),
            // The directory answers a taken name with FAILED_PRECONDITION.
            Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(CreateUser::NameTaken),
            Err(status) => Err(backend_error("user service CreateUser", &status)),
        }
    }

    async fn user_by_id(&self, id: UserId) -> BackendResult<Option<User>> {
        self.get(Key::Id(id.0)).await
    }

    async fn user_by_name(&self, name: &str) -> BackendResult<Option<User>> {
        self.get(Key::Name(name.to_owned())).await
    }
}
