//! Who is calling: JWT bearer tokens carrying an account and a role, turned into a
//! [`Principal`] by an axum extractor on every route that needs one.

pub mod jwt;
pub mod key;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;

use stocksblitz_engine::orders::AccountId;

use crate::http::error::ApiError;
use crate::state::AppState;
pub use jwt::{Claims, Role, TokenError, Tokens};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub account: AccountId,
    pub name: String,
    pub role: Role,
}

impl Principal {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        let ok = match role {
            Role::Viewer => true,
            Role::Trader => matches!(self.role, Role::Trader | Role::Admin),
            Role::Admin => self.role == Role::Admin,
        };
        if ok {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                format!(
                    "this needs the {} role; your token has {}",
                    role.as_str(),
                    self.role.as_str()
                ),
            ))
        }
    }
}

/// Verifies an `Authorization` header value (or a bare `Bearer <token>` string sent
/// over a WebSocket) and resolves its account.
pub fn authenticate(app: &AppState, header: Option<&str>) -> Result<Principal, ApiError> {
    let Some(orders) = app.orders.as_ref() else {
        return Err(crate::orders::disabled());
    };
    let claims = orders.tokens.verify_header(header).map_err(|e| {
        tracing::info!(reason = %e, "authentication failed");
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", e.to_string())
    })?;
    let account = orders.accounts.id(&claims.sub).ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "UNKNOWN_ACCOUNT",
            "the account in your token is not configured on this engine",
        )
    })?;
    Ok(Principal {
        account,
        name: claims.sub,
        role: claims.role,
    })
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|h| h.to_str().unwrap_or(""));
        authenticate(app, header)
    }
}
