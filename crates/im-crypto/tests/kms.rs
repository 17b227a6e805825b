//! [`KmsMasterKey`] against a real server speaking the AWS KMS API: moto on 127.0.0.1:8080, which
//! `scripts/servers.sh` installs and starts. Every test creates its own keys (moto keeps them in
//! memory and accepts any credentials). Without moto these tests fail; they never skip.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use im_crypto::{BodyAad, DataKey, KmsError, KmsMasterKey, KmsObserver, MasterKey, open, seal};

const MOTO: &str = "http://127.0.0.1:8080";

/// Panics, naming the fix, when moto is not running.
fn require_moto() {
    let address: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    if TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err() {
        panic!("no KMS (moto) answers on {MOTO}: run scripts/servers.sh, which installs and starts it");
    }
}

/// The region `KmsMasterKey` will use, so the keys are created where it looks for them.
fn region() -> String {
    std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".to_owned())
}

/// A plain SDK client for what the service never does: create and disable keys.
fn admin() -> aws_sdk_kms::Client {
    admin_in(&region())
}

fn admin_in(region: &str) -> aws_sdk_kms::Client {
    let http_client =
        aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https();
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(MOTO)
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .http_client(http_client)
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

async fn create_key(admin: &aws_sdk_kms::Client) -> String {
    let created = admin.create_key().description("im-crypto test").send().await.expect("CreateKey");
    created.key_metadata.expect("KeyMetadata").key_id
}

/// Records every call the observer is told of.
#[derive(Default)]
struct Calls(Mutex<Vec<(&'static str, &'static str, f64)>>);

impl KmsObserver for Calls {
    fn kms_call(&self, op: &'static str, result: &'static str, seconds: f64) {
        self.0.lock().unwrap().push((op, result, seconds));
    }
}

impl Calls {
    fn ops(&self) -> Vec<(&'static str, &'static str)> {
        self.0.lock().unwrap().iter().map(|&(op, result, _)| (op, result)).collect()
    }
}

async fn master_key(endpoint: &str, key_id: &str, calls: &Arc<Calls>) -> KmsMasterKey {
    let observer: Arc<dyn KmsObserver> = calls.clone();
    KmsMasterKey::with_static_credentials(endpoint, key_id, "test", "test", observer).await.expect("KmsMasterKey")
}

const ROW: BodyAad<'static> = BodyAad { conversation: "p:1:2", seq: 1, sender: 1, msg_id: 10 };

#[tokio::test]
async fn generate_unwrap_rewrap_and_check() {
    require_moto();
    let admin = admin();
    let (first, second) = (create_key(&admin).await, create_key(&admin).await);
    let calls = Arc::new(Calls::default());
    let master = master_key(MOTO, &first, &calls).await;
    assert_eq!(master.key_id(), first);
    master.check().await.expect("DescribeKey");

    let (plaintext, wrapped) = master.generate_data_key().await.expect("GenerateDataKey");
    assert!(!wrapped.windows(8).any(|w| plaintext.windows(8).any(|p| p == w)));
    let (other, _) = master.generate_data_key().await.unwrap();
    assert_ne!(*other, *plaintext, "each data key is fresh");

    let unwrapped = master.unwrap_data_key(&wrapped).await.expect("Decrypt");
    assert_eq!(*unwrapped, *plaintext);
    // What the service does with it: a body sealed under the generated key opens under the unwrapped one.
    let sealed = seal(&DataKey::new(1, plaintext.clone()), &ROW, b"hello");
    assert_eq!(open(&DataKey::new(1, unwrapped), &ROW, &sealed).unwrap(), &b"hello"[..]);

    // The master key changed: ReEncrypt under the new one; the data key is the same.
    let new_master = master_key(MOTO, &second, &calls).await;
    let rewrapped = new_master.rewrap_data_key(&wrapped).await.expect("ReEncrypt");
    assert_ne!(rewrapped, wrapped);
    assert_eq!(*new_master.unwrap_data_key(&rewrapped).await.unwrap(), *plaintext);
    // Not yet rewrapped keys stay readable after the switch (Decrypt names no key).
    assert_eq!(*new_master.unwrap_data_key(&wrapped).await.unwrap(), *plaintext);

    assert_eq!(
        calls.ops(),
        [
            ("describe_key", "ok"),
            ("generate_data_key", "ok"),
            ("generate_data_key", "ok"),
            ("decrypt", "ok"),
            ("re_encrypt", "ok"),
            ("decrypt", "ok"),
            ("decrypt", "ok"),
        ]
    );
    assert!(calls.0.lock().unwrap().iter().all(|&(_, _, seconds)| seconds > 0.0 && seconds < 2.5));
}

#[tokio::test]
async fn a_corrupted_wrapped_key_is_rejected() {
    require_moto();
    let key_id = create_key(&admin()).await;
    let calls = Arc::new(Calls::default());
    let master = master_key(MOTO, &key_id, &calls).await;
    let (_, wrapped) = master.generate_data_key().await.unwrap();

    // The key id moto puts first, the middle, the last byte; and something that is no ciphertext.
    let mut corrupted: Vec<Vec<u8>> = [0, wrapped.len() / 2, wrapped.len() - 1]
        .into_iter()
        .map(|at| {
            let mut bytes = wrapped.clone();
            bytes[at] ^= 0x01;
            bytes
        })
        .collect();
    corrupted.push(b"not a wrapped key".to_vec());
    for bytes in &corrupted {
        let error = master.unwrap_data_key(bytes).await.expect_err("a corrupted wrapped key must not unwrap");
        assert!(matches!(error, KmsError::Rejected(_)), "{error:?}");
        let error = master.rewrap_data_key(bytes).await.expect_err("nor rewrap");
        assert!(matches!(error, KmsError::Rejected(_)), "{error:?}");
    }
    let rejected = calls.ops().iter().filter(|&&(_, result)| result == "rejected").count();
    assert_eq!(rejected, 2 * corrupted.len());
}

#[tokio::test]
async fn a_disabled_or_missing_key_fails_the_check() {
    require_moto();
    let admin = admin();
    let key_id = create_key(&admin).await;
    let calls = Arc::new(Calls::default());
    let master = master_key(MOTO, &key_id, &calls).await;
    master.check().await.unwrap();
    admin.disable_key().key_id(&key_id).send().await.expect("DisableKey");
    let error = master.check().await.unwrap_err();
    assert!(matches!(&error, KmsError::Rejected(text) if text.contains("Disabled")), "{error:?}");

    let missing = master_key(MOTO, "00000000-0000-0000-0000-000000000000", &calls).await;
    let error = missing.check().await.unwrap_err();
    assert!(matches!(&error, KmsError::Rejected(text) if text.contains("NotFoundException")), "{error:?}");
    assert_eq!(calls.ops(), [("describe_key", "ok"), ("describe_key", "rejected"), ("describe_key", "rejected")]);
}

/// Every operation against a dead endpoint fails as Unavailable, each within about 2 s.
async fn assert_unavailable_fast(master: &KmsMasterKey, calls: &Calls, cause: &str) {
    let started = Instant::now();
    let error = master.check().await.unwrap_err();
    assert!(matches!(&error, KmsError::Unavailable(text) if text.contains(cause)), "{error:?}");
    let error = master.generate_data_key().await.unwrap_err();
    assert!(matches!(error, KmsError::Unavailable(_)), "{error:?}");
    let error = master.unwrap_data_key(&[1; 96]).await.unwrap_err();
    assert!(matches!(error, KmsError::Unavailable(_)), "{error:?}");
    let error = master.rewrap_data_key(&[1; 96]).await.unwrap_err();
    assert!(matches!(error, KmsError::Unavailable(_)), "{error:?}");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(10), "4 calls took {elapsed:?}");
    let recorded = calls.0.lock().unwrap().clone();
    assert_eq!(recorded.len(), 4);
    for (op, result, seconds) in recorded {
        assert_eq!(result, "unavailable", "{op}");
        assert!(seconds < 2.5, "{op} took {seconds} s");
    }
}

#[tokio::test]
async fn nothing_listening_is_unavailable_within_two_seconds() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let calls = Arc::new(Calls::default());
    let master = master_key(&format!("http://127.0.0.1:{port}"), "any-key", &calls).await;
    assert_unavailable_fast(&master, &calls, "Connection refused").await;
}

#[tokio::test]
async fn a_server_that_never_answers_is_unavailable_within_two_seconds() {
    // The kernel accepts the connections into the backlog; nothing ever reads or answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let calls = Arc::new(Calls::default());
    let master = master_key(&format!("http://127.0.0.1:{port}"), "any-key", &calls).await;
    assert_unavailable_fast(&master, &calls, "no answer within 2 s").await;
    drop(silent);
}

const CHILD_KEY_VAR: &str = "IM_CRYPTO_TEST_KMS_KEY";

/// `KmsMasterKey::new` reads the AWS environment, which a test cannot set in its own process
/// (`set_var` is unsafe, and this workspace forbids unsafe code): run `aws_environment_child` in
/// a child process of this test binary with the variables set and the region left unset.
#[tokio::test]
async fn new_takes_credentials_from_the_aws_environment_and_defaults_the_region() {
    require_moto();
    let key_id = create_key(&admin_in("us-east-1")).await;
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "aws_environment_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_KEY_VAR, &key_id)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        // Never the instance metadata service from a test.
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stdout.contains("1 passed"), "child failed:\n{stdout}\n{stderr}");
}

#[tokio::test]
#[ignore = "run by new_takes_credentials_from_the_aws_environment_and_defaults_the_region in a child process"]
async fn aws_environment_child() {
    let key_id = std::env::var(CHILD_KEY_VAR)
        .expect("run by new_takes_credentials_from_the_aws_environment_and_defaults_the_region, which sets the key");
    assert!(std::env::var_os("AWS_REGION").is_none());
    let calls = Arc::new(Calls::default());
    // A bare host:port, as the guide writes KMS_ENDPOINT, means plain HTTP.
    let master = KmsMasterKey::new("127.0.0.1:8080", &key_id, calls.clone()).await.unwrap();
    master.check().await.expect("the key is found in us-east-1 with the environment's credentials");
    let (plaintext, wrapped) = master.generate_data_key().await.unwrap();
    assert_eq!(*master.unwrap_data_key(&wrapped).await.unwrap(), *plaintext);
}
