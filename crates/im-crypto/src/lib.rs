//! Envelope encryption of message bodies at rest (issue 13).
//!
//! A body is sealed with AES-256-GCM under a data key (DEK), bound to its row; data keys are
//! stored only wrapped by a master key, and unwrapped ones are cached in memory for a while.
//!
//! Layout:
//!
//! - [`envelope`]: [`DataKey`], [`BodyAad`], [`seal`], [`open`], [`sealed_key_id`] and
//!   [`CryptoError`]; the module docs define the stored format (envelope v1) and its associated
//!   data.
//! - [`master_key`]: the [`MasterKey`] port (generate, unwrap, rewrap a data key; the readiness
//!   check) and [`KmsError`].
//! - [`kms`]: [`KmsMasterKey`], the AWS KMS API through the official SDK, with bounded timeouts
//!   and a [`KmsObserver`] for metrics.
//! - [`local`]: [`LocalMasterKey`], embedded mode's master key in a 0600 file.
//! - [`cache`]: [`DekCache`], unwrapped data keys by id for a TTL, counting hits and misses.
//!
//! Key material never reaches a `Debug` output, an error message or a log line of this crate:
//! [`DataKey`] prints its id only, and the errors say what failed, never with which bytes.
//! Plaintext keys are wiped from memory when dropped (`zeroize`, including the AES key schedule);
//! copies that libraries make on the way (the KMS response's buffers) are outside its reach.
//!
//! This crate knows nothing of stores, tables, rotation schedules or configuration: the service
//! decides which data key is active, where wrapped keys are kept, and when to rotate.

pub mod cache;
pub mod envelope;
pub mod kms;
pub mod local;
pub mod master_key;

pub use cache::DekCache;
pub use envelope::{BodyAad, CryptoError, DataKey, open, seal, sealed_key_id};
pub use kms::{KmsMasterKey, KmsObserver};
pub use local::LocalMasterKey;
pub use master_key::{KmsError, MasterKey};
