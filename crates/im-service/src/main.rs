//! `im-service [--config config.yaml]`: the IM Service. With no configuration
//! it runs everything embedded in one process.

use std::process::ExitCode;

use im_service::app::{self, Listeners};

fn main() -> ExitCode {
    im_service::cli::main(
        "im-service",
        "The IM Service. With no configuration it runs everything embedded in one process.",
        app::refuse_unsupported,
        |config, shutdown| async move {
            let listeners = Listeners::bind(&config).await?;
            app::run(config, listeners, shutdown).await
        },
    )
}
