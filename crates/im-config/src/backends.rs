//! Which implementation of each concern the configuration selects (DESIGN.md §1), so the wiring matches
//! on an enum instead of testing strings for emptiness. An empty address means "embedded".
//!
//! Also the names of standalone mode's files in `server.data_dir`, decided here once.

use std::path::PathBuf;

use crate::schema::{
    Config, DatabaseConfig, EncryptionConfig, KafkaConfig, RedisConfig, ServerConfig, ServiceEndpoint,
};
use crate::secret::Secret;

/// Message store, read receipts and seq ceilings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreBackend<'a> {
    /// SQLite at [`ServerConfig::sqlite_path`].
    Sqlite,
    MySql(&'a DatabaseConfig),
}

/// Seq allocator and dedup cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqBackend<'a> {
    InProcess,
    Redis(&'a RedisConfig),
}

/// `group_msg`, `offline_msg` and `membership_change`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusBackend<'a> {
    InProcess,
    Kafka(&'a KafkaConfig),
}

/// User → gateway registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryBackend<'a> {
    InProcess,
    Etcd { endpoints: &'a [String] },
}

/// The Gateway Service or the User Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceLink<'a> {
    /// Linked into this process.
    Builtin,
    /// A gRPC client to another process.
    Remote(&'a ServiceEndpoint),
}

/// Where the key-encryption key of message bodies comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource<'a> {
    /// `encryption.enabled` is false: bodies are stored as sent.
    Disabled,
    /// A master key file at [`ServerConfig::master_key_path`], created on first start.
    LocalFile,
    Kms {
        endpoint: &'a str,
        key_id: &'a Secret,
    },
}

/// The HS256 key of client tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtKeySource<'a> {
    Configured(&'a Secret),
    /// Generated on first start at [`ServerConfig::jwt_secret_path`] and reused.
    DataDir,
}

impl Config {
    pub fn store(&self) -> StoreBackend<'_> {
        if self.database.host.is_empty() { StoreBackend::Sqlite } else { StoreBackend::MySql(&self.database) }
    }

    pub fn seq(&self) -> SeqBackend<'_> {
        if self.redis.addr.is_empty() && self.redis.sentinels.is_empty() {
            SeqBackend::InProcess
        } else {
            SeqBackend::Redis(&self.redis)
        }
    }

    pub fn bus(&self) -> BusBackend<'_> {
        if self.kafka.brokers.is_empty() { BusBackend::InProcess } else { BusBackend::Kafka(&self.kafka) }
    }

    pub fn registry(&self) -> RegistryBackend<'_> {
        if self.etcd.endpoints.is_empty() {
            RegistryBackend::InProcess
        } else {
            RegistryBackend::Etcd { endpoints: &self.etcd.endpoints }
        }
    }

    pub fn gateway(&self) -> ServiceLink<'_> {
        link(&self.services.gateway)
    }

    pub fn user_service(&self) -> ServiceLink<'_> {
        link(&self.services.user)
    }

    pub fn key_source(&self) -> KeySource<'_> {
        let encryption: &EncryptionConfig = &self.encryption;
        match (encryption.enabled, encryption.kms_endpoint.is_empty()) {
            (false, _) => KeySource::Disabled,
            (true, true) => KeySource::LocalFile,
            (true, false) => KeySource::Kms { endpoint: &encryption.kms_endpoint, key_id: &encryption.kms_key_id },
        }
    }

    pub fn jwt_key_source(&self) -> JwtKeySource<'_> {
        if self.auth.jwt_secret.is_empty() {
            JwtKeySource::DataDir
        } else {
            JwtKeySource::Configured(&self.auth.jwt_secret)
        }
    }

    pub fn uses_mysql(&self) -> bool {
        matches!(self.store(), StoreBackend::MySql(_))
    }

    pub fn uses_redis(&self) -> bool {
        matches!(self.seq(), SeqBackend::Redis(_))
    }

    pub fn uses_kafka(&self) -> bool {
        matches!(self.bus(), BusBackend::Kafka(_))
    }

    pub fn uses_etcd(&self) -> bool {
        matches!(self.registry(), RegistryBackend::Etcd { .. })
    }

    pub fn builtin_gateway(&self) -> bool {
        matches!(self.gateway(), ServiceLink::Builtin)
    }

    pub fn builtin_user_service(&self) -> bool {
        matches!(self.user_service(), ServiceLink::Builtin)
    }

    /// True when nothing external is configured: the zero-set-up, one-process mode.
    pub fn is_fully_embedded(&self) -> bool {
        !self.uses_mysql()
            && !self.uses_redis()
            && !self.uses_kafka()
            && !self.uses_etcd()
            && self.builtin_gateway()
            && self.builtin_user_service()
            && !matches!(self.key_source(), KeySource::Kms { .. })
    }
}

fn link(endpoint: &ServiceEndpoint) -> ServiceLink<'_> {
    if endpoint.addr.is_empty() { ServiceLink::Builtin } else { ServiceLink::Remote(endpoint) }
}

impl ServerConfig {
    /// `listen_host:port`, with IPv6 hosts in brackets, ready for `TcpListener::bind`.
    pub fn bind_addr(&self, port: u16) -> String {
        if self.listen_host.contains(':') {
            format!("[{}]:{port}", self.listen_host)
        } else {
            format!("{}:{port}", self.listen_host)
        }
    }

    /// The embedded message store.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("im.db")
    }

    /// The generated HS256 key, when `auth.jwt_secret` is empty.
    pub fn jwt_secret_path(&self) -> PathBuf {
        self.data_dir.join("jwt.secret")
    }

    /// The admin credential standalone mode creates on first start.
    pub fn admin_credential_path(&self) -> PathBuf {
        self.data_dir.join("admin.token")
    }

    /// The local master key, when encryption is enabled without a KMS.
    pub fn master_key_path(&self) -> PathBuf {
        self.data_dir.join("master.key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_fully_embedded() {
        let config = Config::default();
        assert!(config.is_fully_embedded());
        assert_eq!(config.store(), StoreBackend::Sqlite);
        assert_eq!(config.seq(), SeqBackend::InProcess);
        assert_eq!(config.bus(), BusBackend::InProcess);
        assert_eq!(config.registry(), RegistryBackend::InProcess);
        assert_eq!(config.gateway(), ServiceLink::Builtin);
        assert_eq!(config.user_service(), ServiceLink::Builtin);
        assert_eq!(config.key_source(), KeySource::Disabled);
        assert_eq!(config.jwt_key_source(), JwtKeySource::DataDir);
    }

    #[test]
    fn addresses_select_external_backends() {
        let mut config = Config::default();
        config.database.host = "mysql:3306".to_owned();
        config.redis.addr = "redis:6379".to_owned();
        config.kafka.brokers = vec!["kafka:9092".to_owned()];
        config.etcd.endpoints = vec!["etcd:2379".to_owned()];
        config.services.user.addr = "user:9096".to_owned();
        config.encryption.enabled = true;
        assert!(config.uses_mysql() && config.uses_redis() && config.uses_kafka() && config.uses_etcd());
        assert!(config.builtin_gateway() && !config.builtin_user_service());
        assert_eq!(config.key_source(), KeySource::LocalFile);
        assert_eq!(config.registry(), RegistryBackend::Etcd { endpoints: &["etcd:2379".to_owned()] });
        assert!(!config.is_fully_embedded());
    }

    #[test]
    fn bind_addresses() {
        let mut server = ServerConfig::default();
        assert_eq!(server.bind_addr(9094), "127.0.0.1:9094");
        server.listen_host = "::".to_owned();
        assert_eq!(server.bind_addr(9094), "[::]:9094");
        assert_eq!(server.sqlite_path(), PathBuf::from("./data/im.db"));
    }
}
