//! What the test files share: running the imctl binary against a fake
//! server (clean environment, stdin from a string) and reading what it
//! printed; bench arguments and the check of a clean run; an admin client.

use std::process::Output;
use std::time::Duration;

use clap::Parser;
use imctl::admin::{Admin, resolve_admin_token};
use imctl::bench::stats::Counts;
use imctl::cli::{BenchArgs, Cli, Command};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::fake_server::{ADMIN_TOKEN, FakeServer};

pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The words of `line`: arguments written as one string.
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// `imctl bench --no-progress` with the arguments in `extra`, parsed.
pub fn bench_args(extra: &str) -> Box<BenchArgs> {
    let args = ["imctl", "bench", "--no-progress"].into_iter().chain(words(extra));
    match Cli::parse_from(args).command {
        Command::Bench(args) => args,
        _ => unreachable!(),
    }
}

/// Every send was acked, without an error, and every acked message made its
/// `per_ack` deliveries.
pub fn assert_all_delivered(counts: &Counts, per_ack: u64) {
    assert_eq!(counts.acked, counts.sent);
    assert_eq!((counts.errors, counts.unacked), (0, 0));
    assert_eq!(counts.expected_deliveries, counts.acked * per_ack);
    assert_eq!(counts.delivered, counts.expected_deliveries);
}

/// The fake's user service with its admin credential.
pub async fn admin(server: &FakeServer) -> Admin {
    let token = resolve_admin_token(Some(ADMIN_TOKEN), None, std::path::Path::new("/nonexistent")).unwrap();
    Admin::connect(&server.grpc_url, token, TIMEOUT, None).await.unwrap()
}

/// Runs the imctl binary against `server` (every URL pointed at it, but the
/// user directory when `args` name another `--grpc-url`) with a clean environment.
pub async fn imctl(server: &FakeServer, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_imctl"));
    if !args.contains(&"--grpc-url") {
        command.args(["--grpc-url", &server.grpc_url]);
    }
    command
        .args(["--ws-url", &server.ws_url, "--timeout", "5"])
        .args(["--im-service-url", &server.grpc_url])
        .args(args)
        .env_remove("IM_ADMIN_TOKEN")
        .env_remove("IM_TOKEN")
        .env_remove("IM_DATA_DIR")
        .env_remove("IM_WS_URL")
        .env_remove("IM_GRPC_URL")
        .env_remove("IM_SERVICE_URL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let mut child_stdin = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        child_stdin.write_all(input.as_bytes()).await.unwrap();
    }
    drop(child_stdin);
    tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await.expect("imctl hung").unwrap()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

pub fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}
