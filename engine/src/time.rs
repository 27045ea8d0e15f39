//! Timestamps: `i64` nanoseconds since the Unix epoch.
//!
//! Every tick carries two: the venue's exchange time (when it sends one) and our local
//! receive time. Some venues send no exchange time (Binance `bookTicker`, partial depth,
//! Kite LTP packets); those ticks carry [`UnixNanos::UNKNOWN`], never a made-up value.
//! Exchange clocks can run ahead of ours, so nothing may assume receive >= exchange.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[repr(transparent)]
pub struct UnixNanos(pub i64);

impl UnixNanos {
    /// "The venue sent no time for this event." `i64::MIN` is far outside any real
    /// timestamp, so it can never be confused with one.
    pub const UNKNOWN: Self = Self(i64::MIN);

    pub const NANOS_PER_MILLI: i64 = 1_000_000;
    pub const NANOS_PER_SEC: i64 = 1_000_000_000;

    /// The wall clock now. `clock_gettime(CLOCK_REALTIME)` is served by the vDSO on
    /// Linux, so this is not a system call on the hot path.
    #[inline]
    pub fn now() -> Self {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            Err(e) => Self(-i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX)),
        }
    }

    #[inline]
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms.saturating_mul(Self::NANOS_PER_MILLI))
    }

    #[inline]
    pub const fn from_micros(us: i64) -> Self {
        Self(us.saturating_mul(1_000))
    }

    #[inline]
    pub const fn is_known(self) -> bool {
        self.0 != i64::MIN
    }

    /// `Some(self)` when known.
    #[inline]
    pub const fn known(self) -> Option<Self> {
        if self.is_known() {
            Some(self)
        } else {
            None
        }
    }

    /// This timestamp if known, otherwise `fallback`.
    #[inline]
    pub const fn or(self, fallback: Self) -> Self {
        if self.is_known() {
            self
        } else {
            fallback
        }
    }

    #[inline]
    pub const fn millis(self) -> i64 {
        self.0.div_euclid(Self::NANOS_PER_MILLI)
    }

    /// Start of the `interval_ns`-aligned window containing this time.
    #[inline]
    pub const fn floor_to(self, interval_ns: i64) -> Self {
        Self(self.0 - self.0.rem_euclid(interval_ns))
    }

    #[inline]
    pub const fn saturating_add_nanos(self, ns: i64) -> Self {
        Self(self.0.saturating_add(ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_is_not_known() {
        assert!(!UnixNanos::UNKNOWN.is_known());
        assert_eq!(UnixNanos::UNKNOWN.or(UnixNanos(5)), UnixNanos(5));
        assert_eq!(UnixNanos(7).or(UnixNanos(5)), UnixNanos(7));
    }

    #[test]
    fn floors_negative_times_correctly() {
        assert_eq!(UnixNanos(1_500).floor_to(1_000), UnixNanos(1_000));
        assert_eq!(UnixNanos(-1).floor_to(1_000), UnixNanos(-1_000));
    }

    #[test]
    fn now_is_after_2020() {
        assert!(UnixNanos::now().0 > 1_577_836_800 * UnixNanos::NANOS_PER_SEC);
    }
}
