//! `im-user [--config config.yaml]`: the User Service as its own process.

use std::process::ExitCode;

use im_service::user_app::{self, UserListeners};

fn main() -> ExitCode {
    im_service::cli::main(
        "im-user",
        "The User Service (im.user.v1 over gRPC on the port of services.user.addr, 9096 by the guide).\n\
         Users live in MySQL when DB_HOST is set, else in SQLite under server.data_dir.",
        |_| Ok(()),
        |config, shutdown| async move {
            let listeners = UserListeners::bind(&config).await?;
            user_app::run(config, listeners, shutdown).await
        },
    )
}
