//! Pre-trade risk: the limits, per-account usage, and (in `pretrade`) the checks an
//! order makes against them.
//!
//! Every check is constant time: usage (open orders, exposure, realized loss, rates)
//! is maintained incrementally as orders and fills happen, never recomputed by walking
//! orders. Positions count at their current reference price (mark to market): each
//! account keeps running sums of its positions' marked exposure and unrealized P&L,
//! adjusted by the difference when a fill changes a position or an instrument's
//! reference price moves (then once per account holding it), so a check reads two
//! numbers. Money limits are in the engine's base currency (instruments quoted in other
//! currencies convert with a configured rate) at [`VALUE_SCALE`] decimals; quantity
//! limits are in instrument units at the same scale.

mod pretrade;

use serde::Deserialize;

use crate::fixed::parse_decimal;
use crate::time::UnixNanos;

/// Decimal places of money and quantity limits.
pub const VALUE_SCALE: u8 = 8;

/// Self-trade prevention on the internal venue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SelfTradeMode {
    /// Cancel the incoming order's remainder.
    CancelNewest,
    /// Cancel the resting order and keep matching.
    CancelOldest,
    /// Cancel both.
    CancelBoth,
}

impl SelfTradeMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            SelfTradeMode::CancelNewest => "cancel_newest",
            SelfTradeMode::CancelOldest => "cancel_oldest",
            SelfTradeMode::CancelBoth => "cancel_both",
        }
    }
}

/// What an account may do right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TradingState {
    Active,
    /// Only orders that reduce an existing position.
    ReduceOnly,
    /// Order rate limited to a tenth of the configured rate.
    Throttled,
    /// No new orders; cancels still work.
    Blocked,
}

impl TradingState {
    pub const fn as_str(self) -> &'static str {
        match self {
            TradingState::Active => "active",
            TradingState::ReduceOnly => "reduce_only",
            TradingState::Throttled => "throttled",
            TradingState::Blocked => "blocked",
        }
    }
}

/// One account's limits, as the engine uses them (fixed point at [`VALUE_SCALE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RiskLimits {
    pub max_order_qty: i128,
    pub max_order_notional: i128,
    /// Maximum distance of a limit price from the reference price, basis points.
    pub price_collar_bps: u32,
    pub max_open_orders: u32,
    /// Per instrument, absolute position after the order fully fills.
    pub max_position_qty: i128,
    /// Open orders' notional plus positions marked to the reference price, all
    /// instruments.
    pub max_gross_exposure: i128,
    /// Loss for the trading day (realized today plus the open positions' unrealized
    /// P&L at the reference price) that stops new opening orders.
    pub daily_loss_limit: i128,
    pub orders_per_sec: u32,
    pub cancels_per_sec: u32,
    pub self_trade: SelfTradeMode,
}

/// `[risk.defaults]` / `[[accounts]].limits` as written in config: decimals as strings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RiskLimitsConfig {
    pub max_order_qty: String,
    pub max_order_notional: String,
    pub price_collar_bps: u32,
    pub max_open_orders: u32,
    pub max_position_qty: String,
    pub max_gross_exposure: String,
    pub daily_loss_limit: String,
    /// Default 10: the SEBI retail-algo threshold.
    pub orders_per_sec: u32,
    pub cancels_per_sec: u32,
    pub self_trade: SelfTradeMode,
}

impl RiskLimitsConfig {
    /// Validated limits; on error the key and what is wrong.
    pub fn limits(&self) -> Result<RiskLimits, (&'static str, String)> {
        let value = |key: &'static str, s: &str| -> Result<i128, (&'static str, String)> {
            match parse_decimal(s.as_bytes(), VALUE_SCALE) {
                Ok(v) if v > 0 => Ok(i128::from(v)),
                Ok(_) => Err((key, "must be above zero".to_owned())),
                Err(e) => Err((key, format!("{s:?}: {e}"))),
            }
        };
        let positive = |key: &'static str, v: u32| {
            if v == 0 {
                Err((key, "must be at least 1".to_owned()))
            } else {
                Ok(v)
            }
        };
        Ok(RiskLimits {
            max_order_qty: value("max_order_qty", &self.max_order_qty)?,
            max_order_notional: value("max_order_notional", &self.max_order_notional)?,
            price_collar_bps: positive("price_collar_bps", self.price_collar_bps)?,
            max_open_orders: positive("max_open_orders", self.max_open_orders)?,
            max_position_qty: value("max_position_qty", &self.max_position_qty)?,
            max_gross_exposure: value("max_gross_exposure", &self.max_gross_exposure)?,
            daily_loss_limit: value("daily_loss_limit", &self.daily_loss_limit)?,
            orders_per_sec: positive("orders_per_sec", self.orders_per_sec)?,
            cancels_per_sec: positive("cancels_per_sec", self.cancels_per_sec)?,
            self_trade: self.self_trade,
        })
    }
}

/// A token bucket in integer nanoseconds: `rate` events per second, bursts of `rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RateBucket {
    /// Time at which the bucket is empty again ("theoretical arrival time", GCRA).
    tat: i64,
}

impl RateBucket {
    /// Takes one token at `now` if the rate allows it.
    ///
    /// Commands carry the wall clock, which can step backwards (an NTP correction, a
    /// restart on a host whose clock was ahead). The TAT is never let run more than one
    /// burst ahead of `now`: after a backward step of any size the bucket counts as
    /// just emptied and refills at the normal rate, instead of refusing everything
    /// until the clock has caught up with the time it stepped back over.
    pub fn try_take(&mut self, now: UnixNanos, rate: u32) -> bool {
        let interval = UnixNanos::NANOS_PER_SEC / i64::from(rate.max(1));
        let burst = interval * i64::from(rate.max(1));
        // Persisted even on a refusal, so the bucket refills from the new time.
        self.tat = self.tat.min(now.0.saturating_add(burst));
        let tat = self.tat.max(now.0);
        if tat - now.0 + interval > burst {
            return false;
        }
        self.tat = tat + interval;
        true
    }

    /// Would a take succeed (without taking)?
    pub fn available(&self, now: UnixNanos, rate: u32) -> bool {
        let mut probe = *self;
        probe.try_take(now, rate)
    }
}

/// An account's live risk usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccountRisk {
    pub limits: RiskLimits,
    pub state: TradingState,
    pub killed: bool,
    pub open_orders: u32,
    /// Notional of open orders' remaining quantity (base currency, VALUE_SCALE).
    pub open_notional: i128,
    /// Sum over instruments of |position cost| (base currency, VALUE_SCALE).
    pub position_exposure: i128,
    /// Realized P&L of the current trading day (base currency, VALUE_SCALE) in
    /// instruments with session hours.
    pub realized_today: i128,
    /// The trading day `realized_today` belongs to (days since the epoch, local).
    pub day: i64,
    /// Realized P&L in 24x7 instruments since their last day roll.
    pub realized_today_24x7: i128,
    /// The 24x7 trading day `realized_today_24x7` belongs to.
    pub day_24x7: i64,
    pub orders: RateBucket,
    pub cancels: RateBucket,
    /// Unrealized P&L of the open positions at the reference prices, as of the
    /// account's last risk report (set on the reported copy; see [`super::Mtm`]).
    pub unrealized: i128,
    /// Positions' |qty x reference price|, as of the last risk report.
    pub marked_exposure: i128,
}

impl AccountRisk {
    pub fn new(limits: RiskLimits) -> Self {
        Self {
            limits,
            state: TradingState::Active,
            killed: false,
            open_orders: 0,
            open_notional: 0,
            position_exposure: 0,
            realized_today: 0,
            day: i64::MIN,
            realized_today_24x7: 0,
            day_24x7: i64::MIN,
            orders: RateBucket::default(),
            cancels: RateBucket::default(),
            unrealized: 0,
            marked_exposure: 0,
        }
    }

    /// Starts a new trading day's loss count when the day changed.
    pub fn roll_day(&mut self, day: i64) {
        if day != self.day {
            self.day = day;
            self.realized_today = 0;
        }
    }

    /// The same for 24x7 instruments, whose day starts at the configured roll.
    pub fn roll_day_24x7(&mut self, day: i64) {
        if day != self.day_24x7 {
            self.day_24x7 = day;
            self.realized_today_24x7 = 0;
        }
    }

    /// Realized P&L of the trading day: session instruments' day plus 24x7
    /// instruments' day (as of the last roll).
    pub fn realized_day(&self) -> i128 {
        self.realized_today + self.realized_today_24x7
    }

    /// Open orders' notional plus the positions marked to market (as reported).
    pub fn gross_exposure(&self) -> i128 {
        self.open_notional + self.marked_exposure
    }

    /// The trading day's P&L as reported: realized today plus open unrealized.
    pub fn daily_pnl(&self) -> i128 {
        self.realized_day() + self.unrealized
    }

    /// The order rate that applies in the current trading state.
    pub fn order_rate(&self) -> u32 {
        match self.state {
            TradingState::Throttled => (self.limits.orders_per_sec / 10).max(1),
            _ => self.limits.orders_per_sec,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_rate_then_refuses_then_refills() {
        let mut b = RateBucket::default();
        let t = UnixNanos(1_000_000_000_000);
        for _ in 0..10 {
            assert!(b.try_take(t, 10));
        }
        assert!(!b.try_take(t, 10), "11th in the same instant");
        assert!(!b.try_take(UnixNanos(t.0 + 99_999_999), 10));
        assert!(b.try_take(UnixNanos(t.0 + 100_000_000), 10), "one token per 100 ms");
        assert!(!b.try_take(UnixNanos(t.0 + 100_000_000), 10));
        let later = UnixNanos(t.0 + 10_000_000_000);
        for _ in 0..10 {
            assert!(b.try_take(later, 10), "a full burst after a quiet period");
        }
        assert!(!b.try_take(later, 10));
    }

    /// The wall clock stepping back by any amount costs at most one burst: the bucket
    /// refills at its rate from the new time, and never admits more than a burst plus
    /// the rate in any span of the new clock.
    #[test]
    fn a_backward_clock_step_costs_at_most_one_burst() {
        for rate in [1u32, 10, 1000, 100_000] {
            for back_secs in [1i64, 10, 3_600, 86_400 * 30] {
                let mut b = RateBucket::default();
                let t = UnixNanos(1_700_000_000_000_000_000);
                let mut taken = 0;
                while b.try_take(t, rate) {
                    taken += 1;
                }
                assert_eq!(taken, rate, "a full burst first");
                let back = UnixNanos(t.0 - back_secs * UnixNanos::NANOS_PER_SEC);
                let interval = UnixNanos::NANOS_PER_SEC / i64::from(rate);
                // At the stepped-back time: nothing more than the bucket allows...
                assert!(!b.try_take(back, rate), "rate {rate}, back {back_secs} s");
                // ...and one interval later, one token, as if the bucket had just emptied.
                assert!(
                    b.try_take(UnixNanos(back.0 + interval), rate),
                    "rate {rate}, back {back_secs} s: refilling from the new time"
                );
                // Over the next second of the new clock, at most a burst more.
                let mut more = 0;
                for k in 0..(2 * i64::from(rate)) {
                    if b.try_take(UnixNanos(back.0 + interval + k * interval / 2), rate) {
                        more += 1;
                    }
                }
                assert!(more <= rate + 1, "rate {rate}: {more} in a second");
            }
        }
    }
}
