//! Algo services that sign their requests (`[[auth.services]]`): their keys, the
//! account they act for and what they may do, and the check of a signed request.

use std::collections::HashMap;
use std::sync::Arc;

use crate::foundation::secrets::from_env;
use axum::http::{HeaderMap, Method, StatusCode};

use super::hmac;
use super::nonce::{Nonce, NonceError, NonceStore};
use crate::config::auth::{Operation, ServiceConfig};
use crate::foundation::ApiError;

/// HMAC keys shorter than this are refused at start-up.
const MIN_SECRET_BYTES: usize = 32;

pub struct Service {
    pub name: String,
    pub key_id: String,
    secret: Vec<u8>,
    pub account: String,
    pub operations: Vec<Operation>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("key_id", &self.key_id)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl Service {
    pub fn allows(&self, op: Operation) -> bool {
        self.operations.contains(&op)
    }
}

/// Why a signed request was refused. Codes are stable; messages say what to fix and
/// never echo a secret or a signature.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("signed requests need all of X-Service-Identity, X-Internal-API-Key, X-Request-Timestamp and X-Request-Signature; missing {0}")]
    MissingHeader(&'static str),
    #[error("X-Request-Timestamp must be milliseconds since the Unix epoch")]
    BadTimestamp,
    #[error("X-Request-Timestamp is {skew_ms} ms from the server's clock; the window is {window_ms} ms either way: sync your clock and sign again")]
    Skew { skew_ms: i64, window_ms: i64 },
    #[error("unknown service or key: check X-Service-Identity and X-Internal-API-Key")]
    UnknownService,
    #[error("signature does not match: sign timestamp, method, path with query and the body's SHA-256 (docs/AUTH.md)")]
    BadSignature,
    #[error("this signature was already used: sign every request afresh")]
    Replayed,
    #[error("{0}")]
    Store(#[from] NonceError),
}

impl SignatureError {
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::MissingHeader(_) => "SIGNATURE_HEADERS_MISSING",
            SignatureError::BadTimestamp => "BAD_TIMESTAMP",
            SignatureError::Skew { .. } => "TIMESTAMP_OUT_OF_WINDOW",
            SignatureError::UnknownService => "UNKNOWN_SERVICE",
            SignatureError::BadSignature => "BAD_SIGNATURE",
            SignatureError::Replayed => "SIGNATURE_REPLAYED",
            SignatureError::Store(NonceError::Down(_)) => "REPLAY_STORE_UNAVAILABLE",
            SignatureError::Store(NonceError::Full) => "REPLAY_STORE_FULL",
        }
    }

    pub fn into_api(self) -> ApiError {
        let status = match &self {
            SignatureError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        };
        ApiError::new(status, self.code(), self.to_string())
    }
}

/// Every configured service, by key id.
pub struct Services {
    by_key: HashMap<String, Arc<Service>>,
    window_ms: i64,
    nonces: NonceStore,
}

impl Services {
    /// Loads each service's secret from the environment; a missing or short one stops
    /// start-up, naming the variable.
    pub fn load(configs: &[ServiceConfig], window_ms: u64, nonces: NonceStore) -> Result<Self, String> {
        let mut by_key = HashMap::new();
        for s in configs {
            let secret = from_env(&s.secret_env).map_err(|e| format!("service {:?}: {e}", s.name))?;
            if secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "service {:?}: the secret in {} is shorter than {MIN_SECRET_BYTES} bytes",
                    s.name, s.secret_env
                ));
            }
            by_key.insert(
                s.key_id.clone(),
                Arc::new(Service {
                    name: s.name.clone(),
                    key_id: s.key_id.clone(),
                    secret: secret.into_bytes(),
                    account: s.account.clone(),
                    operations: s.operations.clone(),
                }),
            );
        }
        Ok(Self {
            by_key,
            window_ms: window_ms as i64,
            nonces,
        })
    }

    /// Whether a request carries any of the signing headers (and so must be signed).
    pub fn is_signed(headers: &HeaderMap) -> bool {
        [hmac::IDENTITY, hmac::KEY_ID, hmac::TIMESTAMP, hmac::SIGNATURE]
            .iter()
            .any(|h| headers.contains_key(*h))
    }

    /// Checks a signed request: headers, clock window, key, signature, then replay.
    pub async fn verify(
        &self,
        headers: &HeaderMap,
        method: &Method,
        path_and_query: &str,
        body: &[u8],
        now_ms: i64,
    ) -> Result<Arc<Service>, SignatureError> {
        let get = |name: &'static str, shown: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .ok_or(SignatureError::MissingHeader(shown))
        };
        let identity = get(hmac::IDENTITY, "X-Service-Identity")?;
        let key_id = get(hmac::KEY_ID, "X-Internal-API-Key")?;
        let timestamp = get(hmac::TIMESTAMP, "X-Request-Timestamp")?;
        let signature = get(hmac::SIGNATURE, "X-Request-Signature")?;
        let ts: i64 = timestamp
            .parse()
            .ok()
            .filter(|t: &i64| *t > 0 && timestamp.bytes().all(|b| b.is_ascii_digit()))
            .ok_or(SignatureError::BadTimestamp)?;
        let skew_ms = ts - now_ms;
        if skew_ms.abs() > self.window_ms {
            return Err(SignatureError::Skew {
                skew_ms,
                window_ms: self.window_ms,
            });
        }
        let service = self
            .by_key
            .get(key_id)
            .filter(|s| s.name == identity)
            .ok_or(SignatureError::UnknownService)?;
        if !hmac::verify(
            &service.secret,
            signature,
            timestamp,
            method.as_str(),
            path_and_query,
            body,
        ) {
            return Err(SignatureError::BadSignature);
        }
        match self.nonces.check(key_id, signature, now_ms, 2 * self.window_ms).await? {
            Nonce::Fresh => Ok(Arc::clone(service)),
            Nonce::Replayed => Err(SignatureError::Replayed),
        }
    }
}

/// What a route does, for a service's allow-list; `None`: no service may call it
/// (administration).
pub fn operation_for(method: &Method, path: &str) -> Option<Operation> {
    let rest = path.strip_prefix("/api/v1").unwrap_or(path);
    if rest.starts_with("/admin") {
        return None;
    }
    let is_orders = rest == "/orders" || rest == "/orders/";
    let is_one_order = rest.starts_with("/orders/") && !is_orders;
    Some(match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => Operation::Read,
        Method::POST if is_orders || rest == "/orders/test" => Operation::Place,
        Method::PATCH if is_one_order => Operation::Modify,
        Method::DELETE if is_one_order => Operation::Cancel,
        Method::DELETE if is_orders => Operation::MassCancel,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_operations() {
        let op = |m: Method, p: &str| operation_for(&m, p);
        assert_eq!(op(Method::GET, "/api/v1/orders"), Some(Operation::Read));
        assert_eq!(op(Method::GET, "/api/v1/quotes/BTCUSDT"), Some(Operation::Read));
        assert_eq!(op(Method::POST, "/api/v1/orders"), Some(Operation::Place));
        assert_eq!(op(Method::POST, "/api/v1/orders/test"), Some(Operation::Place));
        assert_eq!(op(Method::PATCH, "/api/v1/orders/42"), Some(Operation::Modify));
        assert_eq!(op(Method::DELETE, "/api/v1/orders/42"), Some(Operation::Cancel));
        assert_eq!(op(Method::DELETE, "/api/v1/orders"), Some(Operation::MassCancel));
        assert_eq!(op(Method::POST, "/api/v1/admin/kill-switch"), None);
        assert_eq!(op(Method::GET, "/api/v1/admin/anything"), None);
        assert_eq!(op(Method::PUT, "/api/v1/orders/42"), None);
    }
}
