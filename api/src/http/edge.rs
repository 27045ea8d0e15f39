//! The outermost layer of every route, by hand instead of two `from_fn` middlewares
//! (each boxes a future and a clone of the inner service per request): gives the
//! request its id ([`crate::foundation::request_id`]), sets the security headers
//! ([`super::security::set_headers`]) and renders errors in the one error shape with
//! that id ([`super::request_id`]). Same behaviour as `request_id::middleware` around
//! `security::headers`; the future only boxes for an error response whose plain-text
//! body must be read (axum's own rejections).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::metrics::counters::HttpMetrics;
use super::request_id::{finish, needs_body, render};
use super::security::set_headers;
use crate::foundation::request_id::{acceptable, fresh, RequestId, HEADER_NAME};
use crate::foundation::ApiError;

/// See the module doc.
#[derive(Clone)]
pub struct EdgeLayer {
    http: Arc<HttpMetrics>,
    hsts: bool,
}

impl EdgeLayer {
    pub fn new(http: Arc<HttpMetrics>, hsts: bool) -> Self {
        EdgeLayer { http, hsts }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;
    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            http: Arc::clone(&self.http),
            hsts: self.hsts,
        }
    }
}

#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    http: Arc<HttpMetrics>,
    hsts: bool,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let id = req
            .headers()
            .get(&HEADER_NAME)
            .and_then(acceptable)
            .unwrap_or_else(fresh);
        req.extensions_mut().insert(RequestId(id.clone()));
        let api = req.uri().path().starts_with("/api/");
        EdgeFuture::Inner {
            fut: self.inner.call(req),
            ctx: Some(Ctx {
                http: Arc::clone(&self.http),
                id,
                api,
                hsts: self.hsts,
            }),
        }
    }
}

/// What the response needs from the request.
pub struct Ctx {
    http: Arc<HttpMetrics>,
    id: String,
    api: bool,
    hsts: bool,
}

type Boxed = Pin<Box<dyn Future<Output = Response> + Send>>;

pin_project! {
    /// The inner service's future, then (only for a plain-text error) the boxed
    /// rendering that reads its body.
    #[project = EdgeProj]
    pub enum EdgeFuture<F> {
        Inner { #[pin] fut: F, ctx: Option<Ctx> },
        Reading { fut: Boxed },
    }
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let boxed: Boxed = match self.as_mut().project() {
                EdgeProj::Reading { fut } => return fut.as_mut().poll(cx).map(Ok),
                EdgeProj::Inner { fut, ctx } => {
                    let Ok(mut resp) = std::task::ready!(fut.poll(cx));
                    let Some(Ctx { http, id, api, hsts }) = ctx.take() else {
                        // Polled again after completing: nothing sensible left to give.
                        return Poll::Ready(Ok(StatusCode::INTERNAL_SERVER_ERROR.into_response()));
                    };
                    set_headers(resp.headers_mut(), api, hsts);
                    if needs_body(&resp) {
                        Box::pin(async move { finish(&http, &id, resp).await })
                    } else {
                        let err = resp.extensions_mut().remove::<ApiError>();
                        let mut resp = render(&http, &id, resp, err);
                        // The id's own bytes become the header (no copy).
                        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(id)) {
                            resp.headers_mut().insert(HEADER_NAME, v);
                        }
                        return Poll::Ready(Ok(resp));
                    }
                }
            };
            self.set(EdgeFuture::Reading { fut: boxed });
        }
    }
}
