//! The browser app at `/`: three static files (`web/`), embedded in the
//! binary at build time, so that serving it adds no step to building or
//! running the gateway. The app signs in with `POST /login` and speaks the
//! client protocol in proto3 JSON on `/ws` (docs/protocol.md).
//!
//! Every answer carries a strict Content-Security-Policy: scripts, styles
//! and connections only from this origin, nothing inline, no frames. The
//! app renders text with `textContent`, and the policy is the second line
//! of defence should it ever not.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const APP_CSS: &str = include_str!("../web/app.css");

/// No inline script or style, nothing from elsewhere; `connect-src 'self'`
/// admits this origin's `ws:`/`wss:` (CSP level 3).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
    style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// `GET /`, `/app.js`, `/app.css`.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            // A new build's app is fetched at once: the files are small and
            // the protocol may have moved with the binary.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = router().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_app_is_served_with_its_types_and_a_strict_policy() {
        for (path, content_type) in [("/", "text/html"), ("/app.js", "text/javascript"), ("/app.css", "text/css")] {
            let (status, headers, body) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with(content_type), "{path}");
            let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(policy.contains("script-src 'self'") && !policy.contains("unsafe"), "{policy}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert!(!body.is_empty());
        }
        assert_eq!(get("/nothing-here").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_page_loads_its_script_and_style_from_files_and_has_nothing_inline() {
        let (_, _, page) = get("/").await;
        assert!(page.contains(r#"src="/app.js""#), "the page loads /app.js");
        assert!(page.contains(r#"href="/app.css""#), "the page loads /app.css");
        // The policy would block these; the page must not need them.
        for inline in ["<script>", "<style", " style=", "onclick=", "onload=", "javascript:"] {
            assert!(!page.contains(inline), "the page has inline {inline:?}");
        }
    }
}
