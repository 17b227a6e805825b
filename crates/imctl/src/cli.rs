//! Command-line interface: every command, option and help text. Parsing only;
//! the commands live in their own modules.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client::Recipient;
use crate::tls::CaBundle;
use crate::users::{UserNames, UserRef};

mod group;

pub use group::{GroupCommand, GroupCommon, GroupRole, GroupTarget};

/// Command-line client for the IM service: admin, chat client and load generator.
#[derive(Debug, Parser)]
#[command(name = "imctl", version, propagate_version = true)]
#[command(after_help = "Start a standalone server with `im-service`, then for example:\n  \
    imctl user create alice --json\n  \
    imctl send --token \"$ALICE\" --to bob 'hello'\n  \
    imctl chat --token \"$BOB\" --to alice\n  \
    imctl group create --token \"$ALICE\" team --member bob,carol\n  \
    imctl send --token \"$ALICE\" --group 1 'hello team'\n  \
    imctl bench --users 50 --rate 2000 --duration 10\n  \
    imctl bench --group-size 1000 --groups 2 --rate 50")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// WebSocket endpoint of the gateway (client protocol).
    #[arg(long, global = true, env = "IM_WS_URL", default_value = "ws://127.0.0.1:8093/ws", value_name = "URL")]
    pub ws_url: String,

    /// gRPC endpoint of the user directory (`user` commands; users named by name, and the names `chat` and `group`
    /// print; `bench` creates its users there). In standalone mode im-service serves it on its own port; in
    /// production it is im-user (e.g. http://127.0.0.1:9096).
    #[arg(long, global = true, env = "IM_GRPC_URL", default_value = "http://127.0.0.1:9094", value_name = "URL")]
    pub grpc_url: String,

    /// gRPC endpoint of an im-service node (im.v1.GroupService: the `group` commands, and groups of
    /// `bench --group-size`; im.audit.v1.AuditService: `audit list`; im.keys.v1.KeyService: `keys`). Standalone and production alike, im-service listens on SERVER_GRPC_PORT (9094).
    #[arg(long, global = true, env = "IM_SERVICE_URL", default_value = "http://127.0.0.1:9094", value_name = "URL")]
    pub im_service_url: String,

    /// Admin credential for `user`, `audit`, `keys` and `bench` [env: IM_ADMIN_TOKEN]. When neither is set, it is read from
    /// <DATA_DIR>/admin.token, which im-service writes on first start.
    #[arg(long, global = true, value_name = "JWT")]
    pub admin_token: Option<String>,

    /// Data directory of a local im-service; used only to find admin.token.
    #[arg(long, global = true, env = "IM_DATA_DIR", default_value = "./data", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// CA bundle (PEM) trusted for wss:// and https:// URLs, for a deployment with its own CA. Without it the system's
    /// roots are trusted.
    #[arg(long, global = true, env = "IM_CA_FILE", value_name = "FILE", value_parser = parse_ca)]
    pub ca: Option<CaBundle>,

    /// Seconds to wait for a connection or for the response to a request.
    #[arg(long, global = true, default_value = "10", value_parser = parse_secs, value_name = "SECS")]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create users, issue and look up tokens (gRPC, needs the admin credential).
    #[command(subcommand)]
    User(UserCommand),
    /// Send one message to a user or a group and print its ack as JSON.
    Send(SendArgs),
    /// Print the messages of your conversations as JSON lines; --follow keeps printing new ones.
    Sync(SyncArgs),
    /// Print your conversations as JSON lines (id, peer, group, max_seq, read_seq, unread).
    Conversations(ConversationsArgs),
    /// Mark a conversation read up to a seq and print the new read position as JSON.
    Read(ReadArgs),
    /// Chat with one user or in a group: lines from stdin are sent, incoming messages are printed with their sender's
    /// name.
    Chat(ChatArgs),
    /// Create and manage groups as the user of --token (gRPC to im-service, see --im-service-url).
    #[command(subcommand)]
    Group(GroupCommand),
    /// The sensitive-word filter's audit records (FILTER_ACTION=audit), newest first (gRPC to im-service, needs
    /// the admin credential).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Data keys of encryption at rest: status, rotate, rewrap, reencrypt (gRPC to im-service, needs the admin credential).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Load generator: users send 1:1 (or group) messages over WebSocket; prints throughput and latency.
    Bench(Box<BenchArgs>),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; prints its id and a token for it.
    Create {
        /// 1 to 64 characters: letters, digits, '_', '-', '.'.
        name: String,
        /// Give the user a password to sign in with (POST /login): asked for twice, hidden, on a terminal; else
        /// read as one line from stdin. A password that is refused creates no user.
        #[arg(long)]
        password: bool,
        /// Print one JSON object {"id","name","token"}.
        #[arg(long)]
        json: bool,
    },
    /// Set or replace a user's password (8 characters to 1024 bytes): asked for twice, hidden, on a terminal;
    /// else read as one line from stdin. Prints the user as JSON.
    Password {
        /// A numeric id, or a name.
        user: String,
    },
    /// Issue a new token for an existing user; prints the token.
    Token {
        /// The user's id.
        id: u64,
        /// Lifetime of the token in seconds (default: the server's).
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u64>,
        /// Print one JSON object {"id","token"}.
        #[arg(long)]
        json: bool,
    },
    /// Look a user up by id or by name; prints it as JSON.
    Get {
        /// A numeric id, or a name.
        user: String,
    },
    /// Disable a user: its tokens are refused and its connections closed, on every node and gateway
    /// (within a second), until `enable`; prints the user as JSON.
    Disable {
        /// A numeric id, or a name.
        user: String,
    },
    /// Enable a disabled user again; its tokens that were not revoked work again. Prints the user as JSON.
    Enable {
        /// A numeric id, or a name.
        user: String,
    },
    /// Revoke every token issued to a user so far (connections opened with them are closed); tokens issued
    /// afterwards work. Prints the user as JSON.
    RevokeTokens {
        /// A numeric id, or a name.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print recent audit records as JSON lines {"msg_id","conversation_id","seq","sender","entries",
    /// "server_time_ms"}; when more are stored, stderr says how to get the next page.
    List {
        /// Records to print (at most 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Only records older than this msg_id (the next page).
        #[arg(long, value_name = "MSG_ID")]
        before: Option<u64>,
        /// Only this conversation's records (e.g. p:3:7 or g:5).
        #[arg(long, value_name = "ID")]
        conversation: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the data keys (oldest first): ID, ACTIVE, AGE, MASTER KEY, ROWS (message rows each seals), and the
    /// rows stored in clear.
    Status {
        /// Print one JSON object per key {"id","active","created_ms","retired_ms","age_secs","master_key_id","rows"},
        /// then {"clear_rows","orphan_rows","master_key_id"}.
        #[arg(long)]
        json: bool,
    },
    /// Make a new data key active now; the old ones stay readable. Prints the new active key.
    Rotate {
        /// Print one JSON object {"id","previous_id","master_key_id","created_ms"}.
        #[arg(long)]
        json: bool,
    },
    /// Re-wrap the stored data keys under the configured master key (KMS ReEncrypt) after the master key changed.
    /// Prints how many were re-wrapped, already current, failed; exits 1 if any failed.
    Rewrap {
        /// Re-wrap every key, also those the configured master key already wraps.
        #[arg(long)]
        force: bool,
        /// Print one JSON object {"rewrapped","already_current","failed","failures","master_key_id"}.
        #[arg(long)]
        json: bool,
    },
    /// Re-encrypt stored message bodies under the active data key (rows in clear included), one window after
    /// another at a bounded rate, with a progress bar on stderr. Safe beside live traffic and other nodes; stop it
    /// at any time (Ctrl-C, kill) and run it again to resume: rows already under the active key are skipped. Prints
    /// the counts; exits 1 if some rows could not be decrypted (each is named on stderr; they are left as they are).
    Reencrypt {
        /// Rows per second, at most.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        rate: u32,
        /// Rows per call to the node (one transaction each).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1000))]
        batch: u32,
        /// Start after this storage position (the `at` of an earlier run's progress) instead of the beginning.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Print one JSON object {"key","examined","resealed","changed_meanwhile","failed","failures","last_position"}.
        #[arg(long)]
        json: bool,
    },
}

/// Who a command acts as.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user's token (from `imctl user create` or `imctl user token`).
    #[arg(long, env = "IM_TOKEN", hide_env_values = true, value_name = "JWT")]
    pub token: String,
}

/// How a client command authenticates and which device it is.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub auth: TokenArgs,

    /// Device id for this connection (at most 64 bytes); the server picks one when absent.
    #[arg(long, value_name = "ID")]
    pub device: Option<String>,
}

/// Where messages go: exactly one of --to and --group.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct RecipientArgs {
    /// Recipient user: an id, or a name looked up in the user directory (--grpc-url).
    #[arg(long, value_name = "USER", value_parser = UserRef::parse)]
    pub to: Option<UserRef>,
    /// Recipient group id (7 or g:7); you must be a member.
    #[arg(long, value_name = "GROUP", value_parser = parse_group_id)]
    pub group: Option<u64>,
}

impl RecipientArgs {
    /// The recipient, a user named by name looked up in `users`.
    pub async fn resolve(&self, users: &mut UserNames<'_>) -> anyhow::Result<Recipient> {
        match (&self.to, self.group) {
            (_, Some(group)) => Ok(Recipient::Group(group)),
            (Some(user), None) => Ok(Recipient::User(users.id_of(user).await?)),
            (None, None) => unreachable!("clap requires --to or --group"),
        }
    }
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub recipient: RecipientArgs,
    /// Message text (sent as UTF-8).
    pub text: String,
    /// Idempotency key: resending with the same id returns the first ack. Default: a random id.
    #[arg(long, value_name = "ID")]
    pub client_msg_id: Option<String>,
    /// Content type stored with the message.
    #[arg(long, default_value = "text/plain", value_name = "TYPE")]
    pub content_type: String,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Only this conversation (e.g. p:3:7, or g:5 for group 5); default: every conversation, groups included.
    #[arg(long, value_name = "ID")]
    pub conversation: Option<String>,
    /// Print messages with a seq above this one.
    #[arg(long, default_value_t = 0, value_name = "SEQ")]
    pub after: u64,
    /// Page size of each sync request (0: the server default).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub limit: u32,
    /// After syncing, keep printing new messages as they arrive, until Ctrl-C.
    #[arg(long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct ConversationsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The conversation (e.g. p:3:7 or g:5).
    #[arg(long, value_name = "ID")]
    pub conversation: String,
    /// Read position: every message up to this seq is read.
    #[arg(long, value_name = "N")]
    pub seq: u64,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    // The user (--to) or the group (--group) to chat with.
    #[command(flatten)]
    pub with: RecipientArgs,
    /// How many earlier messages to show on start.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub history: u64,
    /// After stdin ends, keep printing incoming messages for this many seconds (for scripts).
    #[arg(long, default_value = "0", value_parser = parse_secs, value_name = "SECS")]
    pub linger: Duration,
}

/// Who each message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pairing {
    /// Every message goes to a uniformly random other user.
    Random,
    /// User i always sends to user i+1 (the last one to the first).
    Ring,
    /// Fixed pairs writing to each other: user i and user i + users/2 (200 users: 100 conversations, each written
    /// from both ends). With an odd count the last user writes to the middle one, who writes to its own partner.
    Pairs,
}

#[derive(Debug, Args)]
#[command(after_help = "Open loop (default, --rate): every connection sends on its own fixed schedule and latency is \
    measured from the scheduled send time, so a stalled server cannot hide its delay (no coordinated omission). \
    Closed loop (--closed-loop): every connection keeps --window messages awaiting their ack.\n\n\
    End-to-end latency is send -> push received by the recipient; ack latency is send -> ack received by the \
    sender. Figures cover only the measured window (after --warmup). The run exits 1 when an acked message was \
    never pushed to its recipient.\n\n\
    Groups (--group-size N): --groups K groups of N new users each, owned by their first member and created \
    through --im-service-url; every member opens one WebSocket, and --senders S members per group send to their \
    group at --rate messages per second in total (open loop). A message is complete when every member but its \
    sender received its push; fan-out latency is send -> push received by the last of them. The run exits 1 \
    when an acked message is incomplete.")]
pub struct BenchArgs {
    /// Number of users (created over gRPC with the admin credential, names with a random run prefix).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(2..), value_name = "N")]
    pub users: u32,
    /// WebSocket connections (devices) per user; each one sends.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64), value_name = "N")]
    pub connections_per_user: u32,
    /// Group workload: members per group (every member connects once; see below).
    #[arg(
        long,
        value_parser = clap::value_parser!(u32).range(2..=10_000),
        conflicts_with_all = ["users", "connections_per_user", "closed_loop", "pairing"],
        value_name = "N"
    )]
    pub group_size: Option<u32>,
    /// Group workload: number of groups.
    #[arg(long, default_value_t = 1, requires = "group_size", value_parser = clap::value_parser!(u32).range(1..=10_000), value_name = "K")]
    pub groups: u32,
    /// Group workload: members of each group who send (at most --group-size).
    #[arg(long, default_value_t = 1, requires = "group_size", value_parser = clap::value_parser!(u32).range(1..=10_000), value_name = "S")]
    pub senders: u32,
    /// Group workload: seconds to wait once every connection is open, before
    /// sending. In production a gateway registers its fresh connections in etcd
    /// one by one; a member not registered yet is not pushed (it syncs later).
    #[arg(long, default_value = "0", value_parser = parse_secs, requires = "group_size", value_name = "SECS")]
    pub settle: Duration,
    /// Length of the measured window in seconds.
    #[arg(long, default_value = "10", value_parser = parse_secs, value_name = "SECS")]
    pub duration: Duration,
    /// Seconds of load before the measured window, excluded from the figures.
    #[arg(long, default_value = "2", value_parser = parse_secs, value_name = "SECS")]
    pub warmup: Duration,
    /// Longest wait after sending stops for outstanding acks and pushes.
    #[arg(long, default_value = "2", value_parser = parse_secs, value_name = "SECS")]
    pub drain: Duration,
    /// Open loop: messages per second over all connections [default: 1000; 100 with --group-size].
    #[arg(long, value_parser = parse_rate, conflicts_with = "closed_loop", value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,
    /// Closed loop: each connection keeps --window messages in flight.
    #[arg(long)]
    pub closed_loop: bool,
    /// Messages in flight per connection with --closed-loop.
    #[arg(long, default_value_t = 1, requires = "closed_loop", value_parser = clap::value_parser!(u32).range(1..=10_000), value_name = "W")]
    pub window: u32,
    /// Message body size in bytes (at least 20: the body carries the send time and a sequence).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(20..=16_777_216), value_name = "BYTES")]
    pub body_size: u32,
    /// Send text/plain bodies (the header in hex, then ordinary words; at least 36 bytes) instead of binary ones:
    /// what the server's sensitive-word filter reads.
    #[arg(long)]
    pub text: bool,
    /// Who each message goes to.
    #[arg(long, value_enum, default_value_t = Pairing::Random)]
    pub pairing: Pairing,
    /// Process id of the server: report its CPU time over the measured window (Linux /proc).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// The server's /metrics (http://127.0.0.1:8094/metrics): report its group commits over the measured window
    /// (how many, messages per commit).
    #[arg(long, value_name = "URL")]
    pub server_metrics: Option<String>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub no_progress: bool,
    /// How many users, groups and connections are created or opened at once during set-up.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..), value_name = "N", hide_short_help = true)]
    pub setup_concurrency: u32,
}

/// Default open-loop rate when neither --rate nor --closed-loop is given.
pub const DEFAULT_RATE: f64 = 1000.0;
/// Default rate of the group workload: each message becomes N-1 pushes.
pub const DEFAULT_GROUP_RATE: f64 = 100.0;

/// A group id as a number (7) or as its conversation id (g:7).
pub fn parse_group_id(raw: &str) -> Result<u64, String> {
    let digits = raw.trim().strip_prefix("g:").unwrap_or(raw.trim());
    match digits.parse::<u64>() {
        Ok(id) if id > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(format!("expected a group id such as 7 or g:7, got {raw:?}")),
    }
}

/// Seconds as a decimal number ("10", "0.5").
pub fn parse_secs(raw: &str) -> Result<Duration, String> {
    let secs: f64 = raw.trim().parse().map_err(|_| format!("expected seconds, e.g. 10 or 0.5, got {raw:?}"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("seconds must be a finite number >= 0, got {raw:?}"))
}

/// `--ca`: the bundle is read at parse time, so a bad file is a usage error.
fn parse_ca(raw: &str) -> Result<CaBundle, String> {
    CaBundle::load(std::path::Path::new(raw)).map_err(|e| format!("{e:#}"))
}

fn parse_rate(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("expected a positive number of messages per second, got {raw:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("imctl").chain(args.iter().copied()))
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_help() {
        let mut cmd = Cli::command();
        cmd.build();
        fn walk(cmd: &clap::Command) {
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                assert!(sub.get_about().is_some(), "`{}` has no help text", sub.get_name());
                for arg in sub.get_arguments().filter(|a| !a.is_global_set()) {
                    let id = arg.get_id().as_str();
                    if id != "help" && id != "version" {
                        assert!(arg.get_help().is_some(), "`{} {id}` has no help text", sub.get_name());
                    }
                }
                walk(sub);
            }
        }
        walk(&cmd);
    }

    #[test]
    fn send_parses_with_global_options_anywhere() {
        let cli = parse(&["send", "--token", "t", "--to", "7", "hello there", "--ws-url", "ws://h:1/ws"]).unwrap();
        assert_eq!(cli.global.ws_url, "ws://h:1/ws");
        let Command::Send(send) = cli.command else { panic!("not send") };
        assert_eq!(send.recipient.to, Some(UserRef::Id(7)));
        assert_eq!(send.text, "hello there");
        assert_eq!(send.connect.auth.token, "t");
        assert_eq!(send.client_msg_id, None);
        assert_eq!(send.content_type, "text/plain");
    }

    #[test]
    fn send_takes_a_user_name_and_rejects_user_zero_bad_names_and_missing_text() {
        let cli = parse(&["send", "--token", "t", "--to", "bob", "hi"]).unwrap();
        let Command::Send(send) = cli.command else { panic!("not send") };
        assert_eq!(send.recipient.to, Some(UserRef::Name("bob".into())));
        assert!(parse(&["send", "--token", "t", "--to", "0", "x"]).is_err());
        assert!(parse(&["send", "--token", "t", "--to", "bob smith", "x"]).is_err());
        assert!(parse(&["send", "--token", "t", "--to", "3"]).is_err());
    }

    #[test]
    fn send_and_chat_take_exactly_one_of_to_and_group() {
        let cli = parse(&["send", "--token", "t", "--group", "g:5", "hi all"]).unwrap();
        let Command::Send(send) = cli.command else { panic!("not send") };
        assert_eq!((send.recipient.to, send.recipient.group), (None, Some(5)));
        let cli = parse(&["chat", "--token", "t", "--group", "5"]).unwrap();
        let Command::Chat(chat) = cli.command else { panic!("not chat") };
        assert_eq!((chat.with.to, chat.with.group), (None, Some(5)));
        for args in [&["send", "--token", "t", "x"][..], &["send", "--token", "t", "--to", "2", "--group", "5", "x"]] {
            assert!(parse(args).is_err(), "{args:?}");
        }
        assert!(parse(&["chat", "--token", "t"]).is_err());
        assert!(parse(&["send", "--token", "t", "--group", "0", "x"]).is_err());
    }

    #[test]
    fn group_ids_are_numbers_or_conversation_ids() {
        assert_eq!(parse_group_id("7"), Ok(7));
        assert_eq!(parse_group_id("g:7"), Ok(7));
        for bad in ["0", "g:0", "p:1:2", "+7", "g:", "seven", "-1"] {
            let err = parse_group_id(bad).unwrap_err();
            assert!(err.contains("7 or g:7"), "{bad}: {err}");
        }
    }

    #[test]
    fn bench_group_flags() {
        let cli = parse(&["bench", "--group-size", "500", "--groups", "4", "--senders", "10", "--rate", "20"]).unwrap();
        let Command::Bench(b) = cli.command else { panic!("not bench") };
        assert_eq!((b.group_size, b.groups, b.senders, b.rate), (Some(500), 4, 10, Some(20.0)));
        let cli = parse(&["bench", "--group-size", "5"]).unwrap();
        let Command::Bench(b) = cli.command else { panic!("not bench") };
        assert_eq!((b.groups, b.senders, b.rate), (1, 1, None));
        for args in [
            &["bench", "--groups", "2"][..],
            &["bench", "--senders", "2"],
            &["bench", "--group-size", "1"],
            &["bench", "--group-size", "5", "--users", "10"],
            &["bench", "--group-size", "5", "--closed-loop"],
            &["bench", "--group-size", "5", "--pairing", "ring"],
            &["bench", "--group-size", "5", "--connections-per-user", "2"],
        ] {
            assert!(parse(args).is_err(), "{args:?} parsed");
        }
    }

    #[test]
    fn service_urls_have_their_own_options() {
        let cli = parse(&["--im-service-url", "http://node:9194", "group", "list", "--token", "t"]).unwrap();
        assert_eq!(
            (cli.global.im_service_url.as_str(), cli.global.grpc_url.as_str()),
            ("http://node:9194", "http://127.0.0.1:9094")
        );
    }

    #[test]
    fn user_commands_parse() {
        let cli = parse(&["user", "create", "alice", "--json"]).unwrap();
        assert!(
            matches!(cli.command, Command::User(UserCommand::Create { ref name, json: true, password: false }) if name == "alice")
        );
        let cli = parse(&["user", "create", "alice", "--password"]).unwrap();
        assert!(matches!(cli.command, Command::User(UserCommand::Create { password: true, .. })));
        let cli = parse(&["user", "password", "alice"]).unwrap();
        assert!(matches!(cli.command, Command::User(UserCommand::Password { ref user }) if user == "alice"));
        let cli = parse(&["--admin-token", "adm", "user", "token", "7", "--ttl", "60"]).unwrap();
        assert_eq!(cli.global.admin_token.as_deref(), Some("adm"));
        assert!(matches!(cli.command, Command::User(UserCommand::Token { id: 7, ttl: Some(60), json: false })));
        let cli = parse(&["user", "disable", "mallory"]).unwrap();
        assert!(matches!(cli.command, Command::User(UserCommand::Disable { ref user }) if user == "mallory"));
        let cli = parse(&["user", "revoke-tokens", "7"]).unwrap();
        assert!(matches!(cli.command, Command::User(UserCommand::RevokeTokens { ref user }) if user == "7"));
        assert!(parse(&["user", "enable"]).is_err(), "enable needs a user");
    }

    #[test]
    fn audit_list_takes_a_page_and_a_conversation() {
        let cli = parse(&["audit", "list"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Audit(AuditCommand::List { limit: 50, before: None, conversation: None })
        ));
        let cli = parse(&["audit", "list", "--limit", "5", "--before", "99", "--conversation", "p:3:7"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Audit(AuditCommand::List { limit: 5, before: Some(99), conversation: Some(ref c) }) if c == "p:3:7"
        ));
        assert!(parse(&["audit", "list", "--limit", "0"]).is_err());
        assert!(parse(&["audit", "list", "--limit", "1001"]).is_err());
    }

    #[test]
    fn keys_commands_parse() {
        let cli = parse(&["keys", "status"]).unwrap();
        assert!(matches!(cli.command, Command::Keys(KeysCommand::Status { json: false })));
        let cli = parse(&["--im-service-url", "http://node:9194", "keys", "status", "--json"]).unwrap();
        assert!(matches!(cli.command, Command::Keys(KeysCommand::Status { json: true })));
        assert_eq!(cli.global.im_service_url, "http://node:9194");
        let cli = parse(&["keys", "rotate"]).unwrap();
        assert!(matches!(cli.command, Command::Keys(KeysCommand::Rotate { json: false })));
        let cli = parse(&["keys", "rewrap"]).unwrap();
        assert!(matches!(cli.command, Command::Keys(KeysCommand::Rewrap { force: false, json: false })));
        let cli = parse(&["keys", "rewrap", "--force", "--admin-token", "adm"]).unwrap();
        assert!(matches!(cli.command, Command::Keys(KeysCommand::Rewrap { force: true, json: false })));
        assert_eq!(cli.global.admin_token.as_deref(), Some("adm"));
        assert!(parse(&["keys"]).is_err());
        let cli = parse(&["keys", "reencrypt"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Keys(KeysCommand::Reencrypt { rate: 2000, batch: 200, after: 0, json: false })
        ));
        let cli = parse(&["keys", "reencrypt", "--rate", "50", "--batch", "10", "--after", "77", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Keys(KeysCommand::Reencrypt { rate: 50, batch: 10, after: 77, json: true })
        ));
        assert!(parse(&["keys", "reencrypt", "--batch", "0"]).is_err());
        assert!(parse(&["keys", "reencrypt", "--batch", "1001"]).is_err());
        assert!(parse(&["keys", "reencrypt", "--rate", "0"]).is_err());
        assert!(parse(&["keys", "rotate", "--force"]).is_err());
    }

    #[test]
    fn sync_defaults() {
        let cli = parse(&["sync", "--token", "t"]).unwrap();
        let Command::Sync(sync) = cli.command else { panic!("not sync") };
        assert_eq!((sync.after, sync.limit, sync.follow, sync.conversation), (0, 0, false, None));
    }

    #[test]
    fn read_needs_conversation_and_seq() {
        assert!(parse(&["read", "--token", "t", "--conversation", "p:1:2"]).is_err());
        let cli = parse(&["read", "--token", "t", "--conversation", "p:1:2", "--seq", "5"]).unwrap();
        assert!(matches!(cli.command, Command::Read(ReadArgs { seq: 5, .. })));
    }

    #[test]
    fn bench_defaults_are_documented_values() {
        let cli = parse(&["bench"]).unwrap();
        let Command::Bench(b) = cli.command else { panic!("not bench") };
        assert_eq!((b.users, b.connections_per_user, b.window, b.body_size), (100, 1, 1, 100));
        assert_eq!(
            (b.duration, b.warmup, b.drain),
            (Duration::from_secs(10), Duration::from_secs(2), Duration::from_secs(2))
        );
        assert_eq!(b.rate, None);
        assert!(!b.closed_loop);
        assert_eq!(b.pairing, Pairing::Random);
    }

    #[test]
    fn bench_modes_exclude_each_other() {
        assert!(parse(&["bench", "--rate", "100", "--closed-loop"]).is_err());
        assert!(parse(&["bench", "--window", "4"]).is_err(), "--window needs --closed-loop");
        assert!(parse(&["bench", "--closed-loop", "--window", "4"]).is_ok());
        assert!(parse(&["bench", "--rate", "0"]).is_err());
        assert!(parse(&["bench", "--users", "1"]).is_err());
        assert!(parse(&["bench", "--body-size", "19"]).is_err());
    }

    #[test]
    fn seconds_accept_fractions() {
        assert_eq!(parse_secs("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_secs("10").unwrap(), Duration::from_secs(10));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
    }
}
