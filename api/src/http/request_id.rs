//! The request-id middleware: gives every request its id (see
//! [`crate::foundation::request_id`]) and renders every error response in the one error
//! shape with that id (see [`crate::foundation::error`]).

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::metrics::counters::HttpMetrics;
use crate::foundation::request_id::HEADER;
use crate::foundation::ApiError;

fn is_json(r: &Response) -> bool {
    r.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// An error response without an [`ApiError`] and not JSON (axum's own rejections): its
/// plain-text body is read to keep the explanation (the only case that awaits).
pub(crate) fn needs_body(resp: &Response) -> bool {
    let status = resp.status();
    (status.is_client_error() || status.is_server_error())
        && resp.extensions().get::<ApiError>().is_none()
        && !is_json(resp)
}

/// Renders any error response in the one error shape with the request id (counting it
/// by code), and sets `X-Request-ID`.
pub(crate) async fn finish(metrics: &HttpMetrics, id: &str, mut resp: Response) -> Response {
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
    resp = render(metrics, id, resp, err);
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(HEADER, v);
    }
    resp
}

/// [`finish`] once the error (if any) is known, without `X-Request-ID`.
pub(crate) fn render(metrics: &HttpMetrics, id: &str, mut resp: Response, err: Option<ApiError>) -> Response {
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
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let m = std::sync::Arc::clone(&m);
                    async move { finish(&m, "req-test", next.run(req).await).await }
                },
            ));
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
        assert_eq!(metrics.error_count("INTERNAL", 500), 1);
    }
}
