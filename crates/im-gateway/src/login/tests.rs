use std::sync::Mutex;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::Request;
use im_core::ports::User;
use im_core::{UserId, UserStatus};
use serde_json::Value;
use tower::ServiceExt;

use super::*;

/// A directory with one user, alice, password "correct horse"; records the
/// names it was asked about.
#[derive(Default)]
struct OneUser {
    asked: Mutex<Vec<String>>,
}

#[async_trait]
impl SignIn for OneUser {
    async fn sign_in(&self, name: &str, password: &str) -> Result<(User, String), ImError> {
        self.asked.lock().unwrap().push(name.to_owned());
        if name == "alice" && password == "correct horse" {
            let user = User { id: UserId(7), name: name.into(), created_at_ms: 1, status: UserStatus::default() };
            Ok((user, "token-of-alice".into()))
        } else {
            Err(ImError::unauthenticated("no user has this name and password")
                .with_reason(ErrorReason::InvalidCredentials))
        }
    }
}

fn app(directory: Arc<OneUser>, per_minute: u32, peer: &str) -> Router {
    let limits =
        LoginLimits { attempts_per_address_per_minute: NonZeroU32::new(per_minute).unwrap(), trusted_proxies: vec![] };
    router::<SocketAddr>(directory, limits).layer(MockConnectInfo(peer.parse::<SocketAddr>().unwrap()))
}

async fn post(app: &Router, body: &str) -> (StatusCode, Option<String>, Value) {
    let request = Request::post("/login").header("content-type", "application/json").body(Body::from(body.to_owned()));
    let response = app.clone().oneshot(request.unwrap()).await.unwrap();
    let status = response.status();
    let retry_after = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap();
    (status, retry_after, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn the_right_password_gets_a_token_and_a_wrong_one_a_typed_401() {
    let app = app(Arc::default(), 10, "127.0.0.1:5000");
    let (status, _, body) = post(&app, r#"{"name":"alice","password":"correct horse"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"user_id": 7, "name": "alice", "token": "token-of-alice"}));

    let (status, _, body) = post(&app, r#"{"name":"alice","password":"wrong horse"}"#).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "UNAUTHENTICATED");
    assert_eq!(body["reason"], "invalid_credentials");
    assert!(body.get("token").is_none());
}

#[tokio::test]
async fn a_body_that_is_not_a_name_and_password_is_a_400_that_asks_nobody() {
    let directory = Arc::new(OneUser::default());
    let app = app(directory.clone(), 10, "127.0.0.1:5000");
    for body in ["not json", r#"{"name":"alice"}"#, r#"{"name":"alice","password":"x","admin":true}"#] {
        let (status, _, answer) = post(&app, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["code"], "INVALID_ARGUMENT");
    }
    let huge = format!(r#"{{"name":"alice","password":"{}"}}"#, "x".repeat(MAX_BODY));
    let request = Request::post("/login").header("content-type", "application/json").body(Body::from(huge));
    let response = app.clone().oneshot(request.unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "a body over the limit is refused unread");
    assert!(directory.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_address_past_its_attempts_gets_429_with_retry_after_and_others_do_not() {
    let directory = Arc::new(OneUser::default());
    let limits = LoginLimits { attempts_per_address_per_minute: NonZeroU32::new(2).unwrap(), trusted_proxies: vec![] };
    let shared = router::<SocketAddr>(directory.clone(), limits);
    let from = |peer: &str| shared.clone().layer(MockConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    let first = from("10.0.0.1:1000");
    for _ in 0..2 {
        assert_eq!(post(&first, r#"{"name":"alice","password":"wrong"}"#).await.0, StatusCode::UNAUTHORIZED);
    }
    // Another port of the same address counts with it; the right password does not pass.
    let (status, retry_after, body) =
        post(&from("10.0.0.1:2000"), r#"{"name":"alice","password":"correct horse"}"#).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["reason"], "rate_limited");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0);
    assert!(retry_after.unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(directory.asked.lock().unwrap().len(), 2, "the refused attempt was not checked");

    let other = from("10.0.0.2:1000");
    assert_eq!(post(&other, r#"{"name":"alice","password":"correct horse"}"#).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_refusal_takes_about_as_long_as_a_check() {
    let directory = Arc::new(OneUser::default());
    let app = app(directory, 1, "127.0.0.1:5000");
    post(&app, r#"{"name":"alice","password":"wrong"}"#).await;
    let started = Instant::now();
    let (status, _, _) = post(&app, r#"{"name":"alice","password":"wrong"}"#).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // The estimate starts at FIRST_CHECK_ESTIMATE and moves an eighth of the
    // way to each (here instant) check.
    assert!(started.elapsed() >= FIRST_CHECK_ESTIMATE * 7 / 8 - Duration::from_millis(2), "{:?}", started.elapsed());
}

fn forwarded(hops: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for hop in hops {
        headers.append("x-forwarded-for", hop.parse().unwrap());
    }
    headers
}

#[test]
fn the_client_behind_trusted_proxies_is_the_last_untrusted_hop() {
    let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
    let ip = |text: &str| text.parse::<IpAddr>().unwrap();
    let proxy = ip("10.1.2.3");
    // What the client wrote itself (the first hop) is not believed: the
    // proxy's own entry, the last untrusted one, is.
    let headers = forwarded(&["6.6.6.6, 203.0.113.7", "10.9.9.9"]);
    assert_eq!(client_of(proxy, &headers, &trusted), ip("203.0.113.7"));
    assert_eq!(client_of(ip("fd00::1"), &forwarded(&["2001:db8::5"]), &trusted), ip("2001:db8::5"));
    // An untrusted peer's header is ignored: a client cannot choose its address.
    assert_eq!(client_of(ip("198.51.100.1"), &headers, &trusted), ip("198.51.100.1"));
    // Without a header, with only proxies in it, or with a garbled one: the peer.
    assert_eq!(client_of(proxy, &HeaderMap::new(), &trusted), proxy);
    assert_eq!(client_of(proxy, &forwarded(&["10.5.5.5"]), &trusted), proxy);
    assert_eq!(client_of(proxy, &forwarded(&["203.0.113.7, not-an-ip"]), &trusted), proxy);
    // Nothing trusted: the peer, whatever the header says.
    assert_eq!(client_of(proxy, &headers, &[]), proxy);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_attempts() {
    let directory = Arc::new(OneUser::default());
    let limits = LoginLimits {
        attempts_per_address_per_minute: NonZeroU32::new(1).unwrap(),
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
    };
    let app =
        router::<SocketAddr>(directory, limits).layer(MockConnectInfo("10.0.0.1:1000".parse::<SocketAddr>().unwrap()));
    let attempt = |client: &'static str| {
        let app = app.clone();
        async move {
            let request = Request::post("/login")
                .header("content-type", "application/json")
                .header("x-forwarded-for", client)
                .body(Body::from(r#"{"name":"alice","password":"wrong"}"#));
            app.oneshot(request.unwrap()).await.unwrap().status()
        }
    };
    assert_eq!(attempt("203.0.113.7").await, StatusCode::UNAUTHORIZED);
    assert_eq!(attempt("203.0.113.8").await, StatusCode::UNAUTHORIZED, "another client behind the same proxy");
    assert_eq!(attempt("203.0.113.7").await, StatusCode::TOO_MANY_REQUESTS, "the first client is past its one attempt");
}
