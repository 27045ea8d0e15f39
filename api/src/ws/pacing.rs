//! How often a connection writes its public channels.
//!
//! Issue 19: the fan-out's cost must not be subscribers x changes. The hub already
//! publishes each change once; what is left per connection is a wake-up, a collect and
//! a write system call each time it writes. Without a bound, 1,000 connections woken
//! on every fan-out batch make millions of wake-ups and system calls a second and send
//! every intermediate book. So the process has a budget of writes per second
//! (`ws_flushes_per_sec`), shared by the connections open: each writes at most every
//! `connections / budget` seconds, and never waits longer than
//! `ws_max_flush_interval_ms`. Few connections write almost at once (10: every
//! 0.1 ms); many write less often and get more per write, conflated quotes and books
//! included, which is what a reader can use anyway.

use std::time::Duration;

use crate::config::ApiConfig;

#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Nanoseconds of interval per open connection.
    ns_per_connection: u64,
    max: Duration,
}

impl Pacing {
    pub fn new(cfg: &ApiConfig) -> Self {
        Self::from_limits(cfg.ws_flushes_per_sec, cfg.ws_max_flush_interval_ms)
    }

    pub fn from_limits(flushes_per_sec: u64, max_interval_ms: u64) -> Self {
        Self {
            // Rounded up: the connections together stay within the budget.
            ns_per_connection: 1_000_000_000u64.div_ceil(flushes_per_sec.max(1)),
            max: Duration::from_millis(max_interval_ms),
        }
    }

    /// The least time between two market-data writes of one connection while
    /// `connections` are open.
    pub fn interval(&self, connections: u64) -> Duration {
        Duration::from_nanos(self.ns_per_connection.saturating_mul(connections)).min(self.max)
    }

    /// The interval after another congested write (one that waited for the client),
    /// `previous` the one before it: doubled, from the shared interval up to the
    /// longest, so a client that cannot keep up gets fewer, newer states until its
    /// backlog drains (an uncongested write starts over at [`Pacing::interval`]).
    pub fn backoff(&self, previous: Duration, connections: u64) -> Duration {
        previous
            .saturating_mul(2)
            .max(self.interval(connections))
            .max(Duration::from_millis(1))
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_by_the_connections_and_capped() {
        let p = Pacing::from_limits(100_000, 50);
        assert_eq!(p.interval(0), Duration::ZERO);
        assert_eq!(p.interval(10), Duration::from_micros(100));
        assert_eq!(p.interval(1_000), Duration::from_millis(10));
        assert_eq!(p.interval(10_000), Duration::from_millis(50), "capped");
        assert_eq!(p.interval(u64::MAX), Duration::from_millis(50), "no overflow");
    }

    #[test]
    fn a_congested_connection_backs_off_up_to_the_longest_interval() {
        let p = Pacing::from_limits(100_000, 50);
        let mut iv = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..10 {
            iv = p.backoff(iv, 10);
            seen.push(iv.as_millis());
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 50, 50, 50, 50]);
        assert_eq!(
            p.backoff(Duration::ZERO, 3_000),
            Duration::from_millis(30),
            "never below the shared interval"
        );
    }

    proptest::proptest! {
        /// Whatever the count, all connections together write at most the budget a
        /// second (unless the cap makes them write more often than the budget allows).
        #[test]
        fn writes_per_second_stay_within_the_budget(per_sec in 1_000u64..10_000_000, n in 1u64..1_000_000) {
            let p = Pacing::from_limits(per_sec, 50);
            let iv = p.interval(n).as_secs_f64();
            let total = n as f64 / iv;
            if iv < 0.05 {
                // Nanoseconds per connection are rounded up: never more than the budget.
                proptest::prop_assert!(total <= per_sec as f64 * (1.0 + 1e-9), "{total} > {per_sec}");
            } else {
                proptest::prop_assert_eq!(p.interval(n), Duration::from_millis(50));
            }
        }
    }
}
