//! Zerodha Kite Connect ticker protocol: binary tick frames and JSON text frames.
//! Kite has no sequence numbers, so staleness is detected by timer in the handler.
//! This folder is all the system knows about Kite: decoding, the normalizer, the
//! session ([`Kite`]: subscribe and mode messages, numeric instrument tokens) and the
//! simulator's side ([`sim`]).

pub mod decode;
pub mod normalizer;
pub mod sim;
pub mod text;

pub use decode::{FrameSummary, KiteDecoder, KiteError};
pub use text::{parse_text, KiteText, KiteTextError};

use axum::routing::get;
use axum::Router;
use stocksblitz_engine::{Instrument, InstrumentId, Tick, UnixNanos};

use crate::normalize::{Action, FrameRef};
use crate::sim::market::{SimEvent, VenueMarket};
use crate::sim::{Outgoing, Shared};
use crate::stats::FeedStats;
use crate::symbols::{SymbolMap, VenueInstrument};
use crate::venue::{BuildError, FrameError, Normalize, Protocol};
use normalizer::KiteNormalizer;

/// The Kite ticker protocol (registered in [`crate::venue`]).
pub struct Kite;

impl Protocol for Kite {
    fn name(&self) -> &'static str {
        "kite"
    }

    /// Kite serves the Indian exchanges.
    fn serves(&self, instrument_venue: &str) -> bool {
        matches!(
            instrument_venue,
            "kite" | "nse" | "bse" | "nfo" | "bfo" | "cds" | "bcd" | "mcx"
        )
    }

    fn check_instrument(&self, instrument: &Instrument) -> Result<(), (&'static str, String)> {
        match instrument.venue_symbol.parse::<u32>() {
            Ok(_) => Ok(()),
            Err(_) => Err((
                "venue_symbol",
                "a Kite instrument's venue_symbol must be its numeric instrument token".into(),
            )),
        }
    }

    fn normalizer(&self, chosen: &[&Instrument], registry_len: usize) -> Result<Box<dyn Normalize>, BuildError> {
        let mut map = SymbolMap::new();
        for i in chosen {
            let token = i.venue_symbol.parse::<u32>().map_err(|_| BuildError::Instrument {
                symbol: i.symbol.clone(),
                message: format!("Kite venue_symbol {:?} is not a numeric instrument token", i.venue_symbol),
            })?;
            map.insert(token, VenueInstrument::of(i));
        }
        Ok(Box::new(KiteNormalizer::new(map, registry_len)))
    }

    /// Subscribe to the tokens, then ask for full mode (depth included).
    fn subscribe(&self, venue_symbols: &[&str]) -> Vec<String> {
        let tokens: Vec<u64> = venue_symbols.iter().filter_map(|s| s.parse().ok()).collect();
        vec![
            serde_json::json!({ "a": "subscribe", "v": tokens }).to_string(),
            serde_json::json!({ "a": "mode", "v": ["full", tokens] }).to_string(),
        ]
    }

    fn sim_render(&self, market: &VenueMarket, events: &[SimEvent]) -> Vec<Outgoing> {
        sim::render(market, events)
    }

    fn sim_routes(&self, router: Router<Shared>) -> Router<Shared> {
        router.route("/kite", get(sim::stream))
    }
}

impl Normalize for KiteNormalizer {
    fn on_connected(&mut self, recv: UnixNanos, mut out: &mut dyn FnMut(Tick), _: &mut dyn FnMut(InstrumentId)) {
        KiteNormalizer::on_connected(self, recv, &mut out);
    }

    #[inline]
    fn on_frame(
        &mut self,
        frame: FrameRef<'_>,
        recv: UnixNanos,
        stats: &FeedStats,
        mut out: &mut dyn FnMut(Tick),
    ) -> Result<Action, FrameError> {
        KiteNormalizer::on_frame(self, frame, recv, stats, &mut out).map_err(|e| FrameError::new("kite", Action::None, &e))
    }
}
