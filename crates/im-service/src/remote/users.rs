//! [`RemoteUsers`]: the `UserStore` port over `im.user.v1.UserService`, with
//! a `users` service credential: lookups only. `create_user` needs an admin
//! credential, which a node does not hold: the directory refuses it
//! (`PERMISSION_DENIED`). A node with a remote directory creates no users
//! (imctl calls im-user for that).

use std::time::Duration;

use async_trait::async_trait;
use im_auth::{Scope, Tokens};
use im_core::error::BackendError;
use im_core::ports::{BackendResult, CreateUser, SignIn, User, UserStore};
use im_core::{ImError, UserId, UserStatus};
use im_proto::user::get_user_request::Key;
use im_proto::user::user_service_client::UserServiceClient;
use im_proto::user::{self as pb, CreateUserRequest, GetUserRequest, LoginRequest};
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

/// The User Service's `Login`. It needs no credential; the call carries the
/// node's all the same (harmless, and one way to build requests).
#[async_trait]
impl SignIn for RemoteUsers {
    async fn sign_in(&self, name: &str, password: &str) -> Result<(User, String), ImError> {
        let request = self.credential.request(LoginRequest { name: name.to_owned(), password: password.to_owned() });
        let response = self.client.clone().login(request).await.map_err(|status| {
            let error = im_proto::convert::from_status(&status);
            match error.code {
                // The cause (an address, a transport error) is logged here,
                // not handed to a client that signs in.
                im_core::ErrorCode::Unavailable | im_core::ErrorCode::Internal => {
                    tracing::warn!(code = %status.code(), message = status.message(), "user service Login failed");
                    ImError::new(im_core::ErrorCode::Unavailable, "the user directory is unavailable: try again")
                }
                _ => error,
            }
        })?;
        let response = response.into_inner();
        let user = response.user.ok_or_else(|| ImError::internal("user service answered Login without a user"))?;
        Ok((from_pb(user), response.token))
    }
}

#[async_trait]
impl UserStore for RemoteUsers {
    /// Creates a user with a new id; a taken name is a typed outcome.
    async fn create_user(&self, name: &str) -> BackendResult<CreateUser> {
        let request = self.credential.request(CreateUserRequest { name: name.to_owned(), password: String::new() });
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
