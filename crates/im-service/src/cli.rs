//! What the three service binaries (`im-service`, `im-gateway`, `im-user`)
//! share before and after their own wiring: `--config PATH` (or
//! `IM_CONFIG`), configuration loaded and validated before anything binds
//! (exit 2 naming every bad key, or what this binary cannot serve), logging
//! and trace export, and SIGINT/SIGTERM to a graceful stop; one-shot commands
//! such as `im-service migrate` ([`Command`]).

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use im_config::Config;
use tokio_util::sync::CancellationToken;

use crate::telemetry::Telemetry;

/// How long the spans still queued at exit may take to reach the collector.
/// On top of the servers' own shutdown grace: what could not be exported by
/// then is dropped, so a collector that is down delays an exit by this much
/// at most.
const TRACE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// A one-shot command of a binary, run instead of the server
/// (`im-service migrate`): the same configuration, loaded and validated the
/// same way; exit 0 when `run` returns `Ok`, 1 with the error on stderr
/// otherwise.
pub struct Command {
    pub name: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
    pub run: fn(Config) -> futures::future::LocalBoxFuture<'static, anyhow::Result<()>>,
}

/// `[COMMAND] [--config PATH]`: the command asked for (one of `commands`),
/// if any, and the configuration file.
fn parse_args<'c>(
    name: &str,
    help: &str,
    commands: &'c [Command],
) -> Result<(Option<&'c Command>, Option<PathBuf>), String> {
    let mut args = std::env::args().skip(1).peekable();
    let command = match args.peek() {
        Some(first) if !first.starts_with('-') => {
            let found = commands.iter().find(|command| command.name == first.as_str());
            Some(found.ok_or_else(|| format!("unknown command {first:?} (try --help)"))?)
        }
        _ => None,
    };
    if command.is_some() {
        args.next();
    }
    let mut path = std::env::var_os("IM_CONFIG").map(PathBuf::from);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => path = Some(args.next().ok_or("--config needs a path")?.into()),
            "--help" | "-h" => {
                let usage = if commands.is_empty() { String::new() } else { " [COMMAND]".to_owned() };
                let listed: String = commands.iter().map(|c| format!("\n  {:<10}{}", c.name, c.help)).collect();
                let listed = if listed.is_empty() { listed } else { format!("\n\nCommands:{listed}") };
                println!(
                    "{name}{usage} [--config PATH]\n\n{help}{listed}\n\nConfiguration: config.yaml (--config or \
                     IM_CONFIG) and the environment variables\nlisted in the README; the environment overrides the file."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok((command, path))
}

/// Runs binary `name`: parses the arguments, loads the configuration, asks
/// `refuse` whether this binary can serve it (an `Err` names the keys: exit
/// 2, nothing bound), then `run(config, shutdown)` on a multi-threaded
/// runtime until it returns.
pub fn main<F, Fut>(name: &str, help: &str, refuse: fn(&Config) -> Result<(), String>, run: F) -> ExitCode
where
    F: FnOnce(Config, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    main_with_commands(name, help, &[], refuse, run)
}

/// [`main`], with one-shot `commands` a first argument may name instead of
/// serving (a bad configuration is exit 2 for them too).
pub fn main_with_commands<F, Fut>(
    name: &str,
    help: &str,
    commands: &[Command],
    refuse: fn(&Config) -> Result<(), String>,
    run: F,
) -> ExitCode
where
    F: FnOnce(Config, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let (command, path) = match parse_args(name, help, commands) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    let env = std::env::vars().collect();
    let config = match im_config::load(path.as_deref(), &env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: invalid configuration:\n{e}");
            return ExitCode::from(2);
        }
    };
    if command.is_none()
        && let Err(e) = refuse(&config)
    {
        eprintln!("{name}: {e}");
        return ExitCode::from(2);
    }
    if command.is_none()
        && let Err(e) = crate::tls::preflight(&config.tls)
    {
        eprintln!("{name}: invalid configuration:\n{e:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The trace exporter's channel lives on the runtime.
    let telemetry = match runtime.block_on(async { Telemetry::start(&config.observability, name) }) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("{name}: invalid configuration:\n{e:#}");
            return ExitCode::from(2);
        }
    };
    let observability = &config.observability;
    crate::logging::init(observability.log_level.as_str(), observability.log_format.is_json(), telemetry.tracer());
    if let Some(command) = command {
        let done = runtime.block_on((command.run)(config));
        runtime.block_on(telemetry.shutdown(TRACE_FLUSH_TIMEOUT));
        return match done {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{name} {}: {e:#}", command.name);
                exit_code(&e)
            }
        };
    }
    // One process per data directory, locked before any port or file is
    // opened: a second process is told so, whatever else it would meet.
    let _data_dir = match crate::bootstrap::data_dir(&config.server.data_dir) {
        Ok(lock) => lock,
        Err(e) => {
            tracing::error!("{e:#}");
            return exit_code(&e);
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        let code = match run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                exit_code(&e)
            }
        };
        telemetry.shutdown(TRACE_FLUSH_TIMEOUT).await;
        code
    })
}

/// 2 for what the operator must change before a retry can work (the data
/// directory held by another process), 1 for any other failure.
fn exit_code(error: &anyhow::Error) -> ExitCode {
    if error.downcast_ref::<crate::bootstrap::DataDirInUse>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
