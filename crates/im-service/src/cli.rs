//! What the three service binaries (`im-service`, `im-gateway`, `im-user`)
//! share before and after their own wiring: `--config PATH` (or
//! `IM_CONFIG`), configuration loaded and validated before anything binds
//! (exit 2 naming every bad key, or what this binary cannot serve), logging
//! and trace export, and SIGINT/SIGTERM to a graceful stop.

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

fn config_path(name: &str, help: &str) -> Result<Option<PathBuf>, String> {
    let mut args = std::env::args().skip(1);
    let mut path = std::env::var_os("IM_CONFIG").map(PathBuf::from);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => path = Some(args.next().ok_or("--config needs a path")?.into()),
            "--help" | "-h" => {
                println!(
                    "{name} [--config PATH]\n\n{help}\n\nConfiguration: config.yaml (--config or IM_CONFIG) and the \
                     environment variables\nlisted in the README; the environment overrides the file."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(path)
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
    let path = match config_path(name, help) {
        Ok(path) => path,
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
    if let Err(e) = refuse(&config) {
        eprintln!("{name}: {e}");
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
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        let code = match run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        };
        telemetry.shutdown(TRACE_FLUSH_TIMEOUT).await;
        code
    })
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
