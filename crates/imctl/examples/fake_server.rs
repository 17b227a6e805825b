//! Runs the in-memory stand-in server of the tests, to try imctl by hand:
//! `cargo run -p imctl --example fake_server` prints its URLs and admin token.

#[path = "../tests/support/fake_server.rs"]
#[allow(dead_code)]
mod fake_server;

#[tokio::main]
async fn main() {
    let server = fake_server::start().await;
    println!("--ws-url {} --grpc-url {} --admin-token {}", server.ws_url, server.grpc_url, fake_server::ADMIN_TOKEN);
    tokio::signal::ctrl_c().await.unwrap();
}
