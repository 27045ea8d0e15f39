//! The generic cell rate algorithm: a token bucket kept as one number per caller, the
//! theoretical arrival time (TAT) of its next request. A bucket of `limit` requests per
//! window refills one request every `window / limit`; a caller may burst up to `limit`.
//! The same arithmetic runs in process and, as a Lua script, inside Redis.

/// Microseconds in the one window every limit is expressed over (a minute).
pub const WINDOW_US: i64 = 60_000_000;

/// What one request costs and how much may pile up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per window.
    pub limit: u64,
}

impl Rate {
    /// Microseconds between requests at the sustained rate.
    pub fn interval_us(self) -> i64 {
        (WINDOW_US / self.limit.max(1) as i64).max(1)
    }

    /// How far ahead of now the TAT may run: the whole bucket.
    pub fn capacity_us(self) -> i64 {
        self.interval_us() * self.limit.max(1) as i64
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests left in the bucket after this one.
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Refused: seconds until one request is allowed.
    pub retry_after_secs: u64,
}

fn ceil_secs(us: i64) -> u64 {
    (us.max(0) as u64).div_ceil(1_000_000)
}

/// Builds the decision from what the store answered: `allowed`, then (allowed) the
/// spare capacity in microseconds or (refused) the wait, then the TAT's lead on now.
pub fn decision(rate: Rate, allowed: bool, spare_or_wait_us: i64, lead_us: i64) -> Decision {
    if allowed {
        Decision {
            allowed,
            remaining: (spare_or_wait_us.max(0) / rate.interval_us()) as u64,
            reset_secs: ceil_secs(lead_us),
            retry_after_secs: 0,
        }
    } else {
        Decision {
            allowed,
            remaining: 0,
            reset_secs: ceil_secs(lead_us),
            retry_after_secs: ceil_secs(spare_or_wait_us).max(1),
        }
    }
}

/// One request at `now_us` against a bucket whose TAT is `tat_us` (None: never seen,
/// full). Returns the decision and, when allowed, the new TAT to store.
pub fn check(rate: Rate, tat_us: Option<i64>, now_us: i64) -> (Decision, Option<i64>) {
    // A TAT more than a whole bucket ahead means the clock stepped back: count the
    // bucket as just emptied rather than refusing until the clock catches up.
    // The clamp is stored even on a refusal (the `Some` then), so the bucket refills
    // from the new time.
    let stored = tat_us.unwrap_or(now_us);
    let clamped = stored.min(now_us.saturating_add(rate.capacity_us()));
    let tat = clamped.max(now_us);
    let new_tat = tat + rate.interval_us();
    let allow_at = new_tat - rate.capacity_us();
    if now_us < allow_at {
        (
            decision(rate, false, allow_at - now_us, tat - now_us),
            (clamped != stored).then_some(clamped),
        )
    } else {
        (
            decision(rate, true, now_us + rate.capacity_us() - new_tat, new_tat - now_us),
            Some(new_tat),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A clock stepping back by any amount costs at most one bucket: one request an
    /// interval after the step is allowed again.
    #[test]
    fn a_backward_clock_step_costs_at_most_one_bucket() {
        for limit in [1u64, 10, 100, 1000] {
            let rate = Rate { limit };
            for back_us in [1_000_000i64, 60_000_000, 86_400_000_000] {
                let now = 10_000_000_000_000;
                let mut tat = None;
                loop {
                    let (d, t) = check(rate, tat, now);
                    if !d.allowed {
                        break;
                    }
                    tat = t;
                }
                let back = now - back_us;
                let (d, t) = check(rate, tat, back);
                assert!(!d.allowed, "limit {limit}: the bucket is still empty");
                tat = t.or(tat);
                assert!(
                    d.retry_after_secs <= ceil_secs(rate.interval_us()).max(1),
                    "limit {limit}, back {back_us} us: retry after {} s",
                    d.retry_after_secs
                );
                let (d, _) = check(rate, tat, back + rate.interval_us());
                assert!(d.allowed, "limit {limit}, back {back_us} us: refills from the new time");
            }
        }
    }

    #[test]
    fn a_full_bucket_then_one_per_interval() {
        let rate = Rate { limit: 10 };
        let mut tat = None;
        let now = 1_000_000_000;
        for i in 0..10 {
            let (d, t) = check(rate, tat, now);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 9 - i);
            tat = t;
        }
        let (d, t) = check(rate, tat, now);
        assert!(!d.allowed && t.is_none());
        assert_eq!(d.retry_after_secs, 6, "one request every 6 s");
        assert_eq!(d.reset_secs, 60);
        // Just before the next slot: still refused; at it: allowed, and empty again.
        assert!(!check(rate, tat, now + 5_999_999).0.allowed);
        let (d, _) = check(rate, tat, now + 6_000_000);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        // After a full window idle, the bucket is full.
        assert_eq!(check(rate, tat, now + 60_000_000).0.remaining, 9);
    }

    proptest! {
        /// Over any window, no more than `limit` plus what refilled gets through.
        #[test]
        fn never_more_than_the_rate(limit in 1u64..200, gaps in proptest::collection::vec(0i64..3_000_000, 1..400)) {
            let rate = Rate { limit };
            let mut tat = None;
            let mut now = 0i64;
            let mut allowed = 0u64;
            for g in &gaps {
                now += g;
                let (d, t) = check(rate, tat, now);
                if d.allowed { allowed += 1; tat = t; } else { prop_assert!(d.retry_after_secs >= 1); }
            }
            let refilled = (now / rate.interval_us()) as u64;
            prop_assert!(allowed <= limit + refilled, "{allowed} > {limit} + {refilled}");
        }
    }
}
