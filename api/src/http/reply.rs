//! Typed response bodies as the API writes them. A handler answers with a `Serialize +
//! ToSchema` struct, the same type its `#[utoipa::path]` names as the body, so the
//! document describes what is sent. The body is written through `serde_json::Value`,
//! whose objects keep their keys sorted: every REST answer has always come out that way,
//! and stored idempotent answers replay byte for byte. Quotes are the exception: they
//! answer with the bytes the fan-out encoded once per change ([`encoded_json`], fields
//! in `QuoteDto` order, see `market::cached_quote`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use crate::foundation::ApiError;

/// `body` as the JSON value the API sends.
pub fn value<T: Serialize>(body: &T) -> Result<Value, ApiError> {
    serde_json::to_value(body).map_err(|_| ApiError::from_status(StatusCode::INTERNAL_SERVER_ERROR, ""))
}

/// A response with `status` and `body`.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Result<Response, ApiError> {
    Ok((status, Json(value(body)?)).into_response())
}

/// A `200 OK` response with a body already encoded as JSON (shared bytes: a cached
/// encoding is sent without copying).
pub fn encoded_json(body: axum::body::Bytes) -> Response {
    const JSON: axum::http::HeaderValue = axum::http::HeaderValue::from_static("application/json");
    let mut resp = Response::new(axum::body::Body::from(body));
    // Room for the headers the layers above add (rate limit, CORS, security, request
    // id): the map grows once, not three times.
    resp.headers_mut().reserve(16);
    resp.headers_mut().insert(axum::http::header::CONTENT_TYPE, JSON);
    resp
}

/// A `200 OK` response with `body`.
pub fn ok<T: Serialize>(body: &T) -> Result<Response, ApiError> {
    json(StatusCode::OK, body)
}
