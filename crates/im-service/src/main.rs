//! `im-service [migrate] [--config config.yaml]`: the IM Service. With no
//! configuration it runs everything embedded in one process; `migrate` brings
//! the configured store's schema up to date and exits.

use std::process::ExitCode;

use im_service::app::{self, Listeners};
use im_service::cli::Command;
use im_service::stores;

fn main() -> ExitCode {
    im_service::cli::main_with_commands(
        "im-service",
        "The IM Service. With no configuration it runs everything embedded in one process.",
        &[Command {
            name: "migrate",
            help: "run the schema migrations of the configured store (MySQL, or SQLite in the data dir) and exit",
            run: |config| Box::pin(async move { stores::migrate(&config).await }),
        }],
        app::refuse_unsupported,
        |config, shutdown| async move {
            let listeners = Listeners::bind(&config).await?;
            app::run(config, listeners, shutdown).await
        },
    )
}
