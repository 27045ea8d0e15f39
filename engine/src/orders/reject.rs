//! Why the engine refused a command: a stable code (API clients switch on it) and a
//! message that says what to fix. Codes never change meaning once published.

/// A rejection reason. `code()` is the stable machine-readable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Reject {
    UnknownInstrument,
    UnknownAccount,
    MarketClosed,
    KillSwitch,
    ReduceOnlyState,
    InvalidQty,
    InvalidPrice,
    LotSize,
    TickSize,
    MissingPrice,
    UnexpectedPrice,
    MissingStopPrice,
    InvalidTif,
    MaxOrderQty,
    MaxOrderNotional,
    PriceCollar,
    NoReferencePrice,
    MaxOpenOrders,
    PositionLimit,
    BuyingPower,
    DailyLoss,
    OrderRate,
    CancelRate,
    SelfTrade,
    PostOnlyWouldTrade,
    FokUnfillable,
    NoLiquidity,
    ReduceOnlyWouldIncrease,
    DuplicateClientOrderId,
    OrderNotFound,
    OrderNotOpen,
    ReplaceNoChange,
    ReplaceBelowFilled,
    EngineCapacity,
    Throttled,
    AccountBlocked,
    /// The instrument's market data is not LIVE (paper venue): no fill, no reference.
    MarketDataUnavailable,
    /// The instrument is traded by another engine node (`cluster.instruments`).
    InstrumentNotOnThisEngine,
}

impl Reject {
    /// Every rejection, in declaration order (docs and the README's code list are
    /// generated from it).
    pub const ALL: [Reject; 38] = [
        Reject::UnknownInstrument,
        Reject::UnknownAccount,
        Reject::MarketClosed,
        Reject::KillSwitch,
        Reject::ReduceOnlyState,
        Reject::InvalidQty,
        Reject::InvalidPrice,
        Reject::LotSize,
        Reject::TickSize,
        Reject::MissingPrice,
        Reject::UnexpectedPrice,
        Reject::MissingStopPrice,
        Reject::InvalidTif,
        Reject::MaxOrderQty,
        Reject::MaxOrderNotional,
        Reject::PriceCollar,
        Reject::NoReferencePrice,
        Reject::MaxOpenOrders,
        Reject::PositionLimit,
        Reject::BuyingPower,
        Reject::DailyLoss,
        Reject::OrderRate,
        Reject::CancelRate,
        Reject::SelfTrade,
        Reject::PostOnlyWouldTrade,
        Reject::FokUnfillable,
        Reject::NoLiquidity,
        Reject::ReduceOnlyWouldIncrease,
        Reject::DuplicateClientOrderId,
        Reject::OrderNotFound,
        Reject::OrderNotOpen,
        Reject::ReplaceNoChange,
        Reject::ReplaceBelowFilled,
        Reject::EngineCapacity,
        Reject::Throttled,
        Reject::AccountBlocked,
        Reject::MarketDataUnavailable,
        Reject::InstrumentNotOnThisEngine,
    ];

    pub const fn code(self) -> &'static str {
        match self {
            Reject::UnknownInstrument => "UNKNOWN_INSTRUMENT",
            Reject::UnknownAccount => "UNKNOWN_ACCOUNT",
            Reject::MarketClosed => "MARKET_CLOSED",
            Reject::KillSwitch => "KILL_SWITCH_ACTIVE",
            Reject::ReduceOnlyState => "ACCOUNT_REDUCE_ONLY",
            Reject::InvalidQty => "INVALID_QUANTITY",
            Reject::InvalidPrice => "INVALID_PRICE",
            Reject::LotSize => "LOT_SIZE",
            Reject::TickSize => "TICK_SIZE",
            Reject::MissingPrice => "PRICE_REQUIRED",
            Reject::UnexpectedPrice => "PRICE_NOT_ALLOWED",
            Reject::MissingStopPrice => "STOP_PRICE_REQUIRED",
            Reject::InvalidTif => "INVALID_TIME_IN_FORCE",
            Reject::MaxOrderQty => "MAX_ORDER_QTY",
            Reject::MaxOrderNotional => "MAX_ORDER_NOTIONAL",
            Reject::PriceCollar => "PRICE_COLLAR",
            Reject::NoReferencePrice => "NO_REFERENCE_PRICE",
            Reject::MaxOpenOrders => "MAX_OPEN_ORDERS",
            Reject::PositionLimit => "POSITION_LIMIT",
            Reject::BuyingPower => "BUYING_POWER",
            Reject::DailyLoss => "DAILY_LOSS_LIMIT",
            Reject::OrderRate => "ORDER_RATE_LIMIT",
            Reject::CancelRate => "CANCEL_RATE_LIMIT",
            Reject::SelfTrade => "SELF_TRADE_PREVENTED",
            Reject::PostOnlyWouldTrade => "POST_ONLY_WOULD_TRADE",
            Reject::FokUnfillable => "FOK_NOT_FILLABLE",
            Reject::NoLiquidity => "NO_LIQUIDITY",
            Reject::ReduceOnlyWouldIncrease => "REDUCE_ONLY_WOULD_INCREASE",
            Reject::DuplicateClientOrderId => "DUPLICATE_CLIENT_ORDER_ID",
            Reject::OrderNotFound => "ORDER_NOT_FOUND",
            Reject::OrderNotOpen => "ORDER_NOT_OPEN",
            Reject::ReplaceNoChange => "REPLACE_NO_CHANGE",
            Reject::ReplaceBelowFilled => "REPLACE_BELOW_FILLED",
            Reject::EngineCapacity => "ENGINE_CAPACITY",
            Reject::Throttled => "ACCOUNT_THROTTLED",
            Reject::AccountBlocked => "ACCOUNT_BLOCKED",
            Reject::MarketDataUnavailable => "MARKET_DATA_UNAVAILABLE",
            Reject::InstrumentNotOnThisEngine => "INSTRUMENT_NOT_ON_THIS_ENGINE",
        }
    }

    /// What went wrong and what to do about it (limits are in the account's risk view,
    /// `GET /api/v1/accounts/me/risk`).
    pub const fn message(self) -> &'static str {
        match self {
            Reject::UnknownInstrument => "unknown symbol: list tradable symbols at GET /api/v1/instruments",
            Reject::UnknownAccount => "the account in your token is not configured on this engine",
            Reject::MarketClosed => "the instrument's trading session is closed: retry when it opens",
            Reject::KillSwitch => "trading is halted by a kill switch (global, account or instrument): contact risk",
            Reject::ReduceOnlyState => {
                "the account is in reduce-only state: only orders that reduce a position are accepted"
            }
            Reject::InvalidQty => "qty must be a positive decimal within the instrument's precision",
            Reject::InvalidPrice => "price must be a positive decimal within the instrument's precision",
            Reject::LotSize => "qty must be a multiple of the instrument's lot_size",
            Reject::TickSize => "price must be a multiple of the instrument's tick_size",
            Reject::MissingPrice => "limit and stop_limit orders need a price",
            Reject::UnexpectedPrice => "market and stop orders take no price: remove it or use a limit order",
            Reject::MissingStopPrice => "stop and stop_limit orders need a stop_price",
            Reject::InvalidTif => {
                "time_in_force not valid here: market orders are ioc/fok, gtd needs a future expire_time"
            }
            Reject::MaxOrderQty => "qty is above the account's max order quantity: split the order",
            Reject::MaxOrderNotional => "price x qty is above the account's max order notional: reduce qty",
            Reject::PriceCollar => "price is too far from the reference price (price collar): bring it closer",
            Reject::NoReferencePrice => {
                "no reference price yet for this instrument (no trade or quote): use a limit order later"
            }
            Reject::MaxOpenOrders => "the account has its maximum number of open orders: cancel some first",
            Reject::PositionLimit => "the fill would take the position beyond the account's position limit",
            Reject::BuyingPower => "the order would exceed the account's gross exposure / buying power",
            Reject::DailyLoss => "the account's daily loss limit is reached: trading resumes next trading day",
            Reject::OrderRate => "too many orders per second for this account: slow down and retry",
            Reject::CancelRate => "too many cancels per second for this account: slow down and retry",
            Reject::SelfTrade => "the order would trade against your own resting order (self-trade prevention)",
            Reject::PostOnlyWouldTrade => "post-only order would take liquidity: price it away from the touch",
            Reject::FokUnfillable => "fill-or-kill order cannot be filled in full right now",
            Reject::NoLiquidity => "no opposite-side liquidity for a market order",
            Reject::ReduceOnlyWouldIncrease => "reduce-only order would open or increase a position",
            Reject::DuplicateClientOrderId => "client_order_id is already used by one of your open orders",
            Reject::OrderNotFound => "no such order for this account",
            Reject::OrderNotOpen => "the order is no longer open (filled, cancelled, expired or rejected)",
            Reject::ReplaceNoChange => "replace must change qty or price",
            Reject::ReplaceBelowFilled => "new qty must be above the quantity already filled",
            Reject::EngineCapacity => "the engine's order capacity is exhausted: retry later",
            Reject::Throttled => "the account is throttled by surveillance: slow down",
            Reject::AccountBlocked => "new orders for the account are blocked: contact risk to clear the block",
            Reject::MarketDataUnavailable => {
                "the instrument's market data is not LIVE (syncing, stale, gapped, crossed or halted): nothing can fill against it, retry when it is LIVE"
            }
            Reject::InstrumentNotOnThisEngine => {
                "this engine node does not trade the instrument: send the order through an API node, which routes it \
                 to the engine that owns it, or to that engine"
            }
        }
    }
}

impl core::fmt::Display for Reject {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` lists every variant exactly once (a new variant missing from it fails
    /// here through the exhaustive match), and codes are unique.
    #[test]
    fn all_lists_every_variant_once() {
        let index = |r: Reject| -> usize {
            match r {
                Reject::UnknownInstrument => 0,
                Reject::UnknownAccount => 1,
                Reject::MarketClosed => 2,
                Reject::KillSwitch => 3,
                Reject::ReduceOnlyState => 4,
                Reject::InvalidQty => 5,
                Reject::InvalidPrice => 6,
                Reject::LotSize => 7,
                Reject::TickSize => 8,
                Reject::MissingPrice => 9,
                Reject::UnexpectedPrice => 10,
                Reject::MissingStopPrice => 11,
                Reject::InvalidTif => 12,
                Reject::MaxOrderQty => 13,
                Reject::MaxOrderNotional => 14,
                Reject::PriceCollar => 15,
                Reject::NoReferencePrice => 16,
                Reject::MaxOpenOrders => 17,
                Reject::PositionLimit => 18,
                Reject::BuyingPower => 19,
                Reject::DailyLoss => 20,
                Reject::OrderRate => 21,
                Reject::CancelRate => 22,
                Reject::SelfTrade => 23,
                Reject::PostOnlyWouldTrade => 24,
                Reject::FokUnfillable => 25,
                Reject::NoLiquidity => 26,
                Reject::ReduceOnlyWouldIncrease => 27,
                Reject::DuplicateClientOrderId => 28,
                Reject::OrderNotFound => 29,
                Reject::OrderNotOpen => 30,
                Reject::ReplaceNoChange => 31,
                Reject::ReplaceBelowFilled => 32,
                Reject::EngineCapacity => 33,
                Reject::Throttled => 34,
                Reject::AccountBlocked => 35,
                Reject::MarketDataUnavailable => 36,
                Reject::InstrumentNotOnThisEngine => 37,
            }
        };
        for (i, r) in Reject::ALL.iter().enumerate() {
            assert_eq!(index(*r), i, "{r:?} out of place in Reject::ALL");
        }
        let mut codes: Vec<_> = Reject::ALL.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Reject::ALL.len(), "codes are unique");
    }
}
