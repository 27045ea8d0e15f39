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
use utoipa::ToSchema;

use crate::dto::{micros, Dec};

/// `POST /api/v1/orders` and `/orders/test`.
// The string fields are parsed by `super::entry::order_from` (so a wrong value gets its
// own error code); their accepted values are documented by `Side`, `OrderType` and
// `TimeInForce`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewOrder)]
pub struct NewOrderBody {
    #[schema(example = "SBZ")]
    pub symbol: String,
    #[schema(value_type = Side)]
    pub side: String,
    #[serde(rename = "type")]
    #[schema(value_type = OrderType)]
    pub kind: String,
    /// Decimal string at most the instrument's qty decimals, a multiple of its lot size.
    #[schema(example = "1")]
    pub qty: String,
    /// Required for limit and stop_limit; a multiple of the tick size.
    #[serde(default)]
    #[schema(example = "99.00")]
    pub price: Option<String>,
    /// Required for stop and stop_limit.
    #[serde(default)]
    pub stop_price: Option<String>,
    /// Market orders default to ioc, others to gtc.
    #[serde(default)]
    #[schema(value_type = Option<TimeInForce>)]
    pub time_in_force: Option<String>,
    /// gtd: expiry in microseconds since the epoch.
    #[serde(default)]
    pub expire_time: Option<i64>,
    /// Unique per account; when absent the engine generates `auto-<n>` (unique per account, across restarts).
    #[serde(default)]
    pub client_order_id: Option<String>,
    #[serde(default)]
    pub post_only: bool,
    #[serde(default)]
    pub reduce_only: bool,
}

// The accepted values of string fields that handlers parse themselves (each wrong
// value gets its own error code and message), for the document; tests check that they
// are the engine's names and the list is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Buy,
    Sell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    Limit,
    Market,
    Stop,
    StopLimit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    Gtc,
    Day,
    Ioc,
    Fok,
    Gtd,
}

/// `PATCH /api/v1/orders/{id}`: a new quantity, a new price, or both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Replace)]
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

#[derive(Serialize, ToSchema)]
#[schema(as = Order)]
pub struct OrderJson<'a> {
    pub order_id: String,
    pub client_order_id: &'a str,
    pub symbol: &'a str,
    pub side: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time_in_force: &'static str,
    pub expire_time: Option<i64>,
    #[schema(value_type = Option<String>)]
    pub price: Option<Dec>,
    #[schema(value_type = Option<String>)]
    pub stop_price: Option<Dec>,
    #[schema(value_type = String)]
    pub qty: Dec,
    #[schema(value_type = String)]
    pub filled_qty: Dec,
    #[schema(value_type = String)]
    pub leaves_qty: Dec,
    #[schema(value_type = Option<String>)]
    pub avg_fill_price: Option<Dec>,
    /// `open`, `partially_filled`, `filled`, `cancelled`, `expired`, `rejected`.
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

#[derive(Serialize, ToSchema)]
#[schema(as = Fill)]
pub struct FillJson<'a> {
    pub fill_id: String,
    pub order_id: String,
    pub client_order_id: &'a str,
    pub symbol: &'a str,
    pub side: &'static str,
    #[schema(value_type = String)]
    pub price: Dec,
    #[schema(value_type = String)]
    pub qty: Dec,
    /// `maker` or `taker`.
    pub liquidity: &'static str,
    pub trade_id: String,
    pub time: Option<i64>,
}

impl<'a> FillJson<'a> {
    pub fn new(f: &'a Fill, i: &'a Instrument) -> Self {
        Self {
            fill_id: f.id.to_string(),
            order_id: f.order.0.to_string(),
            client_order_id: f.client_id.as_str(),
            symbol: &i.symbol,
            side: f.side.as_str(),
            price: dec(f.price.0, i.price_scale),
            qty: dec(f.qty.0, i.qty_scale),
            liquidity: f.liquidity.as_str(),
            trade_id: f.trade_id.to_string(),
            time: time(f.at),
        }
    }
}

pub fn fill_json(f: &Fill, i: &Instrument) -> Value {
    json!(FillJson::new(f, i))
}

/// A price x qty amount (price scale + qty scale) as a decimal at the price scale.
fn amount(v: i128, i: &Instrument) -> Dec {
    let unit = 10i128.pow(u32::from(i.qty_scale));
    dec(
        (v / unit).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
        i.price_scale,
    )
}

#[derive(Serialize, ToSchema)]
#[schema(as = Position)]
pub struct PositionJson<'a> {
    pub symbol: &'a str,
    #[schema(value_type = String)]
    pub qty: Dec,
    #[schema(value_type = Option<String>)]
    pub avg_price: Option<Dec>,
    #[schema(value_type = String)]
    pub realized_pnl: Dec,
    #[schema(value_type = Option<String>)]
    pub unrealized_pnl: Option<Dec>,
    #[schema(value_type = Option<String>)]
    pub mark_price: Option<Dec>,
    pub currency: &'a str,
}

impl<'a> PositionJson<'a> {
    pub fn new(p: &Position, i: &'a Instrument, mark: Option<Price>) -> Self {
        Self {
            symbol: &i.symbol,
            qty: dec(p.qty, i.qty_scale),
            avg_price: (p.qty != 0).then(|| dec(p.average_price().0, i.price_scale)),
            realized_pnl: amount(p.realized, i),
            unrealized_pnl: mark.map(|m| amount(p.unrealized(m), i)),
            mark_price: mark.map(|m| dec(m.0, i.price_scale)),
            currency: &i.currency,
        }
    }
}

pub fn position_json(p: &Position, i: &Instrument, mark: Option<Price>) -> Value {
    json!(PositionJson::new(p, i, mark))
}

fn value(v: i128) -> Dec {
    dec(v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64, VALUE_SCALE)
}

/// Money and quantities in the base currency / instrument units, as decimal strings.
#[derive(Serialize, ToSchema)]
#[schema(as = RiskLimits)]
pub struct LimitsJson {
    #[schema(value_type = String)]
    pub max_order_qty: Dec,
    #[schema(value_type = String)]
    pub max_order_notional: Dec,
    pub price_collar_bps: u32,
    pub max_open_orders: u32,
    #[schema(value_type = String)]
    pub max_position_qty: Dec,
    #[schema(value_type = String)]
    pub max_gross_exposure: Dec,
    #[schema(value_type = String)]
    pub daily_loss_limit: Dec,
    pub orders_per_sec: u32,
    pub cancels_per_sec: u32,
    /// `cancel_newest`, `cancel_oldest` or `cancel_both`.
    pub self_trade: &'static str,
}

impl LimitsJson {
    pub fn new(l: &RiskLimits) -> Self {
        Self {
            max_order_qty: value(l.max_order_qty),
            max_order_notional: value(l.max_order_notional),
            price_collar_bps: l.price_collar_bps,
            max_open_orders: l.max_open_orders,
            max_position_qty: value(l.max_position_qty),
            max_gross_exposure: value(l.max_gross_exposure),
            daily_loss_limit: value(l.daily_loss_limit),
            orders_per_sec: l.orders_per_sec,
            cancels_per_sec: l.cancels_per_sec,
            self_trade: l.self_trade.as_str(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = RiskUsage)]
pub struct RiskUsageJson {
    pub open_orders: u32,
    #[schema(value_type = String)]
    pub open_orders_notional: Dec,
    #[schema(value_type = String)]
    pub positions_at_cost: Dec,
    /// Positions' |qty| x reference price (what gross exposure counts).
    #[schema(value_type = String)]
    pub positions_at_mark: Dec,
    /// Open orders' notional plus positions at mark.
    #[schema(value_type = String)]
    pub gross_exposure: Dec,
    #[schema(value_type = String)]
    pub realized_pnl_today: Dec,
    /// Open positions' P&L at the reference prices.
    #[schema(value_type = String)]
    pub unrealized_pnl: Dec,
    /// Realized today plus unrealized: what the daily loss limit counts.
    #[schema(value_type = String)]
    pub daily_pnl: Dec,
}

#[derive(Serialize, ToSchema)]
#[schema(as = AccountRisk)]
pub struct AccountRiskJson<'a> {
    pub account: &'a str,
    pub trading_state: &'static str,
    pub kill_switch: bool,
    pub limits: LimitsJson,
    pub usage: RiskUsageJson,
}

impl<'a> AccountRiskJson<'a> {
    pub fn new(account: &'a str, r: &AccountRisk) -> Self {
        Self {
            account,
            trading_state: r.state.as_str(),
            kill_switch: r.killed,
            limits: LimitsJson::new(&r.limits),
            usage: RiskUsageJson {
                open_orders: r.open_orders,
                open_orders_notional: value(r.open_notional),
                positions_at_cost: value(r.position_exposure),
                positions_at_mark: value(r.marked_exposure),
                gross_exposure: value(r.gross_exposure()),
                realized_pnl_today: value(r.realized_day()),
                unrealized_pnl: value(r.unrealized),
                daily_pnl: value(r.daily_pnl()),
            },
        }
    }
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
    json!(OrderResult::new(events, registry, account, target))
}

#[derive(Serialize, ToSchema)]
pub struct CancelledOrder {
    pub order_id: String,
    pub reason: &'static str,
}

/// What one command did to the caller's orders.
#[derive(Serialize, ToSchema)]
pub struct OrderResult<'a> {
    /// The order after the command.
    pub order: Option<OrderJson<'a>>,
    /// Why the command cancelled it (null otherwise): `unfilled` (IOC or market
    /// remainder with nothing left to take), `self_trade_prevention`, `price_collar`
    /// (a sweep reached the collar), `depth_limit` (a paper sweep took its maximum of
    /// levels), `kill_switch`, `user`, `mass_cancel`, `risk`.
    pub reason: Option<&'static str>,
    /// Its fills from this command.
    pub fills: Vec<FillJson<'a>>,
    /// Other orders of the caller it cancelled (self-trade prevention).
    pub cancelled: Vec<CancelledOrder>,
}

impl<'a> OrderResult<'a> {
    /// See [`events_json`].
    pub fn new(
        events: &'a [OrderEvent],
        registry: &'a InstrumentRegistry,
        account: AccountId,
        target: Option<OrderId>,
    ) -> Self {
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
                        order = Some(OrderJson::new(o, i));
                        if let OrderEventKind::Cancelled(r) = kind {
                            reason = Some(r.as_str());
                        }
                    } else if let OrderEventKind::Cancelled(reason) = kind {
                        cancelled.push(CancelledOrder {
                            order_id: o.id.0.to_string(),
                            reason: reason.as_str(),
                        });
                    }
                }
                OrderEventData::Fill(f) if Some(f.order) == target => {
                    if let Some(i) = registry.get(f.instrument) {
                        fills.push(FillJson::new(f, i));
                    }
                }
                _ => {}
            }
        }
        Self {
            order,
            reason,
            fills,
            cancelled,
        }
    }
}

/// An anomaly as the API shows it; `seq` is its event sequence (the `since` cursor).
pub fn anomaly_json(
    seq: u64,
    a: &Anomaly,
    accounts: &super::accounts::Accounts,
    registry: &InstrumentRegistry,
) -> Value {
    json!(AnomalyJson::new(seq, a, accounts, registry))
}

/// A surveillance anomaly.
#[derive(Serialize, ToSchema)]
#[schema(as = AnomalyItem)]
pub struct AnomalyJson<'a> {
    /// Event sequence: pass the last one seen as `since`.
    pub seq: u64,
    /// e.g. `order_rate`, `large_notional`, `price_jump`, `stale_feed`.
    pub rule: &'static str,
    /// LOW, MEDIUM, HIGH or CRITICAL.
    pub severity: &'static str,
    /// `alert`, `throttle`, `block` or `kill`.
    pub action: &'static str,
    /// For order-flow rules.
    pub account: Option<&'a str>,
    pub symbol: Option<&'a str>,
    /// What was seen and the threshold it crossed, as decimals (a stale feed: seconds
    /// without market data against the stale threshold).
    #[schema(value_type = String)]
    pub observed: Dec,
    #[schema(value_type = String)]
    pub threshold: Dec,
    /// What was observed in words a person can act on, e.g. "RELIANCE: no market data
    /// for 7.250 s while in session (stale after 5.000 s, ...); check its feed's
    /// connection in /health".
    pub message: String,
    pub time: Option<i64>,
}

impl<'a> AnomalyJson<'a> {
    /// An anomaly as the API shows it; `seq` is its event sequence (the `since` cursor).
    pub fn new(
        seq: u64,
        a: &Anomaly,
        accounts: &'a super::accounts::Accounts,
        registry: &'a InstrumentRegistry,
    ) -> Self {
        let account = a.account.map(|id| accounts.name(id));
        let symbol = a.instrument.and_then(|i| registry.get(i)).map(|i| i.symbol.as_str());
        Self {
            seq,
            rule: a.rule.as_str(),
            severity: a.severity.as_str(),
            action: a.action.as_str(),
            account,
            symbol,
            observed: dec(a.observed, a.scale),
            threshold: dec(a.threshold, a.scale),
            message: a.describe(symbol, account),
            time: time(a.at),
        }
    }
}

/// Whether `a` is for the caller: admins see every anomaly, others market-data ones
/// and their own account's.
pub fn anomaly_visible(a: &Anomaly, account: AccountId, admin: bool) -> bool {
    admin || a.account.is_none_or(|x| x == account)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksblitz_engine::orders::{ClientOrderId, Liquidity, OrderType as EngineType, TimeInForce as EngineTif};
    use stocksblitz_engine::{InstrumentConfig, InstrumentId, Qty, Side as EngineSide};

    fn registry(price_decimals: u8, qty_decimals: u8) -> InstrumentRegistry {
        InstrumentRegistry::from_config(&[InstrumentConfig {
            symbol: "SBZ".into(),
            venue: "internal".into(),
            venue_symbol: "sbz".into(),
            kind: stocksblitz_engine::instrument::InstrumentKind::Equity,
            currency: "INR".into(),
            price_decimals,
            qty_decimals,
            tick_size: "1".into(),
            lot_size: "1".into(),
            session: "24x7".into(),
        }])
        .expect("registry")
    }

    /// The bytes a REST answer carries for `v`.
    fn sent<T: Serialize>(v: &T) -> String {
        serde_json::to_string(&crate::http::reply::value(v).unwrap()).unwrap()
    }

    proptest::proptest! {
        /// Any position, at any precision, with or without a mark: the typed body is
        /// byte for byte what the hand-built JSON it replaced was.
        #[test]
        fn positions_serialize_as_before(
            qty in -1_000_000_000i64..1_000_000_000,
            cost in -(10i128.pow(18))..10i128.pow(18),
            realized in -(10i128.pow(18))..10i128.pow(18),
            mark in proptest::option::of(0i64..1_000_000_000_000),
            pd in 0u8..=8,
            qd in 0u8..=8,
        ) {
            let reg = registry(pd, qd);
            let i = reg.get(InstrumentId(0)).unwrap();
            let p = Position { qty, cost, realized };
            let mark = mark.map(Price);
            let before = json!({
                "symbol": i.symbol,
                "qty": dec(p.qty, i.qty_scale),
                "avg_price": (p.qty != 0).then(|| dec(p.average_price().0, i.price_scale)),
                "realized_pnl": amount(p.realized, i),
                "unrealized_pnl": mark.map(|m| amount(p.unrealized(m), i)),
                "mark_price": mark.map(|m| dec(m.0, i.price_scale)),
                "currency": i.currency,
            });
            let before = serde_json::to_string(&before).unwrap();
            proptest::prop_assert_eq!(&sent(&PositionJson::new(&p, i, mark)), &before);
            proptest::prop_assert_eq!(&serde_json::to_string(&position_json(&p, i, mark)).unwrap(), &before);
        }

        /// Any fill, at any precision: the typed body is byte for byte the old JSON.
        #[test]
        fn fills_serialize_as_before(
            id in proptest::num::u64::ANY,
            order in proptest::num::u64::ANY,
            client in "[A-Za-z0-9._:-]{1,20}",
            buy in proptest::bool::ANY,
            maker in proptest::bool::ANY,
            price in proptest::num::i64::ANY,
            qty in proptest::num::i64::ANY,
            trade_id in proptest::num::u64::ANY,
            at in proptest::option::of(0i64..i64::MAX),
            pd in 0u8..=8,
            qd in 0u8..=8,
        ) {
            let reg = registry(pd, qd);
            let i = reg.get(InstrumentId(0)).unwrap();
            let f = Fill {
                id,
                order: OrderId(order),
                client_id: ClientOrderId::new(&client).unwrap(),
                account: AccountId(0),
                instrument: InstrumentId(0),
                side: if buy { EngineSide::Buy } else { EngineSide::Sell },
                price: Price(price),
                qty: Qty(qty),
                liquidity: if maker { Liquidity::Maker } else { Liquidity::Taker },
                trade_id,
                at: at.map_or(UnixNanos::UNKNOWN, UnixNanos),
            };
            let before = json!({
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
            });
            let before = serde_json::to_string(&before).unwrap();
            proptest::prop_assert_eq!(&sent(&FillJson::new(&f, i)), &before);
            proptest::prop_assert_eq!(&serde_json::to_string(&fill_json(&f, i)).unwrap(), &before);
        }
    }

    fn name<T: Serialize>(v: T) -> String {
        serde_json::to_value(v).unwrap().as_str().unwrap().to_owned()
    }

    /// The documented values of `side`, `type` and `time_in_force` are the engine's
    /// names, one for each of its variants (the matches fail to compile when the engine
    /// gains one), and the order parser accepts each.
    #[test]
    fn documented_order_fields_are_the_engines_names() {
        for s in [EngineSide::Buy, EngineSide::Sell] {
            let doc = match s {
                EngineSide::Buy => Side::Buy,
                EngineSide::Sell => Side::Sell,
            };
            assert_eq!(name(doc), s.as_str());
        }
        for t in [
            EngineType::Limit,
            EngineType::Market,
            EngineType::Stop,
            EngineType::StopLimit,
        ] {
            let doc = match t {
                EngineType::Limit => OrderType::Limit,
                EngineType::Market => OrderType::Market,
                EngineType::Stop => OrderType::Stop,
                EngineType::StopLimit => OrderType::StopLimit,
            };
            assert_eq!(name(doc), t.as_str());
        }
        let tifs = [
            EngineTif::Gtc,
            EngineTif::Day,
            EngineTif::Ioc,
            EngineTif::Fok,
            EngineTif::Gtd(UnixNanos(1)),
        ];
        for t in tifs {
            let doc = match t {
                EngineTif::Gtc => TimeInForce::Gtc,
                EngineTif::Day => TimeInForce::Day,
                EngineTif::Ioc => TimeInForce::Ioc,
                EngineTif::Fok => TimeInForce::Fok,
                EngineTif::Gtd(_) => TimeInForce::Gtd,
            };
            assert_eq!(name(doc), t.as_str());
        }
    }
}
