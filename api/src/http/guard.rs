//! The guards under every route, by hand in one layer instead of tower-http's
//! `CatchPanicLayer`, `TimeoutLayer` and `RequestBodyLimitLayer` (as separate route
//! layers each one boxed service clone and one boxed future per request, and each a
//! boxed response body): a panic becomes a plain 500 ([`super::request_id::panic_response`]),
//! a request still running after `request_timeout_ms` a plain 408, and a request body
//! over `max_body_bytes` a 413 (at once when `Content-Length` says so, otherwise when the
//! handler reads past the limit); a request with a body also gets axum's
//! `DefaultBodyLimit` of `max_body_bytes` for its extractors (was a layer of its own,
//! inserting it into every request). The error shape is added above, by [`super::edge`].
//!
//! Same behaviour as the three layers in that order, cheaper for a read: the timer
//! is only armed when the handler is not done at its first poll (a cached quote is),
//! with the deadline counted from the call as before; a request without a body is not
//! wrapped in a limit it cannot reach.

use std::convert::Infallible;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use super::request_id::panic_response;

/// See the module doc.
#[derive(Clone, Copy)]
pub struct GuardLayer {
    timeout: Duration,
    max_body: usize,
}

impl GuardLayer {
    pub fn new(timeout: Duration, max_body: usize) -> Self {
        GuardLayer { timeout, max_body }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            timeout: self.timeout,
            max_body: self.max_body,
        }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    timeout: Duration,
    max_body: usize,
}

/// tower-http's answer to a `Content-Length` over the limit (the edge turns its text
/// into the error shape's message).
fn too_large() -> Response {
    let mut resp = Response::new(Body::from("length limit exceeded"));
    *resp.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
    resp.headers_mut().insert(header::CONTENT_TYPE, TEXT_PLAIN);
    resp
}

/// The request with its body limited to `max` (the smaller of `max` and its
/// `Content-Length`, as tower-http limits it), or `None` when `Content-Length` is over
/// `max` (answered [`too_large`]).
fn limit_body(req: Request, max: usize) -> Option<Request> {
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let limit = match length {
        Some(n) if n > max => return None,
        Some(n) => max.min(n),
        None => max,
    };
    // Nothing to read, nothing to limit.
    if req.body().is_end_stream() {
        return Some(req);
    }
    let mut req = req.map(|b| Body::new(http_body_util::Limited::new(b, limit)));
    // axum's extractors (`Bytes`, `Json`, ...) read their limit from an extension: set
    // here, for a request with a body, instead of by a `DefaultBodyLimit` layer on
    // every request (an extension insert, and a box, that a GET never reads).
    DefaultBodyLimit::max(max).apply(&mut req);
    Some(req)
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let deadline = Instant::now() + self.timeout;
        let Some(req) = limit_body(req, self.max_body) else {
            return GuardFuture::Done {
                resp: Some(too_large()),
            };
        };
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(fut) => GuardFuture::Running {
                fut,
                deadline,
                sleep: None,
            },
            Err(panic) => GuardFuture::Done {
                resp: Some(panic_response(panic)),
            },
        }
    }
}

pin_project! {
    /// The handler's future under the panic catcher and the (lazily armed) deadline,
    /// or an answer given at the call.
    #[project = GuardProj]
    pub enum GuardFuture<F> {
        Running { #[pin] fut: F, deadline: Instant, sleep: Option<Pin<Box<Sleep>>> },
        Done { resp: Option<Response> },
    }
}

impl<F> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GuardProj::Done { resp } => Poll::Ready(Ok(resp
                .take()
                .unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response()))),
            GuardProj::Running { fut, deadline, sleep } => {
                match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
                    Ok(Poll::Ready(r)) => return Poll::Ready(r),
                    Ok(Poll::Pending) => {}
                    Err(panic) => return Poll::Ready(Ok(panic_response(panic))),
                }
                let deadline = *deadline;
                let timer = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    let mut resp = Response::new(Body::empty());
                    *resp.status_mut() = StatusCode::REQUEST_TIMEOUT;
                    return Poll::Ready(Ok(resp));
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::{get, post};
    use axum::Router;
    use tower::ServiceExt;
    use tower_http::catch_panic::CatchPanicLayer;
    use tower_http::limit::RequestBodyLimitLayer;
    use tower_http::timeout::TimeoutLayer;

    use super::*;

    async fn boom() -> &'static str {
        panic!("handler bug")
    }

    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_millis(500)).await;
        "late"
    }

    async fn echo(body: axum::body::Bytes) -> String {
        format!("{} bytes", body.len())
    }

    fn app() -> Router {
        Router::new()
            .route("/boom", get(boom))
            .route("/slow", get(slow))
            .route("/fast", get(|| async { "ok" }))
            .route("/echo", post(echo))
    }

    /// What the client sees: status, headers and body.
    async fn seen(app: Router, req: axum::http::Request<Body>) -> (StatusCode, Vec<(String, String)>, Vec<u8>) {
        let resp = app.oneshot(req).await.expect("infallible");
        let status = resp.status();
        let mut headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        headers.sort();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .map(|b| b.to_vec())
            .unwrap_or_else(|e| format!("body error: {e}").into_bytes());
        (status, headers, body)
    }

    fn requests() -> Vec<axum::http::Request<Body>> {
        let r = axum::http::Request::builder;
        let chunked = |n: usize| {
            let chunks = futures_util::stream::iter(
                (0..n).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from_static(&[b'x'; 10]))),
            );
            Body::from_stream(chunks)
        };
        vec![
            r().uri("/fast").body(Body::empty()).expect("request"),
            r().uri("/boom").body(Body::empty()).expect("request"),
            r().uri("/slow").body(Body::empty()).expect("request"),
            r().uri("/missing").body(Body::empty()).expect("request"),
            r().method("POST")
                .uri("/echo")
                .body(Body::from(vec![b'x'; 64]))
                .expect("request"),
            r().method("POST")
                .uri("/echo")
                .body(Body::from(vec![b'x'; 65]))
                .expect("request"),
            r().method("POST")
                .uri("/echo")
                .header("content-length", "1000")
                .body(Body::from(vec![b'x'; 1000]))
                .expect("request"),
            r().method("POST").uri("/echo").body(chunked(6)).expect("request"),
            r().method("POST").uri("/echo").body(chunked(7)).expect("request"),
            r().method("POST").uri("/echo").body(Body::empty()).expect("request"),
        ]
    }

    /// Every case (fast, panicking, slow, unknown route, bodies under, at and over the
    /// limit, with and without a length) answers exactly as tower-http's three layers
    /// in the order the router stacked them.
    #[tokio::test]
    async fn answers_as_the_tower_http_layers_did() {
        let timeout = Duration::from_millis(50);
        let max = 64;
        let ours = app().layer(GuardLayer::new(timeout, max));
        let theirs = app()
            .layer(RequestBodyLimitLayer::new(max))
            .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
            .layer(CatchPanicLayer::custom(panic_response));
        for (a, b) in requests().into_iter().zip(requests()) {
            let what = format!("{} {}", a.method(), a.uri());
            let ours = seen(ours.clone(), a).await;
            let theirs = seen(theirs.clone(), b).await;
            assert_eq!(ours, theirs, "{what}");
        }
    }

    /// A request that waits gets its 408 at the deadline counted from the call (the
    /// timer is armed at its first poll that is not the answer).
    #[tokio::test]
    async fn a_request_that_waits_times_out_at_the_deadline_from_the_call() {
        let mut svc = GuardLayer::new(Duration::from_millis(50), 64).layer(app().into_service());
        let fast = axum::http::Request::get("/fast").body(Body::empty()).expect("request");
        let resp = svc.call(fast).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        let slow = axum::http::Request::get("/slow").body(Body::empty()).expect("request");
        let started = Instant::now();
        let resp = svc.call(slow).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(50) && waited < Duration::from_millis(450),
            "{waited:?}"
        );
    }
}
