//! Browser-facing protections: a CORS allow-list from `[api] cors_allowed_origins`
//! (an origin not on it gets no CORS headers, so the browser blocks the read) and
//! security headers on every response.

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::cors::{CorsEdgeLayer, Origins};
use crate::config::ApiConfig;

/// The dashboard's policy: everything from this origin, WebSockets back to it, no
/// framing, no plugins, no inline script.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The CORS layer of every route: [`super::cors`] answers requests, tower-http's layer
/// (the same configuration, [`tower_cors`]) answers preflights.
pub fn cors(c: &ApiConfig) -> CorsEdgeLayer {
    let (origins, expose, layer) = tower_cors(c);
    CorsEdgeLayer::new(origins, &expose, layer)
}

/// tower-http's layer for the configured origins, with the origins and the exposed
/// headers it was given.
pub fn tower_cors(c: &ApiConfig) -> (Origins, Vec<HeaderName>, CorsLayer) {
    cors_for(&c.cors_allowed_origins)
}

/// [`tower_cors`] for the allowed origins `allowed` (`*`: any).
pub(crate) fn cors_for(allowed: &[String]) -> (Origins, Vec<HeaderName>, CorsLayer) {
    let origins: Vec<HeaderValue> = allowed
        .iter()
        .filter(|o| o.as_str() != "*")
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let any = allowed.iter().any(|o| o == "*");
    let (allow, listed) = if any {
        (AllowOrigin::any(), Origins::Any)
    } else {
        (AllowOrigin::list(origins.clone()), Origins::List(origins.into()))
    };
    let h = HeaderName::from_static;
    let expose = vec![
        h("x-request-id"),
        h("ratelimit"),
        h("ratelimit-policy"),
        header::RETRY_AFTER,
    ];
    let layer = CorsLayer::new()
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
        .expose_headers(expose.clone())
        .max_age(Duration::from_secs(600));
    (listed, expose, layer)
}

/// The security headers of a response (`api`: a path under `/api/`; `hsts` from the
/// config), for [`super::edge`].
pub fn set_headers(h: &mut HeaderMap, api: bool, hsts: bool) {
    // Constants: `from_static` checks every byte (the CSP's ~200) when called at run
    // time; here the compiler checks them once.
    const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
    const DENY: HeaderValue = HeaderValue::from_static("DENY");
    const NO_REFERRER: HeaderValue = HeaderValue::from_static("no-referrer");
    const POLICY: HeaderValue = HeaderValue::from_static(CSP);
    const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
    const HSTS: HeaderValue = HeaderValue::from_static("max-age=63072000; includeSubDomains");
    h.reserve(6);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    h.insert(header::X_FRAME_OPTIONS, DENY);
    h.insert(header::REFERRER_POLICY, NO_REFERRER);
    h.insert(header::CONTENT_SECURITY_POLICY, POLICY);
    if api {
        h.insert(header::CACHE_CONTROL, NO_STORE);
    }
    if hsts {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HSTS);
    }
}
