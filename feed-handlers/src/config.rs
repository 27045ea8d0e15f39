//! `[[feeds]]` configuration: which feeds run, on which core, for which instruments.

use std::collections::BTreeMap;

use serde::Deserialize;
use stocksblitz_engine::idle::IdleConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedKind {
    /// Deterministic random-walk market generated in-process.
    Synthetic,
    /// Binance spot WebSocket streams + REST depth snapshots.
    Binance,
    /// Coinbase Exchange WebSocket feed.
    Coinbase,
    /// Zerodha Kite Connect ticker.
    Kite,
    /// A capture file replayed through a venue's normalizer.
    Replay,
}

impl FeedKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            FeedKind::Synthetic => "synthetic",
            FeedKind::Binance => "binance",
            FeedKind::Coinbase => "coinbase",
            FeedKind::Kite => "kite",
            FeedKind::Replay => "replay",
        }
    }

    /// The venue protocol of a live kind (a kind named like a registered venue).
    pub fn venue(self) -> Option<crate::venue::Venue> {
        match self {
            FeedKind::Synthetic | FeedKind::Replay => None,
            FeedKind::Binance | FeedKind::Coinbase | FeedKind::Kite => crate::venue::Venue::parse(self.as_str()),
        }
    }
}

/// One `[[feeds]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Unique name, used in logs, metrics and ring names.
    pub name: String,
    pub kind: FeedKind,
    /// Core to pin this feed's thread to; absent = not pinned.
    #[serde(default)]
    pub core: Option<usize>,
    /// Symbols (from `[[instruments]]`) this feed publishes.
    pub instruments: Vec<String>,
    /// Idle strategy of this feed's thread.
    #[serde(default)]
    pub idle: IdleConfig,
    /// Settings when `kind = "synthetic"`.
    #[serde(default)]
    pub synthetic: Option<SyntheticConfig>,
    /// Connection settings when the kind is a venue (`binance`, `coinbase`, `kite`).
    #[serde(default)]
    pub live: Option<crate::live::LiveConfig>,
    /// Settings when `kind = "replay"`.
    #[serde(default)]
    pub replay: Option<crate::replay_feed::ReplayFeedConfig>,
}

/// `[feeds.synthetic]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// PRNG seed: the same seed gives the same sequence of market events.
    pub seed: u64,
    /// Market events per second across all instruments of this feed.
    pub rate_per_sec: u64,
    /// Price levels per side of the generated book.
    pub depth: usize,
    /// Starting mid price per symbol, as a decimal string.
    pub start_prices: BTreeMap<String, String>,
}

impl SyntheticConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=10_000_000).contains(&self.rate_per_sec) {
            return Err(("rate_per_sec", "must be between 1 and 10000000".into()));
        }
        if !(1..=1_000).contains(&self.depth) {
            return Err(("depth", "must be between 1 and 1000".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::venue::Venue;

    #[derive(Deserialize)]
    struct Kind {
        kind: FeedKind,
    }

    /// Feed kinds and the venue registry cannot drift apart: every registered venue is
    /// a feed kind of the same name, and every venue kind is registered.
    #[test]
    fn venue_kinds_are_the_registered_venues() {
        for v in Venue::all() {
            let k: Kind = toml::from_str(&format!("kind = {:?}", v.as_str())).unwrap();
            assert_eq!(k.kind.as_str(), v.as_str());
            assert_eq!(k.kind.venue(), Some(v));
        }
        for kind in [FeedKind::Synthetic, FeedKind::Replay] {
            assert_eq!(kind.venue(), None);
            assert_eq!(Venue::parse(kind.as_str()), None);
        }
        for kind in [FeedKind::Binance, FeedKind::Coinbase, FeedKind::Kite] {
            assert_eq!(kind.venue().map(Venue::as_str), Some(kind.as_str()));
        }
    }
}
