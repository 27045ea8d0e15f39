//! JSON shapes of orders, fills, positions and risk, and the order request bodies.
//! Decimals are strings at the instrument's precision; ids are strings (they exceed
//! 2^53); times are microseconds since the epoch.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stocksblitz_engine::orders::{
    AccountId, AccountRisk, Fill, Order, OrderEvent, OrderEventData, OrderEventKind, OrderId, Position, RiskLimits,
    VALUE_SCALE,
};
use stocksblitz_engine::surveillance::Anomaly;
use stocksblitz_engine::{Decimal, Instrument, InstrumentRegistry, Price, UnixNanos};

use crate::dto::{micros, Dec};

/// `POST /api/v1/orders` and `/orders/test`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrderBody {
    pub symbol: String,
    pub side: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub qty: String,
    #[serde(default)]
    pub price: Option<String>,
    #[serde(default)]
    pub stop_price: Option<String>,
    #[serde(default)]
    pub time_in_force: Option<String>,
    /// GTD expiry, microseconds since the epoch.
    #[serde(default)]
    pub expire_time: Option<i64>,
    #[serde(default)]
    pub client_order_id: Option<String>,
    #[serde(default)]
    pub post_only: bool,
    #[serde(default)]
    pub reduce_only: bool,
}

/// `PATCH /api/v1/orders/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceBody {
    #[serde(default)]
    pub qty: Option<String>,
    #[serde(default)]
    pub price: Option<String>,
}

fn dec(m: i64, scale: u8) -> Dec {
    Dec(Decimal::new(m, scale))
}

fn time(t: UnixNanos) -> Option<i64> {
    micros(t)
}

#[derive(Serialize)]
pub struct OrderJson<'a> {
    pub order_id: String,
    pub client_order_id: &'a str,
    pub symbol: &'a str,
    pub side: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time_in_force: &'static str,
    pub expire_time: Option<i64>,
    pub price: Option<Dec>,
    pub stop_price: Option<Dec>,
    pub qty: Dec,
    pub filled_qty: Dec,
    pub leaves_qty: Dec,
    pub avg_fill_price: Option<Dec>,
    pub status: &'static str,
    pub post_only: bool,
    pub reduce_only: bool,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

impl<'a> OrderJson<'a> {
    pub fn new(o: &'a Order, i: &'a Instrument) -> Self {
        let (ps, qs) = (i.price_scale, i.qty_scale);
        let open = o.status.is_open();
        Self {
            order_id: o.id.0.to_string(),
            client_order_id: o.client_id.as_str(),
            symbol: &i.symbol,
            side: o.side.as_str(),
            kind: o.kind.as_str(),
            time_in_force: o.tif.as_str(),
            expire_time: match o.tif {
                stocksblitz_engine::orders::TimeInForce::Gtd(t) => time(t),
                _ => None,
            },
            price: o.kind.has_limit_price().then(|| dec(o.price.0, ps)),
            stop_price: o.kind.has_stop_price().then(|| dec(o.stop_price.0, ps)),
            qty: dec(o.qty.0, qs),
            filled_qty: dec(o.filled.0, qs),
            leaves_qty: dec(if open { o.leaves().0 } else { 0 }, qs),
            avg_fill_price: (o.filled.0 > 0).then(|| dec(o.average_fill_price().0, ps)),
            status: o.status.as_str(),
            post_only: o.post_only,
            reduce_only: o.reduce_only,
            created_at: time(o.created),
            updated_at: time(o.updated),
        }
    }
}

pub fn fill_json(f: &Fill, i: &Instrument) -> Value {
    json!({
        "fill_id": f.id.to_string(),
        "order_id": f.order.0.to_string(),
        "client_order_id": f.client_id.as_str(),
        "symbol": i.symbol,
        "side": f.side.as_str(),
        "price": dec(f.price.0, i.price_scale),
        "qty": dec(f.qty.0, i.qty_scale),
        "liquidity": f.liquidity.as_str(),
        "trade_id": f.trade_id.to_string(),
        "time": time(f.at),
    })
}

/// A price x qty amount (price scale + qty scale) as a decimal at the price scale.
fn amount(v: i128, i: &Instrument) -> Dec {
    let unit = 10i128.pow(u32::from(i.qty_scale));
    dec(
        (v / unit).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
        i.price_scale,
    )
}

pub fn position_json(p: &Position, i: &Instrument, mark: Option<Price>) -> Value {
    json!({
        "symbol": i.symbol,
        "qty": dec(p.qty, i.qty_scale),
        "avg_price": (p.qty != 0).then(|| dec(p.average_price().0, i.price_scale)),
        "realized_pnl": amount(p.realized, i),
        "unrealized_pnl": mark.map(|m| amount(p.unrealized(m), i)),
        "mark_price": mark.map(|m| dec(m.0, i.price_scale)),
        "currency": i.currency,
    })
}

fn value(v: i128) -> Dec {
    dec(v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64, VALUE_SCALE)
}

pub fn limits_json(l: &RiskLimits) -> Value {
    json!({
        "max_order_qty": value(l.max_order_qty),
        "max_order_notional": value(l.max_order_notional),
        "price_collar_bps": l.price_collar_bps,
        "max_open_orders": l.max_open_orders,
        "max_position_qty": value(l.max_position_qty),
        "max_gross_exposure": value(l.max_gross_exposure),
        "daily_loss_limit": value(l.daily_loss_limit),
        "orders_per_sec": l.orders_per_sec,
        "cancels_per_sec": l.cancels_per_sec,
        "self_trade": l.self_trade.as_str(),
    })
}

pub fn risk_json(r: &AccountRisk) -> Value {
    json!({
        "trading_state": r.state.as_str(),
        "kill_switch": r.killed,
        "limits": limits_json(&r.limits),
        "usage": {
            "open_orders": r.open_orders,
            "open_orders_notional": value(r.open_notional),
            "positions_at_cost": value(r.position_exposure),
            "positions_at_mark": value(r.marked_exposure),
            "gross_exposure": value(r.gross_exposure()),
            "realized_pnl_today": value(r.realized_day()),
            "unrealized_pnl": value(r.unrealized),
            "daily_pnl": value(r.daily_pnl()),
        },
    })
}

/// The events of one request as a response body, for `account`: the target order after
/// the command (`target`, or the order the command created), why it was cancelled when
/// it was (`reason`: `unfilled` IOC/market remainder, `self_trade_prevention`,
/// `price_collar`, `depth_limit`, ...), the account's fills, and any other of its
/// orders the command cancelled (self-trade prevention).
pub fn events_json(
    events: &[OrderEvent],
    registry: &InstrumentRegistry,
    account: AccountId,
    target: Option<OrderId>,
) -> Value {
    let target = target.or_else(|| {
        events.iter().find_map(|e| match e.data {
            OrderEventData::Order {
                kind: OrderEventKind::Accepted,
                order,
            } if order.account == account => Some(order.id),
            _ => None,
        })
    });
    let mut order = None;
    let mut reason = None;
    let mut fills = Vec::new();
    let mut cancelled = Vec::new();
    for e in events.iter().filter(|e| e.account == account) {
        match &e.data {
            OrderEventData::Order { order: o, kind } => {
                let Some(i) = registry.get(o.instrument) else { continue };
                if Some(o.id) == target {
                    order = Some(json!(OrderJson::new(o, i)));
                    if let OrderEventKind::Cancelled(r) = kind {
                        reason = Some(r.as_str());
                    }
                } else if let OrderEventKind::Cancelled(reason) = kind {
                    cancelled.push(json!({ "order_id": o.id.0.to_string(), "reason": reason.as_str() }));
                }
            }
            OrderEventData::Fill(f) if Some(f.order) == target => {
                if let Some(i) = registry.get(f.instrument) {
                    fills.push(fill_json(f, i));
                }
            }
            _ => {}
        }
    }
    json!({ "order": order, "reason": reason, "fills": fills, "cancelled": cancelled })
}

/// An anomaly as the API shows it; `seq` is its event sequence (the `since` cursor).
pub fn anomaly_json(
    seq: u64,
    a: &Anomaly,
    accounts: &super::accounts::Accounts,
    registry: &InstrumentRegistry,
) -> Value {
    let account = a.account.map(|id| accounts.name(id));
    let symbol = a.instrument.and_then(|i| registry.get(i)).map(|i| i.symbol.as_str());
    json!({
        "seq": seq,
        "rule": a.rule.as_str(),
        "severity": a.severity.as_str(),
        "action": a.action.as_str(),
        "account": account,
        "symbol": symbol,
        "observed": dec(a.observed, a.scale),
        "threshold": dec(a.threshold, a.scale),
        "message": a.describe(symbol, account),
        "time": time(a.at),
    })
}

/// Whether `a` is for the caller: admins see every anomaly, others market-data ones
/// and their own account's.
pub fn anomaly_visible(a: &Anomaly, account: AccountId, admin: bool) -> bool {
    admin || a.account.is_none_or(|x| x == account)
}
