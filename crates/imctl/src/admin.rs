//! Admin side: where the admin credential comes from, and the user commands
//! over gRPC (`im.user.v1.UserService`).
//!
//! The admin token is looked up in this order: `--admin-token`, then
//! `IM_ADMIN_TOKEN`, then `<data_dir>/admin.token` (written by im-service on
//! first start). The lookup takes its inputs as values, so tests never touch
//! the process environment.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use im_core::StatusChange;
use im_proto::user::user_service_client::UserServiceClient;
use im_proto::user::{
    self, CreateUserRequest, GetUserRequest, IssueTokenRequest, SetPasswordRequest, UserStatusRequest,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::cli::{GlobalArgs, UserCommand};
use crate::error::RemoteError;
use crate::grpc::{self, answer};
use crate::output::{self, CreatedUserJson, TokenJson, UserJson};
use crate::tls::CaBundle;

/// File name of the admin credential inside the server's data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// Environment variable holding the admin credential.
pub const ADMIN_TOKEN_ENV: &str = "IM_ADMIN_TOKEN";

/// Where the admin credential was found; shown when the server rejects it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    Flag,
    Env,
    File(PathBuf),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag => f.write_str("--admin-token"),
            Self::Env => f.write_str(ADMIN_TOKEN_ENV),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The admin credential. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct AdminToken {
    token: String,
    pub source: TokenSource,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminToken").field("token", &"<redacted>").field("source", &self.source).finish()
    }
}

impl AdminToken {
    pub fn expose(&self) -> &str {
        &self.token
    }

    /// The credential as sensitive `authorization` metadata.
    pub fn authorization(&self) -> anyhow::Result<MetadataValue<Ascii>> {
        grpc::bearer(&self.token, &format!("the admin token from {}", self.source))
    }
}

/// The path im-service writes its admin credential to.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_TOKEN_FILE)
}

/// Finds the admin credential: `flag` (from `--admin-token`), then `env` (the
/// value of `IM_ADMIN_TOKEN`; empty counts as unset), then the file in `data_dir`.
pub fn resolve_admin_token(flag: Option<&str>, env: Option<&str>, data_dir: &Path) -> anyhow::Result<AdminToken> {
    if let Some(flag) = flag {
        let token = flag.trim();
        if token.is_empty() {
            bail!("--admin-token is empty");
        }
        return Ok(AdminToken { token: token.to_owned(), source: TokenSource::Flag });
    }
    if let Some(token) = env.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(AdminToken { token: token.to_owned(), source: TokenSource::Env });
    }
    let path = admin_token_path(data_dir);
    let contents = match std::fs::read_to_string(&path) {
        Ok(contents) => contents,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no admin token: --admin-token and {ADMIN_TOKEN_ENV} are not set, and {} does not exist. \
             im-service writes that file on first start in its data directory: pass --data-dir (or set \
             IM_DATA_DIR) if it runs elsewhere, or pass the token with --admin-token or {ADMIN_TOKEN_ENV}",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read the admin token from {}", path.display())),
    };
    let token = contents.trim();
    if token.is_empty() {
        bail!("the admin token file {} is empty", path.display());
    }
    Ok(AdminToken { token: token.to_owned(), source: TokenSource::File(path) })
}

/// A connection to the user service that sends the admin credential with every call.
#[derive(Debug, Clone)]
pub struct Admin {
    client: UserServiceClient<Channel>,
    authorization: MetadataValue<Ascii>,
    pub source: TokenSource,
}

impl Admin {
    pub async fn connect(
        grpc_url: &str,
        token: AdminToken,
        timeout: Duration,
        ca: Option<&CaBundle>,
    ) -> anyhow::Result<Self> {
        let authorization = token.authorization()?;
        let channel = grpc::channel(grpc_url, timeout, ca, "user service").await?;
        Ok(Self { client: UserServiceClient::new(channel), authorization, source: token.source })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        grpc::authorized(message, &self.authorization)
    }

    pub async fn create_user(&mut self, name: &str) -> Result<user::CreateUserResponse, RemoteError> {
        self.create_user_with(name, None).await
    }

    /// Creates `name`, with `password` when given.
    pub async fn create_user_with(
        &mut self,
        name: &str,
        password: Option<String>,
    ) -> Result<user::CreateUserResponse, RemoteError> {
        let request = self.request(CreateUserRequest { name: name.to_owned(), password: password.unwrap_or_default() });
        answer(self.client.create_user(request).await)
    }

    pub async fn set_password(&mut self, user_id: u64, password: String) -> Result<user::User, RemoteError> {
        let request = self.request(SetPasswordRequest { user_id, password });
        answer(self.client.set_password(request).await)
    }

    pub async fn issue_token(&mut self, user_id: u64, ttl_seconds: u64) -> Result<String, RemoteError> {
        let request = self.request(IssueTokenRequest { user_id, ttl_seconds });
        Ok(answer(self.client.issue_token(request).await)?.token)
    }

    pub async fn get_user(&mut self, key: user::get_user_request::Key) -> Result<user::User, RemoteError> {
        let request = self.request(GetUserRequest { key: Some(key) });
        answer(self.client.get_user(request).await)
    }

    /// Disables, enables a user or revokes its tokens; the user afterwards.
    pub async fn change_status(&mut self, user_id: u64, change: StatusChange) -> Result<user::User, RemoteError> {
        let request = self.request(UserStatusRequest { user_id });
        answer(match change {
            StatusChange::Disable => self.client.disable_user(request).await,
            StatusChange::Enable => self.client.enable_user(request).await,
            StatusChange::RevokeTokens => self.client.revoke_tokens(request).await,
        })
    }

    /// The id of `user`: a number, or a name looked up.
    async fn user_id(&mut self, user: String) -> Result<u64, RemoteError> {
        match user_key(user) {
            user::get_user_request::Key::Id(id) => Ok(id),
            name => Ok(self.get_user(name).await?.id),
        }
    }

    /// A hint for errors that mean the credential itself was refused.
    pub fn hint_for(&self, err: &RemoteError) -> Option<String> {
        matches!(err.code, "UNAUTHENTICATED" | "PERMISSION_DENIED")
            .then(|| format!("the admin token came from {}", self.source))
    }
}

/// Resolves the admin credential from the global options and connects.
pub async fn connect_admin(global: &GlobalArgs, env_admin_token: Option<&str>) -> anyhow::Result<Admin> {
    let token = resolve_admin_token(global.admin_token.as_deref(), env_admin_token, &global.data_dir)?;
    Admin::connect(&global.grpc_url, token, global.timeout, global.ca.as_ref()).await
}

/// An admin's link to an im-service node (`--im-service-url`): the admin
/// APIs there (`audit`, `keys`) share the channel, the credential sent with
/// every call, and the hint printed when the credential is refused.
#[derive(Debug, Clone)]
pub struct ServiceAdmin {
    pub channel: Channel,
    authorization: MetadataValue<Ascii>,
    pub source: TokenSource,
}

impl ServiceAdmin {
    /// Resolves the admin credential from the global options and connects to `--im-service-url`.
    pub async fn connect(global: &GlobalArgs, env_admin_token: Option<&str>) -> anyhow::Result<Self> {
        let token = resolve_admin_token(global.admin_token.as_deref(), env_admin_token, &global.data_dir)?;
        let authorization = token.authorization()?;
        let channel = grpc::channel(&global.im_service_url, global.timeout, global.ca.as_ref(), "IM service").await?;
        Ok(Self { channel, authorization, source: token.source })
    }

    /// `message` with the admin credential.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        grpc::authorized(message, &self.authorization)
    }

    /// The answer of a call; when the credential was refused, says on stderr where it came from.
    pub fn answer<T>(&self, result: Result<tonic::Response<T>, tonic::Status>) -> Result<T, RemoteError> {
        answer(result).inspect_err(|e| {
            if matches!(e.code, "UNAUTHENTICATED" | "PERMISSION_DENIED") {
                eprintln!("hint: the admin token came from {}", self.source);
            }
        })
    }
}

/// `imctl user ...`.
pub async fn run_user(global: &GlobalArgs, env_admin_token: Option<&str>, command: UserCommand) -> anyhow::Result<()> {
    let mut admin = connect_admin(global, env_admin_token).await?;
    let result = user_command(&mut admin, command).await;
    if let Err(err) = &result
        && let Some(hint) = err.downcast_ref::<RemoteError>().and_then(|e| admin.hint_for(e))
    {
        eprintln!("hint: {hint}");
    }
    result
}

async fn user_command(admin: &mut Admin, command: UserCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        UserCommand::Create { name, password, json } => {
            let password = if password { Some(crate::password::read(&name)?) } else { None };
            let created = admin.create_user_with(&name, password).await?;
            let user = created.user.context("the server's CreateUser response has no user")?;
            if json {
                output::json_line(&mut out, &CreatedUserJson { id: user.id, name: &user.name, token: &created.token })?;
            } else {
                writeln!(out, "created user {:?}\nid:    {}\ntoken: {}", user.name, user.id, created.token)?;
            }
        }
        UserCommand::Token { id, ttl, json } => {
            let token = admin.issue_token(id, ttl.unwrap_or(0)).await?;
            if json {
                output::json_line(&mut out, &TokenJson { id, token: &token })?;
            } else {
                writeln!(out, "{token}")?;
            }
        }
        UserCommand::Get { user } => {
            let user = admin.get_user(user_key(user)).await?;
            output::json_line(&mut out, &UserJson::from(&user))?;
        }
        UserCommand::Password { user } => {
            // The user is looked up first: a typo fails before the prompt.
            let id = admin.user_id(user.clone()).await?;
            let password = crate::password::read(&user)?;
            let changed = admin.set_password(id, password).await?;
            output::json_line(&mut out, &UserJson::from(&changed))?;
        }
        UserCommand::Disable { user } => change_status(admin, &mut out, user, StatusChange::Disable).await?,
        UserCommand::Enable { user } => change_status(admin, &mut out, user, StatusChange::Enable).await?,
        UserCommand::RevokeTokens { user } => {
            change_status(admin, &mut out, user, StatusChange::RevokeTokens).await?;
        }
    }
    Ok(())
}

/// How a user is named on the command line: a numeric id, else a name.
fn user_key(user: String) -> user::get_user_request::Key {
    match user.parse::<u64>() {
        Ok(id) => user::get_user_request::Key::Id(id),
        Err(_) => user::get_user_request::Key::Name(user),
    }
}

/// `imctl user disable|enable|revoke-tokens`: the user after the change.
async fn change_status(
    admin: &mut Admin,
    out: &mut impl std::io::Write,
    user: String,
    change: StatusChange,
) -> anyhow::Result<()> {
    let id = admin.user_id(user).await?;
    let user = admin.change_status(id, change).await?;
    output::json_line(out, &UserJson::from(&user))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_token(contents: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), contents).unwrap();
        dir
    }

    #[test]
    fn flag_wins_over_env_and_file() {
        let dir = dir_with_token("from-file\n");
        let t = resolve_admin_token(Some("from-flag"), Some("from-env"), dir.path()).unwrap();
        assert_eq!((t.expose(), &t.source), ("from-flag", &TokenSource::Flag));
    }

    #[test]
    fn env_wins_over_file() {
        let dir = dir_with_token("from-file\n");
        let t = resolve_admin_token(None, Some("from-env"), dir.path()).unwrap();
        assert_eq!((t.expose(), &t.source), ("from-env", &TokenSource::Env));
    }

    #[test]
    fn file_is_the_fallback_and_is_trimmed() {
        let dir = dir_with_token("  from-file\n");
        let t = resolve_admin_token(None, None, dir.path()).unwrap();
        assert_eq!(t.expose(), "from-file");
        assert_eq!(t.source, TokenSource::File(dir.path().join("admin.token")));
        // An empty environment variable counts as unset.
        let t = resolve_admin_token(None, Some(""), dir.path()).unwrap();
        assert_eq!(t.expose(), "from-file");
    }

    #[test]
    fn missing_token_says_where_it_looked_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve_admin_token(None, None, dir.path()).unwrap_err().to_string();
        assert!(err.contains(&dir.path().join("admin.token").display().to_string()), "{err}");
        assert!(err.contains("--admin-token") && err.contains("IM_ADMIN_TOKEN") && err.contains("--data-dir"), "{err}");
    }

    #[test]
    fn empty_file_or_flag_is_an_error() {
        let dir = dir_with_token("\n");
        assert!(resolve_admin_token(None, None, dir.path()).unwrap_err().to_string().contains("is empty"));
        assert!(resolve_admin_token(Some(" "), None, dir.path()).is_err());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = resolve_admin_token(Some("secret-jwt"), None, Path::new("/nonexistent")).unwrap();
        assert!(!format!("{t:?}").contains("secret-jwt"));
    }
}
