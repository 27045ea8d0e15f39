//! Reconnect delays: capped exponential backoff with full jitter.
//!
//! After the n-th consecutive failure the delay is uniform in `[0, min(cap, base·2^n)]`
//! ("full jitter"), so a fleet of handlers that lost a venue at the same moment does
//! not reconnect in lockstep. A connection that stayed up for `reset_after` resets the
//! count.

use std::time::Duration;

use serde::Deserialize;

use crate::rng::SplitMix64;

/// `[feeds.reconnect]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// First retry delay bound, milliseconds.
    pub base_ms: u64,
    /// Largest delay, milliseconds.
    pub cap_ms: u64,
    /// A connection up this long resets the failure count, milliseconds.
    pub reset_after_ms: u64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base_ms: 100,
            cap_ms: 30_000,
            reset_after_ms: 60_000,
        }
    }
}

impl BackoffConfig {
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.base_ms == 0 {
            return Err(("base_ms", "must be at least 1"));
        }
        if self.cap_ms < self.base_ms {
            return Err(("cap_ms", "must be at least base_ms"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
    rng: SplitMix64,
}

impl Backoff {
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Self {
            config,
            failures: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// The delay before the next attempt; counts a failure.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.failures.min(32);
        self.failures = self.failures.saturating_add(1);
        let bound = self
            .config
            .base_ms
            .saturating_mul(1u64 << exp.min(31))
            .min(self.config.cap_ms);
        Duration::from_millis(self.rng.below(bound.saturating_add(1)))
    }

    /// A connection lived `up` before failing: long-lived ones reset the count.
    pub fn connection_ended(&mut self, up: Duration) {
        if up >= Duration::from_millis(self.config.reset_after_ms) {
            self.failures = 0;
        }
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_the_cap_with_jitter() {
        let cfg = BackoffConfig {
            base_ms: 100,
            cap_ms: 1_000,
            reset_after_ms: 5_000,
        };
        let mut b = Backoff::new(cfg, 1);
        let bounds = [100, 200, 400, 800, 1_000, 1_000, 1_000];
        for bound in bounds {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(bound), "{d:?} > {bound}");
        }
        // Jitter: many draws at the cap are not all equal.
        let draws: std::collections::HashSet<_> = (0..50).map(|_| b.next_delay()).collect();
        assert!(draws.len() > 10);
        b.connection_ended(Duration::from_millis(4_999));
        assert!(b.failures() > 0);
        b.connection_ended(Duration::from_secs(5));
        assert_eq!(b.failures(), 0);
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(
            BackoffConfig {
                base_ms: u64::MAX / 2,
                cap_ms: u64::MAX,
                reset_after_ms: 1,
            },
            2,
        );
        for _ in 0..100 {
            b.next_delay();
        }
    }
}
