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

    /// Book updates and matches carry the venue's sequence and are the same on every
    /// connection; the subscription answer, the snapshot and `last_match` are the new
    /// connection's own (they come before its first update, and re-base the book).
    fn switch_marker(&self) -> Option<fn(&[u8]) -> bool> {
        Some(|frame| frame.starts_with(br#"{"type":"l2update""#) || frame.starts_with(br#"{"type":"match""#))
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
        CoinbaseNormalizer::on_frame(self, frame, recv, stats, &mut out)
            .map_err(|e| FrameError::new("coinbase", e.then(), &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::venue::testing::live;

    /// Updates and matches line up a make-before-break switch; what a connection gets
    /// of its own (the subscription answer, its snapshot, heartbeats, `last_match`)
    /// does not.
    #[test]
    fn switch_markers_are_updates_and_matches() {
        let is = Coinbase.switch_marker().unwrap();
        assert!(is(
            br#"{"type":"l2update","product_id":"BTC-USD","changes":[["buy","1.00","1"]]}"#
        ));
        assert!(is(
            br#"{"type":"match","trade_id":42,"sequence":42,"product_id":"BTC-USD"}"#
        ));
        for own in [
            r#"{"type":"subscriptions","channels":[]}"#,
            r#"{"type":"snapshot","product_id":"BTC-USD","bids":[],"asks":[]}"#,
            r#"{"type":"heartbeat","sequence":90,"last_trade_id":9,"product_id":"BTC-USD"}"#,
            r#"{"type":"last_match","trade_id":41,"product_id":"BTC-USD"}"#,
        ] {
            assert!(!is(own.as_bytes()), "{own}");
        }
    }

    /// The wire contract with Coinbase: the URL as configured, one subscribe message
    /// for every product and the four channels, and the REST level2 book for audits
    /// (applied after the settle time, wrapped with the request time).
    #[test]
    fn session_messages() {
        assert_eq!(
            Coinbase.stream_url("wss://ws-feed.exchange.coinbase.com", &["BTC-USD"]),
            "wss://ws-feed.exchange.coinbase.com"
        );
        let sub = Coinbase.subscribe(&["BTC-USD", "ETH-USD"]);
        assert_eq!(sub.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&sub[0]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "type": "subscribe",
                "product_ids": ["BTC-USD", "ETH-USD"],
                "channels": ["level2_batch", "matches", "ticker", "heartbeat"],
            })
        );
        let cfg = live("rest_url = \"https://api.exchange.coinbase.com\"\naudit_interval_secs = 30");
        let req = Coinbase
            .book_request("https://api.exchange.coinbase.com", "BTC-USD", &cfg)
            .unwrap();
        assert_eq!(
            req.url,
            "https://api.exchange.coinbase.com/products/BTC-USD/book?level=2"
        );
        assert_eq!(req.settle, AUDIT_SETTLE);
        assert_eq!(
            (req.wrap)(&req.symbol, UnixNanos(7), "{}"),
            CoinbaseNormalizer::wrap_rest_book("BTC-USD", UnixNanos(7), "{}")
        );
        assert!(Coinbase.audits(&cfg));
        assert!(!Coinbase.audits(&live("")));
    }

    /// Audits need the REST book; without audits Coinbase needs no `rest_url`.
    #[test]
    fn audits_need_rest_url() {
        assert_eq!(
            Coinbase.check_live(&live("audit_interval_secs = 30")),
            Err(("rest_url", "required for coinbase book audits".to_owned()))
        );
        assert_eq!(Coinbase.check_live(&live("")), Ok(()));
        assert_eq!(
            Coinbase.check_live(&live("audit_interval_secs = 30\nrest_url = \"https://x.example\"")),
            Ok(())
        );
    }
}
