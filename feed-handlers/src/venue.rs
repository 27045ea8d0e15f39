//! The supported venues and one normalizer type that covers them all, built from the
//! instrument registry. Used wherever frames must be normalized without caring which
//! venue they came from: live handlers, replay, the `stocksblitz feed` CLI.

use stocksblitz_engine::{InstrumentRegistry, Tick, UnixNanos};

use crate::binance::normalizer::{BinanceNormalizer, TradeSource};
use crate::coinbase::normalizer::CoinbaseNormalizer;
use crate::kite::normalizer::KiteNormalizer;
use crate::normalize::{Action, FrameRef};
use crate::stats::FeedStats;
use crate::symbols::{SymbolMap, VenueInstrument};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Venue {
    Binance,
    Coinbase,
    Kite,
}

impl Venue {
    pub const fn as_str(self) -> &'static str {
        match self {
            Venue::Binance => "binance",
            Venue::Coinbase => "coinbase",
            Venue::Kite => "kite",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "binance" => Some(Venue::Binance),
            "coinbase" => Some(Venue::Coinbase),
            "kite" => Some(Venue::Kite),
            _ => None,
        }
    }

    /// Whether an instrument's `venue` field is served by this protocol (Kite serves
    /// the Indian exchanges).
    pub fn serves(self, instrument_venue: &str) -> bool {
        match self {
            Venue::Binance => instrument_venue == "binance",
            Venue::Coinbase => instrument_venue == "coinbase",
            Venue::Kite => matches!(
                instrument_venue,
                "kite" | "nse" | "bse" | "nfo" | "bfo" | "cds" | "bcd" | "mcx"
            ),
        }
    }
}

/// Why a frame was not normalized (the feed goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("binance: {0}")]
    Binance(#[from] crate::binance::normalizer::NormalizeError),
    #[error("coinbase: {0}")]
    Coinbase(#[from] crate::coinbase::normalizer::NormalizeError),
    #[error("kite: {0}")]
    Kite(#[from] crate::kite::normalizer::NormalizeError),
}

impl FrameError {
    /// What the connection must still do although the frame was rejected: a rejected
    /// Binance diff needs its book's snapshot fetched, an unreadable Coinbase
    /// `l2update` a fresh level2 subscription.
    pub fn then(&self) -> Action {
        match self {
            FrameError::Binance(e) => e.snapshot_needed().map_or(Action::None, Action::Snapshot),
            FrameError::Coinbase(e) => e.then(),
            FrameError::Kite(_) => Action::None,
        }
    }
}

pub enum VenueNormalizer {
    Binance(BinanceNormalizer),
    Coinbase(CoinbaseNormalizer),
    Kite(KiteNormalizer),
}

/// Why a normalizer could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("{symbol}: Kite venue_symbol {value:?} is not a numeric instrument token")]
    KiteToken { symbol: String, value: String },
    #[error("no instruments are served by {0}")]
    NoInstruments(&'static str),
}

impl VenueNormalizer {
    /// A normalizer for the `symbols` (all the venue serves when empty).
    pub fn build(venue: Venue, registry: &InstrumentRegistry, symbols: &[String]) -> Result<Self, BuildError> {
        let chosen: Vec<_> = registry
            .iter()
            .filter(|i| venue.serves(&i.venue))
            .filter(|i| symbols.is_empty() || symbols.contains(&i.symbol))
            .collect();
        if chosen.is_empty() {
            return Err(BuildError::NoInstruments(venue.as_str()));
        }
        let n = registry.len();
        Ok(match venue {
            Venue::Binance => {
                let list: Vec<_> = chosen
                    .iter()
                    .map(|i| (i.venue_symbol.to_ascii_uppercase(), VenueInstrument::of(i), true))
                    .collect();
                VenueNormalizer::Binance(BinanceNormalizer::new(&list, n, TradeSource::Trade))
            }
            Venue::Coinbase => {
                let list: Vec<_> = chosen
                    .iter()
                    .map(|i| (i.venue_symbol.clone(), VenueInstrument::of(i)))
                    .collect();
                VenueNormalizer::Coinbase(CoinbaseNormalizer::new(&list, n))
            }
            Venue::Kite => {
                let mut map = SymbolMap::new();
                for i in &chosen {
                    let token = i.venue_symbol.parse::<u32>().map_err(|_| BuildError::KiteToken {
                        symbol: i.symbol.clone(),
                        value: i.venue_symbol.clone(),
                    })?;
                    map.insert(token, VenueInstrument::of(i));
                }
                VenueNormalizer::Kite(KiteNormalizer::new(map, n))
            }
        })
    }

    /// Marks every instrument SYNCING after a (re)connect; `need_snapshot` receives
    /// instruments whose books must be fetched over REST.
    pub fn on_connected(
        &mut self,
        recv: UnixNanos,
        out: &mut impl FnMut(Tick),
        need_snapshot: impl FnMut(stocksblitz_engine::InstrumentId),
    ) {
        match self {
            VenueNormalizer::Binance(n) => n.on_connected(recv, out, need_snapshot),
            VenueNormalizer::Coinbase(n) => n.on_connected(recv, out),
            VenueNormalizer::Kite(n) => n.on_connected(recv, out),
        }
    }

    pub fn on_frame(
        &mut self,
        frame: FrameRef<'_>,
        recv: UnixNanos,
        stats: &FeedStats,
        out: &mut impl FnMut(Tick),
    ) -> Result<Action, FrameError> {
        Ok(match self {
            VenueNormalizer::Binance(n) => n.on_frame(frame, recv, stats, out)?,
            VenueNormalizer::Coinbase(n) => n.on_frame(frame, recv, stats, out)?,
            VenueNormalizer::Kite(n) => n.on_frame(frame, recv, stats, out)?,
        })
    }
}
