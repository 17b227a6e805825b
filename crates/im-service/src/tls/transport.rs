//! An accepted socket, in clear or in TLS. The TLS handshake runs inside
//! the connection's first reads and writes, in the connection's own task:
//! the accept loop hands the socket on at once, so a client that stalls
//! its handshake holds nothing but its own connection (which the guard's
//! handshake deadline closes).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{Accept, TlsAcceptor};

/// The bytes of one connection.
pub enum Transport {
    Plain(TcpStream),
    Tls(TlsTransport),
}

/// A TLS connection, before and after its handshake.
pub struct TlsTransport {
    state: TlsState,
    /// Counts handshakes that failed (bad client hello, no common cipher,
    /// an unknown CA on the client's side, a client speaking clear text).
    handshake_failures: Counter,
}

enum TlsState {
    // Boxed: a handshake in progress and a TLS stream hold rustls's whole
    // connection state (over 1 KiB); a socket in clear should not carry that.
    Handshaking(Box<Accept<TcpStream>>),
    Ready(Box<TlsStream<TcpStream>>),
    /// The handshake failed; the error was returned once.
    Failed,
}

impl Transport {
    /// `tcp` as it is, or wrapped in TLS by `acceptor`.
    pub fn new(tcp: TcpStream, tls: Option<(&TlsAcceptor, &Counter)>) -> Self {
        match tls {
            None => Self::Plain(tcp),
            Some((acceptor, failures)) => Self::Tls(TlsTransport {
                state: TlsState::Handshaking(Box::new(acceptor.accept(tcp))),
                handshake_failures: failures.clone(),
            }),
        }
    }
}

impl TlsTransport {
    /// The TLS stream, once the handshake is over; drives it meanwhile.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut TlsStream<TcpStream>>> {
        if let TlsState::Handshaking(accept) = &mut self.state {
            match ready!(Pin::new(accept.as_mut()).poll(cx)) {
                Ok(stream) => self.state = TlsState::Ready(Box::new(stream)),
                Err(error) => {
                    self.state = TlsState::Failed;
                    self.handshake_failures.inc();
                    tracing::debug!(%error, "TLS handshake failed");
                    return Poll::Ready(Err(error));
                }
            }
        }
        match &mut self.state {
            TlsState::Ready(stream) => Poll::Ready(Ok(stream)),
            _ => Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, "TLS handshake failed"))),
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => {
                let stream = ready!(tls.poll_ready(cx))?;
                Pin::new(stream).poll_read(cx, buf)
            }
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => {
                let stream = ready!(tls.poll_ready(cx))?;
                Pin::new(stream).poll_write(cx, buf)
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => {
                let stream = ready!(tls.poll_ready(cx))?;
                Pin::new(stream).poll_write_vectored(cx, bufs)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            // tokio-rustls gathers the slices into TLS records.
            Self::Tls(_) => true,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => {
                let stream = ready!(tls.poll_ready(cx))?;
                Pin::new(stream).poll_flush(cx)
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => match &mut tls.state {
                TlsState::Ready(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
                // Nothing to close politely: dropping the socket closes it.
                TlsState::Handshaking(_) | TlsState::Failed => Poll::Ready(Ok(())),
            },
        }
    }
}
