//! The `database.*` settings (DB_HOST, DB_NAME, ...) as sqlx options. The
//! password only ever goes into the connect options, whose `Debug` this crate
//! never prints.

use std::time::Duration;

use im_config::{DatabaseConfig, DbTlsMode};
use im_core::error::BackendError;
use sqlx::Connection;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions, MySqlSslMode};

use crate::tls::CaSetting;

const DEFAULT_PORT: u16 = 3306;

/// Connections above `max_idle_conns` are closed after this long unused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection idle this long is pinged before a call gets it.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// Splits `host` or `host:port` (`[v6]:port` for an IPv6 address).
pub(super) fn split_host(address: &str) -> Result<(&str, u16), BackendError> {
    let bad = |why: &str| BackendError::Other(format!("database.host {address:?} {why}"));
    let (host, port) = if let Some(bracketed) = address.strip_prefix('[') {
        let (host, rest) = bracketed.split_once(']').ok_or_else(|| bad("has no closing ']'"))?;
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':').ok_or_else(|| bad("has something other than :port after ']'"))?)),
        }
    } else {
        match address.split_once(':') {
            // More than one ':' and no brackets: a bare IPv6 address.
            Some((_, rest)) if rest.contains(':') => (address, None),
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    if host.is_empty() {
        return Err(bad("names no host"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => port.parse().map_err(|_| bad("has a port that is not a number from 0 to 65535"))?,
    };
    Ok((host, port))
}

/// The database name goes into one statement unparameterised (`CREATE
/// DATABASE`, identifiers cannot be parameters), so it is held to the
/// characters of a plain identifier.
pub(super) fn check_database_name(name: &str) -> Result<(), BackendError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '-');
    if name.is_empty() || name.len() > 64 || !name.chars().all(plain) {
        return Err(BackendError::Other(format!(
            "database.name {name:?} must be 1 to 64 ASCII letters, digits, '_', '$' or '-'"
        )));
    }
    Ok(())
}

/// Where and as whom to connect, without a database, and how (TLS).
pub(super) fn server_options(config: &DatabaseConfig) -> Result<MySqlConnectOptions, BackendError> {
    let (host, port) = split_host(&config.host)?;
    let options = MySqlConnectOptions::new().host(host).port(port).username(&config.user);
    let options = with_tls(options, config)?;
    // No password at all, rather than an empty one: sqlx would send the
    // scramble of "" where the server expects an empty response.
    Ok(if config.password.is_empty() { options } else { options.password(config.password.expose()) })
}

/// `database.tls_mode` and `database.tls_ca_file`. The modes are MySQL's
/// own `--ssl-mode`, which sqlx implements as they are: `preferred` and
/// `required` accept any certificate, `verify_ca` checks the chain, and
/// `verify_identity` the chain and that the certificate names the host.
fn with_tls(options: MySqlConnectOptions, config: &DatabaseConfig) -> Result<MySqlConnectOptions, BackendError> {
    let mode = match config.tls_mode {
        DbTlsMode::Disabled => MySqlSslMode::Disabled,
        DbTlsMode::Preferred => MySqlSslMode::Preferred,
        DbTlsMode::Required => MySqlSslMode::Required,
        DbTlsMode::VerifyCa => MySqlSslMode::VerifyCa,
        DbTlsMode::VerifyIdentity => MySqlSslMode::VerifyIdentity,
    };
    let options = options.ssl_mode(mode);
    let Some(ca) = &config.tls_ca_file else { return Ok(options) };
    // Checked now for an error that names the setting; sqlx is given the
    // path, not the bytes, so it reads the file at each new connection and
    // a renewed bundle is picked up without a restart.
    CaSetting::DATABASE.read(ca)?;
    Ok(options.ssl_ca(ca))
}

/// The pool the settings describe.
pub(super) fn pool_options(config: &DatabaseConfig) -> Result<MySqlPoolOptions, BackendError> {
    if config.max_open_conns == 0 {
        return Err(BackendError::other("database.max_open_conns must be at least 1"));
    }
    Ok(MySqlPoolOptions::new()
        .max_connections(config.max_open_conns)
        .min_connections(config.max_idle_conns.min(config.max_open_conns))
        .idle_timeout(IDLE_TIMEOUT)
        .max_lifetime((!config.conn_max_lifetime.is_zero()).then_some(config.conn_max_lifetime))
        // Opening a connection and waiting for a free one.
        .acquire_timeout(config.conn_timeout)
        // sqlx pings every connection as it goes back to the pool (no option
        // turns that off), and by default again before handing it out: two
        // round trips per call, a third of what the server is asked under
        // load (BENCHMARKS.md). The second is only worth it after a while idle,
        // long enough for a server restart or failover to have broken the
        // connection; a connection that broke sooner fails its call
        // (`Unavailable`, which callers retry) and is dropped.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .after_connect(|conn, _| {
            Box::pin(async move {
                // A value that does not fit its column fails the statement
                // rather than being cut short, whatever the server's default.
                sqlx::query(
                    "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES')",
                )
                .execute(conn)
                .await
                .map(|_| ())
            })
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_take_an_optional_port() {
        assert_eq!(split_host("db").unwrap(), ("db", 3306));
        assert_eq!(split_host("mysql-master:3307").unwrap(), ("mysql-master", 3307));
        assert_eq!(split_host("127.0.0.1:1").unwrap(), ("127.0.0.1", 1));
        assert_eq!(split_host("[::1]:3307").unwrap(), ("::1", 3307));
        assert_eq!(split_host("[::1]").unwrap(), ("::1", 3306));
        assert_eq!(split_host("::1").unwrap(), ("::1", 3306));
        for bad in ["", ":3306", "db:", "db:x", "db:70000", "[::1", "[::1]x", "[]:3306"] {
            assert!(split_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_options_carry_the_tls_mode_and_the_ca() {
        let modes = [
            (DbTlsMode::Disabled, MySqlSslMode::Disabled),
            (DbTlsMode::Preferred, MySqlSslMode::Preferred),
            (DbTlsMode::Required, MySqlSslMode::Required),
            (DbTlsMode::VerifyCa, MySqlSslMode::VerifyCa),
            (DbTlsMode::VerifyIdentity, MySqlSslMode::VerifyIdentity),
        ];
        for (tls_mode, expected) in modes {
            let config = DatabaseConfig { host: "db:3306".to_owned(), tls_mode, ..DatabaseConfig::default() };
            // `MySqlSslMode` is not `PartialEq`.
            let mode = server_options(&config).unwrap().get_ssl_mode();
            assert_eq!(format!("{mode:?}"), format!("{expected:?}"), "{tls_mode}");
        }

        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let config = DatabaseConfig {
            host: "db".to_owned(),
            tls_mode: DbTlsMode::VerifyIdentity,
            tls_ca_file: Some(ca.clone()),
            ..DatabaseConfig::default()
        };
        let error = server_options(&config).unwrap_err().to_string();
        assert!(error.contains("database.tls_ca_file (DB_TLS_CA_FILE): cannot read"), "{error}");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        // No getter for the CA: its `Debug` shows it (no password is set here).
        let options = format!("{:?}", server_options(&config).unwrap());
        assert!(options.contains("ssl_ca: Some(File(") && options.contains("ca.pem"), "{options}");
    }

    #[test]
    fn database_names_are_plain_identifiers() {
        assert!(check_database_name("im_chat").is_ok());
        assert!(check_database_name("im-test$2").is_ok());
        for bad in ["", "a`b", "a b", "a;DROP", "x".repeat(65).as_str()] {
            assert!(check_database_name(bad).is_err(), "{bad:?}");
        }
    }
}
