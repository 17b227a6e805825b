//! `imctl`: parse the command line, run the command on one tokio runtime,
//! print the error if any. See `lib.rs` for the layout.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = imctl::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(imctl::run(cli, imctl::ProcessEnv::from_process()));
    // Do not wait for blocking work still running (a read of a terminal).
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(err) => match imctl::error_message(&err) {
            Some(message) => {
                eprintln!("{message}");
                ExitCode::FAILURE
            }
            None => ExitCode::SUCCESS,
        },
    }
}
