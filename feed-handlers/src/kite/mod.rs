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
                message: format!(
                    "Kite venue_symbol {:?} is not a numeric instrument token",
                    i.venue_symbol
                ),
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
        KiteNormalizer::on_frame(self, frame, recv, stats, &mut out)
            .map_err(|e| FrameError::new("kite", Action::None, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksblitz_engine::instrument::InstrumentKind;
    use stocksblitz_engine::session::TradingSession;
    use stocksblitz_engine::{Price, Qty};

    fn instrument(venue_symbol: &str) -> Instrument {
        Instrument {
            id: InstrumentId(3),
            symbol: "RELIANCE".into(),
            venue: "nse".into(),
            venue_symbol: venue_symbol.into(),
            kind: InstrumentKind::Equity,
            currency: "INR".into(),
            price_scale: 2,
            qty_scale: 0,
            tick_size: Price(5),
            lot_size: Qty(1),
            session: TradingSession::Always,
        }
    }

    /// The wire contract with Kite: the URL as configured (credentials are added as
    /// query parameters by the connection), a subscribe then a full-mode message for
    /// the numeric tokens, and no REST book.
    #[test]
    fn session_messages() {
        assert_eq!(
            Kite.stream_url("wss://ws.kite.trade", &["738561"]),
            "wss://ws.kite.trade"
        );
        let msgs: Vec<serde_json::Value> = Kite
            .subscribe(&["738561", "408065"])
            .iter()
            .map(|m| serde_json::from_str(m).unwrap())
            .collect();
        assert_eq!(
            msgs,
            [
                serde_json::json!({ "a": "subscribe", "v": [738561, 408065] }),
                serde_json::json!({ "a": "mode", "v": ["full", [738561, 408065]] }),
            ]
        );
        let cfg = crate::venue::testing::live("rest_url = \"https://api.kite.trade\"");
        assert!(Kite.book_request("https://api.kite.trade", "738561", &cfg).is_none());
        assert!(!Kite.audits(&cfg));
        assert_eq!(Kite.check_live(&cfg), Ok(()));
    }

    proptest::proptest! {
        /// A Kite instrument is accepted exactly when its venue_symbol is a 32-bit
        /// instrument token, by the config check and the normalizer alike, and both
        /// say what to fix.
        #[test]
        fn venue_symbol_must_be_a_token(s in "[0-9]{0,11}|[ -~]{0,12}") {
            let inst = instrument(&s);
            let token = s.parse::<u32>().is_ok();
            let checked = Kite.check_instrument(&inst);
            proptest::prop_assert_eq!(checked.is_ok(), token);
            if let Err((key, message)) = checked {
                proptest::prop_assert_eq!(key, "venue_symbol");
                proptest::prop_assert!(message.contains("numeric instrument token"));
            }
            match Kite.normalizer(&[&inst], 4) {
                Ok(_) => proptest::prop_assert!(token),
                Err(e) => {
                    proptest::prop_assert!(!token);
                    let expected = format!("RELIANCE: Kite venue_symbol {s:?} is not a numeric instrument token");
                    proptest::prop_assert_eq!(e.to_string(), expected);
                }
            }
        }
    }
}
