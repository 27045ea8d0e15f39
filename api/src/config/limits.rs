//! `[rate_limits]`: requests per minute per caller, by tier. Anonymous callers are
//! keyed by their address, token holders by account, and signed algo services are
//! not limited here (the engine's per-account order rate still applies to them).

use serde::Deserialize;

use super::validate::range;
use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// No credentials: per client address.
    pub anonymous_per_min: u64,
    /// A token with tier "standard" (or none): per account.
    pub authenticated_per_min: u64,
    /// A token with tier "premium": per account.
    pub premium_per_min: u64,
    /// Without Redis, buckets kept in process; past this many, idle ones are swept and
    /// new callers are refused until some expire (a bound on memory under a flood).
    pub max_keys: u64,
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
    range("rate_limits.max_keys", c.max_keys, 1_000, 100_000_000)
}
