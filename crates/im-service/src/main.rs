//! `im-service [--config config.yaml]`: parse and validate the configuration
//! before binding anything, then run until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use im_service::app::{self, Listeners};
use tokio_util::sync::CancellationToken;

fn config_path() -> Result<Option<PathBuf>, String> {
    let mut args = std::env::args().skip(1);
    let mut path = std::env::var_os("IM_CONFIG").map(PathBuf::from);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => path = Some(args.next().ok_or("--config needs a path")?.into()),
            "--help" | "-h" => {
                println!(
                    "im-service [--config PATH]\n\nWith no configuration it runs everything embedded in one process.\n\
                     Configuration: config.yaml (--config or IM_CONFIG) and the environment variables\n\
                     listed in the README; the environment overrides the file."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(path)
}

#[tokio::main]
async fn main() -> ExitCode {
    let path = match config_path() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("im-service: {e}");
            return ExitCode::from(2);
        }
    };
    let env = std::env::vars().collect();
    let config = match im_config::load(path.as_deref(), &env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("im-service: invalid configuration:\n{e}");
            return ExitCode::from(2);
        }
    };
    im_service::logging::init(config.observability.log_level.as_str(), config.observability.log_format.is_json());

    let listeners = match Listeners::bind(&config).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    match app::run(config, listeners, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
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
