//! Coinbase Exchange WebSocket feed. This folder is all the system knows about
//! Coinbase: frame parsing, the normalizer and its level2 audits, the session
//! ([`Coinbase`]: subscribe message, REST level2 book for audits, what its config
//! needs) and the simulator's side ([`sim`]).

pub mod audit;
pub mod normalizer;
pub mod parse;
pub mod sim;

pub use parse::{for_each_change, parse_frame, CoinbaseEvent, Match, ParseError, Ticker};

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use stocksblitz_engine::{Instrument, InstrumentId, Tick, UnixNanos};

use crate::live::LiveConfig;
use crate::normalize::{Action, FrameRef};
use crate::sim::market::{SimEvent, VenueMarket};
use crate::sim::{Outgoing, Shared};
use crate::stats::FeedStats;
use crate::symbols::VenueInstrument;
use crate::venue::{BookRequest, BuildError, FrameError, Normalize, Protocol};
use normalizer::CoinbaseNormalizer;

/// How long an audit waits after the REST book arrives before comparing it (see
/// [`audit`]).
const AUDIT_SETTLE: Duration = Duration::from_millis(500);

/// The Coinbase Exchange protocol (registered in [`crate::venue`]).
pub struct Coinbase;

impl Protocol for Coinbase {
    fn name(&self) -> &'static str {
        "coinbase"
    }

    fn check_live(&self, live: &LiveConfig) -> Result<(), (&'static str, String)> {
        if live.audit_interval_secs > 0 && live.rest_url.is_none() {
            return Err(("rest_url", "required for coinbase book audits".into()));
        }
        Ok(())
    }

    fn normalizer(&self, chosen: &[&Instrument], registry_len: usize) -> Result<Box<dyn Normalize>, BuildError> {
        let list: Vec<_> = chosen
            .iter()
            .map(|i| (i.venue_symbol.clone(), VenueInstrument::of(i)))
            .collect();
        Ok(Box::new(CoinbaseNormalizer::new(&list, registry_len)))
    }

    fn subscribe(&self, venue_symbols: &[&str]) -> Vec<String> {
        vec![serde_json::json!({
            "type": "subscribe",
            "product_ids": venue_symbols,
            "channels": ["level2_batch", "matches", "ticker", "heartbeat"],
        })
        .to_string()]
    }

    /// The REST level2 book an audit compares the local book with.
    fn book_request(&self, rest: &str, venue_symbol: &str, _live: &LiveConfig) -> Option<BookRequest> {
        Some(BookRequest {
            url: format!("{rest}/products/{venue_symbol}/book?level=2"),
            symbol: venue_symbol.to_owned(),
            settle: AUDIT_SETTLE,
            wrap: CoinbaseNormalizer::wrap_rest_book,
        })
    }

    fn audits(&self, live: &LiveConfig) -> bool {
        live.audit_interval_secs > 0
    }

    fn sim_render(&self, market: &VenueMarket, events: &[SimEvent]) -> Vec<Outgoing> {
        sim::render(market, events)
    }

    fn sim_routes(&self, router: Router<Shared>) -> Router<Shared> {
        router
            .route("/coinbase", get(sim::stream))
            .route("/coinbase/products/{product}/book", get(sim::book))
    }
}

impl Normalize for CoinbaseNormalizer {
    fn on_connected(&mut self, recv: UnixNanos, mut out: &mut dyn FnMut(Tick), _: &mut dyn FnMut(InstrumentId)) {
        CoinbaseNormalizer::on_connected(self, recv, &mut out);
    }

    #[inline]
    fn on_frame(
        &mut self,
        frame: FrameRef<'_>,
        recv: UnixNanos,
        stats: &FeedStats,
        mut out: &mut dyn FnMut(Tick),
    ) -> Result<Action, FrameError> {
        CoinbaseNormalizer::on_frame(self, frame, recv, stats, &mut out).map_err(|e| FrameError::new("coinbase", e.then(), &e))
    }
}
