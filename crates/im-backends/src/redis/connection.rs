//! [`RedisConnection`]: the one place that turns `redis.*` config into a
//! connection, and Redis errors into [`BackendError`]s.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{
    Client, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisConnectionInfo, RedisError,
    RedisResult, ServerErrorKind, TlsCertificates,
};
use im_config::RedisConfig;
use im_core::error::BackendError;
use im_core::ports::BackendResult;

use super::sentinel::{Primary, SentinelPrimary};
use crate::telemetry::{RedisOperation, dependency_metrics};
use crate::tls::CaSetting;

/// A connection to the Redis primary, shared by the seq allocator and the
/// dedup cache. Cheap to clone: clones share one multiplexed connection, on
/// which concurrent calls are pipelined (so `pool_size` and
/// `min_idle_conns` have nothing to size).
///
/// The primary is `redis.addr`, or the one `redis.sentinels` name, asked
/// again after a call fails as if it had moved ([`SentinelPrimary`]).
///
/// The connection reconnects by itself. While Redis is down every call fails
/// fast as [`BackendError::Unavailable`] (G9): a connection attempt gives up
/// after `dial_timeout` without retrying, a reply is awaited at most
/// `read_timeout + write_timeout`, and each call is bounded by the sum. The
/// next call after Redis is back reconnects; nothing has to be restarted.
#[derive(Clone)]
pub struct RedisConnection {
    target: Arc<Target>,
    /// `host:port`, or the Sentinels' master name, for error messages. The
    /// password is never kept here.
    addr: Arc<str>,
    call_timeout: Duration,
}

enum Target {
    Fixed(Arc<Primary>),
    Sentinel(Box<SentinelPrimary>),
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("addr", &self.addr)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

/// The oldest Redis this service runs on: `SET … NX GET` (the dedup cache)
/// came in 7.0.
const MIN_REDIS_MAJOR: u32 = 7;

impl RedisConnection {
    /// Prepares a connection to `config.addr` (`host:port`) or to the
    /// primary `config.sentinels` name; the first call connects, so a Redis
    /// that is down at start-up does not stop the process. Must be called
    /// within a Tokio runtime.
    pub fn open(config: &RedisConfig) -> BackendResult<Self> {
        let response_timeout = config.read_timeout + config.write_timeout;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.dial_timeout))
            .set_response_timeout(Some(response_timeout))
            // One attempt per reconnect: callers fail fast and the next call
            // tries again, instead of every caller waiting out a backoff.
            .set_number_of_retries(0);
        let call_timeout = config.dial_timeout + response_timeout;
        if !config.sentinels.is_empty() {
            let target = Target::Sentinel(Box::new(SentinelPrimary::new(config, manager_config)?));
            let addr = format!("primary {:?} of sentinels {}", config.master_name, config.sentinels.join(","));
            return Ok(Self { target: Arc::new(target), addr: addr.into(), call_timeout });
        }
        let (host, port) = parse_addr(&config.addr)?;
        let db = i64::from(config.db);
        let mut settings = RedisConnectionInfo::default().set_db(db);
        if !config.password.is_empty() {
            settings = settings.set_password(config.password.expose());
        }
        let address = if config.tls {
            // Verified: the chain and that the certificate names the host of
            // `redis.addr` (no `insecure`).
            ConnectionAddr::TcpTls { host, port, insecure: false, tls_params: None }
        } else {
            ConnectionAddr::Tcp(host, port)
        };
        let info = address
            .into_connection_info()
            .map_err(|e| BackendError::other(format!("redis.addr {:?}: {e}", config.addr)))?
            .set_redis_settings(settings);
        let client = client(info, config)?;
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| BackendError::other(format!("redis.addr {:?}: {e}", config.addr)))?;
        // Errors say whether TLS was spoken: a handshake refused is then read as such.
        let addr = if config.tls { format!("{} (TLS)", config.addr) } else { config.addr.clone() };
        let target = Target::Fixed(Arc::new(Primary::fixed(manager, addr.clone())));
        Ok(Self { target: Arc::new(target), addr: addr.into(), call_timeout })
    }

    /// A cheap round trip (`PING`), for `/ready`.
    pub async fn ping(&self) -> BackendResult<()> {
        self.call(RedisOperation::Ping, "PING", |mut con| async move {
            ::redis::cmd("PING").query_async::<()>(&mut con).await
        })
        .await
    }

    /// Refuses a Redis older than this service needs (a clear error at
    /// start rather than a script error at the first send). Unavailable when
    /// Redis cannot be asked.
    pub async fn check_version(&self) -> BackendResult<()> {
        let info: String = self
            .call(RedisOperation::Ping, "INFO server", |mut con| async move {
                ::redis::cmd("INFO").arg("server").query_async(&mut con).await
            })
            .await?;
        let version = info.lines().find_map(|line| line.strip_prefix("redis_version:")).unwrap_or("").trim();
        if major_version(version).is_some_and(|major| major >= MIN_REDIS_MAJOR) {
            Ok(())
        } else {
            Err(BackendError::other(format!(
                "redis at {} is version {version:?}; this service needs Redis {MIN_REDIS_MAJOR}.0 or later (SET NX GET)",
                self.addr
            )))
        }
    }

    /// Runs one call (a command, a pipeline, a script) on the primary's
    /// connection, bounded in time, with its error classified; `what` names
    /// it in the error. Timed as `op`. A failure that a failover explains
    /// makes the next call look the primary up again (with Sentinels).
    pub(crate) async fn call<T, F, Fut>(&self, op: RedisOperation, what: &str, call: F) -> BackendResult<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let started = Instant::now();
        let primary = match &*self.target {
            Target::Fixed(primary) => primary.clone(),
            Target::Sentinel(sentinel) => sentinel.primary().await.inspect_err(|_| {
                dependency_metrics().redis_operation(op, started);
            })?,
        };
        let done = tokio::time::timeout(self.call_timeout, call(primary.manager.clone())).await;
        dependency_metrics().redis_operation(op, started);
        let moved = match &done {
            Ok(Ok(_)) => false,
            Ok(Err(e)) => suggests_failover(e),
            Err(_) => true,
        };
        if let (true, Target::Sentinel(sentinel)) = (moved, &*self.target) {
            sentinel.failed(&primary);
        }
        match done {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(classify(e, what, &primary.addr)),
            Err(_) => Err(BackendError::unavailable(format!(
                "redis {what} at {}: no reply within {:?}",
                primary.addr, self.call_timeout
            ))),
        }
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }
}

/// `7` of `7.0.15`.
fn major_version(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

/// Whether a failed call may have failed because the primary moved: the
/// connection is gone, or the server is no longer a writable primary.
fn suggests_failover(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(e.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown))
}

/// The client for `info`: with `redis.tls_ca_file`, one that trusts that
/// bundle only; otherwise (plain TCP, or TLS verified against the system's
/// roots, which the redis crate loads at each connection) a plain one.
fn client(info: ConnectionInfo, config: &RedisConfig) -> BackendResult<Client> {
    match &config.tls_ca_file {
        Some(ca) if config.tls => {
            let root_cert = Some(CaSetting::REDIS.read(ca)?);
            Client::build_with_tls(info, TlsCertificates { client_tls: None, root_cert })
                .map_err(|e| CaSetting::REDIS.error(format!("{}: {e}", ca.display())))
        }
        // Without `redis.tls` the bundle has nothing to verify (the config's
        // validation refuses that combination).
        _ => Client::open(info).map_err(|e| BackendError::other(format!("redis.addr {:?}: {e}", config.addr))),
    }
}

/// `host:port`, `[v6]:port`.
pub(super) fn parse_addr(addr: &str) -> BackendResult<(String, u16)> {
    let bad = || BackendError::other(format!("redis.addr {addr:?} is not host:port"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// Whether retrying later may help: the server is unreachable, too slow, still
/// loading its data, or not (yet) a writable primary.
fn classify(e: RedisError, what: &str, addr: &str) -> BackendError {
    let transient = suggests_failover(&e)
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::BusyLoading | ServerErrorKind::TryAgain | ServerErrorKind::ClusterDown)
        )
        // A script running too long on the server.
        || e.code() == Some("BUSY");
    let message = format!("redis {what} at {addr}: {e}");
    if transient { BackendError::unavailable(message) } else { BackendError::other(message) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_host_and_port() {
        assert_eq!(parse_addr("127.0.0.1:6379").unwrap(), ("127.0.0.1".to_owned(), 6379));
        assert_eq!(parse_addr("redis.internal:7000").unwrap(), ("redis.internal".to_owned(), 7000));
        assert_eq!(parse_addr("[::1]:6379").unwrap(), ("::1".to_owned(), 6379));
        for bad in ["", "localhost", ":6379", "host:", "host:port", "host:70000"] {
            assert!(parse_addr(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn versions_read_as_their_major() {
        assert_eq!(major_version("7.0.15"), Some(7));
        assert_eq!(major_version("6.2.14"), Some(6));
        assert_eq!(major_version("8"), Some(8));
        assert_eq!(major_version(""), None);
        assert_eq!(major_version("x.1"), None);
    }

    #[test]
    fn a_lost_connection_or_a_demoted_primary_suggests_a_failover() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(suggests_failover(&io));
        let readonly = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ReadOnly),
            "You can't write against a read only replica.",
        ));
        assert!(suggests_failover(&readonly));
        assert!(matches!(classify(readonly, "EVALSHA", "h:1"), BackendError::Unavailable(_)));
        let script = RedisError::from((ErrorKind::UnexpectedReturnType, "bad reply"));
        assert!(!suggests_failover(&script));
    }

    #[test]
    fn io_errors_are_unavailable_and_script_errors_are_not() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(classify(io, "GET", "h:1"), BackendError::Unavailable(_)));
        let script = RedisError::from((ErrorKind::UnexpectedReturnType, "bad reply"));
        assert!(matches!(classify(script, "GET", "h:1"), BackendError::Other(_)));
    }
}
