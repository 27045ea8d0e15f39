//! Order-flow rules, per account, in constant time per event: minute windows of
//! orders, cancellations and fills, the day's distinct symbols, order size and value,
//! session, order-to-trade ratio, and a layering pattern (many orders on one side
//! cancelled shortly after a fill on the other).

use super::config::Thresholds;
use super::window::MinuteWindow;
use crate::anomaly::Rule;
use crate::ids::InstrumentId;
use crate::orders::{
    CancelReason, Order, OrderEvent, OrderEventData, OrderEventKind, OrderManager, Reject, VALUE_SCALE,
};
use crate::session::TradingSession;
use crate::side::Side;
use crate::time::UnixNanos;

/// What a rule saw: (rule, instrument, observed, threshold, scale).
pub type Finding = (Rule, Option<InstrumentId>, i64, i64, u8);

/// What order-flow rules need to know of an instrument.
#[derive(Debug, Clone)]
pub struct InstrumentInfo {
    pub price_scale: u8,
    /// Tick size (price units): the smallest move, a floor under the price-jump sigma.
    pub tick: i64,
    pub qty_scale: u8,
    pub session: TradingSession,
}

#[derive(Debug, Clone, Default)]
pub struct AccountFlow {
    orders: MinuteWindow,
    cancels: MinuteWindow,
    fills: MinuteWindow,
    /// The trading day `symbols` counts, per the instrument's time zone.
    day: i64,
    /// One bit per instrument traded today.
    symbols: Vec<u64>,
    symbol_count: u32,
    /// The last fill: its side and time.
    last_fill: Option<(Side, UnixNanos)>,
    /// Opposite-side cancellations since it.
    opposite_cancels: u32,
}

impl AccountFlow {
    pub fn new(instruments: usize) -> Self {
        Self {
            symbols: vec![0; instruments.div_ceil(64)],
            ..Self::default()
        }
    }

    fn mark_symbol(&mut self, id: InstrumentId, day: i64) -> u32 {
        if day != self.day {
            self.day = day;
            self.symbols.iter_mut().for_each(|w| *w = 0);
            self.symbol_count = 0;
        }
        let (word, bit) = (id.index() / 64, 1u64 << (id.index() % 64));
        if let Some(w) = self.symbols.get_mut(word) {
            if *w & bit == 0 {
                *w |= bit;
                self.symbol_count += 1;
            }
        }
        self.symbol_count
    }
}

/// `qty` (at `scale` decimals) at [`VALUE_SCALE`].
fn qty_value(qty: i64, scale: u8) -> i64 {
    let up = u32::from(VALUE_SCALE.saturating_sub(scale));
    let down = u32::from(scale.saturating_sub(VALUE_SCALE));
    qty.saturating_mul(10i64.saturating_pow(up)) / 10i64.saturating_pow(down)
}

/// Runs the rules over one event; findings go to `out`.
pub fn observe(
    t: &Thresholds,
    flow: &mut AccountFlow,
    info: &[InstrumentInfo],
    manager: &OrderManager,
    e: &OrderEvent,
    out: &mut impl FnMut(Finding),
) {
    match &e.data {
        OrderEventData::Order {
            kind: OrderEventKind::Accepted,
            order,
        } if e.request != 0 => accepted(t, flow, info, manager, order, e.at, out),
        OrderEventData::Rejected {
            reject: Reject::MarketClosed,
            instrument,
            ..
        } => out((Rule::OutsideSession, *instrument, 1, 0, 0)),
        OrderEventData::Order {
            kind: OrderEventKind::Cancelled(CancelReason::User | CancelReason::Mass),
            order,
        } => cancelled(t, flow, order, e.at, out),
        OrderEventData::Fill(f) => {
            flow.fills.add(e.at, 1);
            flow.last_fill = Some((f.side, e.at));
            flow.opposite_cancels = 0;
        }
        _ => {}
    }
}

/// An order the account sent was accepted: its rate, size, value, the day's symbols
/// and the order-to-trade ratio.
fn accepted(
    t: &Thresholds,
    flow: &mut AccountFlow,
    info: &[InstrumentInfo],
    manager: &OrderManager,
    order: &Order,
    at: UnixNanos,
    out: &mut impl FnMut(Finding),
) {
    let id = order.instrument;
    let orders = flow.orders.add(at, 1);
    if orders > t.max_orders_per_min {
        out((Rule::OrderRate, None, orders.into(), t.max_orders_per_min.into(), 0));
    }
    let Some(i) = info.get(id.index()) else { return };
    order_size(t, i, manager, order, out);
    // The trading day: the session's local day; 24x7 instruments roll at the
    // order path's configured time.
    let day = match i.session {
        TradingSession::Always => manager.day_clock().day_24x7(at.0),
        TradingSession::Daily { .. } => i.session.local_day(at),
    };
    let symbols = flow.mark_symbol(id, day);
    if symbols > t.max_symbols_per_day {
        out((
            Rule::SymbolSpread,
            Some(id),
            symbols.into(),
            t.max_symbols_per_day.into(),
            0,
        ));
    }
    let fills = flow.fills.count(at).max(1);
    if orders >= t.order_to_trade_min_orders && orders > t.max_orders_per_fill.saturating_mul(fills) {
        out((
            Rule::OrderToTrade,
            None,
            i64::from(orders / fills),
            t.max_orders_per_fill.into(),
            0,
        ));
    }
}

/// One order's quantity and notional against the large-order thresholds.
fn order_size(
    t: &Thresholds,
    i: &InstrumentInfo,
    manager: &OrderManager,
    order: &Order,
    out: &mut impl FnMut(Finding),
) {
    let id = order.instrument;
    let qty = qty_value(order.qty.0, i.qty_scale);
    if qty > t.max_order_qty {
        out((Rule::LargeQty, Some(id), qty, t.max_order_qty, VALUE_SCALE));
    }
    let notional = manager.notional(id, order.notional_price, order.qty);
    if notional > i128::from(t.max_order_notional) {
        let observed = i64::try_from(notional).unwrap_or(i64::MAX);
        out((
            Rule::LargeNotional,
            Some(id),
            observed,
            t.max_order_notional,
            VALUE_SCALE,
        ));
    }
}

/// The account cancelled an order: its cancel rate, and layering (cancels on one
/// side shortly after a fill on the other).
fn cancelled(t: &Thresholds, flow: &mut AccountFlow, order: &Order, at: UnixNanos, out: &mut impl FnMut(Finding)) {
    let cancels = flow.cancels.add(at, 1);
    if cancels > t.max_cancels_per_min {
        out((Rule::CancelRate, None, cancels.into(), t.max_cancels_per_min.into(), 0));
    }
    let Some((side, filled_at)) = flow.last_fill else {
        return;
    };
    if order.side != side && at.0.saturating_sub(filled_at.0) <= t.layering_window_ns {
        flow.opposite_cancels += 1;
        if flow.opposite_cancels >= t.layering_cancels {
            out((
                Rule::Layering,
                Some(order.instrument),
                flow.opposite_cancels.into(),
                t.layering_cancels.into(),
                0,
            ));
            flow.opposite_cancels = 0;
        }
    }
}
