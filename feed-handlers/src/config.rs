//! `[[feeds]]` configuration: which feeds run, on which core, for which instruments.

use std::collections::BTreeMap;

use serde::Deserialize;
use stocksblitz_engine::idle::IdleConfig;

use crate::venue::Venue;

/// What a `[[feeds]]` entry runs: `kind = "synthetic"`, `"replay"`, or the name of a
/// registered venue (`crate::venue::VENUES`), so a new venue needs no change here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedKind {
    /// Deterministic random-walk market generated in-process.
    Synthetic,
    /// A capture file replayed through a venue's normalizer.
    Replay,
    /// A venue's live protocol (Binance, Coinbase, Kite, ...).
    Live(Venue),
}

impl FeedKind {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "synthetic" => Some(FeedKind::Synthetic),
            "replay" => Some(FeedKind::Replay),
            _ => Venue::parse(name).map(FeedKind::Live),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::Synthetic => "synthetic",
            FeedKind::Replay => "replay",
            FeedKind::Live(v) => v.as_str(),
        }
    }

    /// The venue protocol of a live kind.
    pub fn venue(self) -> Option<Venue> {
        match self {
            FeedKind::Live(v) => Some(v),
            FeedKind::Synthetic | FeedKind::Replay => None,
        }
    }
}

impl<'de> Deserialize<'de> for FeedKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        FeedKind::parse(&name).ok_or_else(|| {
            let names: Vec<String> = std::iter::once("synthetic")
                .chain(Venue::all().map(Venue::as_str))
                .chain(std::iter::once("replay"))
                .map(|n| format!("`{n}`"))
                .collect();
            serde::de::Error::custom(format!(
                "unknown variant `{name}`, expected one of {}",
                names.join(", ")
            ))
        })
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

    #[derive(Deserialize)]
    struct Kind {
        kind: FeedKind,
    }

    /// Feed kinds come from the venue registry: every registered venue is a feed kind of
    /// the same name, the other kinds are no venue, and an unknown name lists them all.
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
        let e = toml::from_str::<Kind>("kind = \"kraken\"").err().unwrap().to_string();
        assert!(
            e.contains(
                "unknown variant `kraken`, expected one of `synthetic`, `binance`, `coinbase`, `kite`, `replay`"
            ),
            "{e}"
        );
    }
}
