//! A TCP proxy a test controls, in front of a server it must not stop (the
//! shared MariaDB or etcd of `scripts/servers.sh`): relaying, refusing
//! (every relayed connection closed, new ones refused — a server that went
//! away), or hanging (connections accepted and held, nothing relayed either
//! way — a server that stopped answering).

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::free_port;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Relay,
    Refuse,
    Hang,
}

/// Stops its task when dropped.
pub struct TcpProxy {
    port: u16,
    mode: watch::Sender<Mode>,
}

impl TcpProxy {
    /// Relays a free port to `target`, listening when this returns.
    pub async fn start(target: &str) -> TcpProxy {
        Self::start_on(free_port(), target).await
    }

    /// Relays `port` to `target` (a port the server must advertise, known
    /// before the proxy starts), listening when this returns.
    pub async fn start_on(port: u16, target: &str) -> TcpProxy {
        let (mode, modes) = watch::channel(Mode::Relay);
        tokio::spawn(serve(port, target.to_owned(), modes));
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "the proxy did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        TcpProxy { port, mode }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

async fn serve(port: u16, target: String, mut modes: watch::Receiver<Mode>) {
    loop {
        let mode = *modes.borrow_and_update();
        if mode != Mode::Refuse {
            let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("the proxy port is free");
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        connections.spawn(connection(client, target.clone(), mode, modes.clone()));
                    }
                    changed = modes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        break;
                    }
                }
            }
            // Each connection sees the change itself: refusing closes it,
            // hanging holds it. The listener closes here; the next mode
            // opens its own.
            connections.detach_all();
        } else if modes.changed().await.is_err() {
            return;
        }
    }
}

/// One client connection: relayed while the proxy relays, held without
/// relaying while it hangs, closed when it refuses (or changes from hanging).
async fn connection(mut client: TcpStream, target: String, accepted_in: Mode, mut modes: watch::Receiver<Mode>) {
    if accepted_in == Mode::Relay {
        let Ok(mut server) = TcpStream::connect(&target).await else { return };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
            changed = modes.wait_for(|mode| *mode != Mode::Relay) => {
                if changed.is_err() {
                    return;
                }
            }
        }
        if *modes.borrow() == Mode::Refuse {
            return;
        }
    }
    // Hanging: the connection stays open and silent until the mode changes.
    let _ = modes.changed().await;
    let _ = client.shutdown().await;
}
