//! Order entry in the API: account directory, the service that talks to the engine's
//! order path, the read model it keeps, idempotency keys, and the JSON shapes.

pub mod accounts;
pub mod desk;
pub mod entry;
pub mod fanout;
pub mod forward;
pub mod idempotency;
pub mod json;
pub mod pages;
pub mod route;
pub mod service;

use axum::http::StatusCode;

pub use desk::Desk;
pub use service::{OrderService, SubmitError};

use crate::foundation::ApiError;

/// The answer of every order route when `[orders]` is not configured.
pub fn disabled() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ORDER_ENTRY_DISABLED",
        "order entry is not configured on this server ([orders] in the config)",
    )
}
