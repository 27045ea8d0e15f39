//! What a venue is to the rest of the system, and the one list of venues.
//!
//! Everything that differs between venues sits behind [`Protocol`], implemented once
//! per venue in that venue's own folder (`binance/`, `coinbase/`, `kite/`): which
//! instruments it serves and what it needs of them and of its `[feeds.live]` section,
//! how its frames become ticks ([`Normalize`]), its session (stream URL, subscribe
//! messages, REST book requests, audits), and its side of the feed simulator. The
//! live connection loop, replay, the `stocksblitz feed` CLI, config validation and the
//! simulator only ever talk to a [`Venue`], so none of them names a venue.
//!
//! Adding a venue: a new folder implementing [`Protocol`] and one line in [`VENUES`]
//! (plus its `pub mod` in `lib.rs`); `kind = "<name>"` in `[[feeds]]` then finds it.

use std::fmt;
use std::time::Duration;

use axum::Router;
use stocksblitz_engine::{Instrument, InstrumentId, InstrumentRegistry, Tick, UnixNanos};

use crate::live::LiveConfig;
use crate::normalize::{Action, FrameRef};
use crate::sim::market::{SimEvent, VenueMarket};
use crate::sim::{Outgoing, Shared};
use crate::stats::FeedStats;

/// The registry: every venue the feed handlers speak, by the name the config uses.
static VENUES: &[&dyn Protocol] = &[&crate::binance::Binance, &crate::coinbase::Coinbase, &crate::kite::Kite];

/// Everything one venue knows. Implemented by a unit struct in the venue's folder and
/// listed once in [`VENUES`].
pub trait Protocol: Sync + 'static {
    /// The venue's name: a feed's `kind`, a replay's `venue`, the simulator's route
    /// prefix and control-API path segment.
    fn name(&self) -> &'static str;

    /// Whether an instrument whose `venue` field is `instrument_venue` is served by
    /// this protocol.
    fn serves(&self, instrument_venue: &str) -> bool {
        instrument_venue == self.name()
    }

    /// What the venue needs of a served instrument beyond the common checks: the
    /// offending field of `[[instruments]]` and what to fix.
    fn check_instrument(&self, _instrument: &Instrument) -> Result<(), (&'static str, String)> {
        Ok(())
    }

    /// What the venue needs of its `[feeds.live]` section beyond
    /// [`LiveConfig::validate`]: the offending key and what to fix.
    fn check_live(&self, _live: &LiveConfig) -> Result<(), (&'static str, String)> {
        Ok(())
    }

    /// A normalizer for `chosen` (non-empty, all served by this venue).
    fn normalizer(&self, chosen: &[&Instrument], registry_len: usize) -> Result<Box<dyn Normalize>, BuildError>;

    /// The WebSocket URL for the feed's venue symbols (in instrument id order);
    /// `base` is `ws_url` without a trailing slash. Credentials are added after.
    fn stream_url(&self, base: &str, _venue_symbols: &[&str]) -> String {
        base.to_owned()
    }

    /// Text messages sent, in order, on every new connection to get the feed's
    /// channels.
    fn subscribe(&self, _venue_symbols: &[&str]) -> Vec<String> {
        Vec::new()
    }

    /// The REST book request for one instrument (`rest` is `rest_url` without a
    /// trailing slash), or `None` when the venue has none.
    fn book_request(&self, _rest: &str, _venue_symbol: &str, _live: &LiveConfig) -> Option<BookRequest> {
        None
    }

    /// Which data frames can mark where a make-before-break replacement takes over: a
    /// market data message the venue sends byte-identical, in the same order, on every
    /// connection (not an acknowledgement, heartbeat or per-connection snapshot). With
    /// markers, the switch waits for the old connection to deliver the new one's first
    /// marker, so no book update or trade between the two is skipped; `None`: the new
    /// connection is taken as soon as it delivers data (its first messages are whole
    /// state, as Kite's full-mode ticks).
    fn switch_marker(&self) -> Option<fn(&[u8]) -> bool> {
        None
    }

    /// Whether the connection requests every instrument's REST book every
    /// `audit_interval_secs` (the answers go to the normalizer as frames).
    fn audits(&self, _live: &LiveConfig) -> bool {
        false
    }

    /// The simulator: a step's market events in this venue's wire format.
    fn sim_render(&self, market: &VenueMarket, events: &[SimEvent]) -> Vec<Outgoing>;

    /// The simulator: this venue's WebSocket and REST routes, under `/{name}`.
    fn sim_routes(&self, router: Router<Shared>) -> Router<Shared>;
}

/// One REST book request and how its answer becomes the frame the normalizer reads.
#[derive(Debug, Clone)]
pub struct BookRequest {
    pub url: String,
    /// Passed to `wrap` (the venue's spelling of the instrument).
    pub symbol: String,
    /// Waited after a successful answer before it is applied (updates the venue sent
    /// before answering may still be in flight on the WebSocket).
    pub settle: Duration,
    /// `(symbol, requested_at, body)` to the frame fed to the normalizer.
    pub wrap: fn(&str, UnixNanos, &str) -> String,
}

/// A venue normalizer: frames in, ticks out through `out` (nothing collected or
/// allocated), and what the connection must do next.
pub trait Normalize: Send {
    /// After a (re)connect: every instrument SYNCING; `need_snapshot` receives
    /// instruments whose books must be fetched over REST.
    fn on_connected(&mut self, recv: UnixNanos, out: &mut dyn FnMut(Tick), need_snapshot: &mut dyn FnMut(InstrumentId));

    /// Normalizes one frame. The error is a fixed buffer rather than a box, so a
    /// rejected frame allocates nothing; the `Ok` path is unaffected by its size.
    #[allow(clippy::result_large_err)]
    fn on_frame(
        &mut self,
        frame: FrameRef<'_>,
        recv: UnixNanos,
        stats: &FeedStats,
        out: &mut dyn FnMut(Tick),
    ) -> Result<Action, FrameError>;
}

/// A venue, as named in the config: a handle on its [`Protocol`] in [`VENUES`].
#[derive(Clone, Copy)]
pub struct Venue(&'static dyn Protocol);

impl Venue {
    /// The venue called `name`, if it is in the registry.
    pub fn parse(name: &str) -> Option<Self> {
        VENUES.iter().find(|p| p.name() == name).map(|p| Venue(*p))
    }

    /// Every venue in the registry, in registry order.
    pub fn all() -> impl Iterator<Item = Venue> {
        VENUES.iter().map(|p| Venue(*p))
    }

    pub fn as_str(self) -> &'static str {
        self.0.name()
    }

    pub fn protocol(self) -> &'static dyn Protocol {
        self.0
    }

    /// Whether an instrument's `venue` field is served by this protocol (Kite serves
    /// the Indian exchanges).
    pub fn serves(self, instrument_venue: &str) -> bool {
        self.0.serves(instrument_venue)
    }
}

impl PartialEq for Venue {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Venue {}

impl fmt::Debug for Venue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Venue({})", self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Venue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Venue::parse(&name).ok_or_else(|| {
            let names: Vec<String> = Venue::all().map(|v| format!("`{}`", v.as_str())).collect();
            serde::de::Error::custom(format!(
                "unknown variant `{name}`, expected one of {}",
                names.join(", ")
            ))
        })
    }
}

/// Longest error text a [`FrameError`] keeps (longer ones are cut at a character).
const FRAME_ERROR_TEXT: usize = 240;

/// Why a frame was not normalized (the feed goes on): the venue, its words, and what
/// the connection must still do. Formatted into a fixed buffer, so rejecting a frame
/// allocates nothing.
#[derive(Clone, Copy)]
pub struct FrameError {
    venue: &'static str,
    then: Action,
    len: usize,
    text: [u8; FRAME_ERROR_TEXT],
}

impl FrameError {
    /// `error` from `venue`; `then` is what the connection must still do.
    pub fn new(venue: &'static str, then: Action, error: &dyn fmt::Display) -> Self {
        struct Buf<'a>(&'a mut [u8; FRAME_ERROR_TEXT], usize);
        impl fmt::Write for Buf<'_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for c in s.chars() {
                    let mut b = [0u8; 4];
                    let enc = c.encode_utf8(&mut b).as_bytes();
                    let end = self.1 + enc.len();
                    let Some(slot) = self.0.get_mut(self.1..end) else {
                        return Err(fmt::Error);
                    };
                    slot.copy_from_slice(enc);
                    self.1 = end;
                }
                Ok(())
            }
        }
        let mut text = [0u8; FRAME_ERROR_TEXT];
        let mut buf = Buf(&mut text, 0);
        // A full buffer ends the text there: a cut message is still a message.
        let _ = fmt::Write::write_fmt(&mut buf, format_args!("{error}"));
        let len = buf.1;
        Self { venue, then, len, text }
    }

    /// What the connection must still do although the frame was rejected: a rejected
    /// Binance diff needs its book's snapshot fetched, an unreadable Coinbase
    /// `l2update` a fresh level2 subscription.
    pub fn then(&self) -> Action {
        self.then
    }

    pub fn venue(&self) -> &'static str {
        self.venue
    }

    /// The venue's reason (without the venue name).
    pub fn message(&self) -> &str {
        self.text
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.venue, self.message())
    }
}

impl fmt::Debug for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameError")
            .field("venue", &self.venue)
            .field("then", &self.then)
            .field("message", &self.message())
            .finish()
    }
}

impl PartialEq for FrameError {
    fn eq(&self, other: &Self) -> bool {
        self.venue == other.venue && self.then == other.then && self.message() == other.message()
    }
}

impl std::error::Error for FrameError {}

/// Why a normalizer could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// An instrument the venue cannot serve as configured (what to fix in `message`).
    #[error("{symbol}: {message}")]
    Instrument { symbol: String, message: String },
    #[error("no instruments are served by {0}")]
    NoInstruments(&'static str),
}

/// One normalizer type for every venue: what live handlers, replay and the
/// `stocksblitz feed` CLI hold.
pub struct VenueNormalizer {
    venue: Venue,
    inner: Box<dyn Normalize>,
}

impl VenueNormalizer {
    /// A normalizer for the `symbols` (all the venue serves when empty).
    pub fn build(venue: Venue, registry: &InstrumentRegistry, symbols: &[String]) -> Result<Self, BuildError> {
        let chosen: Vec<&Instrument> = registry
            .iter()
            .filter(|i| venue.serves(&i.venue))
            .filter(|i| symbols.is_empty() || symbols.contains(&i.symbol))
            .collect();
        if chosen.is_empty() {
            return Err(BuildError::NoInstruments(venue.as_str()));
        }
        let inner = venue.protocol().normalizer(&chosen, registry.len())?;
        Ok(Self { venue, inner })
    }

    pub fn venue(&self) -> Venue {
        self.venue
    }

    /// Marks every instrument SYNCING after a (re)connect; `need_snapshot` receives
    /// instruments whose books must be fetched over REST.
    pub fn on_connected(
        &mut self,
        recv: UnixNanos,
        out: &mut impl FnMut(Tick),
        mut need_snapshot: impl FnMut(InstrumentId),
    ) {
        self.inner.on_connected(recv, out, &mut need_snapshot);
    }

    #[inline]
    #[allow(clippy::result_large_err)] // See `Normalize::on_frame`.
    pub fn on_frame(
        &mut self,
        frame: FrameRef<'_>,
        recv: UnixNanos,
        stats: &FeedStats,
        out: &mut impl FnMut(Tick),
    ) -> Result<Action, FrameError> {
        self.inner.on_frame(frame, recv, stats, out)
    }
}

/// Helpers for the venues' own tests.
#[cfg(test)]
pub(crate) mod testing {
    use crate::live::LiveConfig;

    /// A valid `[feeds.live]` with `extra` TOML lines added.
    pub fn live(extra: &str) -> LiveConfig {
        let text = format!(
            "ws_url = \"wss://venue.example\"\nstale_after_ms = 1000\ndead_after_ms = 2000\n\
             connect_timeout_ms = 1000\nmax_connection_age_secs = 3600\n{extra}"
        );
        toml::from_str(&text).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are unique, each parses back to itself, and a venue serves instruments
    /// listed under its own name.
    #[test]
    fn registry_names_round_trip() {
        let names: Vec<&str> = Venue::all().map(Venue::as_str).collect();
        assert_eq!(names, ["binance", "coinbase", "kite"]);
        for v in Venue::all() {
            assert_eq!(Venue::parse(v.as_str()), Some(v));
            assert!(v.serves(v.as_str()));
        }
        assert_eq!(Venue::parse("kraken"), None);
        for exchange in ["nse", "bse", "nfo", "bfo", "cds", "bcd", "mcx"] {
            let kite = Venue::parse("kite").map(|v| v.serves(exchange));
            assert_eq!(kite, Some(true), "{exchange}");
            assert_eq!(Venue::parse("binance").map(|v| v.serves(exchange)), Some(false));
        }
    }

    #[test]
    fn unknown_venue_names_the_known_ones() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            #[allow(dead_code)]
            venue: Venue,
        }
        let e = toml::from_str::<T>("venue = \"kraken\"")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown variant `kraken`, expected one of `binance`, `coinbase`, `kite`"),
            "{e}"
        );
        let ok: T = toml::from_str("venue = \"coinbase\"").unwrap();
        assert_eq!(ok.venue.as_str(), "coinbase");
    }

    proptest::proptest! {
        /// Any message is kept whole when it fits and cut at a character boundary
        /// when it does not; the display is always `venue: message`.
        #[test]
        fn frame_errors_keep_their_text(s in "\\PC{0,300}") {
            let e = FrameError::new("binance", Action::Reconnect, &s);
            let kept = e.message();
            proptest::prop_assert!(s.starts_with(kept));
            proptest::prop_assert!(kept.len() <= FRAME_ERROR_TEXT);
            if s.len() <= FRAME_ERROR_TEXT {
                proptest::prop_assert_eq!(kept, s.as_str());
            } else {
                proptest::prop_assert!(kept.len() + 4 > FRAME_ERROR_TEXT);
            }
            proptest::prop_assert_eq!(e.to_string(), format!("binance: {kept}"));
            proptest::prop_assert_eq!(e.then(), Action::Reconnect);
        }
    }
}
