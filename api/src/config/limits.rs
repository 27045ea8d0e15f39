//! `[rate_limits]`: requests per minute per caller, by tier. Anonymous callers are
//! keyed by their address, token holders by account, and signed algo services are
//! not limited here (the engine's per-account order rate still applies to them).

use serde::Deserialize;

use super::error::range;
use super::error::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// No credentials: per client address.
    pub anonymous_per_min: u64,
    /// A token with tier "standard" (or none): per account.
    pub authenticated_per_min: u64,
    /// A token with tier "premium": per account.
    pub premium_per_min: u64,
    /// Buckets kept in process (without Redis, and for failed authentications); when
    /// full, idle ones are swept, then the least-used anonymous ones evicted. Anonymous
    /// callers never push out accounts.
    pub max_keys: u64,
    /// Failed authentications per address per minute; past it, credentials from that
    /// address are refused (429) without being checked or audited.
    pub auth_failures_per_min: u64,
    /// Failed `{"op":"auth"}` messages one WebSocket connection may send before it is
    /// closed (code 4429).
    pub ws_auth_failures_per_connection: u64,
    /// Development only (`[api] environment = "development"`): anonymous market-data
    /// reads (instruments, quotes, book, trades, historical, market status, OpenAPI,
    /// the stream) from a loopback address get this many per minute instead of
    /// `anonymous_per_min`. 0: off. Ignored in production.
    pub loopback_public_per_min: u64,
}

pub fn check(c: &RateLimitsConfig) -> Result<(), ConfigError> {
    range("rate_limits.anonymous_per_min", c.anonymous_per_min, 1, 1_000_000)?;
    range(
        "rate_limits.authenticated_per_min",
        c.authenticated_per_min,
        1,
        1_000_000,
    )?;
    range("rate_limits.premium_per_min", c.premium_per_min, 1, 1_000_000)?;
    range("rate_limits.max_keys", c.max_keys, 1_000, 100_000_000)?;
    range(
        "rate_limits.auth_failures_per_min",
        c.auth_failures_per_min,
        1,
        1_000_000,
    )?;
    range(
        "rate_limits.ws_auth_failures_per_connection",
        c.ws_auth_failures_per_connection,
        1,
        1_000,
    )?;
    range(
        "rate_limits.loopback_public_per_min",
        c.loopback_public_per_min,
        0,
        1_000_000,
    )
}
