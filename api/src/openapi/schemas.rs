//! The JSON shapes of requests and responses as OpenAPI schemas. Prices, quantities and
//! money are exact decimal strings; times are integer microseconds since the epoch.
//! These types exist for the document: handlers build the same shapes (the schemathesis
//! test checks every response against them).

#![allow(dead_code)]

use serde::Deserialize;
use utoipa::ToSchema;

/// Every error: a stable code, a message saying what to fix, details, the request id.
#[derive(ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Stable, e.g. `UNKNOWN_SYMBOL`, `RATE_LIMITED`, `TICK_SIZE`.
    pub code: String,
    pub message: String,
    pub details: Object,
    /// Also in the `X-Request-ID` header.
    pub request_id: String,
}

/// A JSON object.
#[derive(ToSchema)]
#[schema(value_type = Object)]
pub struct Object(serde_json::Map<String, serde_json::Value>);

#[derive(ToSchema)]
pub struct Instrument {
    pub id: u32,
    pub symbol: String,
    pub venue: String,
    pub venue_symbol: String,
    /// `equity`, `crypto_spot` or `index`.
    pub kind: String,
    pub currency: String,
    pub price_decimals: u8,
    pub qty_decimals: u8,
    pub tick_size: String,
    pub lot_size: String,
    pub session: String,
}

#[derive(ToSchema)]
pub struct InstrumentList {
    pub instruments: Vec<Instrument>,
}

#[derive(ToSchema)]
pub struct Trade {
    pub symbol: String,
    pub price: String,
    pub qty: String,
    /// The aggressor: `buy`, `sell` or `unknown`.
    pub side: String,
    pub trade_id: u64,
    pub exchange_ts_us: Option<i64>,
    pub recv_ts_us: Option<i64>,
    pub engine_seq: u64,
}

#[derive(ToSchema)]
pub struct Quote {
    pub symbol: String,
    /// `null` when that side of the book is empty.
    pub bid: Option<String>,
    pub bid_qty: Option<String>,
    pub ask: Option<String>,
    pub ask_qty: Option<String>,
    /// `SYNCING`, `LIVE`, `STALE`, `GAPPED`, `CROSSED`, `HALTED` or `CLOSED` (out of session).
    pub quality: String,
    pub exchange_ts_us: Option<i64>,
    pub recv_ts_us: Option<i64>,
    pub engine_seq: u64,
    /// The last trade, or the venue's own report of its last trade when newer (trade
    /// id 0, side `unknown`: not a trade).
    pub last: Option<Trade>,
    /// The venue's day statistics, `null` when it reports none (Kite does).
    pub day: Option<DayStats>,
}

/// Day open/high/low, previous close and the change of the last price from it; a
/// value the venue did not report is `null`.
#[derive(ToSchema)]
pub struct DayStats {
    pub open: Option<String>,
    pub high: Option<String>,
    pub low: Option<String>,
    pub close: Option<String>,
    /// Last price minus close.
    pub change: Option<String>,
    /// That change in percent of the close, two decimals.
    pub change_pct: Option<String>,
}

#[derive(ToSchema)]
pub struct QuoteList {
    pub quotes: Vec<Quote>,
}

#[derive(ToSchema)]
pub struct Book {
    pub symbol: String,
    /// `[price, qty]` pairs, best first.
    pub bids: Vec<Vec<String>>,
    pub asks: Vec<Vec<String>>,
    pub quality: String,
    pub engine_seq: u64,
}

#[derive(ToSchema)]
pub struct TradeList {
    pub symbol: String,
    /// Newest first.
    pub trades: Vec<Trade>,
}

#[derive(ToSchema)]
pub struct Bar {
    pub symbol: String,
    pub interval: String,
    pub start_us: i64,
    pub open: String,
    pub high: String,
    pub low: String,
    pub close: String,
    pub volume: String,
    pub trades: u32,
    /// `open` (forming), `closed` or `revised`.
    pub state: String,
}

#[derive(ToSchema)]
pub struct BarList {
    pub symbol: String,
    pub interval: String,
    /// Oldest first.
    pub bars: Vec<Bar>,
}

#[derive(ToSchema)]
pub struct InstrumentStatus {
    pub symbol: String,
    pub venue: String,
    pub session: String,
    pub in_session: bool,
    pub quality: Option<String>,
    pub last_update_us: Option<i64>,
    /// The last price (trade or venue report), `null` before any.
    pub last: Option<String>,
    pub day: Option<DayStats>,
}

#[derive(ToSchema)]
pub struct MarketStatus {
    pub time_us: Option<i64>,
    pub instruments: Vec<InstrumentStatus>,
}

#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Buy,
    Sell,
}

#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    Limit,
    Market,
    Stop,
    StopLimit,
}

#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    Gtc,
    Day,
    Ioc,
    Fok,
    Gtd,
}

/// `POST /api/v1/orders` and `/orders/test`.
#[derive(ToSchema)]
pub struct NewOrder {
    #[schema(example = "SBZ")]
    pub symbol: String,
    pub side: Side,
    #[schema(rename = "type")]
    pub kind: OrderType,
    /// Decimal string at most the instrument's qty decimals, a multiple of its lot size.
    #[schema(example = "1")]
    pub qty: String,
    /// Required for limit and stop_limit; a multiple of the tick size.
    #[schema(example = "99.00")]
    pub price: Option<String>,
    /// Required for stop and stop_limit.
    pub stop_price: Option<String>,
    /// Market orders default to ioc, others to gtc.
    pub time_in_force: Option<TimeInForce>,
    /// gtd: expiry in microseconds since the epoch.
    pub expire_time: Option<i64>,
    /// Unique per account; when absent the engine generates `auto-<n>` (unique per account, across restarts).
    pub client_order_id: Option<String>,
    pub post_only: Option<bool>,
    pub reduce_only: Option<bool>,
}

/// `PATCH /api/v1/orders/{id}`: a new quantity, a new price, or both.
#[derive(ToSchema)]
pub struct Replace {
    pub qty: Option<String>,
    pub price: Option<String>,
}

#[derive(ToSchema)]
pub struct Order {
    pub order_id: String,
    pub client_order_id: String,
    pub symbol: String,
    pub side: String,
    #[schema(rename = "type")]
    pub kind: String,
    pub time_in_force: String,
    pub expire_time: Option<i64>,
    pub price: Option<String>,
    pub stop_price: Option<String>,
    pub qty: String,
    pub filled_qty: String,
    pub leaves_qty: String,
    pub avg_fill_price: Option<String>,
    /// `open`, `partially_filled`, `filled`, `cancelled`, `expired`, `rejected`.
    pub status: String,
    pub post_only: bool,
    pub reduce_only: bool,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

#[derive(ToSchema)]
pub struct Fill {
    pub fill_id: String,
    pub order_id: String,
    pub client_order_id: String,
    pub symbol: String,
    pub side: String,
    pub price: String,
    pub qty: String,
    /// `maker` or `taker`.
    pub liquidity: String,
    pub trade_id: String,
    pub time: Option<i64>,
}

#[derive(ToSchema)]
pub struct CancelledOrder {
    pub order_id: String,
    pub reason: String,
}

/// What one command did to the caller's orders.
#[derive(ToSchema)]
pub struct OrderResult {
    /// The order after the command.
    pub order: Option<Order>,
    /// Why the command cancelled it (null otherwise): `unfilled` (IOC or market
    /// remainder with nothing left to take), `self_trade_prevention`, `price_collar`
    /// (a sweep reached the collar), `depth_limit` (a paper sweep took its maximum of
    /// levels), `kill_switch`, `user`, `mass_cancel`, `risk`.
    pub reason: Option<String>,
    /// Its fills from this command.
    pub fills: Vec<Fill>,
    /// Other orders of the caller it cancelled (self-trade prevention).
    pub cancelled: Vec<CancelledOrder>,
}

#[derive(ToSchema)]
pub struct TestResult {
    pub ok: bool,
    pub message: String,
}

#[derive(ToSchema)]
pub struct OrderList {
    /// Newest first.
    pub orders: Vec<Order>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

#[derive(ToSchema)]
pub struct MassCancelResult {
    pub cancelled: u32,
}

#[derive(ToSchema)]
pub struct FillList {
    pub fills: Vec<Fill>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(ToSchema)]
pub struct Position {
    pub symbol: String,
    pub qty: String,
    pub avg_price: Option<String>,
    pub realized_pnl: String,
    pub unrealized_pnl: Option<String>,
    pub mark_price: Option<String>,
    pub currency: String,
}

#[derive(ToSchema)]
pub struct PositionList {
    pub positions: Vec<Position>,
}

/// Money and quantities in the base currency / instrument units, as decimal strings.
#[derive(ToSchema)]
pub struct RiskLimits {
    pub max_order_qty: String,
    pub max_order_notional: String,
    pub price_collar_bps: u32,
    pub max_open_orders: u32,
    pub max_position_qty: String,
    pub max_gross_exposure: String,
    pub daily_loss_limit: String,
    pub orders_per_sec: u32,
    pub cancels_per_sec: u32,
    /// `cancel_newest`, `cancel_oldest` or `cancel_both`.
    pub self_trade: String,
}

#[derive(ToSchema)]
pub struct RiskUsage {
    pub open_orders: u32,
    pub open_orders_notional: String,
    pub positions_at_cost: String,
    /// Positions' |qty| x reference price (what gross exposure counts).
    pub positions_at_mark: String,
    /// Open orders' notional plus positions at mark.
    pub gross_exposure: String,
    pub realized_pnl_today: String,
    /// Open positions' P&L at the reference prices.
    pub unrealized_pnl: String,
    /// Realized today plus unrealized: what the daily loss limit counts.
    pub daily_pnl: String,
}

#[derive(ToSchema)]
pub struct AccountRisk {
    pub account: String,
    pub trading_state: String,
    pub kill_switch: bool,
    pub limits: RiskLimits,
    pub usage: RiskUsage,
}

#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillScope {
    Global,
    Account,
    Instrument,
}

/// `global` (nothing else), `account` (with `account`) or `instrument` (with `symbol`).
#[derive(ToSchema)]
pub struct KillSwitch {
    pub scope: KillScope,
    pub account: Option<String>,
    pub symbol: Option<String>,
    pub active: bool,
}

#[derive(ToSchema)]
pub struct KillSwitchResult {
    pub scope: String,
    pub active: bool,
    /// Orders cancelled by switching it on.
    pub cancelled: u32,
}

#[derive(ToSchema)]
pub struct LimitsResult {
    pub account: String,
    pub limits: RiskLimits,
}

#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TradingState {
    Active,
    ReduceOnly,
    Throttled,
    Blocked,
}

#[derive(ToSchema)]
pub struct SetTradingState {
    pub state: TradingState,
}

#[derive(ToSchema)]
pub struct TradingStateResult {
    pub account: String,
    pub trading_state: String,
}

#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelfTrade {
    CancelNewest,
    CancelOldest,
    CancelBoth,
}

/// `PUT /api/v1/admin/risk-limits/{account}`: the account's whole set of limits.
#[derive(ToSchema)]
pub struct SetRiskLimits {
    #[schema(example = "100000")]
    pub max_order_qty: String,
    #[schema(example = "1000000")]
    pub max_order_notional: String,
    pub price_collar_bps: u32,
    pub max_open_orders: u32,
    #[schema(example = "500000")]
    pub max_position_qty: String,
    #[schema(example = "5000000")]
    pub max_gross_exposure: String,
    #[schema(example = "100000")]
    pub daily_loss_limit: String,
    pub orders_per_sec: u32,
    pub cancels_per_sec: u32,
    pub self_trade: SelfTrade,
}

/// A surveillance anomaly.
#[derive(ToSchema)]
pub struct AnomalyItem {
    /// Event sequence: pass the last one seen as `since`.
    pub seq: u64,
    /// e.g. `order_rate`, `large_notional`, `price_jump`, `stale_feed`.
    pub rule: String,
    /// LOW, MEDIUM, HIGH or CRITICAL.
    pub severity: String,
    /// `alert`, `throttle`, `block` or `kill`.
    pub action: String,
    /// For order-flow rules.
    pub account: Option<String>,
    pub symbol: Option<String>,
    /// What was seen and the threshold it crossed, as decimals (a stale feed: seconds
    /// without market data against the stale threshold).
    pub observed: String,
    pub threshold: String,
    /// What was observed in words a person can act on, e.g. "RELIANCE: no market data
    /// for 7.250 s while in session (stale after 5.000 s, ...); check its feed's
    /// connection in /health".
    pub message: String,
    pub time: Option<i64>,
}

#[derive(ToSchema)]
pub struct AnomalyList {
    pub anomalies: Vec<AnomalyItem>,
    pub next_since: u64,
}
