//! Binance spot: WebSocket streams and the REST depth snapshot. This folder is all
//! the system knows about Binance: frame parsing, the normalizer and its book sync,
//! the session ([`Binance`]: combined-stream URL, REST depth snapshots, what its
//! config needs) and the simulator's side ([`sim`]).

pub mod depth_sync;
pub mod normalizer;
pub mod parse;
pub mod sim;

pub use parse::{parse_frame, parse_snapshot, BinanceEvent, DepthSnapshot, DepthUpdate, ParseError, TradeEvent};

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
use normalizer::{BinanceNormalizer, TradeSource};

/// The Binance spot protocol (registered in [`crate::venue`]).
pub struct Binance;

impl Protocol for Binance {
    fn name(&self) -> &'static str {
        "binance"
    }

    fn check_live(&self, live: &LiveConfig) -> Result<(), (&'static str, String)> {
        if live.rest_url.is_none() {
            return Err(("rest_url", "required for binance (book snapshots)".into()));
        }
        Ok(())
    }

    fn normalizer(&self, chosen: &[&Instrument], registry_len: usize) -> Result<Box<dyn Normalize>, BuildError> {
        let list: Vec<_> = chosen
            .iter()
            .map(|i| (i.venue_symbol.to_ascii_uppercase(), VenueInstrument::of(i), true))
            .collect();
        Ok(Box::new(BinanceNormalizer::new(
            &list,
            registry_len,
            TradeSource::Trade,
        )))
    }

    /// One combined stream: trades, book tickers and 100 ms depth diffs per symbol.
    fn stream_url(&self, base: &str, venue_symbols: &[&str]) -> String {
        let streams: Vec<String> = venue_symbols
            .iter()
            .flat_map(|s| {
                let s = s.to_ascii_lowercase();
                [
                    format!("{s}@trade"),
                    format!("{s}@bookTicker"),
                    format!("{s}@depth@100ms"),
                ]
            })
            .collect();
        format!("{base}/stream?streams={}", streams.join("/"))
    }

    /// Combined-stream frames (`{"stream":...,"data":...}`) are the same on every
    /// connection to the same streams; a diff-depth stream has no snapshot of its own,
    /// so a switch must not skip a diff.
    fn switch_marker(&self) -> Option<fn(&[u8]) -> bool> {
        Some(|frame| frame.starts_with(br#"{"stream":"#))
    }

    /// The REST depth snapshot a book syncs from.
    fn book_request(&self, rest: &str, venue_symbol: &str, live: &LiveConfig) -> Option<BookRequest> {
        let symbol = venue_symbol.to_ascii_uppercase();
        Some(BookRequest {
            url: format!("{rest}/api/v3/depth?symbol={symbol}&limit={}", live.depth_limit),
            symbol,
            settle: Duration::ZERO,
            wrap: |symbol, _, body| BinanceNormalizer::wrap_snapshot(symbol, body),
        })
    }

    fn sim_render(&self, market: &VenueMarket, events: &[SimEvent]) -> Vec<Outgoing> {
        sim::render(market, events)
    }

    fn sim_routes(&self, router: Router<Shared>) -> Router<Shared> {
        router
            .route("/binance/stream", get(sim::stream))
            .route("/binance/ws", get(sim::stream))
            .route("/binance/api/v3/depth", get(sim::depth))
    }
}

impl Normalize for BinanceNormalizer {
    fn on_connected(
        &mut self,
        recv: UnixNanos,
        mut out: &mut dyn FnMut(Tick),
        need_snapshot: &mut dyn FnMut(InstrumentId),
    ) {
        BinanceNormalizer::on_connected(self, recv, &mut out, need_snapshot);
    }

    #[inline]
    fn on_frame(
        &mut self,
        frame: FrameRef<'_>,
        recv: UnixNanos,
        stats: &FeedStats,
        mut out: &mut dyn FnMut(Tick),
    ) -> Result<Action, FrameError> {
        BinanceNormalizer::on_frame(self, frame, recv, stats, &mut out).map_err(|e| {
            let then = e.snapshot_needed().map_or(Action::None, Action::Snapshot);
            FrameError::new("binance", then, &e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::venue::testing::live;

    /// Stream data lines up a make-before-break switch; answers to requests do not.
    #[test]
    fn switch_markers_are_stream_data() {
        let is = Binance.switch_marker().unwrap();
        assert!(is(
            br#"{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","U":1,"u":2}}"#
        ));
        assert!(is(br#"{"stream":"btcusdt@trade","data":{"e":"trade","t":5}}"#));
        assert!(!is(br#"{"result":null,"id":1}"#));
        assert!(!is(b""));
    }

    /// The wire contract with Binance: one combined stream of trades, book tickers and
    /// 100 ms diffs per symbol (lower case, in order), and the REST depth snapshot at
    /// the configured limit.
    #[test]
    fn session_urls() {
        let url = Binance.stream_url("wss://stream.binance.com:9443", &["BTCUSDT", "ethusdt"]);
        assert_eq!(
            url,
            "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/btcusdt@bookTicker/btcusdt@depth@100ms/\
             ethusdt@trade/ethusdt@bookTicker/ethusdt@depth@100ms"
        );
        assert!(
            Binance.subscribe(&["btcusdt"]).is_empty(),
            "streams are named in the URL"
        );
        let cfg = live("rest_url = \"https://api.binance.com\"\ndepth_limit = 500");
        let req = Binance
            .book_request("https://api.binance.com", "btcusdt", &cfg)
            .unwrap();
        assert_eq!(req.url, "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=500");
        assert_eq!(req.settle, Duration::ZERO);
        let body = r#"{"lastUpdateId":1,"bids":[],"asks":[]}"#;
        assert_eq!(
            (req.wrap)(&req.symbol, UnixNanos(5), body),
            BinanceNormalizer::wrap_snapshot("BTCUSDT", body)
        );
        assert!(!Binance.audits(&cfg));
    }

    /// Book sync needs the REST snapshot: a Binance feed without `rest_url` is refused
    /// with the key and the reason.
    #[test]
    fn config_needs_rest_url() {
        assert_eq!(
            Binance.check_live(&live("")),
            Err(("rest_url", "required for binance (book snapshots)".to_owned()))
        );
        assert_eq!(
            Binance.check_live(&live("rest_url = \"https://api.binance.com\"")),
            Ok(())
        );
    }
}
