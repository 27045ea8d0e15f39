//! Request ids and uniform error bodies.
//!
//! Every response carries `X-Request-ID`: the caller's own when it sent a sane one
//! (1-64 chars of `[A-Za-z0-9._:-]`), otherwise a fresh `req-<16 hex>`. Error responses
//! are rendered here with that id (see [`super::error`]).

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::metrics::HttpMetrics;
use crate::state::AppState;

pub const HEADER: &str = "x-request-id";

/// The request's id, in request extensions for handlers that want it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn seed() -> u64 {
    use std::sync::OnceLock;
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let t = stocksblitz_engine::UnixNanos::now().0 as u64;
        t ^ (u64::from(std::process::id()) << 32)
    })
}

/// A fresh request id (also for responses made outside the router).
pub(crate) fn fresh() -> String {
    // SplitMix64 over a per-process seed and a counter: unique, not guessable in order.
    let mut z = seed().wrapping_add(
        COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    format!("req-{:016x}", z ^ (z >> 31))
}

fn acceptable(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    ok.then(|| s.to_owned())
}

fn is_json(r: &Response) -> bool {
    r.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

pub async fn middleware(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = req.headers().get(HEADER).and_then(acceptable).unwrap_or_else(fresh);
    req.extensions_mut().insert(RequestId(id.clone()));
    let resp = next.run(req).await;
    finish(&app.http, &id, resp).await
}

/// Renders any error response in the one error shape with the request id (counting it
/// by code), and sets `X-Request-ID`.
async fn finish(metrics: &HttpMetrics, id: &str, mut resp: Response) -> Response {
    let status = resp.status();
    let err = match resp.extensions_mut().remove::<ApiError>() {
        Some(e) => Some(e),
        None if (status.is_client_error() || status.is_server_error()) && !is_json(&resp) => {
            // axum's own rejections carry a plain-text explanation: keep it.
            let body = std::mem::replace(resp.body_mut(), Body::empty());
            let bytes = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
            Some(ApiError::from_status(status, &String::from_utf8_lossy(&bytes)))
        }
        None => None,
    };
    if let Some(e) = err {
        metrics.error(e.code, e.status.as_u16());
        if e.status.is_server_error() {
            tracing::error!(request_id = %id, code = e.code, status = e.status.as_u16(), "request failed");
        }
        let headers = std::mem::take(resp.headers_mut());
        resp = (e.status, axum::Json(e.body(id))).into_response();
        for (k, v) in headers.iter() {
            if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
                resp.headers_mut().insert(k.clone(), v.clone());
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(HEADER, v);
    }
    resp
}

/// Turns a panic caught by `CatchPanicLayer` into a plain 500 for the middleware.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;
    use tower_http::catch_panic::CatchPanicLayer;
    use tower_http::timeout::TimeoutLayer;

    use super::*;

    async fn boom() -> &'static str {
        panic!("handler bug")
    }

    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_secs(5)).await;
        "late"
    }

    /// A panic and a timeout become the error shape with the request id, like every
    /// other error.
    #[tokio::test]
    async fn panics_and_timeouts_use_the_error_shape() {
        let metrics = std::sync::Arc::new(HttpMetrics::default());
        let m = std::sync::Arc::clone(&metrics);
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/slow", get(slow))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                Duration::from_millis(50),
            ))
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(axum::middleware::from_fn(move |req: Request, next: Next| {
                let m = std::sync::Arc::clone(&m);
                async move { finish(&m, "req-test", next.run(req).await).await }
            }));
        for (path, status, code) in [
            ("/boom", StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
            ("/slow", StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT"),
        ] {
            let req = axum::http::Request::get(path).body(Body::empty()).unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), status);
            assert_eq!(resp.headers()[HEADER], "req-test");
            let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], code, "{v}");
            assert_eq!(v["error"]["request_id"], "req-test");
            assert!(
                !v["error"]["message"].as_str().unwrap().contains("handler bug"),
                "no internals leak"
            );
        }
        assert_eq!(metrics.errors.lock().get(&("INTERNAL", 500)), Some(&1));
    }
}
