//! Browser-facing protections: a CORS allow-list from `[api] cors_allowed_origins`
//! (an origin not on it gets no CORS headers, so the browser blocks the read) and
//! security headers on every response.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::ApiConfig;

/// The dashboard's policy: everything from this origin, WebSockets back to it, no
/// framing, no plugins, no inline script.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

pub fn cors(c: &ApiConfig) -> CorsLayer {
    let origins: Vec<HeaderValue> = c
        .cors_allowed_origins
        .iter()
        .filter(|o| o.as_str() != "*")
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let allow = if c.cors_allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins)
    };
    let h = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            h("idempotency-key"),
            h("x-request-id"),
            h(crate::auth::hmac::IDENTITY),
            h(crate::auth::hmac::KEY_ID),
            h(crate::auth::hmac::TIMESTAMP),
            h(crate::auth::hmac::SIGNATURE),
        ])
        .expose_headers([
            h("x-request-id"),
            h("ratelimit"),
            h("ratelimit-policy"),
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600))
}

pub async fn headers(State(config): State<Arc<ApiConfig>>, req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut resp = next.run(req).await;
    set_headers(resp.headers_mut(), api, config.hsts);
    resp
}

/// The security headers of a response (`api`: a path under `/api/`; `hsts` from the
/// config), for [`headers`] and [`super::edge`].
pub fn set_headers(h: &mut HeaderMap, api: bool, hsts: bool) {
    let set = |h: &mut HeaderMap, k: HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    if api {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    if hsts {
        set(
            h,
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=63072000; includeSubDomains",
        );
    }
}
