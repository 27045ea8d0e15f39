//! The one error shape every route returns (SPEC section 6):
//! `{"error":{"code":"UNKNOWN_SYMBOL","message":"...","details":{},"request_id":"req-..."}}`.
//!
//! Handlers return [`ApiError`]; it travels to the request-id middleware inside the
//! response's extensions, which renders the body with the request's id. Responses
//! produced elsewhere (axum's own 404/405/413, extractor rejections, timeouts, caught
//! panics) are rewritten into the same shape there, so no route can leak another form.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: serde_json::Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn unknown_symbol(symbol: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "UNKNOWN_SYMBOL",
            format!("{symbol:?} is not a known symbol: see GET /api/v1/instruments"),
        )
        .with_details(serde_json::json!({ "symbol": symbol }))
    }

    pub fn invalid_parameter(name: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER", message)
            .with_details(serde_json::json!({ "parameter": name }))
    }

    /// The generic error for a status produced outside our handlers.
    pub fn from_status(status: StatusCode, text: &str) -> Self {
        let (code, default) = match status {
            StatusCode::NOT_FOUND => ("NOT_FOUND", "no such route: see the API section of README.md"),
            StatusCode::METHOD_NOT_ALLOWED => ("METHOD_NOT_ALLOWED", "this route does not accept that method"),
            StatusCode::PAYLOAD_TOO_LARGE => ("PAYLOAD_TOO_LARGE", "request body is too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ("UNSUPPORTED_MEDIA_TYPE", "send Content-Type: application/json"),
            StatusCode::REQUEST_TIMEOUT => ("REQUEST_TIMEOUT", "the request took too long: retry"),
            StatusCode::UNPROCESSABLE_ENTITY => ("INVALID_BODY", "the request body does not match the expected shape"),
            StatusCode::BAD_REQUEST => ("BAD_REQUEST", "the request is malformed"),
            StatusCode::TOO_MANY_REQUESTS => ("RATE_LIMITED", "too many requests: slow down"),
            s if s.is_server_error() => (
                "INTERNAL",
                "internal error: retry, and report the request id if it persists",
            ),
            _ => ("ERROR", "request failed"),
        };
        let text = text.trim();
        let message = if text.is_empty() || status.is_server_error() {
            default.to_owned()
        } else {
            text.to_owned()
        };
        Self::new(status, code, message)
    }

    pub fn body(&self, request_id: &str) -> serde_json::Value {
        serde_json::json!(ErrorResponse {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                details: &self.details,
                request_id,
            },
        })
    }
}

/// Every error: a stable code, a message saying what to fix, details, the request id.
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// Stable, e.g. `UNKNOWN_SYMBOL`, `RATE_LIMITED`, `TICK_SIZE`.
    pub code: &'a str,
    pub message: &'a str,
    #[schema(value_type = Object)]
    pub details: &'a serde_json::Value,
    /// Also in the `X-Request-ID` header.
    pub request_id: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = self.status.into_response();
        r.extensions_mut().insert(self);
        r
    }
}
