//! What the order path reports: order state changes, fills, position changes and
//! command acknowledgements. The API turns these into responses (matched by request
//! id) and into the private `orders`, `fills` and `positions` channels, which are
//! never dropped or conflated, so the engine never drops them either.

use crate::fixed::{Price, Qty};
use crate::ids::InstrumentId;
use crate::side::Side;
use crate::time::UnixNanos;

use super::position::Position;
use super::reject::Reject;
use super::types::{AccountId, ClientOrderId, Order, OrderId};

/// Why an order left the book without filling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CancelReason {
    /// The account asked.
    User,
    /// Mass cancel.
    Mass,
    /// IOC/market remainder with nothing left to trade against.
    Unfilled,
    /// Self-trade prevention.
    SelfTrade,
    KillSwitch,
    /// The order was placed with an account or instrument state that cancelled it.
    Risk,
    /// A market order's sweep reached the price collar around the reference price:
    /// the remainder would have traded too far from it.
    PriceCollar,
    /// A paper sweep used all the depth levels one step may take
    /// ([`super::context::SWEEP_LEVELS`]); the remainder is cancelled, not rested.
    DepthLimit,
}

impl CancelReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            CancelReason::User => "user",
            CancelReason::Mass => "mass_cancel",
            CancelReason::Unfilled => "unfilled",
            CancelReason::SelfTrade => "self_trade_prevention",
            CancelReason::KillSwitch => "kill_switch",
            CancelReason::Risk => "risk",
            CancelReason::PriceCollar => "price_collar",
            CancelReason::DepthLimit => "depth_limit",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Liquidity {
    Maker,
    Taker,
}

impl Liquidity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Liquidity::Maker => "maker",
            Liquidity::Taker => "taker",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fill {
    /// Engine-wide fill number, +1 per fill, with the engine's shard in the top 8
    /// bits ([`super::shard::fill_id`]; shard 0: the plain count).
    pub id: u64,
    pub order: OrderId,
    pub client_id: ClientOrderId,
    pub account: AccountId,
    pub instrument: InstrumentId,
    pub side: Side,
    pub price: Price,
    pub qty: Qty,
    pub liquidity: Liquidity,
    /// The trade this fill belongs to (internal venue: ours; paper: the feed's).
    pub trade_id: u64,
    pub at: UnixNanos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OrderEventKind {
    Accepted,
    /// A stop order's trigger price traded: it now works as market/limit.
    Triggered,
    PartiallyFilled,
    Filled,
    Cancelled(CancelReason),
    Replaced,
    Expired,
}

impl OrderEventKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            OrderEventKind::Accepted => "accepted",
            OrderEventKind::Triggered => "triggered",
            OrderEventKind::PartiallyFilled => "partially_filled",
            OrderEventKind::Filled => "filled",
            OrderEventKind::Cancelled(_) => "cancelled",
            OrderEventKind::Replaced => "replaced",
            OrderEventKind::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OrderEventData {
    /// The order after the change.
    Order {
        kind: OrderEventKind,
        order: Order,
    },
    /// The command was refused; nothing changed. `order` is set for cancel/replace.
    Rejected {
        reject: Reject,
        instrument: Option<InstrumentId>,
        client_id: ClientOrderId,
        order: Option<OrderId>,
    },
    Fill(Fill),
    Position {
        instrument: InstrumentId,
        position: Position,
    },
    /// The account's limits and usage (answer to `QueryRisk`).
    Risk(super::risk::AccountRisk),
    /// A dry-run order passed every check.
    TestPassed {
        instrument: InstrumentId,
    },
    /// An admin or mass command was applied; `count` orders were affected.
    Done {
        count: u32,
    },
    /// Surveillance reported an anomaly (its action already applied). The event's
    /// account is [`AccountId::SYSTEM`] for market-data anomalies.
    Anomaly(crate::anomaly::Anomaly),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderEvent {
    /// Engine-wide, +1 per event: consumers detect loss (there must be none).
    pub seq: u64,
    /// The request that caused it; 0 for events the market caused (paper fills,
    /// triggers, expiries).
    pub request: u64,
    /// Whose event it is (private channels route on it).
    pub account: AccountId,
    pub at: UnixNanos,
    /// The last event for this request.
    pub last: bool,
    pub data: OrderEventData,
}
