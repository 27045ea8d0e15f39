//! The part of the shared state that decides who may call and records what they did:
//! token and signature checks, rate limits, the audit log, and the API settings they
//! read. The caller and audit middlewares take this, not the whole application state.

use std::sync::Arc;

use crate::audit::AuditLog;
use crate::config::ApiConfig;
use crate::ratelimit::RateLimiter;

use super::Authenticator;

/// Cheap to clone: four `Arc`s.
#[derive(Clone)]
pub struct Access {
    /// Token and signature checks, when `[auth]` is configured.
    pub auth: Option<Arc<Authenticator>>,
    pub limiter: Arc<RateLimiter>,
    pub audit: Arc<AuditLog>,
    pub config: Arc<ApiConfig>,
}
