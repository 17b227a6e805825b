//! Bounds on accepted connections, shared by every listener of a process
//! (WebSocket, gRPC, HTTP): DESIGN.md G10 for sockets.
//!
//! - **Per process**: at most `limits.connections` at once. One more is
//!   accepted and closed at once, so it cannot queue in the backlog and
//!   the listener keeps answering.
//! - **Per address, before the handshake**: at most `limits.pending_per_ip`
//!   connections from one address (an IPv6 /64) that have not finished
//!   their first request's headers. A client opening sockets and sending
//!   nothing, the classic slowloris, is refused at that number while
//!   everyone else still connects.
//! - **New connections per address**: at most
//!   `limits.new_connections_per_ip` per second (a burst of twice that);
//!   more are closed at accept and counted in
//!   `im_rate_limited_total{limit="connections"}`.
//! - **Handshake timeout**: a connection still pending after
//!   `limits.handshake_timeout` is closed.
//! - **Idle timeout** (HTTP/1 and WebSocket): a connection from which
//!   nothing arrives for `limits.idle_timeout` is closed. The gateway's
//!   pings keep a live WebSocket client above it; gRPC connections have
//!   HTTP/2 keepalive instead.
//!
//! The checks live in the accepted socket ([`GuardedStream`]), so they hold
//! for axum and tonic alike without touching either's connection loop. A
//! socket's reads cost one clock read more; the timer is re-armed only when
//! it fires.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::Stream;
use im_config::LimitsConfig;
use im_core::limits::client_source;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::rate_limits::{KeyedLimit, Limit, RateLimitMetrics};
use crate::tls::{ServerTls, Transport};

/// File descriptors kept for everything that is not a client connection
/// (database and Redis pools, the broker, files, the registry).
const RESERVED_FILES: u64 = 1024;

/// The HTTP/2 connection preface a gRPC client sends first: once it has
/// arrived the connection is past its handshake (the server writes its
/// SETTINGS before reading anything, so the first write says nothing).
const HTTP2_PREFACE_LEN: usize = 24;

/// When a connection counts as past its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HandshakeEnd {
    /// The server's first write: HTTP/1 answers only complete requests
    /// (the 101 of a WebSocket upgrade included).
    FirstWrite,
    /// This many bytes read: the HTTP/2 preface.
    BytesRead(usize),
}

/// How one listener's connections are guarded.
#[derive(Clone, Copy, Debug)]
struct ListenerKind {
    handshake_end: HandshakeEnd,
    /// Closes a connection after this long without a byte read.
    idle_timeout: Option<Duration>,
}

/// Counters of refused and timed-out connections.
#[derive(Clone, Default)]
pub struct GuardMetrics {
    pub refused_process_limit: Counter,
    pub refused_pending_per_ip: Counter,
    pub handshake_timeouts: Counter,
    pub idle_timeouts: Counter,
    pub open: Gauge,
    pub tls_handshake_failures: Counter,
    pub tls_reloads: crate::tls::ReloadMetrics,
}

impl GuardMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "connections_open",
            "Connections open on every listener of this process (WebSocket, gRPC, HTTP)",
            self.open.clone(),
        );
        registry.register(
            "connections_refused_process_limit",
            "Connections closed at accept because the process held LIMIT_CONNECTIONS",
            self.refused_process_limit.clone(),
        );
        registry.register(
            "connections_refused_pending_per_ip",
            "Connections closed at accept because their address had LIMIT_PENDING_PER_IP connections still in their handshake",
            self.refused_pending_per_ip.clone(),
        );
        registry.register(
            "connections_handshake_timeouts",
            "Connections closed because their first request's headers took longer than LIMIT_HANDSHAKE_TIMEOUT",
            self.handshake_timeouts.clone(),
        );
        registry.register(
            "connections_idle_timeouts",
            "WebSocket and HTTP connections closed after LIMIT_IDLE_TIMEOUT without a byte from the client",
            self.idle_timeouts.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed on any listener (a client without the CA, speaking clear text, or with no common cipher)",
            self.tls_handshake_failures.clone(),
        );
        registry.register(
            "tls_certificate_reloads",
            "Renewed TLS certificate pairs put in service without a restart (TLS_RELOAD_INTERVAL)",
            self.tls_reloads.replaced.clone(),
        );
        registry.register(
            "tls_certificate_reload_failures",
            "Reads of TLS_CERT_FILE and TLS_KEY_FILE that failed or found a mismatched pair; the pair in service stays",
            self.tls_reloads.failed.clone(),
        );
    }
}

/// Admissions between two sweeps of the per-address rate buckets.
const SWEEP_EVERY: u64 = 4096;

/// The process's connection budget, shared by all its listeners.
pub struct ConnectionGuard {
    slots: Arc<Semaphore>,
    new_per_source: KeyedLimit<IpAddr>,
    admitted: AtomicU64,
    rate_limited: RateLimitMetrics,
    pending_per_ip: usize,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    pending: Mutex<HashMap<IpAddr, usize>>,
    metrics: GuardMetrics,
    /// TLS on every listener, when configured.
    tls: Option<Arc<ServerTls>>,
}

impl ConnectionGuard {
    /// A guard admitting at most `limits.connections` (lowered to what the
    /// open-file limit allows, see [`max_connections`]).
    pub fn new(limits: &LimitsConfig, metrics: GuardMetrics, rate_limited: RateLimitMetrics) -> Arc<Self> {
        Self::with_tls(limits, metrics, rate_limited, None)
    }

    /// As [`ConnectionGuard::new`], every listener speaking TLS with `tls`.
    pub fn with_tls(
        limits: &LimitsConfig,
        metrics: GuardMetrics,
        rate_limited: RateLimitMetrics,
        tls: Option<Arc<ServerTls>>,
    ) -> Arc<Self> {
        let max = max_connections(limits.connections);
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max)),
            new_per_source: KeyedLimit::new(limits.new_connections_per_ip, Duration::from_secs(1)),
            admitted: AtomicU64::new(0),
            rate_limited,
            pending_per_ip: limits.pending_per_ip,
            handshake_timeout: limits.handshake_timeout,
            idle_timeout: limits.idle_timeout,
            pending: Mutex::new(HashMap::new()),
            metrics,
            tls,
        })
    }

    /// A connection from `peer`, if the budgets allow it.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Ticket> {
        let source = client_source(peer);
        // The buckets of addresses gone quiet are dropped now and then, so
        // the table holds recent sources only.
        if self.admitted.fetch_add(1, Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.new_per_source.forget_quiet();
        }
        if self.new_per_source.take(&source, 1).is_err() {
            self.rate_limited.refused(Limit::Connections);
            return None;
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.metrics.refused_process_limit.inc();
            return None;
        };
        {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let count = pending.entry(source).or_default();
            if *count >= self.pending_per_ip {
                drop(pending);
                self.metrics.refused_pending_per_ip.inc();
                return None;
            }
            *count += 1;
        }
        self.metrics.open.inc();
        Some(Ticket { guard: self.clone(), _slot: slot, pending: Some(source) })
    }

    fn leave_pending(&self, source: IpAddr) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = pending.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                pending.remove(&source);
            }
        }
    }

    /// An HTTP/1 `listener` (WebSocket upgrades included), its connections
    /// guarded: past the handshake at the first answer, closed when idle.
    pub fn http1(self: &Arc<Self>, listener: TcpListener) -> GuardedListener {
        let kind = ListenerKind { handshake_end: HandshakeEnd::FirstWrite, idle_timeout: Some(self.idle_timeout) };
        let tls = self.tls.as_ref().map(|tls| tls.http1().clone());
        GuardedListener { listener, guard: self.clone(), kind, tls }
    }

    /// A gRPC (HTTP/2) `listener`, its connections guarded: past the
    /// handshake once the client's preface arrived, never idle (they are
    /// long-lived and quiet between calls; HTTP/2 keepalive finds dead
    /// peers).
    pub fn grpc(self: &Arc<Self>, listener: TcpListener) -> GuardedListener {
        let kind = ListenerKind { handshake_end: HandshakeEnd::BytesRead(HTTP2_PREFACE_LEN), idle_timeout: None };
        let tls = self.tls.as_ref().map(|tls| tls.grpc().clone());
        GuardedListener { listener, guard: self.clone(), kind, tls }
    }
}

/// `configured`, or fewer when the open-file limit would run out first:
/// the soft limit is raised to the hard one, and [`RESERVED_FILES`] of it
/// stay for everything else. A process out of descriptors fails its
/// database and broker connections too, not only new clients.
pub fn max_connections(configured: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(%error, "could not raise the open-file limit");
        }
        limit = getrlimit(Resource::Nofile);
    }
    let Some(files) = limit.current else { return configured };
    let room = files.saturating_sub(RESERVED_FILES).max(files / 2);
    let allowed = usize::try_from(room).unwrap_or(usize::MAX);
    if configured > allowed {
        // A warning when the operator asked for more; the default simply
        // fits the machine.
        if configured != LimitsConfig::default().connections {
            tracing::warn!(
                configured,
                allowed,
                open_file_limit = files,
                "limits.connections (LIMIT_CONNECTIONS) lowered to what the open-file limit allows; raise `ulimit -n` (LimitNOFILE) to keep it"
            );
        } else {
            tracing::info!(allowed, open_file_limit = files, "connections limited by the open-file limit");
        }
        return allowed;
    }
    configured
}

/// A connection's hold on the budgets, released when it closes.
struct Ticket {
    guard: Arc<ConnectionGuard>,
    _slot: OwnedSemaphorePermit,
    /// Set while the connection counts as pending for its source.
    pending: Option<IpAddr>,
}

impl Ticket {
    fn handshake_done(&mut self) {
        if let Some(source) = self.pending.take() {
            self.guard.leave_pending(source);
        }
    }

    fn is_pending(&self) -> bool {
        self.pending.is_some()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.handshake_done();
        self.guard.metrics.open.dec();
    }
}

/// A listener whose connections are admitted by a [`ConnectionGuard`]. An
/// `axum::serve` listener, and a tonic incoming stream through
/// [`GuardedListener::incoming`].
pub struct GuardedListener {
    listener: TcpListener,
    guard: Arc<ConnectionGuard>,
    kind: ListenerKind,
    tls: Option<TlsAcceptor>,
}

impl GuardedListener {
    /// The next admitted connection, with TCP_NODELAY: without it a small
    /// answer written while an earlier one is unacknowledged waits for the
    /// peer's delayed ACK (measured as +20 ms on acks under a steady load).
    /// Refused ones are closed here.
    pub async fn accept_guarded(&mut self) -> (GuardedStream, SocketAddr) {
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            };
            let Some(ticket) = self.guard.admit(peer.ip()) else {
                // Dropped: closed at once.
                continue;
            };
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "could not set TCP_NODELAY");
            }
            let connect_info = tcp.connect_info();
            let tls = self.tls.as_ref().map(|acceptor| (acceptor, &self.guard.metrics.tls_handshake_failures));
            let transport = Transport::new(tcp, tls);
            let stream = GuardedStream::new(transport, connect_info, ticket, self.kind, self.guard.handshake_timeout);
            return (stream, peer);
        }
    }

    /// The admitted connections as a stream, for tonic.
    pub fn incoming(self) -> impl Stream<Item = io::Result<GuardedStream>> {
        futures::stream::unfold(self, |mut listener| async move {
            let (stream, _) = listener.accept_guarded().await;
            Some((Ok(stream), listener))
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// What hyper did when `accept` failed: a reset peer is not worth a word;
/// anything else (out of descriptors, usually) is logged and waited out.
async fn accept_failed(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A client's address as `ConnectInfo` of a guarded listener (axum knows
/// only its own `TcpListener`'s).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, GuardedListener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, GuardedListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl im_gateway::login::ClientAddress for PeerAddr {
    fn ip(&self) -> IpAddr {
        self.0.ip()
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    fn accept(&mut self) -> impl Future<Output = (Self::Io, Self::Addr)> + Send {
        self.accept_guarded()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An admitted connection: the socket, its ticket, and its deadline. With
/// TLS the guard sees the decrypted bytes: the handshake deadline runs
/// until the first request (not the TLS handshake) is complete.
pub struct GuardedStream {
    tcp: Transport,
    connect_info: TcpConnectInfo,
    ticket: Ticket,
    kind: ListenerKind,
    bytes_read: usize,
    last_read: Instant,
    /// The handshake deadline while pending, then the idle deadline (moved
    /// on only when it fires).
    deadline: Pin<Box<Sleep>>,
    /// No deadline left to watch (past the handshake, no idle timeout).
    untimed: bool,
}

impl GuardedStream {
    fn new(
        tcp: Transport,
        connect_info: TcpConnectInfo,
        ticket: Ticket,
        kind: ListenerKind,
        handshake_timeout: Duration,
    ) -> Self {
        let now = Instant::now();
        Self {
            tcp,
            connect_info,
            ticket,
            kind,
            bytes_read: 0,
            last_read: now,
            deadline: Box::pin(tokio::time::sleep_until(now + handshake_timeout)),
            untimed: false,
        }
    }

    /// Pending when a deadline passed: the error that closes the
    /// connection, or `Pending` with the next deadline armed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.untimed {
                return Poll::Pending;
            }
            ready!(self.deadline.as_mut().poll(cx));
            let metrics = &self.ticket.guard.metrics;
            if self.ticket.is_pending() {
                metrics.handshake_timeouts.inc();
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"));
            }
            let Some(idle) = self.kind.idle_timeout else {
                self.untimed = true;
                return Poll::Pending;
            };
            let due = self.last_read + idle;
            if due <= Instant::now() {
                metrics.idle_timeouts.inc();
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "connection idle"));
            }
            self.deadline.as_mut().reset(due);
        }
    }
}

impl GuardedStream {
    /// A write that waits during the handshake waits on the deadline too:
    /// a gRPC server writes first, and a TLS handshake that stalls there
    /// would otherwise never meet it.
    fn handshake_deadline_on_write(
        &mut self,
        written: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Pending if self.ticket.is_pending() => self.poll_deadline(cx).map(Err),
            written => written,
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                if read > 0 {
                    this.last_read = Instant::now();
                    if let HandshakeEnd::BytesRead(needed) = this.kind.handshake_end {
                        this.bytes_read = this.bytes_read.saturating_add(read);
                        if this.bytes_read >= needed {
                            this.ticket.handshake_done();
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => this.poll_deadline(cx).map(Err),
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.kind.handshake_end == HandshakeEnd::FirstWrite {
            self.ticket.handshake_done();
        }
        let this = &mut *self;
        let written = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.handshake_deadline_on_write(written, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.kind.handshake_end == HandshakeEnd::FirstWrite {
            self.ticket.handshake_done();
        }
        let this = &mut *self;
        let written = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.handshake_deadline_on_write(written, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for GuardedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.connect_info.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn limits(pending_per_ip: usize, connections: usize) -> LimitsConfig {
        LimitsConfig {
            connections,
            pending_per_ip,
            handshake_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(400),
            ..LimitsConfig::default()
        }
    }

    fn guard(limits: LimitsConfig) -> Arc<ConnectionGuard> {
        ConnectionGuard::new(&limits, GuardMetrics::default(), RateLimitMetrics::default())
    }

    /// An echo server behind a guard: writes back what it reads, so a
    /// client's first byte ends its handshake (`FirstWrite`).
    async fn echo_server(guard: &Arc<ConnectionGuard>, grpc: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut listener = if grpc { guard.grpc(listener) } else { guard.http1(listener) };
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept_guarded().await;
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = stream.read(&mut buf).await {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Whether the server closed `stream` (EOF or reset) within `within`.
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(tokio::time::timeout(within, stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
    }

    async fn echoes(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 1];
        stream.write_all(b"x").await.is_ok()
            && matches!(tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await, Ok(Ok(1)))
    }

    #[tokio::test]
    async fn pending_connections_of_one_address_are_capped_and_time_out() {
        let guard = guard(limits(3, 100));
        let addr = echo_server(&guard, false).await;
        let mut silent = Vec::new();
        for _ in 0..3 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        // The fourth silent one from the same address is closed at once.
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut fourth, Duration::from_millis(200)).await);
        assert_eq!(guard.metrics.refused_pending_per_ip.get(), 1);

        // The three time out, and the address may connect again.
        for stream in &mut silent {
            assert!(closed_within(stream, Duration::from_secs(2)).await);
        }
        assert_eq!(guard.metrics.handshake_timeouts.get(), 3);
        let mut fresh = TcpStream::connect(addr).await.unwrap();
        assert!(echoes(&mut fresh).await);
    }

    /// A guard whose listeners speak TLS with a self-signed certificate.
    fn tls_guard(limits: LimitsConfig, dir: &std::path::Path) -> Arc<ConnectionGuard> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
        let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let config = im_config::TlsConfig {
            cert_file: Some(cert_file),
            key_file: Some(key_file),
            ..im_config::TlsConfig::default()
        };
        let tls = ServerTls::from_config(&config).unwrap();
        ConnectionGuard::with_tls(&limits, GuardMetrics::default(), RateLimitMetrics::default(), tls)
    }

    #[tokio::test]
    async fn a_tls_handshake_that_stalls_meets_the_handshake_deadline_even_when_the_server_writes_first() {
        let dir = tempfile::tempdir().unwrap();
        let guard = tls_guard(limits(10, 100), dir.path());
        // A gRPC listener: the server's first move is a write (HTTP/2
        // SETTINGS), which waits for the client's hello.
        let mut listener = guard.grpc(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept_guarded().await;
                tokio::spawn(async move { stream.write_all(b"settings").await });
            }
        });
        let mut silent = TcpStream::connect(addr).await.unwrap();
        // Half a ClientHello's record header, then nothing.
        silent.write_all(&[0x16, 0x03]).await.unwrap();
        assert!(closed_within(&mut silent, Duration::from_secs(2)).await);
        assert_eq!(guard.metrics.handshake_timeouts.get(), 1);

        // A client in clear fails the handshake, counted.
        let mut clear = TcpStream::connect(addr).await.unwrap();
        clear.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        // The server answers with a TLS alert, then closes.
        let mut answer = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(2), clear.read_to_end(&mut answer)).await;
        assert!(matches!(closed, Ok(Ok(_) | Err(_))), "closed after the alert");
        assert_eq!(answer.first(), Some(&0x15), "a TLS alert record: {answer:?}");
        assert_eq!(guard.metrics.tls_handshake_failures.get(), 1);
    }

    #[tokio::test]
    async fn a_connection_past_its_handshake_no_longer_counts_as_pending() {
        let guard = guard(limits(1, 100));
        let addr = echo_server(&guard, false).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        assert!(echoes(&mut first).await);
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(echoes(&mut second).await);
        assert_eq!(guard.metrics.refused_pending_per_ip.get(), 0);
        assert_eq!(guard.metrics.open.get(), 2);
    }

    #[tokio::test]
    async fn idle_connections_close_and_busy_ones_stay() {
        let guard = guard(limits(10, 100));
        let addr = echo_server(&guard, false).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let mut busy = TcpStream::connect(addr).await.unwrap();
        assert!(echoes(&mut idle).await);
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(echoes(&mut busy).await, "a connection in use was closed");
        }
        assert!(closed_within(&mut idle, Duration::from_secs(1)).await);
        assert_eq!(guard.metrics.idle_timeouts.get(), 1);
    }

    #[tokio::test]
    async fn grpc_connections_are_never_idle_and_finish_their_handshake_on_the_preface() {
        let guard = guard(limits(1, 100));
        let addr = echo_server(&guard, true).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(&[b'P'; HTTP2_PREFACE_LEN]).await.unwrap();
        let mut buf = [0u8; HTTP2_PREFACE_LEN];
        client.read_exact(&mut buf).await.unwrap();
        // Past the handshake: a second connection from here is let in, and
        // the first outlives both timeouts.
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(echoes(&mut second).await);
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(echoes(&mut client).await);
    }

    #[tokio::test]
    async fn the_process_limit_closes_connections_beyond_it() {
        let guard = guard(limits(10, 2));
        let addr = echo_server(&guard, false).await;
        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        assert!(echoes(&mut a).await && echoes(&mut b).await);
        let mut c = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut c, Duration::from_millis(500)).await);
        assert_eq!(guard.metrics.refused_process_limit.get(), 1);
        drop(a);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut d = TcpStream::connect(addr).await.unwrap();
        assert!(echoes(&mut d).await);
    }

    #[tokio::test]
    async fn new_connections_of_one_address_are_rate_limited() {
        let rate_limited = RateLimitMetrics::default();
        let limits = LimitsConfig { new_connections_per_ip: 5, ..limits(100, 100) };
        let guard = ConnectionGuard::new(&limits, GuardMetrics::default(), rate_limited.clone());
        let addr = echo_server(&guard, false).await;
        let mut open = Vec::new();
        for _ in 0..10 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            assert!(echoes(&mut stream).await, "the burst (twice the rate) is let in");
            open.push(stream);
        }
        let mut over = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut over, Duration::from_millis(500)).await);
        assert_eq!(rate_limited.count(Limit::Connections), 1);
        // A fifth of a second later one more token is there.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let mut later = TcpStream::connect(addr).await.unwrap();
        assert!(echoes(&mut later).await);
    }
}
