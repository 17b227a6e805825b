//! `im-gateway [--config config.yaml]`: the Gateway Service as its own
//! process (WebSocket for clients, the push API over gRPC).

use std::process::ExitCode;

use im_service::gateway_app::{self, GatewayListeners};

fn main() -> ExitCode {
    im_service::cli::main(
        "im-gateway",
        "The Gateway Service: clients connect over WebSocket (server.ws_port); the IM Service pushes\n\
         through its gRPC push API (the port of services.gateway.addr). Needs IM_SERVICE_ADDR,\n\
         GATEWAY_SERVICE_ADDR (its own push address) and ETCD_ENDPOINTS.",
        |_| Ok(()),
        |config, shutdown| async move {
            let listeners = GatewayListeners::bind(&config).await?;
            gateway_app::run(config, listeners, shutdown).await
        },
    )
}
