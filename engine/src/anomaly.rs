//! What surveillance reports: an anomaly with its rule, severity, subject (an account
//! or an instrument), the observed value against the threshold it crossed, when, and
//! the action taken. Fixed-size and `Copy`: it travels in the order path's events and
//! the journal like any other event.
//!
//! The vocabulary surveillance and the order path share, below both: surveillance
//! finds anomalies (it reads the order path's events), the order path reports them and
//! applies their [`Action`]s, and neither imports the other for it.

use crate::ids::{AccountId, InstrumentId};
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

impl Anomaly {
    /// What was observed, in words a person can act on: who or what, the value seen
    /// against the limit it crossed (with units), and where to look next. `symbol` and
    /// `account` are the names of the anomaly's subjects, when it has them.
    pub fn describe(&self, symbol: Option<&str>, account: Option<&str>) -> String {
        let obs = crate::fixed::Decimal::new(self.observed, self.scale);
        let thr = crate::fixed::Decimal::new(self.threshold, self.scale);
        let sym = symbol.unwrap_or("an instrument");
        let acct = account.unwrap_or("an account");
        match self.rule {
            Rule::OrderRate => format!("account {acct} sent {obs} orders in the last minute; the limit is {thr}"),
            Rule::LargeQty => format!("account {acct} sent an order for {obs} {sym}, over the {thr} quantity limit"),
            Rule::LargeNotional => {
                format!("account {acct} sent an order in {sym} worth {obs} (base currency), over the {thr} limit")
            }
            Rule::SymbolSpread => {
                format!("account {acct} has traded {obs} distinct symbols today; the limit is {thr}")
            }
            Rule::OutsideSession => {
                format!("account {acct} sent an order for {sym} outside its trading session; it was refused")
            }
            Rule::CancelRate => {
                format!("account {acct} cancelled {obs} orders in the last minute; the limit is {thr}")
            }
            Rule::OrderToTrade => {
                format!("account {acct} sent {obs} orders per fill over the last minute; the limit is {thr}")
            }
            Rule::Layering => format!(
                "account {acct} cancelled {obs} orders in {sym} on one side just after a fill on the other \
                 (reported at {thr} such cancels)"
            ),
            Rule::PriceJump => {
                format!("{sym} traded {obs} standard deviations from its last price; the threshold is {thr}")
            }
            Rule::StaleFeed => format!(
                "{sym}: no market data for {obs} s while in session (stale after {thr} s, sooner when \
                 the feed's connection reports silence); check its feed's connection in /health"
            ),
            Rule::CrossedBook => {
                format!("{sym}: best bid above best ask by {obs}; its book is not trustworthy until the feed resyncs")
            }
            Rule::LockedBook => format!("{sym}: best bid equals best ask"),
            Rule::SequenceGap => format!(
                "{sym}: the feed skipped sequence numbers (messages were lost); \
                 the book is resyncing from a snapshot"
            ),
            Rule::VolumeSpike => {
                format!("{sym}: {obs} traded this minute, over {thr} (the configured multiple of its baseline)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anomaly(rule: Rule, observed: i64, threshold: i64, scale: u8) -> Anomaly {
        Anomaly {
            rule,
            severity: Severity::High,
            action: Action::Alert,
            account: None,
            instrument: Some(InstrumentId(0)),
            observed,
            threshold,
            scale,
            at: UnixNanos(0),
        }
    }

    /// Every rule says what it saw in words with its subject named, never bare numbers.
    #[test]
    fn every_rule_describes_itself_in_words() {
        for rule in Rule::ALL {
            let a = anomaly(rule, 12_345, 5_000, 3);
            let text = a.describe(Some("RELIANCE"), Some("alice"));
            let subject = if rule.is_order_flow() { "alice" } else { "RELIANCE" };
            assert!(text.contains(subject), "{rule:?}: {text}");
            assert!(text.split_whitespace().count() >= 5, "{rule:?}: {text}");
        }
    }

    #[test]
    fn a_stale_feed_says_how_long_and_against_what() {
        let a = anomaly(Rule::StaleFeed, 7_250, 5_000, 3);
        assert_eq!(
            a.describe(Some("RELIANCE"), None),
            "RELIANCE: no market data for 7.250 s while in session (stale after 5.000 s, sooner \
             when the feed's connection reports silence); check its feed's connection in /health"
        );
    }
}
