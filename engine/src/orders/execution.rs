//! Execution: how accepted orders trade. The internal venue matches an incoming order
//! against resting orders in price-time priority (with self-trade prevention); the
//! paper venue sweeps the feed's visible depth on entry, level by level like the venue
//! would, within the order's limit and the price collar, and resting paper orders fill
//! when a later quote reaches them or a trade prints through their price. Nothing
//! fills on the paper venue while the instrument's data is not LIVE.
//! Stops wait for the last trade price to reach them. Every fill updates the order,
//! the position and the account's risk usage in the same step, and is reported.
//!
//! Quantities never overfill: each fill is the minimum of what both sides have left,
//! and a paper fill from a venue trade is taken at most once per (order, trade id).

use crate::book::Level;
use crate::fixed::{Price, Qty};
use crate::ids::InstrumentId;
use crate::quality::DataQuality;
use crate::side::{Aggressor, Side};
use crate::tick::{BookFlags, Tick, TickData};
use crate::time::UnixNanos;

use super::command::NewOrder;
use super::context::{Depth, Mtm, SweepEnd};
use super::event::{CancelReason, Fill, Liquidity, OrderEventData, OrderEventKind};
use super::manager::OrderManager;
use super::queue_book::{crosses, QueueBook};
use super::reject::Reject;
use super::step::Input;
use super::types::{AccountId, Order, OrderId, OrderStatus, OrderType, Placement, VenueKind};

/// The limit an order trades with now: `None` trades at any price.
/// Whether `p` is further from the reference than the collar allows, on the side
/// adverse to an order on `side`.
fn beyond_collar(side: Side, p: Price, reference: Option<Price>, collar_bps: Option<u32>) -> bool {
    let (Some(r), Some(bps)) = (reference, collar_bps) else {
        return false;
    };
    let adverse = match side {
        Side::Buy => i128::from(p.0) - i128::from(r.0),
        Side::Sell => i128::from(r.0) - i128::from(p.0),
    };
    adverse * 10_000 > i128::from(bps) * i128::from(r.0)
}

fn effective_limit(o: &Order) -> Option<Price> {
    o.kind.has_limit_price().then_some(o.price)
}

/// What matching reads of the incoming order, taken from its pool slot once per trade
/// (instead of copying the whole order).
#[derive(Clone, Copy)]
struct Taker {
    id: OrderId,
    account: AccountId,
    instrument: InstrumentId,
    side: Side,
    leaves: Qty,
}

/// Has the last trade reached a stop order's trigger?
fn stop_hit(o: &Order, last: Price) -> bool {
    last.0 > 0
        && match o.side {
            Side::Buy => last >= o.stop_price,
            Side::Sell => last <= o.stop_price,
        }
}

impl OrderManager {
    /// Post-only, fill-or-kill and market-order liquidity rules against the book the
    /// order would meet right now.
    pub(super) fn check_liquidity(&self, account: AccountId, new: &NewOrder) -> Result<(), Reject> {
        let limit = match new.kind {
            OrderType::Limit => Some(new.price),
            OrderType::Market => None,
            OrderType::Stop | OrderType::StopLimit => return Ok(()),
        };
        let Some(rules) = self.rules.get(new.instrument.index()) else {
            return Err(Reject::UnknownInstrument);
        };
        let (best, available) = match rules.venue {
            VenueKind::Internal => {
                let Some(book) = self.books.get(new.instrument.index()) else {
                    return Err(Reject::UnknownInstrument);
                };
                (
                    book.best(new.side.opposite()).map(|l| l.price),
                    book.crossing_qty(new.side, limit, new.qty),
                )
            }
            VenueKind::Paper => {
                let depth = self.depth_for(account, new.instrument, new.side, limit);
                if new.kind == OrderType::Market && depth.levels().is_empty() && depth.end == SweepEnd::Collar {
                    // Liquidity exists, but only beyond the collar.
                    return Err(Reject::PriceCollar);
                }
                // Every captured level reaches the limit.
                let best = depth.levels().first().map(|l| l.0);
                (best, depth.total())
            }
        };
        if new.post_only && best.is_some_and(|p| crosses(new.side, limit, p)) {
            return Err(Reject::PostOnlyWouldTrade);
        }
        if new.kind == OrderType::Market && best.is_none() {
            return Err(Reject::NoLiquidity);
        }
        if new.tif == super::types::TimeInForce::Fok && available.0 < new.qty.0 {
            return Err(Reject::FokUnfillable);
        }
        Ok(())
    }

    /// Counts the order's remaining notional in its account's exposure.
    pub(super) fn reserve(&mut self, id: OrderId) {
        let Some(o) = self.pool.get_mut(id) else { return };
        let amount = match self.rules.get(o.instrument.index()) {
            Some(r) => r.to_value.of(i128::from(o.notional_price.0) * i128::from(o.leaves().0)),
            None => 0,
        };
        o.reserved = amount;
        if let Some(a) = self.accounts.get_mut(o.account.index()) {
            a.open_notional += amount;
        }
    }

    /// Releases exactly what [`reserve`](Self::reserve) counted.
    pub(super) fn unreserve(&mut self, id: OrderId) {
        let Some(o) = self.pool.get_mut(id) else { return };
        let (account, amount) = (o.account, o.reserved);
        o.reserved = 0;
        if let Some(a) = self.accounts.get_mut(account.index()) {
            a.open_notional -= amount;
        }
    }

    pub(super) fn touch(&mut self, instrument: InstrumentId, side: Side, price: Price) {
        if self
            .rules
            .get(instrument.index())
            .is_some_and(|r| r.venue == VenueKind::Internal)
            && !self.touched.contains(&(instrument, side, price))
        {
            self.touched.push((instrument, side, price));
        }
    }

    /// Takes a working order off its book or stop list.
    pub(super) fn unrest(&mut self, id: OrderId) {
        let Some(o) = self.pool.get_mut(id) else { return };
        let (place, instrument, side, price, leaves) = (o.place, o.instrument, o.side, o.price, o.leaves());
        o.place = Placement::None;
        match place {
            Placement::Book => {
                if let Some(book) = self.books.get_mut(instrument.index()) {
                    book.remove(&mut self.links, side, price, id, leaves);
                }
                self.touch(instrument, side, price);
            }
            Placement::Stops => {
                if let Some(stops) = self.stops.get_mut(instrument.index()) {
                    if let Some(i) = stops.iter().position(|&s| s == id) {
                        stops.swap_remove(i);
                    }
                }
            }
            Placement::None => {}
        }
    }

    /// Ends an order: off the book, reservation released, client id free again.
    pub(super) fn finish(&mut self, id: OrderId, status: OrderStatus, kind: OrderEventKind, at: UnixNanos) {
        self.unrest(id);
        self.unreserve(id);
        let Some(o) = self.pool.get_mut(id) else { return };
        o.status = status;
        o.updated = at;
        let (account, client_id) = (o.account, o.client_id);
        if let Some(a) = self.accounts.get_mut(account.index()) {
            a.open_orders = a.open_orders.saturating_sub(1);
        }
        let key = self.client_ids.key(account, &client_id);
        self.client_ids.remove(key, super::pool::slot_of(id));
        self.emit_order(kind, id, at);
        self.pool.release(id);
    }

    pub(super) fn cancel(&mut self, id: OrderId, reason: CancelReason, at: UnixNanos) {
        self.finish(id, OrderStatus::Cancelled, OrderEventKind::Cancelled(reason), at);
    }

    /// Executes what can execute now and rests or cancels the rest.
    pub(super) fn work(&mut self, id: OrderId, at: UnixNanos) {
        let Some(o) = self.pool.get(id) else { return };
        let instrument = o.instrument;
        if !o.triggered {
            let last = self.markets.get(instrument.index()).map_or(Price(0), |m| m.last);
            if !stop_hit(o, last) {
                if let Some(stops) = self.stops.get_mut(instrument.index()) {
                    stops.push(id);
                }
                if let Some(order) = self.pool.get_mut(id) {
                    order.place = Placement::Stops;
                }
                return;
            }
            if let Some(order) = self.pool.get_mut(id) {
                order.triggered = true;
                order.updated = at;
            }
            self.emit_order(OrderEventKind::Triggered, id, at);
        }
        let reason = match self.rules.get(instrument.index()).map(|r| r.venue) {
            Some(VenueKind::Internal) => {
                self.match_internal(id, at);
                CancelReason::Unfilled
            }
            Some(VenueKind::Paper) => self.match_paper_entry(id, at),
            None => CancelReason::Unfilled,
        };
        let Some(o) = self.pool.get_mut(id) else { return };
        if !o.status.is_open() {
            return;
        }
        if !o.kind.has_limit_price() || o.tif.is_immediate() {
            self.cancel(id, reason, at);
            return;
        }
        o.place = Placement::Book;
        let (side, price, leaves) = (o.side, o.price, o.leaves());
        if let Some(book) = self.books.get_mut(instrument.index()) {
            book.push(&mut self.links, side, price, id, leaves);
        }
        self.touch(instrument, side, price);
    }

    /// Internal venue: trade the incoming order against resting orders.
    fn match_internal(&mut self, id: OrderId, at: UnixNanos) {
        loop {
            let Some(o) = self.pool.get(id) else { return };
            if !o.status.is_open() || o.leaves().0 == 0 {
                return;
            }
            let taker = Taker {
                id,
                account: o.account,
                instrument: o.instrument,
                side: o.side,
                leaves: o.leaves(),
            };
            let Some((price, rid)) = self.best_crossing(o) else {
                return;
            };
            let Some(r) = self.pool.get(rid) else { return };
            if r.account == taker.account {
                if self.prevent_self_trade(id, rid, taker.account, at) {
                    continue;
                }
                return;
            }
            let resting_leaves = r.leaves();
            if !self.trade_internal(taker, resting_leaves, rid, price, at) {
                return;
            }
        }
    }

    /// The price of the best opposite level and the first order in its queue, if `o`
    /// crosses it.
    fn best_crossing(&self, o: &Order) -> Option<(Price, OrderId)> {
        let level = self.books.get(o.instrument.index())?.best(o.side.opposite())?;
        if !crosses(o.side, effective_limit(o), level.price) {
            return None;
        }
        Some((level.price, QueueBook::head(level)?))
    }

    /// The incoming and the resting order are the same account's: cancels per its
    /// self-trade mode. Returns whether the incoming order keeps matching.
    fn prevent_self_trade(&mut self, incoming: OrderId, resting: OrderId, account: AccountId, at: UnixNanos) -> bool {
        let mode = self.accounts.get(account.index()).map(|a| a.limits.self_trade);
        match mode {
            Some(super::risk::SelfTradeMode::CancelOldest) => {
                self.cancel(resting, CancelReason::SelfTrade, at);
                true
            }
            Some(super::risk::SelfTradeMode::CancelBoth) => {
                self.cancel(resting, CancelReason::SelfTrade, at);
                self.cancel(incoming, CancelReason::SelfTrade, at);
                false
            }
            _ => {
                self.cancel(incoming, CancelReason::SelfTrade, at);
                false
            }
        }
    }

    /// One trade between incoming `o` and the resting order `rid` (with
    /// `resting_leaves` left) at `price`: the resting order's queue, both fills, the
    /// last price, the public trade. False when the instrument is unknown.
    fn trade_internal(&mut self, o: Taker, resting_leaves: Qty, rid: OrderId, price: Price, at: UnixNanos) -> bool {
        let qty = Qty(o.leaves.0.min(resting_leaves.0));
        let trade_id = match self.trade_seq.get_mut(o.instrument.index()) {
            Some(t) => {
                *t += 1;
                *t
            }
            None => return false,
        };
        let opp = o.side.opposite();
        // The resting order's part: off the queue if done, else it keeps its place.
        if let Some(book) = self.books.get_mut(o.instrument.index()) {
            if qty == resting_leaves {
                book.remove(&mut self.links, opp, price, rid, qty);
                if let Some(rr) = self.pool.get_mut(rid) {
                    rr.place = Placement::None;
                }
            } else {
                book.reduce(opp, price, qty);
            }
        }
        self.touch(o.instrument, opp, price);
        self.fill(rid, price, qty, Liquidity::Maker, trade_id, at);
        self.fill(o.id, price, qty, Liquidity::Taker, trade_id, at);
        if let Some(m) = self.markets.get_mut(o.instrument.index()) {
            m.last = price;
        }
        self.remark(o.instrument);
        self.publish_trade(o.instrument, o.side, price, qty, trade_id, at);
        true
    }

    /// The internal venue's public trade, and its stops to check.
    fn publish_trade(
        &mut self,
        instrument: InstrumentId,
        taker: Side,
        price: Price,
        qty: Qty,
        trade_id: u64,
        at: UnixNanos,
    ) {
        self.ticks.push(Tick {
            exchange_ts: at,
            recv_ts: at,
            instrument,
            data: TickData::Trade {
                price,
                qty,
                trade_id,
                aggressor: match taker {
                    Side::Buy => Aggressor::Buy,
                    Side::Sell => Aggressor::Sell,
                },
            },
        });
        if self.stop_checks.last() != Some(&instrument) {
            self.stop_checks.push(instrument);
        }
    }

    /// The depth an order of `account` on `side` meets now: the current command's
    /// captured depth when it is for this instrument and side, else the best
    /// bid/offer alone (stops triggered by a trade, tests without a book).
    pub(super) fn depth_for(
        &self,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        limit: Option<Price>,
    ) -> Depth {
        if self.depth.key == Some((instrument, side)) {
            return self.depth;
        }
        self.capture_depth(account, instrument, side, limit, &[])
    }

    /// Captures the levels an order would take: the market reference's best (what
    /// earlier paper fills left of it), then the visible book's worse levels, as long
    /// as they reach `limit`, stay within the account's price collar around the
    /// reference price (on the adverse side), and fit [`super::SWEEP_LEVELS`].
    /// Allocation-free.
    pub(super) fn capture_depth(
        &self,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        limit: Option<Price>,
        book: &[Level],
    ) -> Depth {
        let mut d = Depth::new(instrument, side);
        let Some(m) = self.markets.get(instrument.index()).copied() else {
            return d;
        };
        let (top, top_qty) = match side {
            Side::Buy => (m.ask, m.ask_qty),
            Side::Sell => (m.bid, m.bid_qty),
        };
        let collar = self.accounts.get(account.index()).map(|a| a.limits.price_collar_bps);
        let first = if top_qty.0 > 0 {
            Some(top)
        } else {
            book.first().map(|l| l.price)
        };
        let reference = m.reference().or(first);
        let beyond = |p: Price| beyond_collar(side, p, reference, collar);
        // Adds a level; false when the capture ends here.
        let mut add = |p: Price, q: Qty| -> bool {
            if q.0 <= 0 {
                return true;
            }
            d.end = if !crosses(side, limit, p) {
                SweepEnd::Limit
            } else if beyond(p) {
                SweepEnd::Collar
            } else if d.is_full() {
                SweepEnd::Levels
            } else {
                d.push(p, q);
                return true;
            };
            false
        };
        if top_qty.0 > 0 && !add(top, top_qty) {
            return d;
        }
        for l in book {
            // Levels at or better than the reference's best are in it already (or
            // were taken by earlier paper fills since the last quote).
            let worse = match side {
                Side::Buy => l.price > top,
                Side::Sell => l.price < top,
            };
            if top.0 != 0 && !worse {
                continue;
            }
            if !add(l.price, l.qty) {
                return d;
            }
        }
        d.end = SweepEnd::Book;
        d
    }

    /// Paper venue, on entry: sweep the visible depth level by level. Returns why a
    /// remainder that cannot rest is cancelled.
    fn match_paper_entry(&mut self, id: OrderId, at: UnixNanos) -> CancelReason {
        let Some(o) = self.pool.get(id).copied() else {
            return CancelReason::Unfilled;
        };
        let Some(m) = self.markets.get(o.instrument.index()).copied() else {
            return CancelReason::Unfilled;
        };
        if m.quality != DataQuality::Live {
            return CancelReason::Unfilled;
        }
        let limit = effective_limit(&o);
        let depth = self.depth_for(o.account, o.instrument, o.side, limit);
        let mut left = o.leaves().0;
        // The first level with something left after the sweep.
        let mut rest: Option<(Price, Qty)> = None;
        let mut last_price = None;
        for &(price, available) in depth.levels() {
            if left > 0 && crosses(o.side, limit, price) {
                let qty = left.min(available.0);
                left -= qty;
                last_price = Some(price);
                self.fill(id, price, Qty(qty), Liquidity::Taker, 0, at);
                if qty < available.0 {
                    rest = Some((price, Qty(available.0 - qty)));
                    break;
                }
            } else {
                rest = Some((price, available));
                break;
            }
        }
        // Consume what was taken until the next quote refreshes the best: the
        // reference's best becomes the first level left (the book's worse levels
        // follow it in the next capture).
        if let Some(taken_to) = last_price {
            let (p, q) = rest.unwrap_or((taken_to, Qty(0)));
            if let Some(m) = self.markets.get_mut(o.instrument.index()) {
                match o.side {
                    Side::Buy => (m.ask, m.ask_qty) = (p, q),
                    Side::Sell => (m.bid, m.bid_qty) = (p, q),
                }
            }
            self.remark(o.instrument);
        }
        if left == 0 || rest.is_some() {
            return CancelReason::Unfilled;
        }
        match depth.end {
            SweepEnd::Collar => CancelReason::PriceCollar,
            SweepEnd::Levels => CancelReason::DepthLimit,
            SweepEnd::Book | SweepEnd::Limit => CancelReason::Unfilled,
        }
    }

    /// Books one fill of `qty` at `price` on order `id`.
    pub(super) fn fill(
        &mut self,
        id: OrderId,
        price: Price,
        qty: Qty,
        liquidity: Liquidity,
        trade_id: u64,
        at: UnixNanos,
    ) {
        let Some(before) = self.pool.get(id) else {
            return;
        };
        let qty = Qty(qty.0.min(before.leaves().0));
        if qty.0 <= 0 {
            return;
        }
        self.unreserve(id);
        let Some(o) = self.pool.get_mut(id) else { return };
        o.filled = Qty(o.filled.0 + qty.0);
        o.fill_cost += i128::from(price.0) * i128::from(qty.0);
        o.last_trade = o.last_trade.max(trade_id);
        o.updated = at;
        let done = o.leaves().0 == 0;
        o.status = if done {
            OrderStatus::Filled
        } else {
            OrderStatus::PartiallyFilled
        };
        let (account, instrument, side, client_id) = (o.account, o.instrument, o.side, o.client_id);
        self.fill_seq += 1;
        self.emit(
            account,
            at,
            OrderEventData::Fill(Fill {
                id: super::shard::fill_id(self.pool.shard(), self.fill_seq),
                order: id,
                client_id,
                account,
                instrument,
                side,
                price,
                qty,
                liquidity,
                trade_id,
                at,
            }),
        );
        self.book_position(account, instrument, side, price, qty, at);
        if done {
            self.finish(id, OrderStatus::Filled, OrderEventKind::Filled, at);
        } else {
            self.reserve(id);
            self.emit_order(OrderEventKind::PartiallyFilled, id, at);
        }
    }

    fn book_position(
        &mut self,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        price: Price,
        qty: Qty,
        at: UnixNanos,
    ) {
        let Some(i) = self.position_index(account, instrument) else {
            return;
        };
        let day = self.trading_day(at);
        let day_24x7 = self.clock.day_24x7(at.0);
        let always = self
            .rules
            .get(instrument.index())
            .is_some_and(|r| r.session == crate::session::TradingSession::Always);
        let Some(p) = self.positions.get_mut(i) else { return };
        let realized = p.apply(side, price, qty);
        let position = *p;
        let exposure = self.amount_value(instrument, position.cost.abs());
        let realized_value = self.amount_value(instrument, realized);
        let old = self.position_exposure.get(i).copied().unwrap_or(0);
        if let Some(e) = self.position_exposure.get_mut(i) {
            *e = exposure;
        }
        if let Some(a) = self.accounts.get_mut(account.index()) {
            if always {
                a.roll_day_24x7(day_24x7);
                a.realized_today_24x7 += realized_value;
            } else {
                a.roll_day(day);
                a.realized_today += realized_value;
            }
            a.position_exposure += exposure - old;
        }
        self.revalue(account, instrument);
        self.emit(account, at, OrderEventData::Position { instrument, position });
    }

    /// A new best bid/offer from the feed. Paper orders resting at or through the new
    /// opposite price fill at it, up to its displayed size, in time priority.
    pub fn on_quote(
        &mut self,
        instrument: InstrumentId,
        bid: Price,
        bid_qty: Qty,
        ask: Price,
        ask_qty: Qty,
        at: UnixNanos,
    ) {
        let market = self.market_before(instrument);
        let Some(m) = self.markets.get_mut(instrument.index()) else {
            return;
        };
        (m.bid, m.bid_qty, m.ask, m.ask_qty) = (bid, bid_qty, ask, ask_qty);
        let live = m.quality == DataQuality::Live;
        self.remark(instrument);
        // Resting paper orders never fill against data that is not LIVE.
        if !live || self.rules.get(instrument.index()).map(|r| r.venue) != Some(VenueKind::Paper) {
            return;
        }
        let before = self.event_count();
        if ask_qty.0 > 0 {
            self.fill_resting(instrument, Side::Buy, ask, ask_qty, None, at);
        }
        if bid_qty.0 > 0 {
            self.fill_resting(instrument, Side::Sell, bid, bid_qty, None, at);
        }
        self.finish_step(at);
        let input = Input::Quote {
            instrument,
            bid,
            bid_qty,
            ask,
            ask_qty,
            at,
        };
        self.record_step(input, market, before);
    }

    /// A trade from the feed: the last price (stops), and paper orders whose limit the
    /// trade printed through fill at their limit, up to the trade's size.
    pub fn on_trade(&mut self, instrument: InstrumentId, price: Price, qty: Qty, trade_id: u64, at: UnixNanos) {
        let market = self.market_before(instrument);
        let before = self.event_count();
        let Some(m) = self.markets.get_mut(instrument.index()) else {
            return;
        };
        m.last = price;
        let live = m.quality == DataQuality::Live;
        self.remark(instrument);
        let paper = self.rules.get(instrument.index()).map(|r| r.venue) == Some(VenueKind::Paper);
        if paper && live {
            // Strictly through: a buy limit above the print, a sell limit below it.
            let tick = self.rules.get(instrument.index()).map_or(1, |r| r.tick.0.max(1));
            self.fill_resting(instrument, Side::Buy, Price(price.0 + tick), qty, Some(trade_id), at);
            self.fill_resting(instrument, Side::Sell, Price(price.0 - tick), qty, Some(trade_id), at);
        }
        // Paper stops wait while the data is not LIVE (a later LIVE trade triggers
        // them); their fills would have nothing trustworthy to fill against.
        if (live || !paper) && self.stop_checks.last() != Some(&instrument) {
            self.stop_checks.push(instrument);
        }
        self.finish_step(at);
        let input = Input::Trade {
            instrument,
            price,
            qty,
            trade_id,
            at,
        };
        self.record_step(input, market, before);
    }

    /// Fills resting paper orders on `side` whose limit reaches `reach` (best first, in
    /// queue order) with up to `available` in total. With a trade id, fills happen at
    /// the order's limit and at most once per (order, trade); without, at `reach`.
    fn fill_resting(
        &mut self,
        instrument: InstrumentId,
        side: Side,
        reach: Price,
        available: Qty,
        trade: Option<u64>,
        at: UnixNanos,
    ) {
        let mut left = available.0;
        while left > 0 {
            let Some(book) = self.books.get(instrument.index()) else {
                return;
            };
            // Find the first order, best level first, that may still fill.
            let mut candidate = None;
            'levels: for level in book.levels(side) {
                if !crosses(side, Some(level.price), reach) {
                    break;
                }
                let mut next = QueueBook::head(level);
                while let Some(oid) = next {
                    let fresh = self
                        .pool
                        .get(oid)
                        .is_some_and(|o| trade.is_none_or(|t| o.last_trade < t || t == 0));
                    if fresh {
                        candidate = Some((oid, level.price));
                        break 'levels;
                    }
                    next = QueueBook::next(&self.links, oid);
                }
            }
            let Some((oid, level_price)) = candidate else { return };
            let Some(o) = self.pool.get(oid).copied() else { return };
            let qty = Qty(o.leaves().0.min(left));
            left -= qty.0;
            let price = if trade.is_some() { level_price } else { reach };
            if qty == o.leaves() {
                if let Some(book) = self.books.get_mut(instrument.index()) {
                    book.remove(&mut self.links, side, level_price, oid, qty);
                }
                if let Some(order) = self.pool.get_mut(oid) {
                    order.place = Placement::None;
                }
            } else if let Some(book) = self.books.get_mut(instrument.index()) {
                book.reduce(side, level_price, qty);
            }
            self.fill(oid, price, qty, Liquidity::Maker, trade.unwrap_or(0), at);
        }
    }

    /// Triggers the instrument's stops that the last price reached.
    fn check_stops(&mut self, instrument: InstrumentId, at: UnixNanos) {
        let last = self.markets.get(instrument.index()).map_or(Price(0), |m| m.last);
        let mut i = 0;
        loop {
            let Some(&id) = self.stops.get(instrument.index()).and_then(|s| s.get(i)) else {
                return;
            };
            let hit = self.pool.get(id).is_some_and(|o| stop_hit(o, last));
            if !hit {
                i += 1;
                continue;
            }
            if let Some(stops) = self.stops.get_mut(instrument.index()) {
                stops.swap_remove(i);
            }
            if let Some(o) = self.pool.get_mut(id) {
                o.place = Placement::None;
            }
            self.work(id, at);
        }
    }

    /// Ends a step: cascades stop triggers, then reports the internal books' changed
    /// levels as market data (`END_OF_BATCH` on each instrument's last change).
    pub(super) fn finish_step(&mut self, at: UnixNanos) {
        while let Some(instrument) = self.stop_checks.pop() {
            self.check_stops(instrument, at);
        }
        let n = self.touched.len();
        for k in 0..n {
            let Some(&(instrument, side, price)) = self.touched.get(k) else {
                continue;
            };
            let qty = self
                .books
                .get(instrument.index())
                .and_then(|b| b.level(side, price))
                .map_or(Qty(0), |l| l.qty);
            let last_for_instrument = !self.touched.iter().skip(k + 1).any(|t| t.0 == instrument);
            let flags = if last_for_instrument {
                BookFlags::END_OF_BATCH
            } else {
                BookFlags::NONE
            };
            self.ticks.push(Tick {
                exchange_ts: at,
                recv_ts: at,
                instrument,
                data: TickData::BookDelta {
                    side,
                    price,
                    qty,
                    update_id: 0,
                    flags,
                },
            });
            if last_for_instrument {
                self.refresh_internal_market(instrument);
            }
        }
        self.touched.clear();
    }

    /// After recovery: reports every internal-venue level as market data, so the
    /// engine's own book for the instrument starts from the recovered orders.
    pub fn republish_internal_books(&mut self, at: UnixNanos) {
        for (i, rules) in self.rules.iter().enumerate() {
            if rules.venue != VenueKind::Internal {
                continue;
            }
            let Some(book) = self.books.get(i) else { continue };
            for side in [Side::Buy, Side::Sell] {
                for level in book.levels(side) {
                    self.touched.push((InstrumentId(i as u32), side, level.price));
                }
            }
        }
        self.finish_step(at);
    }

    /// The internal venue's own best bid/offer is its market reference.
    fn refresh_internal_market(&mut self, instrument: InstrumentId) {
        let Some(book) = self.books.get(instrument.index()) else {
            return;
        };
        let (bid, ask) = (book.best(Side::Buy).copied(), book.best(Side::Sell).copied());
        if let Some(m) = self.markets.get_mut(instrument.index()) {
            (m.bid, m.bid_qty) = bid.map_or((Price(0), Qty(0)), |l| (l.price, l.qty));
            (m.ask, m.ask_qty) = ask.map_or((Price(0), Qty(0)), |l| (l.price, l.qty));
        }
        self.remark(instrument);
    }

    // ---- mark to market ----

    /// Re-marks the instrument's positions when its reference price moved: each
    /// account holding it has its sums adjusted by the difference (O(accounts), only
    /// when the reference changes; nothing walks orders).
    pub(super) fn remark(&mut self, instrument: InstrumentId) {
        let mark = self
            .markets
            .get(instrument.index())
            .and_then(|m| m.reference())
            .unwrap_or(Price(0));
        match self.marks.get_mut(instrument.index()) {
            Some(m) if *m != mark => *m = mark,
            _ => return,
        }
        for a in 0..self.accounts.len() {
            let account = AccountId(a as u32);
            let held = self
                .position_index(account, instrument)
                .and_then(|i| self.positions.get(i))
                .is_some_and(|p| p.qty != 0 || p.cost != 0);
            if held {
                self.revalue(account, instrument);
            }
        }
    }

    /// Brings one position's part of its account's marked sums up to date.
    pub(super) fn revalue(&mut self, account: AccountId, instrument: InstrumentId) {
        let Some(i) = self.position_index(account, instrument) else {
            return;
        };
        let Some(p) = self.positions.get(i).copied() else {
            return;
        };
        let mark = self.marks.get(instrument.index()).copied().unwrap_or(Price(0));
        let now = if mark.0 > 0 {
            Mtm {
                unrealized: self.amount_value(instrument, p.unrealized(mark)),
                exposure: self.amount_value(instrument, (i128::from(p.qty) * i128::from(mark.0)).abs()),
            }
        } else {
            // No reference price yet: at cost.
            Mtm {
                unrealized: 0,
                exposure: self.amount_value(instrument, p.cost.abs()),
            }
        };
        let Some(slot) = self.position_mtm.get_mut(i) else {
            return;
        };
        let old = std::mem::replace(slot, now);
        if let Some(sum) = self.account_mtm.get_mut(account.index()) {
            sum.unrealized += now.unrealized - old.unrealized;
            sum.exposure += now.exposure - old.exposure;
        }
    }

    /// Recomputes every mark and sum from the positions and market references (after
    /// a snapshot restore or recovery; the engine calls it when it takes the manager).
    pub fn revalue_all(&mut self) {
        self.position_mtm.iter_mut().for_each(|m| *m = Mtm::default());
        self.account_mtm.iter_mut().for_each(|m| *m = Mtm::default());
        for i in 0..self.marks.len() {
            let instrument = InstrumentId(i as u32);
            if let Some(m) = self.marks.get_mut(i) {
                // Force the re-mark below.
                *m = Price(-1);
            }
            self.remark(instrument);
        }
    }
}
