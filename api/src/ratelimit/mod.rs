//! Rate-limit tiers (SPEC section 6): anonymous callers per address, token holders per
//! account at their tier's rate, signed algo services unlimited. Every limited
//! response carries `RateLimit-Policy` and `RateLimit` (IETF httpapi draft); a refused
//! one is 429 `RATE_LIMITED` with `Retry-After`.
//!
//! With `[redis]` the buckets live in Redis and every API node shares them. If Redis
//! fails, this node keeps limiting with its own buckets (never unlimited), counts the
//! fallback and logs it; `/health/redis` shows Redis down meanwhile.

pub mod gcra;
mod store;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;

use crate::config::limits::RateLimitsConfig;
use crate::http::error::ApiError;
use crate::redis_store::RedisStore;
use gcra::{Decision, Rate};
use store::{LocalBuckets, RedisBuckets};

/// Which limit applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitTier {
    Anonymous,
    Authenticated,
    Premium,
}

impl LimitTier {
    pub const ALL: [LimitTier; 3] = [LimitTier::Anonymous, LimitTier::Authenticated, LimitTier::Premium];

    pub const fn as_str(self) -> &'static str {
        match self {
            LimitTier::Anonymous => "anonymous",
            LimitTier::Authenticated => "authenticated",
            LimitTier::Premium => "premium",
        }
    }
}

/// Counters for /metrics.
#[derive(Default)]
pub struct LimitStats {
    pub allowed: [AtomicU64; 3],
    pub limited: [AtomicU64; 3],
    /// Checks answered by this node's buckets because Redis failed.
    pub redis_fallbacks: AtomicU64,
}

pub struct RateLimiter {
    rates: [Rate; 3],
    local: LocalBuckets,
    redis: Option<RedisBuckets>,
    /// After a Redis failure, when to try it again.
    redis_retry_at_us: AtomicI64,
    pub stats: LimitStats,
}

const REDIS_RETRY_US: i64 = 1_000_000;

/// A decision and the tier it was made under.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    pub tier: LimitTier,
    pub limit: u64,
    pub decision: Decision,
}

fn now_us() -> i64 {
    stocksblitz_engine::UnixNanos::now().0 / 1_000
}

impl RateLimiter {
    pub fn new(c: &RateLimitsConfig, redis: Option<Arc<RedisStore>>) -> Self {
        Self {
            rates: [
                Rate {
                    limit: c.anonymous_per_min,
                },
                Rate {
                    limit: c.authenticated_per_min,
                },
                Rate {
                    limit: c.premium_per_min,
                },
            ],
            local: LocalBuckets::new(c.max_keys as usize),
            redis: redis.map(RedisBuckets::new),
            redis_retry_at_us: AtomicI64::new(0),
            stats: LimitStats::default(),
        }
    }

    /// Takes one request from `key`'s bucket.
    pub async fn check(&self, tier: LimitTier, key: &str) -> Checked {
        let rate = self.rates[tier as usize];
        let now = now_us();
        let redis = self
            .redis
            .as_ref()
            .filter(|_| now >= self.redis_retry_at_us.load(Ordering::Relaxed));
        let decision = match redis {
            Some(r) => match r.check(key, rate).await {
                Ok(d) => Some(d),
                Err(e) => {
                    // Do not make every request wait out Redis's timeout: local
                    // buckets for a second, then try Redis again.
                    self.redis_retry_at_us.store(now + REDIS_RETRY_US, Ordering::Relaxed);
                    if self
                        .stats
                        .redis_fallbacks
                        .fetch_add(1, Ordering::Relaxed)
                        .is_multiple_of(1_000)
                    {
                        tracing::warn!(error = %e.0, "rate limits: Redis failed; limiting with this node's buckets");
                    }
                    self.local.check(key, rate, now)
                }
            },
            None => {
                if self.redis.is_some() {
                    self.stats.redis_fallbacks.fetch_add(1, Ordering::Relaxed);
                }
                self.local.check(key, rate, now)
            }
        };
        // A full local table refuses newcomers for a second (a flood of addresses).
        let decision = decision.unwrap_or(Decision {
            allowed: false,
            remaining: 0,
            reset_secs: 1,
            retry_after_secs: 1,
        });
        let counter = if decision.allowed {
            &self.stats.allowed
        } else {
            &self.stats.limited
        };
        counter[tier as usize].fetch_add(1, Ordering::Relaxed);
        Checked {
            tier,
            limit: rate.limit,
            decision,
        }
    }
}

impl Checked {
    /// `RateLimit-Policy: "authenticated";q=100;w=60` and
    /// `RateLimit: "authenticated";r=57;t=4`.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let name = self.tier.as_str();
        let policy = format!("\"{name}\";q={};w={}", self.limit, gcra::WINDOW_US / 1_000_000);
        let state = format!(
            "\"{name}\";r={};t={}",
            self.decision.remaining, self.decision.reset_secs
        );
        for (k, v) in [("ratelimit-policy", policy), ("ratelimit", state)] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                headers.insert(k, v);
            }
        }
        if !self.decision.allowed {
            headers.insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(self.decision.retry_after_secs),
            );
        }
    }

    /// The 429 for a refused request.
    pub fn refusal(&self) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            format!(
                "rate limit of {} requests per minute ({} tier) reached: retry after {} s",
                self.limit,
                self.tier.as_str(),
                self.decision.retry_after_secs
            ),
        )
        .with_details(json!({
            "tier": self.tier.as_str(),
            "limit_per_min": self.limit,
            "retry_after_secs": self.decision.retry_after_secs,
        }))
    }
}
