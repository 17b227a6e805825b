//! Where the gateway's `POST /login` checks passwords, and where its `users`
//! request finds names: the user directory in this process, or the User
//! Service (`Login`, `GetUser`); in a gateway process with no User Service
//! configured, nowhere, and each says so.

use std::num::NonZeroU32;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use axum::Router;
use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use im_auth::Tokens;
use im_config::Config;
use im_core::ports::{SignIn, User, UserStore};
use im_core::{ErrorCode, ImError};
use im_gateway::Gateway;
use im_gateway::login::{self, LoginLimits};
use im_gateway::unserved::Unserved;

use crate::connection_limits::PeerAddr;
use crate::remote::RemoteUsers;
use crate::tls::CallTls;

/// What a gateway asks the user directory: sign-in, and users by id and
/// name (the client protocol's `users` request).
pub struct DirectoryForGateway {
    pub sign_in: Arc<dyn SignIn>,
    pub users: Arc<dyn UserStore>,
}

/// The User Service at `USER_SERVICE_ADDR`, or [`NoDirectory`] when it is
/// not set.
pub fn remote(config: &Config, tokens: &Tokens, tls: &CallTls) -> anyhow::Result<DirectoryForGateway> {
    let user = &config.services.user;
    if user.addr.is_empty() {
        let users = Arc::new(Unserved("user names need the user service: set USER_SERVICE_ADDR on this gateway"));
        return Ok(DirectoryForGateway { sign_in: Arc::new(NoDirectory), users });
    }
    let users = Arc::new(
        RemoteUsers::new(&user.addr, user.timeout, tls, tokens.clone())
            .context("services.user.addr (USER_SERVICE_ADDR)")?,
    );
    Ok(DirectoryForGateway { sign_in: users.clone(), users })
}

/// Sign-in in a gateway that knows no user directory: it says what is
/// missing.
pub struct NoDirectory;

#[async_trait]
impl SignIn for NoDirectory {
    async fn sign_in(&self, _name: &str, _password: &str) -> Result<(User, String), ImError> {
        Err(ImError::new(
            ErrorCode::Unavailable,
            "sign-in with a password needs the user service: set USER_SERVICE_ADDR on this gateway",
        ))
    }
}

/// The gateway's HTTP side: `GET /ws` and `POST /login`, served with the
/// client's address (the sign-in limit counts per address).
pub fn gateway_service(
    gateway: &Arc<Gateway>,
    directory: Arc<dyn SignIn>,
    config: &Config,
) -> IntoMakeServiceWithConnectInfo<Router, PeerAddr> {
    // Validated to be at least 1.
    let per_minute = NonZeroU32::new(config.auth.login_attempts_per_address_per_minute).unwrap_or(NonZeroU32::MIN);
    let limits = LoginLimits {
        attempts_per_address_per_minute: per_minute,
        trusted_proxies: config.auth.trusted_proxy_networks(),
    };
    gateway
        .router()
        .merge(login::router::<PeerAddr>(directory, limits))
        .into_make_service_with_connect_info::<PeerAddr>()
}
