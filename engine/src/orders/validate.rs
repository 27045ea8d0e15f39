//! Order-shape validation: whether an order is well formed and may trade at all,
//! before any limit is looked at. The account and instrument exist, the instrument is
//! this engine's (`cluster.instruments`), and they are tradable now (kill switches, a blocked account, the instrument's session); the quantity fits
//! the lot, the prices the tick and the order type, the time in force the type; a
//! paper order's market data is live. Then, after pre-trade risk
//! ([`super::risk::pretrade`]), the client order id is unique among open orders.
//!
//! Everything here reads state and changes none; each check is constant time. The
//! order of the checks is the contract (an order wrong in several ways gets the code
//! of the first one it fails): [`OrderManager::check_new`] composes them.

use crate::quality::DataQuality;
use crate::time::UnixNanos;

use super::client_ids::ClientKey;
use super::command::{Command, NewOrder};
use super::manager::{InstrumentRules, MarketRef, OrderManager};
use super::reject::Reject;
use super::risk::{AccountRisk, TradingState};
use super::types::{OrderType, TimeInForce, VenueKind};

impl OrderManager {
    /// The account and instrument exist and may trade now, the order's shape fits the
    /// instrument, and a paper order's market data is live. Returns the instrument's
    /// market, which the risk checks read.
    pub(super) fn validate_order(&self, cmd: &Command, new: &NewOrder) -> Result<MarketRef, Reject> {
        let acct = self.accounts.get(cmd.account.index()).ok_or(Reject::UnknownAccount)?;
        let rules = self
            .rules
            .get(new.instrument.index())
            .ok_or(Reject::UnknownInstrument)?;
        if self.owned.get(new.instrument.index()) != Some(&true) {
            return Err(Reject::InstrumentNotOnThisEngine);
        }
        self.check_tradable(acct, new, rules, cmd.at)?;
        check_shape(new, rules, cmd.at)?;
        let market = self.markets.get(new.instrument.index()).copied().unwrap_or_default();
        check_market_data(rules, &market)?;
        Ok(market)
    }

    /// No kill switch covers the order, the account is not blocked, and the
    /// instrument's session is open.
    fn check_tradable(
        &self,
        acct: &AccountRisk,
        new: &NewOrder,
        rules: &InstrumentRules,
        at: UnixNanos,
    ) -> Result<(), Reject> {
        if self.global_kill || acct.killed || self.instrument_kill.get(new.instrument.index()) == Some(&true) {
            return Err(Reject::KillSwitch);
        }
        if acct.state == TradingState::Blocked {
            return Err(Reject::AccountBlocked);
        }
        if !rules.session.is_open(at) {
            return Err(Reject::MarketClosed);
        }
        Ok(())
    }

    /// The client order id is not one of the account's open orders'.
    pub(super) fn check_unique_client_id(&self, cmd: &Command, new: &NewOrder, key: ClientKey) -> Result<(), Reject> {
        if self.open_client_order(key, cmd.account, &new.client_id).is_some() {
            return Err(Reject::DuplicateClientOrderId);
        }
        Ok(())
    }
}

/// The order's own shape: quantity, prices, time in force.
// Inlined: its one caller is the new-order check; left to the compiler, whether it
// was inlined changed with unrelated edits (~23 instructions a new order either way).
#[inline]
fn check_shape(new: &NewOrder, rules: &InstrumentRules, at: UnixNanos) -> Result<(), Reject> {
    check_qty(new, rules)?;
    check_prices(new, rules)?;
    check_tif(new, at)
}

/// A positive quantity, a multiple of the lot.
fn check_qty(new: &NewOrder, rules: &InstrumentRules) -> Result<(), Reject> {
    if new.qty.0 <= 0 {
        return Err(Reject::InvalidQty);
    }
    if rules.lot.0 > 0 && new.qty.0 % rules.lot.0 != 0 {
        return Err(Reject::LotSize);
    }
    Ok(())
}

/// A limit price exactly when the type has one, a stop price exactly when the type
/// has one, both positive and on the tick.
fn check_prices(new: &NewOrder, rules: &InstrumentRules) -> Result<(), Reject> {
    match (new.kind.has_limit_price(), new.price.0) {
        (true, p) if p < 0 => return Err(Reject::InvalidPrice),
        (true, 0) => return Err(Reject::MissingPrice),
        (false, p) if p != 0 => return Err(Reject::UnexpectedPrice),
        _ => {}
    }
    let tick = rules.tick.0;
    if new.kind.has_stop_price() {
        let stop = new.stop_price.0;
        if stop == 0 {
            return Err(Reject::MissingStopPrice);
        }
        if stop < 0 {
            return Err(Reject::InvalidPrice);
        }
        if tick > 0 && stop % tick != 0 {
            return Err(Reject::TickSize);
        }
    } else if new.stop_price.0 != 0 {
        return Err(Reject::UnexpectedPrice);
    }
    if new.kind.has_limit_price() && tick > 0 && new.price.0 % tick != 0 {
        return Err(Reject::TickSize);
    }
    Ok(())
}

/// GTD in the future; market orders immediate only; post-only on resting limit
/// orders only.
fn check_tif(new: &NewOrder, at: UnixNanos) -> Result<(), Reject> {
    let market_like = matches!(new.kind, OrderType::Market);
    match new.tif {
        TimeInForce::Gtd(t) if t <= at => return Err(Reject::InvalidTif),
        TimeInForce::Gtc | TimeInForce::Day | TimeInForce::Gtd(_) if market_like => return Err(Reject::InvalidTif),
        _ => {}
    }
    if new.post_only && (new.kind != OrderType::Limit || new.tif.is_immediate()) {
        return Err(Reject::InvalidTif);
    }
    Ok(())
}

/// Paper orders fill against the feed and take their reference from it: not while it
/// is not LIVE (SPEC 8). After the order's own shape, before anything that reads the
/// market or takes a rate token.
fn check_market_data(rules: &InstrumentRules, market: &MarketRef) -> Result<(), Reject> {
    if rules.venue == VenueKind::Paper && market.quality != DataQuality::Live {
        return Err(Reject::MarketDataUnavailable);
    }
    Ok(())
}
