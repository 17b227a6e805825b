//! Where the gateway's `POST /login` checks passwords: the user directory in
//! this process, or the User Service's `Login`; in a gateway process with no
//! User Service configured, nowhere, and sign-in says so.

use std::num::NonZeroU32;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use axum::Router;
use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use im_auth::Tokens;
use im_config::Config;
use im_core::ports::{SignIn, User};
use im_core::{ErrorCode, ImError};
use im_gateway::Gateway;
use im_gateway::login::{self, LoginLimits};

use crate::connection_limits::PeerAddr;
use crate::remote::RemoteUsers;
use crate::tls::CallTls;

/// The User Service at `USER_SERVICE_ADDR`, or [`NoDirectory`] when it is
/// not set.
pub fn remote(config: &Config, tokens: &Tokens, tls: &CallTls) -> anyhow::Result<Arc<dyn SignIn>> {
    let user = &config.services.user;
    if user.addr.is_empty() {
        return Ok(Arc::new(NoDirectory));
    }
    let users = RemoteUsers::new(&user.addr, user.timeout, tls, tokens.clone())
        .context("services.user.addr (USER_SERVICE_ADDR)")?;
    Ok(Arc::new(users))
}

/// Sign-in in a gateway that knows no user directory.
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
    let limits = LoginLimits { attempts_per_address_per_minute: per_minute };
    gateway
        .router()
        .merge(login::router::<PeerAddr>(directory, limits))
        .into_make_service_with_connect_info::<PeerAddr>()
}
