//! The typed configuration of the IM service binaries: defaults < `config.yaml` < environment variables.
//! The deployment guide's environment variable names and config.yaml keys are the public interface;
//! keys this project adds are marked as such in the reference ([`reference()`], `CONFIG_REFERENCE.md`).
//!
//! With nothing configured every dependency address is empty and the service runs fully embedded; the
//! enums of [`backends`] turn those addresses into a choice the wiring can `match` on.
//!
//! Loading is a pure function of a file and an explicit environment map (the binary passes
//! `std::env::vars().collect()`), so tests never touch the process environment. Every problem is
//! collected and reported at once, each naming its key and, when it came from there, its environment
//! variable.
//!
//! Layout:
//! - [`schema`]: the structs (`Config`, `ServerConfig`, …) and their defaults, and the enums of closed
//!   word sets (`FilterAction`, `LogLevel`, …).
//! - `keys`: the one table of environment variable → yaml key → parser, with descriptions.
//! - `value`: how each field type is parsed from text and YAML and written back.
//! - `duration`: `100ms`, `5s`, `30m`, `1h`, `7d`.
//! - `expand`: `${VAR}` and `${VAR:-default}` in config.yaml values.
//! - `load`: merging defaults, file and environment, rejecting unknown keys.
//! - `validate`: ranges and rules across keys.
//! - [`backends`]: embedded or external, per concern; standalone mode's file names.
//! - [`mod@reference`]: the Markdown reference and the example config, generated from the table.
//! - [`error`]: `ConfigError`, one `Problem` per line.
//! - [`secret`]: `Secret`, redacted in `Debug`.

pub mod backends;
mod duration;
pub mod error;
mod expand;
mod keys;
mod load;
pub mod reference;
pub mod schema;
pub mod secret;
mod validate;
mod value;

use std::collections::HashMap;
use std::path::Path;

pub use backends::{BusBackend, JwtKeySource, KeySource, RegistryBackend, SeqBackend, ServiceLink, StoreBackend};
pub use error::{ConfigError, Problem};
pub use keys::Origin;
pub use reference::{KeyDoc, example_yaml, reference, reference_markdown};
pub use schema::{
    AuthConfig, AutoOffsetReset, CacheConfig, Config, DatabaseConfig, DbTlsMode, EncryptionConfig, EtcdConfig,
    FilterAction, FilterConfig, GroupConfig, KafkaConfig, KafkaConsumerConfig, KafkaProducerConfig, KafkaSaslMechanism,
    KafkaSecurityProtocol, KafkaTopicsConfig, LimitsConfig, LogFormat, LogLevel, ObservabilityConfig,
    OfflineWorkerConfig, Ratio, RedisConfig, SequenceConfig, ServerConfig, ServiceEndpoint, ServicesConfig, TlsConfig,
    TraceSampler,
};
pub use secret::Secret;
pub use validate::{MAX_MESSAGE_RETENTION_DAYS, MAX_MESSAGE_SIZE_LIMIT, MIN_JWT_SECRET_LEN};

/// Loads the configuration: defaults, then the file at `path` if given, then `env`.
///
/// A file that cannot be read is reported together with any problem in `env`.
pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
    let Some(path) = path else {
        return load::build(None, env, Vec::new());
    };
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load::build(Some(load::Source { name: &name, text: &text }), env, Vec::new()),
        Err(error) => load::build(None, env, vec![load::file_problem(&name, format!("cannot read: {error}"))]),
    }
}

impl Config {
    /// [`load`] with the file's text given directly; problems with the text are reported as `config.yaml`.
    pub fn from_yaml_str(yaml: &str, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        load::build(Some(load::Source { name: "config.yaml", text: yaml }), env, Vec::new())
    }

    /// [`load`] without a file.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        load(None, env)
    }

    /// Checks a configuration built in code (tests of other crates) as [`load`] does.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems: Vec<Problem> = validate::validate(self)
            .into_iter()
            .map(|(key, message)| Problem { key: key.to_owned(), env: None, message })
            .collect();
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::new(problems)) }
    }
}
