//! A TCP proxy a test controls, in front of a server it must not stop (the
//! shared MariaDB or etcd of `scripts/servers.sh`): relaying, refusing
//! (every relayed connection closed, new ones refused — a server that went
//! away), or hanging (connections accepted and held, nothing relayed either
//! way — a server that stopped answering). It can be retargeted, as
//! operators repoint a proxy or a DNS name at a promoted replica: with its
//! relayed connections closed (HAProxy, ProxySQL) or kept (a DNS change, seen
//! by new connections only).

use std::sync::{Arc, Mutex};
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
    /// Where new connections are relayed.
    target: Arc<Mutex<String>>,
    /// Bumped to close every connection relayed so far.
    cuts: watch::Sender<u64>,
}

/// What the connections of one proxy share.
#[derive(Clone)]
struct Shared {
    target: Arc<Mutex<String>>,
    modes: watch::Receiver<Mode>,
    cuts: watch::Receiver<u64>,
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
        let (cuts, cut) = watch::channel(0);
        let target = Arc::new(Mutex::new(target.to_owned()));
        tokio::spawn(serve(port, Shared { target: target.clone(), modes, cuts: cut }));
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "the proxy did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        TcpProxy { port, mode, target, cuts }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Relays new connections to `target` and closes the ones relayed so
    /// far, as a proxy repointed at a promoted replica does.
    pub fn retarget(&self, target: &str) {
        *self.target.lock().unwrap() = target.to_owned();
        self.cuts.send_modify(|cut| *cut += 1);
    }

    /// Relays new connections to `target`, keeping the ones relayed so far
    /// open to the old target, as a DNS name repointed at a promoted replica
    /// does.
    pub fn retarget_new_connections(&self, target: &str) {
        *self.target.lock().unwrap() = target.to_owned();
    }
}

async fn serve(port: u16, shared: Shared) {
    let mut modes = shared.modes.clone();
    loop {
        let mode = *modes.borrow_and_update();
        if mode != Mode::Refuse {
            let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("the proxy port is free");
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        connections.spawn(connection(client, mode, shared.clone()));
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

/// One client connection: relayed while the proxy relays (to the target of
/// the moment it was accepted, until a retarget cuts it), held without
/// relaying while it hangs, closed when it refuses (or changes from hanging).
async fn connection(mut client: TcpStream, accepted_in: Mode, shared: Shared) {
    let Shared { target, mut modes, mut cuts } = shared;
    if accepted_in == Mode::Relay {
        // In this order: a retarget sets the target before it cuts, so a
        // connection either sees the new target or is cut.
        cuts.mark_unchanged();
        let target = target.lock().unwrap().clone();
        let Ok(mut server) = TcpStream::connect(&target).await else { return };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
            _ = cuts.changed() => return,
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
