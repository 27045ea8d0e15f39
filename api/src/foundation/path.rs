//! The path a request was sent to, before any nesting stripped it: the rate limiter,
//! the audit log and the signed-request check all name a route by it. Here, in the
//! bottom layer, so the middlewares that use it do not import each other.

use axum::extract::{OriginalUri, Request};

/// The path as sent.
pub fn original_path(req: &Request) -> String {
    req.extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri().path().to_owned(), |o| o.0.path().to_owned())
}
