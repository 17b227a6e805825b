//! The master key port: what wraps and unwraps data keys. [`crate::KmsMasterKey`] speaks the AWS
//! KMS API; [`crate::LocalMasterKey`] keeps the key in a file for embedded mode.

use zeroize::Zeroizing;

/// The master key that wraps data keys. Both implementations keep this method order.
#[async_trait::async_trait]
pub trait MasterKey: Send + Sync + 'static {
    /// The master key's id as stored beside wrapped keys (the KMS key id/ARN, or
    /// `local:<short fingerprint>`).
    fn key_id(&self) -> &str;

    /// A fresh AES-256 data key: (plaintext, wrapped form). KMS: GenerateDataKey (KeySpec AES_256).
    async fn generate_data_key(&self) -> Result<(Zeroizing<[u8; 32]>, Vec<u8>), KmsError>;

    /// The plaintext of a wrapped data key. KMS: Decrypt.
    async fn unwrap_data_key(&self, wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, KmsError>;

    /// A wrapped data key wrapped again under this master key (after the master key changed).
    /// KMS: ReEncrypt.
    async fn rewrap_data_key(&self, wrapped: &[u8]) -> Result<Vec<u8>, KmsError>;

    /// The key exists and can be used (readiness probe). KMS: DescribeKey, and the key is enabled.
    async fn check(&self) -> Result<(), KmsError>;
}

/// Why a master key operation failed. Never contains key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    /// The KMS cannot be reached, timed out, or is overloaded: retry later.
    #[error("KMS unavailable: {0}")]
    Unavailable(String),
    /// The KMS refused: a wrapped key that is corrupt or not ours (InvalidCiphertext), a disabled
    /// or missing key, bad credentials. Retrying the same call will not help.
    #[error("KMS rejected the request: {0}")]
    Rejected(String),
}
