//! Pre-trade risk: the limits an order that passed validation (`super::super::validate`)
//! must stay within, checked in a fixed order: the account's order rate, the order's
//! own quantity, notional and price collar, then the account's open orders, reduce-only
//! rules, position, gross exposure (open orders plus positions marked to market) and
//! the trading day's loss. Every check reads running sums (constant time); only the
//! rate token is taken, and only when asked.

use crate::fixed::Price;
use crate::ids::AccountId;
use crate::side::Side;
use crate::time::UnixNanos;

use super::super::command::{Command, NewOrder};
use super::super::manager::{MarketRef, OrderManager};
use super::super::reject::Reject;
use super::super::types::OrderType;
use super::{AccountRisk, RiskLimits, TradingState};

impl OrderManager {
    /// Pre-trade risk for `new` against `market`. Returns the price its notional counts
    /// at (its limit, else the reference, else where it would trade now). Takes an
    /// order-rate token when `take_rate`; changes nothing else.
    pub(in crate::orders) fn check_risk(
        &mut self,
        cmd: &Command,
        new: &NewOrder,
        market: &MarketRef,
        take_rate: bool,
    ) -> Result<Price, Reject> {
        // Rates: after the structural checks, before the limits.
        self.check_order_rate(cmd, take_rate)?;
        let acct = self.accounts.get(cmd.account.index()).ok_or(Reject::UnknownAccount)?;
        let reference = market.reference();
        let price = notional_price(new, market, reference)?;
        let notional = self.check_order_limits(new, &acct.limits, reference, price)?;
        if acct.open_orders >= acct.limits.max_open_orders {
            return Err(Reject::MaxOpenOrders);
        }
        let reduces = self.check_position(cmd.account, acct, new)?;
        // An order that only reduces a position never adds exposure or loss.
        if !reduces {
            self.check_exposure(acct, cmd.at, notional)?;
        }
        Ok(price)
    }

    /// The account's order rate (a tenth of it while throttled): takes a token, or
    /// only looks whether one is there.
    fn check_order_rate(&mut self, cmd: &Command, take_rate: bool) -> Result<(), Reject> {
        let acct = self
            .accounts
            .get_mut(cmd.account.index())
            .ok_or(Reject::UnknownAccount)?;
        let rate = acct.order_rate();
        let allowed = if take_rate {
            acct.orders.try_take(cmd.at, rate)
        } else {
            acct.orders.available(cmd.at, rate)
        };
        if allowed {
            return Ok(());
        }
        Err(if acct.state == TradingState::Throttled {
            Reject::Throttled
        } else {
            Reject::OrderRate
        })
    }

    /// The order's own size, value and price against the account's per-order limits.
    /// Returns its notional (base currency, [`super::VALUE_SCALE`]).
    fn check_order_limits(
        &self,
        new: &NewOrder,
        limits: &RiskLimits,
        reference: Option<Price>,
        notional_price: Price,
    ) -> Result<i128, Reject> {
        if self.qty_value(new.instrument, i128::from(new.qty.0)) > limits.max_order_qty {
            return Err(Reject::MaxOrderQty);
        }
        let notional = self.notional(new.instrument, notional_price, new.qty);
        if notional > limits.max_order_notional {
            return Err(Reject::MaxOrderNotional);
        }
        check_collar(new, limits, reference)?;
        Ok(notional)
    }

    /// Reduce-only rules (the order's flag, the account's state) and the position
    /// limit, which counts the order as filled. Returns whether the order only reduces
    /// the account's position.
    fn check_position(&self, account: AccountId, acct: &AccountRisk, new: &NewOrder) -> Result<bool, Reject> {
        let pos = self
            .position_index(account, new.instrument)
            .and_then(|i| self.positions.get(i))
            .copied()
            .unwrap_or_default();
        let signed = match new.side {
            Side::Buy => i128::from(new.qty.0),
            Side::Sell => -i128::from(new.qty.0),
        };
        let reduces = pos.qty != 0 && (pos.qty > 0) != (signed > 0) && signed.abs() <= i128::from(pos.qty).abs();
        if (new.reduce_only || acct.state == TradingState::ReduceOnly) && !reduces {
            return Err(if new.reduce_only {
                Reject::ReduceOnlyWouldIncrease
            } else {
                Reject::ReduceOnlyState
            });
        }
        let after = (i128::from(pos.qty) + signed).abs();
        if self.qty_value(new.instrument, after) > acct.limits.max_position_qty && !reduces {
            return Err(Reject::PositionLimit);
        }
        Ok(reduces)
    }

    /// Gross exposure (open orders plus positions marked to market, the account's
    /// running sums) and the trading day's loss, for an order that adds `notional`.
    fn check_exposure(&self, acct: &AccountRisk, at: UnixNanos, notional: i128) -> Result<(), Reject> {
        let limits = &acct.limits;
        let mtm = self.mtm_now;
        if acct.open_notional + mtm.exposure + notional > limits.max_gross_exposure {
            return Err(Reject::BuyingPower);
        }
        if self.realized_today(acct, at) + mtm.unrealized <= -limits.daily_loss_limit {
            return Err(Reject::DailyLoss);
        }
        Ok(())
    }

    /// Realized today: session instruments' since the accounts' day began, 24x7
    /// instruments' since their day roll.
    fn realized_today(&self, acct: &AccountRisk, at: UnixNanos) -> i128 {
        let mut today = 0;
        if acct.day == self.trading_day(at) {
            today += acct.realized_today;
        }
        if acct.day_24x7 == self.clock.day_24x7(at.0) {
            today += acct.realized_today_24x7;
        }
        today
    }
}

/// The price an order's notional counts at: its limit; market and stop orders at the
/// reference price, or where they would trade now when there is none yet.
fn notional_price(new: &NewOrder, market: &MarketRef, reference: Option<Price>) -> Result<Price, Reject> {
    if new.kind.has_limit_price() {
        return Ok(new.price);
    }
    reference
        .or_else(|| market.opposite(new.side).map(|(p, _)| p))
        .ok_or(if new.kind == OrderType::Market {
            Reject::NoLiquidity
        } else {
            Reject::NoReferencePrice
        })
}

/// A limit price within the collar around the reference price (when there is one).
fn check_collar(new: &NewOrder, limits: &RiskLimits, reference: Option<Price>) -> Result<(), Reject> {
    let Some(r) = reference.filter(|_| new.kind.has_limit_price()) else {
        return Ok(());
    };
    let distance = i128::from((new.price.0 - r.0).abs()) * 10_000;
    if distance > i128::from(limits.price_collar_bps) * i128::from(r.0) {
        return Err(Reject::PriceCollar);
    }
    Ok(())
}
