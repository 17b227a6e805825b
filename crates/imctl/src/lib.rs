//! imctl: the command-line client of the IM service. `main.rs` only parses
//! and calls [`run`]; everything else is here so tests can drive it.
//!
//! - [`cli`]: commands, options and help texts (clap).
//! - [`admin`]: admin credential discovery and the `user` commands (gRPC).
//! - [`group`]: the `group` commands (gRPC `im.v1.GroupService`, as a user).
//! - [`audit`]: `audit list`, the filter's audit records (gRPC, admin).
//! - [`keys`]: `keys status|rotate|rewrap`, the data keys of encryption at
//!   rest (gRPC, admin).
//! - [`grpc`]: channels and credentials of the gRPC clients.
//! - [`users`]: users named by id or name, and the names shown for ids (the
//!   user directory, gRPC as a user).
//! - [`client`]: a reusable WebSocket client for the client protocol.
//! - [`commands`]: `send`, `sync`, `conversations`, `read`.
//! - [`chat`]: the interactive chat (with a user or in a group).
//! - [`timeline`]: showing pushed messages once, in seq order.
//! - [`output`]: the JSON shapes and chat lines printed on stdout.
//! - [`bench`](mod@bench): the WebSocket load generator.
//! - [`error`]: errors the server answered with.

pub mod admin;
pub mod audit;
pub mod bench;
pub mod chat;
pub mod cli;
pub mod client;
pub mod commands;
pub mod error;
pub mod group;
pub mod grpc;
pub mod keys;
pub mod output;
pub mod password;
pub mod reencrypt;
pub mod timeline;
pub mod tls;
pub mod users;

use std::process::ExitCode;

use cli::{Cli, Command};
use error::RemoteError;

/// What `run` needs from the process environment beyond what clap reads.
#[derive(Clone, Default)]
pub struct ProcessEnv {
    /// `IM_ADMIN_TOKEN`.
    pub admin_token: Option<String>,
}

impl std::fmt::Debug for ProcessEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessEnv").field("admin_token", &self.admin_token.as_ref().map(|_| "<redacted>")).finish()
    }
}

impl ProcessEnv {
    pub fn from_process() -> Self {
        Self { admin_token: std::env::var(admin::ADMIN_TOKEN_ENV).ok() }
    }
}

/// Runs one command. The exit code is for outcomes that are not errors but
/// must fail a script (a benchmark that lost messages).
pub async fn run(cli: Cli, env: ProcessEnv) -> anyhow::Result<ExitCode> {
    let global = &cli.global;
    let admin_env = env.admin_token.as_deref();
    match cli.command {
        Command::User(command) => admin::run_user(global, admin_env, command).await?,
        Command::Send(args) => commands::send(global, args).await?,
        Command::Sync(args) => commands::sync(global, args).await?,
        Command::Conversations(args) => commands::conversations(global, args).await?,
        Command::Read(args) => commands::read(global, args).await?,
        Command::Chat(args) => chat::chat(global, args).await?,
        Command::Group(command) => group::run_group(global, command).await?,
        Command::Audit(command) => audit::run_audit(global, admin_env, command).await?,
        Command::Keys(command) => keys::run_keys(global, admin_env, command).await?,
        Command::Bench(args) => return bench::run(global, admin_env, *args).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// How an error is shown: `error: CODE: message` for server errors,
/// `error: context: cause` otherwise. `None` when nothing should be printed
/// (stdout was closed by the reader, as in `imctl sync | head`).
pub fn error_message(err: &anyhow::Error) -> Option<String> {
    let broken_pipe = err
        .chain()
        .any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe));
    if broken_pipe {
        return None;
    }
    Some(match err.downcast_ref::<RemoteError>() {
        Some(remote) => format!("error: {remote}"),
        None => format!("error: {err:#}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn server_errors_print_as_code_and_message() {
        let err =
            anyhow::Error::from(RemoteError { code: "NOT_FOUND", message: "no user 9".into(), reason: String::new() });
        assert_eq!(error_message(&err).unwrap(), "error: NOT_FOUND: no user 9");
        let wrapped = Err::<(), _>(err).context("sending").unwrap_err();
        assert_eq!(error_message(&wrapped).unwrap(), "error: NOT_FOUND: no user 9");
    }

    #[test]
    fn local_errors_print_their_chain_and_broken_pipes_nothing() {
        let err = Err::<(), _>(std::io::Error::other("refused")).context("cannot connect").unwrap_err();
        assert_eq!(error_message(&err).unwrap(), "error: cannot connect: refused");
        let pipe = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(error_message(&pipe), None);
    }
}
