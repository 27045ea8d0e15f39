//! What surveillance reports: an anomaly with its rule, severity, subject (an account
//! or an instrument), the observed value against the threshold it crossed, when, and
//! the action taken. Fixed-size and `Copy`: it travels in the order path's events and
//! the journal like any other event.

use crate::ids::InstrumentId;
use crate::orders::AccountId;
use crate::time::UnixNanos;

/// Which rule fired. Variant order is part of the journal format: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Rule {
    /// More orders in a minute than allowed.
    OrderRate,
    /// One order's quantity over the limit.
    LargeQty,
    /// One order's notional (base currency) over the limit.
    LargeNotional,
    /// More distinct symbols in a trading day than allowed.
    SymbolSpread,
    /// An order outside the instrument's session.
    OutsideSession,
    /// More cancellations in a minute than allowed.
    CancelRate,
    /// Orders per fill over the last minute above the ratio.
    OrderToTrade,
    /// Orders on one side cancelled shortly after an opposite-side fill.
    Layering,
    /// A trade price moved more than k sigma of the EWMA of returns.
    PriceJump,
    /// The feed went stale while the instrument was in session.
    StaleFeed,
    /// Best bid above the best ask.
    CrossedBook,
    /// Best bid equal to the best ask.
    LockedBook,
    /// The venue's sequence numbers skipped.
    SequenceGap,
    /// A minute's traded volume far above its rolling baseline.
    VolumeSpike,
}

impl Rule {
    pub const ALL: [Rule; 14] = [
        Rule::OrderRate,
        Rule::LargeQty,
        Rule::LargeNotional,
        Rule::SymbolSpread,
        Rule::OutsideSession,
        Rule::CancelRate,
        Rule::OrderToTrade,
        Rule::Layering,
        Rule::PriceJump,
        Rule::StaleFeed,
        Rule::CrossedBook,
        Rule::LockedBook,
        Rule::SequenceGap,
        Rule::VolumeSpike,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::OrderRate => "order_rate",
            Rule::LargeQty => "large_qty",
            Rule::LargeNotional => "large_notional",
            Rule::SymbolSpread => "symbol_spread",
            Rule::OutsideSession => "outside_session",
            Rule::CancelRate => "cancel_rate",
            Rule::OrderToTrade => "order_to_trade",
            Rule::Layering => "layering",
            Rule::PriceJump => "price_jump",
            Rule::StaleFeed => "stale_feed",
            Rule::CrossedBook => "crossed_book",
            Rule::LockedBook => "locked_book",
            Rule::SequenceGap => "sequence_gap",
            Rule::VolumeSpike => "volume_spike",
        }
    }

    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether it is about an account's order flow (else an instrument's market data).
    pub const fn is_order_flow(self) -> bool {
        matches!(
            self,
            Rule::OrderRate
                | Rule::LargeQty
                | Rule::LargeNotional
                | Rule::SymbolSpread
                | Rule::OutsideSession
                | Rule::CancelRate
                | Rule::OrderToTrade
                | Rule::Layering
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s.to_ascii_uppercase().as_str() {
            "LOW" => Some(Severity::Low),
            "MEDIUM" => Some(Severity::Medium),
            "HIGH" => Some(Severity::High),
            "CRITICAL" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// What was done about it, escalating: alert only, then throttle the account's order
/// rate, then block its new orders, then its kill switch (cancels its open orders).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Alert,
    Throttle,
    Block,
    Kill,
}

impl Action {
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Throttle => "throttle",
            Action::Block => "block",
            Action::Kill => "kill",
        }
    }

    /// The next rung of the ladder (kill is the top).
    pub const fn next(self) -> Action {
        match self {
            Action::Alert => Action::Throttle,
            Action::Throttle => Action::Block,
            Action::Block | Action::Kill => Action::Kill,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Anomaly {
    pub rule: Rule,
    pub severity: Severity,
    pub action: Action,
    /// The account, for order-flow rules.
    pub account: Option<AccountId>,
    /// The instrument, when the rule is about one.
    pub instrument: Option<InstrumentId>,
    /// What was seen and the threshold it crossed, both with `scale` decimals
    /// (e.g. a notional in base currency at 8 decimals, a count at 0).
    pub observed: i64,
    pub threshold: i64,
    pub scale: u8,
    pub at: UnixNanos,
}
