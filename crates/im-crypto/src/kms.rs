//! [`KmsMasterKey`]: the master key lives in a KMS speaking the AWS KMS API (AWS itself, or a
//! local emulator), reached with the official SDK.
//!
//! Transport: hyper 1 and rustls with the ring provider (no aws-lc-rs, so no cmake), the system's
//! root certificates, no proxy. Timeouts: 1 s to connect, 2 s for a whole operation (up to 3
//! attempts, 100 ms then ~200 ms apart), so a KMS outage costs a caller 2 s at most and then a
//! [`KmsError::Unavailable`].
//!
//! Region: `AWS_REGION` (or `AWS_DEFAULT_REGION`), else `us-east-1`; never the instance metadata
//! service. Credentials: the SDK's default chain (environment, `~/.aws/credentials` and
//! `~/.aws/config` static keys and assume-role, web identity, ECS and EC2 instance roles); not
//! SSO or `credential_process` profiles (features left out to keep the build small).
//!
//! Decrypt and ReEncrypt do not name a source key: a symmetric KMS ciphertext names the key that
//! made it, so data keys wrapped under a previous master key stay readable (as long as the
//! credentials may use that key) until `imctl keys rewrap` moves them under the current one.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::config::Credentials;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use zeroize::Zeroizing;

use crate::master_key::{KmsError, MasterKey};

/// How long connecting to the KMS may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one KMS operation may take, its retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
/// Retries (3 attempts in all) start 100 ms apart: they must fit in the operation timeout.
const FIRST_RETRY_AFTER: Duration = Duration::from_millis(100);
/// The region when `AWS_REGION` is unset.
const DEFAULT_REGION: &str = "us-east-1";

/// Error codes that mean "try again later" although the KMS answered (besides HTTP 5xx and 429).
const RETRYABLE_CODES: &[&str] =
    &["ThrottlingException", "KMSInternalException", "DependencyTimeoutException", "KeyUnavailableException"];

/// Told of every KMS call, for metrics (`im_kms_requests_total{op,result}`,
/// `im_kms_request_seconds`).
pub trait KmsObserver: Send + Sync {
    /// `op`: `"generate_data_key"`, `"decrypt"`, `"re_encrypt"` or `"describe_key"`; `result`:
    /// `"ok"`, `"unavailable"` or `"rejected"`; `seconds`: the call's duration, retries included.
    fn kms_call(&self, op: &'static str, result: &'static str, seconds: f64);
}

/// A master key in a KMS speaking the AWS KMS API.
pub struct KmsMasterKey {
    client: aws_sdk_kms::Client,
    key_id: String,
    endpoint: String,
    observer: Arc<dyn KmsObserver>,
}

impl KmsMasterKey {
    /// The key `key_id` (a key id, ARN or alias) of the KMS at `endpoint`, with credentials from the
    /// standard AWS environment and files.
    ///
    /// `endpoint` is a URL (`https://kms.eu-west-1.amazonaws.com`, `http://kms:8080`) or a bare
    /// `host:port`, which means plain HTTP. Over plain HTTP the data keys travel in clear between
    /// this process and the KMS: use it only on a network nobody else can read.
    ///
    /// Does not contact the KMS; [`check`](MasterKey::check) does.
    pub async fn new(endpoint: &str, key_id: &str, observer: Arc<dyn KmsObserver>) -> Result<Self, KmsError> {
        Self::connect(endpoint, key_id, None, observer).await
    }

    /// Like [`new`](Self::new), with these static credentials instead of the AWS environment's (a
    /// deployment that keeps them in its own configuration, and the tests).
    pub async fn with_static_credentials(
        endpoint: &str,
        key_id: &str,
        access_key_id: &str,
        secret_access_key: &str,
        observer: Arc<dyn KmsObserver>,
    ) -> Result<Self, KmsError> {
        let credentials = Credentials::new(access_key_id, secret_access_key, None, None, "im-crypto static");
        Self::connect(endpoint, key_id, Some(credentials), observer).await
    }

    async fn connect(
        endpoint: &str,
        key_id: &str,
        credentials: Option<Credentials>,
        observer: Arc<dyn KmsObserver>,
    ) -> Result<Self, KmsError> {
        let endpoint = endpoint_url(endpoint)?;
        if key_id.is_empty() {
            return Err(KmsError::Rejected("the KMS key id is empty".to_owned()));
        }
        let http_client =
            aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https();
        let timeouts =
            TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).operation_timeout(OPERATION_TIMEOUT).build();
        let region = RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
            .or_else(Region::from_static(DEFAULT_REGION));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .endpoint_url(&endpoint)
            .http_client(http_client)
            .timeout_config(timeouts)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(FIRST_RETRY_AFTER)
                    .with_max_backoff(OPERATION_TIMEOUT / 2),
            );
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        let config = loader.load().await;
        Ok(Self { client: aws_sdk_kms::Client::new(&config), key_id: key_id.to_owned(), endpoint, observer })
    }

    /// Runs one KMS call and tells the observer how it went.
    async fn observed<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, KmsError>>,
    ) -> Result<T, KmsError> {
        let started = Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(KmsError::Unavailable(_)) => "unavailable",
            Err(KmsError::Rejected(_)) => "rejected",
        };
        self.observer.kms_call(op, outcome, started.elapsed().as_secs_f64());
        result
    }
}

impl fmt::Debug for KmsMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key id stays out: the configuration treats it as a secret.
        f.debug_struct("KmsMasterKey").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl MasterKey for KmsMasterKey {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    async fn generate_data_key(&self) -> Result<(Zeroizing<[u8; 32]>, Vec<u8>), KmsError> {
        self.observed("generate_data_key", async {
            let output = self
                .client
                .generate_data_key()
                .key_id(&self.key_id)
                .key_spec(DataKeySpec::Aes256)
                .send()
                .await
                .map_err(|error| sdk_error("GenerateDataKey", error))?;
            let plaintext = data_key(output.plaintext, "GenerateDataKey")?;
            let wrapped = output.ciphertext_blob.ok_or_else(|| missing("GenerateDataKey", "CiphertextBlob"))?;
            Ok((plaintext, wrapped.into_inner()))
        })
        .await
    }

    async fn unwrap_data_key(&self, wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, KmsError> {
        self.observed("decrypt", async {
            let output = self
                .client
                .decrypt()
                .ciphertext_blob(Blob::new(wrapped))
                .send()
                .await
                .map_err(|error| sdk_error("Decrypt", error))?;
            data_key(output.plaintext, "Decrypt")
        })
        .await
    }

    async fn rewrap_data_key(&self, wrapped: &[u8]) -> Result<Vec<u8>, KmsError> {
        self.observed("re_encrypt", async {
            let output = self
                .client
                .re_encrypt()
                .ciphertext_blob(Blob::new(wrapped))
                .destination_key_id(&self.key_id)
                .send()
                .await
                .map_err(|error| sdk_error("ReEncrypt", error))?;
            let rewrapped = output.ciphertext_blob.ok_or_else(|| missing("ReEncrypt", "CiphertextBlob"))?;
            Ok(rewrapped.into_inner())
        })
        .await
    }

    async fn check(&self) -> Result<(), KmsError> {
        self.observed("describe_key", async {
            let output = self
                .client
                .describe_key()
                .key_id(&self.key_id)
                .send()
                .await
                .map_err(|error| sdk_error("DescribeKey", error))?;
            let metadata = output.key_metadata.ok_or_else(|| missing("DescribeKey", "KeyMetadata"))?;
            match metadata.key_state {
                Some(KeyState::Enabled) if metadata.enabled => Ok(()),
                state => Err(KmsError::Rejected(format!(
                    "DescribeKey: the master key is not enabled (state {})",
                    state.as_ref().map_or("unknown", KeyState::as_str)
                ))),
            }
        })
        .await
    }
}

/// `endpoint` as a URL: `http://` or `https://` kept, a bare `host:port` taken as `http://`.
fn endpoint_url(endpoint: &str) -> Result<String, KmsError> {
    match endpoint.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() => Ok(endpoint.to_owned()),
        Some(_) => {
            Err(KmsError::Rejected(format!("KMS endpoint {endpoint:?}: only http:// and https:// URLs are supported")))
        }
        None if endpoint.is_empty() => Err(KmsError::Rejected("the KMS endpoint is empty".to_owned())),
        None => Ok(format!("http://{endpoint}")),
    }
}

/// A plaintext data key from a KMS response, checked to be 32 bytes. The response's copy is wiped.
fn data_key(plaintext: Option<Blob>, api: &str) -> Result<Zeroizing<[u8; 32]>, KmsError> {
    let plaintext = Zeroizing::new(plaintext.ok_or_else(|| missing(api, "Plaintext"))?.into_inner());
    let key: [u8; 32] = plaintext.as_slice().try_into().map_err(|_| {
        KmsError::Rejected(format!(
            "{api}: the data key is {} bytes, expected 32 (not an AES-256 key)",
            plaintext.len()
        ))
    })?;
    Ok(Zeroizing::new(key))
}

fn missing(api: &str, field: &str) -> KmsError {
    KmsError::Rejected(format!("{api}: the KMS response has no {field}"))
}

/// An SDK error as Unavailable (unreachable, timed out, overloaded: retry later) or Rejected (the
/// KMS refused). KMS error messages name keys and reasons, never key material or ciphertexts.
fn sdk_error<E>(api: &str, error: SdkError<E>) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = error.code().unwrap_or("UnknownError");
            let message = error.message().map(|message| format!(": {message}")).unwrap_or_default();
            let text = format!("{api}: {code} (HTTP {status}){message}");
            if status >= 500 || status == 429 || RETRYABLE_CODES.contains(&code) {
                KmsError::Unavailable(text)
            } else {
                KmsError::Rejected(text)
            }
        }
        SdkError::ConstructionFailure(_) => KmsError::Rejected(format!("{api}: {}", causes(&error))),
        SdkError::TimeoutError(_) => {
            KmsError::Unavailable(format!("{api}: no answer within {} s", OPERATION_TIMEOUT.as_secs_f64()))
        }
        // Dispatch failures (connect, TLS, I/O) and unreadable responses.
        _ => KmsError::Unavailable(format!("{api}: {}", causes(&error))),
    }
}

/// An error and its sources, `outer: inner: innermost` (the SDK's own `Display` is only the outer).
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(endpoint_url("kms:8080").unwrap(), "http://kms:8080");
        assert_eq!(endpoint_url("http://127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(endpoint_url("https://kms.eu-west-1.amazonaws.com").unwrap(), "https://kms.eu-west-1.amazonaws.com");
        for bad in ["", "ftp://kms:21", "https://", "grpc://kms:8080"] {
            assert!(matches!(endpoint_url(bad), Err(KmsError::Rejected(_))), "{bad:?}");
        }
    }

    #[test]
    fn data_keys_must_be_32_bytes() {
        assert_eq!(*data_key(Some(Blob::new(vec![5; 32])), "Decrypt").unwrap(), [5; 32]);
        for blob in [None, Some(Blob::new(vec![5; 16])), Some(Blob::new(vec![]))] {
            let error = data_key(blob, "Decrypt").unwrap_err();
            assert!(matches!(&error, KmsError::Rejected(text) if !text.contains("5, 5")), "{error:?}");
        }
    }
}
