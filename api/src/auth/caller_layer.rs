//! The caller middleware ([`super::caller::handle`]) as a hand-written layer for every
//! `/api/v1` route (in the stack of every route, passing the others through), instead of axum's `from_fn` (which per request clones the state
//! and the rest of the stack, boxes both, and boxes the future). An anonymous request
//! that is not an audited write, with the rate-limit buckets in process, is decided
//! in `call` without a box ([`super::caller::anonymous_now`]): the same decision,
//! counters, refusal and `RateLimit` headers as the middleware. Everything else
//! (credentials, writes, Redis buckets) runs the middleware in one boxed future.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::caller::{anonymous_now, handle};
use super::Access;
use crate::ratelimit::Checked;

/// See the module doc. `under`: the layer applies only to routes whose matched path
/// starts with it (the API's, when the layer is part of the stack of every route:
/// one route level less than a layer on the API's routes alone).
#[derive(Clone)]
pub struct CallerLayer {
    pub access: Access,
    pub under: &'static str,
}

impl<S> Layer<S> for CallerLayer {
    type Service = CallerService<S>;
    fn layer(&self, inner: S) -> CallerService<S> {
        CallerService {
            inner,
            access: self.access.clone(),
            under: self.under,
        }
    }
}

#[derive(Clone)]
pub struct CallerService<S> {
    inner: S,
    access: Access,
    under: &'static str,
}

type Boxed = Pin<Box<dyn Future<Output = Response> + Send>>;

impl<S> Service<Request> for CallerService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CallerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let route = req.extensions().get::<MatchedPath>().map_or("", MatchedPath::as_str);
        if !route.starts_with(self.under) {
            // Not an API route (or no route: the fallback).
            return CallerFuture::Passed {
                fut: self.inner.call(req),
            };
        }
        match anonymous_now(&self.access, &req) {
            Some(Ok((caller, checked))) => {
                req.extensions_mut().insert(caller);
                CallerFuture::Now {
                    fut: self.inner.call(req),
                    checked: Some(checked),
                }
            }
            Some(Err(refusal)) => CallerFuture::Answered { resp: Some(refusal) },
            None => {
                // The ready service goes into the future; a clone stays for the next call.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let access = self.access.clone();
                let fut: Boxed = Box::pin(async move {
                    handle(&access, req, move |req| async move {
                        match inner.call(req).await {
                            Ok(resp) => resp,
                            Err(never) => match never {},
                        }
                    })
                    .await
                });
                CallerFuture::Boxed { fut }
            }
        }
    }
}

pin_project! {
    /// The handler's future (its response gets the `RateLimit` headers), the boxed
    /// middleware, or a refusal given at the call.
    #[project = CallerProj]
    pub enum CallerFuture<F> {
        Now { #[pin] fut: F, checked: Option<Checked> },
        Passed { #[pin] fut: F },
        Boxed { fut: Boxed },
        Answered { resp: Option<Response> },
    }
}

impl<F> Future for CallerFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CallerProj::Now { fut, checked } => {
                let Ok(mut resp) = std::task::ready!(fut.poll(cx));
                if let Some(c) = checked.take() {
                    c.write_headers(resp.headers_mut());
                }
                Poll::Ready(Ok(resp))
            }
            CallerProj::Passed { fut } => fut.poll(cx),
            CallerProj::Boxed { fut } => fut.as_mut().poll(cx).map(Ok),
            CallerProj::Answered { resp } => Poll::Ready(Ok(resp
                .take()
                .unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response()))),
        }
    }
}
