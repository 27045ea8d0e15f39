//! The request-counting layer by hand (a `from_fn` middleware boxes a future and a
//! clone of the inner service per request): counts every request by route template,
//! method and status with its latency, like [`super::middleware`], no lock, no
//! allocation, no box.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::counters::HttpMetrics;

/// See the module doc.
#[derive(Clone)]
pub struct MetricsLayer(pub Arc<HttpMetrics>);

impl<S> Layer<S> for MetricsLayer {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            http: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    http: Arc<HttpMetrics>,
}

impl<S> Service<Request> for Counted<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let matched = req.extensions().get::<MatchedPath>().cloned();
        let method = req.method().clone();
        CountedFuture {
            fut: self.inner.call(req),
            req: Some(Counting {
                http: Arc::clone(&self.http),
                matched,
                method,
                start: Instant::now(),
            }),
        }
    }
}

/// The request's side of a count.
pub struct Counting {
    http: Arc<HttpMetrics>,
    matched: Option<MatchedPath>,
    method: Method,
    start: Instant,
}

pin_project! {
    /// The inner future; the count is taken when it completes.
    pub struct CountedFuture<F> {
        #[pin]
        fut: F,
        req: Option<Counting>,
    }
}

impl<F> Future for CountedFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(resp) = std::task::ready!(this.fut.poll(cx));
        if let Some(c) = this.req.take() {
            let nanos = u64::try_from(c.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            c.http.record(
                c.matched.as_ref().map(MatchedPath::as_str),
                &c.method,
                resp.status().as_u16(),
                nanos,
            );
        }
        Poll::Ready(Ok(resp))
    }
}
