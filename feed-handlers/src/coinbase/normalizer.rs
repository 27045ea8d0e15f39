//! Coinbase frames to ticks.
//!
//! level2 starts with a `snapshot` (applied as a `CLEAR`...`END_OF_BATCH` batch, which
//! makes the book LIVE) and continues with `l2update`s; updates before the snapshot
//! are dropped. level2 carries no sequence numbers, so its integrity is checked by the
//! handler's periodic audit against a REST snapshot. Matches carry per-product
//! contiguous `trade_id`s: a jump is a gap (counted), a repeat is a duplicate
//! (dropped); `heartbeat.last_trade_id` and `last_match` reveal trades missed while
//! disconnected. Tickers carry an increasing `sequence`: older ones are dropped.
//!
//! Because level2 has no sequence numbers, the handler periodically fetches the REST
//! book and feeds it in (`rest_book`); its top levels are compared with a local copy of
//! the book, skipping levels that moved since the request (see [`super::audit`]), and
//! two mismatching audits in a row declare a gap and resubscribe for a fresh snapshot.

use stocksblitz_engine::{BookFlags, FeedStatus, L2Book, Level, Price, Qty, Side, Tick, TickData, UnixNanos};

use super::audit::{MovedLevels, Verdict};
use super::parse::{for_each_change, parse_frame, CoinbaseEvent, ParseError};
use crate::normalize::{status, Action, FrameRef};
use crate::stats::FeedStats;
use crate::symbols::{SymbolMap, VenueInstrument};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("product not configured")]
    UnknownProduct,
    #[error("binary frames are not part of the Coinbase protocol")]
    Binary,
    #[error("the venue reported an error")]
    Venue,
    /// An `l2update` that could not be read: its changes are lost, so the level2
    /// books it may belong to left LIVE and the connection resubscribes.
    #[error("{source}; the level2 book resubscribes")]
    BookRejected { source: ParseError },
}

impl NormalizeError {
    /// What the connection must do because of this error.
    pub fn then(&self) -> Action {
        match self {
            NormalizeError::BookRejected { .. } => Action::Reconnect,
            _ => Action::None,
        }
    }
}

/// Levels per side compared by an audit.
pub const AUDIT_DEPTH: usize = 10;
/// Levels per side kept in the local copy (audits compare only the top).
const LOCAL_BOOK_LEVELS: usize = 2_000;

#[derive(Debug, Clone, Copy, Default)]
struct ProductState {
    book_synced: bool,
    /// The last match seen (later ones with a lower or equal id are repeats).
    last_trade_id: Option<u64>,
    /// Trade ids up to here are seen or already counted as missing.
    trades_accounted: u64,
    last_ticker_seq: u64,
    audit_mismatches: u8,
    /// Venue time of the last applied `l2update` (0: none since the snapshot).
    last_l2_time: i64,
}

pub struct CoinbaseNormalizer {
    products: SymbolMap<Vec<u8>>,
    state: Vec<ProductState>,
    /// Local copy of each product's book, for audits.
    books: Vec<Option<L2Book>>,
    /// Each product's recent level changes, for audits.
    moved: Vec<Option<MovedLevels>>,
}

impl CoinbaseNormalizer {
    /// `products`: (Coinbase product id such as `BTC-USD`, instrument).
    pub fn new(products: &[(String, VenueInstrument)], registry_len: usize) -> Self {
        let mut map = SymbolMap::new();
        for (p, inst) in products {
            map.insert(p.as_bytes().to_vec(), *inst);
        }
        let mut books: Vec<Option<L2Book>> = (0..registry_len).map(|_| None).collect();
        let mut moved: Vec<Option<MovedLevels>> = (0..registry_len).map(|_| None).collect();
        for (_, inst) in products {
            if let Some(slot) = books.get_mut(inst.id.index()) {
                *slot = Some(L2Book::new(LOCAL_BOOK_LEVELS));
            }
            if let Some(slot) = moved.get_mut(inst.id.index()) {
                *slot = Some(MovedLevels::new());
            }
        }
        Self {
            products: map,
            state: vec![ProductState::default(); registry_len],
            books,
            moved,
        }
    }

    /// Wraps a REST level2 book body, requested at `requested`, as the frame
    /// `on_frame` audits with.
    pub fn wrap_rest_book(product: &str, requested: UnixNanos, body: &str) -> String {
        format!(
            "{{\"type\":\"rest_book\",\"product_id\":{product:?},\"requested_ns\":{},\"data\":{body}}}",
            requested.0
        )
    }

    /// Compares a REST book requested at `requested` with the local copy; asks for a
    /// resync after two mismatches in a row.
    fn audit(
        &mut self,
        inst: VenueInstrument,
        requested: UnixNanos,
        [bids, asks]: [&[u8]; 2],
        recv: UnixNanos,
        stats: &FeedStats,
        out: &mut impl FnMut(Tick),
    ) -> Result<Action, NormalizeError> {
        let (ps, qs) = (inst.price_scale, inst.qty_scale);
        let mut rest = [[Level::default(); AUDIT_DEPTH]; 2];
        let mut counts = [0usize; 2];
        for (k, (side, span)) in [(Side::Buy, bids), (Side::Sell, asks)].into_iter().enumerate() {
            for_each_change(span, Some(side), ps, qs, |_, price, qty| {
                if let (Some(slot), Some(c)) = (rest.get_mut(k).and_then(|r| r.get_mut(counts[k])), counts.get_mut(k)) {
                    *slot = Level { price, qty };
                    *c += 1;
                }
            })?;
        }
        let (Some(Some(book)), Some(Some(moved))) = (self.books.get(inst.id.index()), self.moved.get(inst.id.index()))
        else {
            return Ok(Action::None);
        };
        let [rest_bids, rest_asks] = &rest;
        let verdict = moved.compare(
            [book.bids(), book.asks()],
            [
                rest_bids.get(..counts[0]).unwrap_or(&[]),
                rest_asks.get(..counts[1]).unwrap_or(&[]),
            ],
            AUDIT_DEPTH,
            requested,
        );
        let Some(s) = self.state.get_mut(inst.id.index()) else {
            return Ok(Action::None);
        };
        match verdict {
            _ if !s.book_synced => {
                s.audit_mismatches = 0;
                return Ok(Action::None);
            }
            Verdict::Inconclusive => return Ok(Action::None),
            Verdict::Agree => {
                s.audit_mismatches = 0;
                return Ok(Action::None);
            }
            Verdict::Differ => s.audit_mismatches += 1,
        }
        if s.audit_mismatches < 2 {
            return Ok(Action::None);
        }
        s.audit_mismatches = 0;
        s.book_synced = false;
        stats.gaps.inc();
        stats.resyncs.inc();
        out(status(inst.id, FeedStatus::Gap, 0, recv));
        Ok(Action::Reconnect)
    }

    /// After (re)connecting: books wait for their level2 snapshot again.
    pub fn on_connected(&mut self, recv: UnixNanos, out: &mut impl FnMut(Tick)) {
        for inst in self.products.values() {
            if let Some(s) = self.state.get_mut(inst.id.index()) {
                s.book_synced = false;
            }
            out(status(inst.id, FeedStatus::Syncing, 0, recv));
        }
    }

    fn lookup(&self, product: &[u8]) -> Result<VenueInstrument, NormalizeError> {
        self.products.get(product).ok_or(NormalizeError::UnknownProduct)
    }

    pub fn on_frame(
        &mut self,
        frame: FrameRef<'_>,
        recv: UnixNanos,
        stats: &FeedStats,
        out: &mut impl FnMut(Tick),
    ) -> Result<Action, NormalizeError> {
        let FrameRef::Text(text) = frame else {
            return Err(NormalizeError::Binary);
        };
        let event = match parse_frame(text) {
            Ok(e) => e,
            Err(e) => return Err(self.unreadable(text, e, recv, stats, out)),
        };
        match event {
            CoinbaseEvent::Subscriptions | CoinbaseEvent::Other => {}
            CoinbaseEvent::Error { .. } => return Err(NormalizeError::Venue),
            CoinbaseEvent::Heartbeat {
                product, last_trade_id, ..
            } => {
                let inst = self.lookup(product)?;
                // Without a trade id a heartbeat only says the connection is alive.
                let Some(last_trade_id) = last_trade_id else {
                    return Ok(Action::None);
                };
                if let Some(s) = self.state.get_mut(inst.id.index()) {
                    // Trades announced but not seen are a gap, counted once. They stay
                    // acceptable: if they arrive after all, they are trades, not repeats.
                    if s.last_trade_id
                        .is_some_and(|l| last_trade_id > l.max(s.trades_accounted))
                    {
                        stats.gaps.inc();
                    }
                    s.trades_accounted = s.trades_accounted.max(last_trade_id);
                    s.last_trade_id.get_or_insert(last_trade_id);
                }
            }
            CoinbaseEvent::Ticker(t) => {
                let inst = self.lookup(t.product)?;
                let Some(s) = self.state.get_mut(inst.id.index()) else {
                    return Ok(Action::None);
                };
                if let Some(seq) = t.sequence {
                    if seq <= s.last_ticker_seq {
                        return Ok(Action::None);
                    }
                    s.last_ticker_seq = seq;
                }
                let synced = s.book_synced;
                let p = |v: &[u8], field| {
                    Price::parse(v, inst.price_scale).map_err(|source| ParseError::Decimal { field, source })
                };
                let q = |v: &[u8], field| {
                    Qty::parse(v, inst.qty_scale).map_err(|source| ParseError::Decimal { field, source })
                };
                // A quote needs both prices; a ticker without them (the first of a
                // quiet product) carries no quote.
                let (Some(bid), Some(ask)) = (t.best_bid, t.best_ask) else {
                    return Ok(Action::None);
                };
                let (bid, ask) = (p(bid, "best_bid")?, p(ask, "best_ask")?);
                // Sizes are absent from older tickers: take them from the synced
                // level2 book when its best level is at the ticker's price; without
                // that the size is unknown and no quote is made up.
                let book = self
                    .books
                    .get(inst.id.index())
                    .and_then(Option::as_ref)
                    .filter(|_| synced);
                let size = |v: Option<&[u8]>, field, best: Option<Level>, price: Price| match v {
                    Some(v) => q(v, field).map(Some),
                    None => Ok(best.filter(|l| l.price == price).map(|l| l.qty)),
                };
                let bid_qty = size(t.best_bid_size, "best_bid_size", book.and_then(L2Book::best_bid), bid)?;
                let ask_qty = size(t.best_ask_size, "best_ask_size", book.and_then(L2Book::best_ask), ask)?;
                let (Some(bid_qty), Some(ask_qty)) = (bid_qty, ask_qty) else {
                    return Ok(Action::None);
                };
                out(Tick {
                    exchange_ts: t.time,
                    recv_ts: recv,
                    instrument: inst.id,
                    data: TickData::Quote {
                        bid,
                        bid_qty,
                        ask,
                        ask_qty,
                    },
                });
            }
            CoinbaseEvent::Match(m) => {
                let inst = self.lookup(m.product)?;
                let price = Price::parse(m.price, inst.price_scale)
                    .map_err(|source| ParseError::Decimal { field: "price", source })?;
                let qty = Qty::parse(m.size, inst.qty_scale)
                    .map_err(|source| ParseError::Decimal { field: "size", source })?;
                let Some(s) = self.state.get_mut(inst.id.index()) else {
                    return Ok(Action::None);
                };
                if let Some(last) = s.last_trade_id {
                    if m.trade_id <= last {
                        return Ok(Action::None);
                    }
                    // Missing ids not already counted from a heartbeat.
                    if m.trade_id > last + 1 && m.trade_id - 1 > s.trades_accounted {
                        stats.gaps.inc();
                    }
                }
                s.last_trade_id = Some(m.trade_id);
                s.trades_accounted = s.trades_accounted.max(m.trade_id);
                if m.last {
                    // The snapshot of "the latest trade": a baseline, not a new trade.
                    return Ok(Action::None);
                }
                out(Tick {
                    exchange_ts: m.time,
                    recv_ts: recv,
                    instrument: inst.id,
                    data: TickData::Trade {
                        price,
                        qty,
                        trade_id: m.trade_id,
                        aggressor: m.aggressor(),
                    },
                });
            }
            CoinbaseEvent::RestBook {
                product,
                requested,
                bids,
                asks,
            } => {
                let inst = self.lookup(product)?;
                return self.audit(inst, requested, [bids, asks], recv, stats, out);
            }
            CoinbaseEvent::Snapshot { product, bids, asks } => {
                let inst = self.lookup(product)?;
                self.book_batch(
                    inst,
                    &[(Some(Side::Buy), bids), (Some(Side::Sell), asks)],
                    true,
                    UnixNanos::UNKNOWN,
                    recv,
                    out,
                )?;
                if let Some(s) = self.state.get_mut(inst.id.index()) {
                    s.book_synced = true;
                    s.last_l2_time = 0;
                }
                out(status(inst.id, FeedStatus::Live, 0, recv));
            }
            CoinbaseEvent::L2Update { product, time, changes } => {
                let inst = self.lookup(product)?;
                let Some(s) = self.state.get_mut(inst.id.index()).filter(|s| s.book_synced) else {
                    return Ok(Action::None);
                };
                // level2 has no sequence numbers, but its times do not go back: an
                // older update arriving after a newer one (reordered, or a late
                // duplicate) would set stale sizes.
                if time.known().is_some_and(|t| t.0 < s.last_l2_time) {
                    self.lost(inst, recv, stats, out);
                    return Ok(Action::Reconnect);
                }
                if let Some(t) = time.known() {
                    s.last_l2_time = t.0;
                }
                if let Err(e) = self.book_batch(inst, &[(None, changes)], false, time, recv, out) {
                    self.lost(inst, recv, stats, out);
                    let source = match e {
                        NormalizeError::Parse(p) => p,
                        _ => ParseError::Field("changes"),
                    };
                    return Err(NormalizeError::BookRejected { source });
                }
            }
        }
        Ok(Action::None)
    }

    /// `inst`'s level2 book missed an update: it leaves LIVE until the fresh snapshot
    /// that resubscribing brings.
    /// Returns whether the book was LIVE.
    fn lost(&mut self, inst: VenueInstrument, recv: UnixNanos, stats: &FeedStats, out: &mut impl FnMut(Tick)) -> bool {
        let Some(s) = self.state.get_mut(inst.id.index()).filter(|s| s.book_synced) else {
            return false;
        };
        s.book_synced = false;
        stats.gaps.inc();
        stats.resyncs.inc();
        out(status(inst.id, FeedStatus::Gap, 0, recv));
        true
    }

    /// A frame that did not parse. If it was meant as an `l2update` (its type is
    /// legible), its changes are lost: the product's book (every synced book, when the
    /// product is not legible either) leaves LIVE and the connection resubscribes.
    fn unreadable(
        &mut self,
        text: &[u8],
        e: ParseError,
        recv: UnixNanos,
        stats: &FeedStats,
        out: &mut impl FnMut(Tick),
    ) -> NormalizeError {
        if memchr::memmem::find(text, br#""l2update""#).is_none() {
            return e.into();
        }
        let product = memchr::memmem::find(text, br#""product_id":""#).and_then(|at| {
            let rest = text.get(at + 14..)?;
            let end = memchr::memchr(b'"', rest)?;
            self.products.get(rest.get(..end)?)
        });
        let mut any = false;
        for k in 0..self.products.values().count() {
            let Some(inst) = self.products.values().nth(k).copied() else {
                break;
            };
            if product.is_none_or(|p| p.id == inst.id) {
                any |= self.lost(inst, recv, stats, out);
            }
        }
        if any {
            NormalizeError::BookRejected { source: e }
        } else {
            // No LIVE book lost anything: the snapshot on its way covers it.
            e.into()
        }
    }

    /// Emits the levels of `spans` as one batch; validates everything first so a bad
    /// level never leaves half a message applied.
    fn book_batch(
        &mut self,
        inst: VenueInstrument,
        spans: &[(Option<Side>, &[u8])],
        snapshot: bool,
        exchange_ts: UnixNanos,
        recv: UnixNanos,
        out: &mut impl FnMut(Tick),
    ) -> Result<(), NormalizeError> {
        let (ps, qs) = (inst.price_scale, inst.qty_scale);
        let mut total = 0usize;
        for (side, span) in spans {
            for_each_change(span, *side, ps, qs, |_, _, _| total += 1)?;
        }
        let base = if snapshot { BookFlags::SNAPSHOT } else { BookFlags::NONE };
        let delta = |side, price, qty, flags| Tick {
            exchange_ts,
            recv_ts: recv,
            instrument: inst.id,
            data: TickData::BookDelta {
                side,
                price,
                qty,
                update_id: 0,
                flags,
            },
        };
        let mut local = self.books.get_mut(inst.id.index()).and_then(Option::as_mut);
        let mut moved = self.moved.get_mut(inst.id.index()).and_then(Option::as_mut);
        if snapshot {
            if let Some(b) = local.as_deref_mut() {
                b.clear();
            }
            if let Some(m) = moved.as_deref_mut() {
                m.rebuilt(recv);
            }
        }
        if total == 0 {
            if snapshot {
                out(delta(
                    Side::Buy,
                    Price::ZERO,
                    Qty::ZERO,
                    base.with(BookFlags::CLEAR).with(BookFlags::END_OF_BATCH),
                ));
            }
            return Ok(());
        }
        let mut n = 0usize;
        for (side, span) in spans {
            for_each_change(span, *side, ps, qs, |s, p, q| {
                if let Some(b) = local.as_deref_mut() {
                    b.apply(s, p, q);
                }
                if let (Some(m), false) = (moved.as_deref_mut(), snapshot) {
                    m.record(s, p, recv);
                }
                let mut flags = base;
                if n == 0 && snapshot {
                    flags = flags.with(BookFlags::CLEAR);
                }
                n += 1;
                if n == total {
                    flags = flags.with(BookFlags::END_OF_BATCH);
                }
                out(delta(s, p, q, flags));
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksblitz_engine::{Aggressor, InstrumentId};

    fn normalizer() -> CoinbaseNormalizer {
        let inst = VenueInstrument {
            id: InstrumentId(0),
            price_scale: 2,
            qty_scale: 8,
        };
        CoinbaseNormalizer::new(&[("BTC-USD".into(), inst)], 1)
    }

    fn feed(n: &mut CoinbaseNormalizer, stats: &FeedStats, frames: &[&str]) -> Vec<Tick> {
        let mut ticks = Vec::new();
        for f in frames {
            n.on_frame(FrameRef::Text(f.as_bytes()), UnixNanos(9), stats, &mut |t| {
                ticks.push(t)
            })
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        }
        ticks
    }

    fn matched(id: u64) -> String {
        format!(
            r#"{{"type":"match","trade_id":{id},"sequence":{id},"maker_order_id":"a","taker_order_id":"b","time":"2024-01-01T00:00:00Z","product_id":"BTC-USD","size":"0.5","price":"42000.01","side":"buy"}}"#
        )
    }

    #[test]
    fn level2_snapshot_then_updates() {
        let mut n = normalizer();
        let stats = FeedStats::default();
        let early = r#"{"type":"l2update","product_id":"BTC-USD","time":"2024-01-01T00:00:00Z","changes":[["buy","1.00","1"]]}"#;
        assert!(
            feed(&mut n, &stats, &[early]).is_empty(),
            "updates before the snapshot are dropped"
        );
        let snap = r#"{"type":"snapshot","product_id":"BTC-USD","bids":[["100.00","1"]],"asks":[["101.00","2"],["102.00","3"]]}"#;
        let t = feed(&mut n, &stats, &[snap, early]);
        assert_eq!(t.len(), 3 + 1 + 1);
        assert!(matches!(t[0].data, TickData::BookDelta { flags, .. } if flags.contains(BookFlags::CLEAR)));
        assert!(matches!(t[2].data, TickData::BookDelta { flags, .. } if flags.contains(BookFlags::END_OF_BATCH)));
        assert_eq!(
            t[3].data,
            TickData::Status {
                status: FeedStatus::Live,
                detail: 0
            }
        );
        assert!(matches!(
            t[4].data,
            TickData::BookDelta {
                price: Price(100),
                qty: Qty(100_000_000),
                ..
            }
        ));
    }

    #[test]
    fn matches_dedupe_and_count_gaps() {
        let mut n = normalizer();
        let stats = FeedStats::default();
        let (m1, m2, m4) = (matched(1), matched(2), matched(4));
        let t = feed(&mut n, &stats, &[&m1, &m2, &m2, &m4]);
        assert_eq!(t.len(), 3, "duplicate dropped");
        assert_eq!(stats.gaps.get(), 1, "3 was missed");
        assert!(matches!(
            t[0].data,
            TickData::Trade {
                aggressor: Aggressor::Sell,
                price: Price(4_200_001),
                ..
            }
        ));
        let hb = r#"{"type":"heartbeat","sequence":90,"last_trade_id":9,"product_id":"BTC-USD","time":"2024-01-01T00:00:01Z"}"#;
        feed(&mut n, &stats, &[hb]);
        assert_eq!(stats.gaps.get(), 2, "heartbeat shows trades 5..9 were missed");
        // A trade the heartbeat announced that arrives after all is still a trade; the
        // next ones count no second gap for what the heartbeat already reported.
        let (m6, m10) = (matched(6), matched(10));
        assert_eq!(feed(&mut n, &stats, &[&m6, &m10]).len(), 2);
        assert_eq!(stats.gaps.get(), 2);
    }

    #[test]
    fn old_tickers_are_dropped() {
        let mut n = normalizer();
        let stats = FeedStats::default();
        let tk = |seq: u64| {
            format!(
                r#"{{"type":"ticker","sequence":{seq},"product_id":"BTC-USD","price":"1.00","best_bid":"1.00","best_bid_size":"1","best_ask":"1.01","best_ask_size":"2","time":"2024-01-01T00:00:00Z"}}"#
            )
        };
        let (a, b, c) = (tk(5), tk(4), tk(6));
        assert_eq!(feed(&mut n, &stats, &[&a, &b, &c]).len(), 2);
    }

    #[test]
    fn audits_resync_after_two_mismatches() {
        let mut n = normalizer();
        let stats = FeedStats::default();
        let snap = r#"{"type":"snapshot","product_id":"BTC-USD","bids":[["100.00","1"]],"asks":[["101.00","2"]]}"#;
        feed(&mut n, &stats, &[snap]);
        // Requested after the snapshot (received at 9).
        let audit = |body: &str| CoinbaseNormalizer::wrap_rest_book("BTC-USD", UnixNanos(10), body);
        let good = audit(r#"{"sequence":5,"bids":[["100.00","1",3]],"asks":[["101.00","2",1]]}"#);
        let bad = audit(r#"{"sequence":6,"bids":[["100.00","1",3]],"asks":[["101.50","2",1]]}"#);
        let mut ticks = Vec::new();
        let mut run = |f: &str, ticks: &mut Vec<Tick>| {
            n.on_frame(FrameRef::Text(f.as_bytes()), UnixNanos(9), &stats, &mut |t| {
                ticks.push(t)
            })
            .unwrap()
        };
        assert_eq!(run(&good, &mut ticks), Action::None);
        assert_eq!(
            run(&bad, &mut ticks),
            Action::None,
            "one mismatch can be an update still in flight"
        );
        assert_eq!(run(&good, &mut ticks), Action::None, "and a match resets the count");
        assert_eq!(run(&bad, &mut ticks), Action::None);
        assert_eq!(run(&bad, &mut ticks), Action::Reconnect);
        assert_eq!(
            ticks.last().map(|t| t.data),
            Some(TickData::Status {
                status: FeedStatus::Gap,
                detail: 0
            })
        );
        assert_eq!(stats.gaps.get(), 1);
        assert!(n
            .on_frame(
                FrameRef::Text(audit(r#"{"bids":"x","asks":[]}"#).as_bytes()),
                UnixNanos(9),
                &stats,
                &mut |_| {}
            )
            .is_err());
    }

    #[test]
    fn audits_skip_levels_that_moved_after_the_request() {
        let mut n = normalizer();
        let stats = FeedStats::default();
        let snap = r#"{"type":"snapshot","product_id":"BTC-USD","bids":[["100.00","1"]],"asks":[["101.00","2"]]}"#;
        feed(&mut n, &stats, &[snap]);
        let mut at = |f: &str, recv: i64| {
            n.on_frame(FrameRef::Text(f.as_bytes()), UnixNanos(recv), &stats, &mut |_| {})
                .unwrap()
        };
        // The REST book was requested at 10 and shows the ask before an update that
        // arrived at 20 moved it: not a mismatch, however often it happens.
        let moved = r#"{"type":"l2update","product_id":"BTC-USD","time":"2019-08-14T20:42:27.265Z","changes":[["sell","101.00","5"]]}"#;
        at(moved, 20);
        let before = CoinbaseNormalizer::wrap_rest_book(
            "BTC-USD",
            UnixNanos(10),
            r#"{"bids":[["100.00","1",3]],"asks":[["101.00","2",1]]}"#,
        );
        for _ in 0..3 {
            assert_eq!(at(&before, 30), Action::None);
        }
        // Requested after that update, the same REST book is wrong.
        let after = CoinbaseNormalizer::wrap_rest_book(
            "BTC-USD",
            UnixNanos(25),
            r#"{"bids":[["100.00","1",3]],"asks":[["101.00","2",1]]}"#,
        );
        assert_eq!(at(&after, 30), Action::None);
        assert_eq!(at(&after, 31), Action::Reconnect);
        assert_eq!(stats.resyncs.get(), 1);
    }

    #[test]
    fn bad_frames() {
        let mut n = normalizer();
        let stats = FeedStats::default();
        let mut sink = |_| {};
        for bad in [
            r#"{"type":"snapshot","product_id":"ETH-USD","bids":[],"asks":[]}"#,
            r#"{"type":"snapshot","product_id":"BTC-USD","bids":[["1.001","1"]],"asks":[]}"#,
            r#"{"type":"error","message":"nope"}"#,
            "{",
        ] {
            assert!(
                n.on_frame(FrameRef::Text(bad.as_bytes()), UnixNanos(1), &stats, &mut sink)
                    .is_err(),
                "{bad}"
            );
        }
    }

    /// Issue 14 point 3: a ticker without `best_bid_size`/`best_ask_size` (older
    /// messages) is no bad frame. Its sizes come from the synced level2 book when the
    /// book's best level is at the ticker's price; otherwise no quote is made up. A
    /// heartbeat without `last_trade_id` and a match without `side` are accepted too.
    #[test]
    fn optional_fields_absent_are_no_bad_frames() {
        let ticker = |seq: u64, sizes: bool| {
            let sizes = if sizes {
                r#""best_bid_size":"0.50000000","best_ask_size":"0.25000000","#
            } else {
                ""
            };
            format!(
                r#"{{"type":"ticker","sequence":{seq},"product_id":"BTC-USD","price":"100.00","best_bid":"100.00",{sizes}"best_ask":"101.00","time":"2024-01-01T00:00:00Z"}}"#
            )
        };
        let quotes = |t: &[Tick]| -> Vec<TickData> {
            t.iter()
                .filter(|t| matches!(t.data, TickData::Quote { .. }))
                .map(|t| t.data)
                .collect()
        };
        let mut n = normalizer();
        let stats = FeedStats::default();
        let t = feed(&mut n, &stats, &[&ticker(1, false)]);
        assert!(quotes(&t).is_empty(), "no book yet: sizes unknown, no quote");
        let snap = r#"{"type":"snapshot","product_id":"BTC-USD","bids":[["100.00","1.25000000"]],"asks":[["101.00","2.00000000"]]}"#;
        let t = feed(&mut n, &stats, &[snap, &ticker(2, false)]);
        let q = TickData::Quote {
            bid: Price(10_000),
            bid_qty: Qty(125_000_000),
            ask: Price(10_100),
            ask_qty: Qty(200_000_000),
        };
        assert_eq!(quotes(&t), vec![q], "sizes from the synced book");
        let t = feed(&mut n, &stats, &[&ticker(3, true)]);
        assert!(matches!(
            quotes(&t)[..],
            [TickData::Quote {
                bid_qty: Qty(50_000_000),
                ask_qty: Qty(25_000_000),
                ..
            }]
        ));
        // The book's best bid moved away from the ticker's: that size is unknown.
        let moved = r#"{"type":"l2update","product_id":"BTC-USD","time":"2024-01-01T00:00:01Z","changes":[["buy","100.50","1.00000000"]]}"#;
        let t = feed(&mut n, &stats, &[moved, &ticker(4, false)]);
        assert!(quotes(&t).is_empty());
        let no_sequence = ticker(5, true).replace(r#""sequence":5,"#, "");
        assert_eq!(quotes(&feed(&mut n, &stats, &[&no_sequence])).len(), 1);
        let hb = r#"{"type":"heartbeat","product_id":"BTC-USD","time":"2024-01-01T00:00:01Z"}"#;
        assert!(feed(&mut n, &stats, &[hb]).is_empty());
        let sideless = matched(7).replace(r#","side":"buy""#, "");
        let t = feed(&mut n, &stats, &[&sideless]);
        assert!(matches!(
            t[..],
            [Tick {
                data: TickData::Trade {
                    aggressor: Aggressor::Unknown,
                    ..
                },
                ..
            }]
        ));
        assert_eq!(stats.gaps.get(), 0);
    }

    /// Issue 14 point 2 for level2: over generated update streams with one fault (an
    /// update rejected for a value finer than the product's increment or cut short,
    /// duplicated, or delivered late) at any position, the book is never LIVE and
    /// wrong once the faulty frame has arrived: it is LIVE and equal to the venue's
    /// book, or not LIVE and resubscribing. (level2 has no sequence numbers: an update
    /// still in flight cannot be noticed before it arrives, and one that never arrives
    /// at all is for the periodic REST audit.) After resubscribing the fresh snapshot
    /// makes it LIVE and equal again.
    mod level2_under_faults {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        type RefBook = [BTreeMap<i64, i64>; 2];

        #[derive(Debug, Clone, Copy)]
        enum Fault {
            Reject { cut: bool },
            Duplicate { later: usize },
            MoveLater { by: usize },
        }

        fn dec(m: i64, scale: u32) -> String {
            let unit = 10i64.pow(scale);
            format!("{}.{:0w$}", m / unit, m % unit, w = scale as usize)
        }

        fn update(i: usize, changes: &[(Side, i64, i64)], reject: bool) -> String {
            let items: Vec<String> = changes
                .iter()
                .enumerate()
                .map(|(k, &(side, p, q))| {
                    let size = if reject && k == 0 {
                        format!("{}1", dec(q, 8))
                    } else {
                        dec(q, 8)
                    };
                    format!(r#"["{}","{}","{size}"]"#, side.as_str(), dec(p, 2))
                })
                .collect();
            let secs = 20 + i;
            format!(
                r#"{{"type":"l2update","product_id":"BTC-USD","time":"2023-11-14T22:{:02}:{:02}.265000Z","changes":[{}]}}"#,
                13 + secs / 60,
                secs % 60,
                items.join(",")
            )
        }

        fn snapshot(b: &RefBook) -> String {
            let side = |m: &BTreeMap<i64, i64>, rev: bool| {
                let mut v: Vec<String> = m
                    .iter()
                    .map(|(p, q)| format!(r#"["{}","{}"]"#, dec(*p, 2), dec(*q, 8)))
                    .collect();
                if rev {
                    v.reverse();
                }
                v.join(",")
            };
            format!(
                r#"{{"type":"snapshot","product_id":"BTC-USD","bids":[{}],"asks":[{}]}}"#,
                side(&b[0], true),
                side(&b[1], false)
            )
        }

        fn apply(b: &mut RefBook, changes: &[(Side, i64, i64)]) {
            for &(side, p, q) in changes {
                let m = &mut b[usize::from(side == Side::Sell)];
                if q == 0 {
                    m.remove(&p);
                } else {
                    m.insert(p, q);
                }
            }
        }

        fn changes() -> impl Strategy<Value = Vec<(Side, i64, i64)>> {
            let change = (any::<bool>(), 0i64..8, 0i64..4, 0i64..100_000_000).prop_map(|(buy, k, whole, frac)| {
                let side = if buy { Side::Buy } else { Side::Sell };
                let price = if buy { 6_500_000 - k } else { 6_501_000 + k };
                (side, price, if whole == 0 { 0 } else { whole * 100_000_000 + frac })
            });
            prop::collection::vec(change, 1..4)
        }

        fn fault() -> impl Strategy<Value = Fault> {
            prop_oneof![
                any::<bool>().prop_map(|cut| Fault::Reject { cut }),
                (0usize..4).prop_map(|later| Fault::Duplicate { later }),
                (1usize..4).prop_map(|by| Fault::MoveLater { by }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            #[test]
            fn never_live_and_wrong(
                initial in changes(),
                evs in prop::collection::vec(changes(), 2..24),
                fault in fault(),
                at in any::<prop::sample::Index>(),
            ) {
                let mut start = RefBook::default();
                apply(&mut start, &initial);
                let mut states = vec![start.clone()];
                for e in &evs {
                    let mut b = states.last().cloned().unwrap_or_default();
                    apply(&mut b, e);
                    states.push(b);
                }
                let p = at.index(evs.len());
                // Arrival order: (event index, rejected).
                let mut order: Vec<(usize, bool)> = (0..evs.len()).map(|i| (i, false)).collect();
                let fault_frame = match fault {
                    Fault::Reject { .. } => {
                        order[p].1 = true;
                        p
                    }
                    Fault::Duplicate { later } => {
                        let at = (p + 1 + later).min(order.len());
                        order.insert(at, (p, false));
                        at
                    }
                    Fault::MoveLater { by } => {
                        let x = order.remove(p);
                        let at = (p + by).min(order.len());
                        order.insert(at, x);
                        at
                    }
                };
                let mut n = normalizer();
                let stats = FeedStats::default();
                let mut book = L2Book::new(64);
                let mut live = false;
                let feed = |n: &mut CoinbaseNormalizer, f: &str, book: &mut L2Book, live: &mut bool| {
                    let r = n.on_frame(FrameRef::Text(f.as_bytes()), UnixNanos(1), &stats, &mut |t| {
                        book.apply_tick(&t.data);
                        if let TickData::Status { status, .. } = t.data {
                            *live = status == FeedStatus::Live;
                        }
                    });
                    match r {
                        Ok(a) => (a, false),
                        Err(e) => (e.then(), true),
                    }
                };
                let as_ref_book = |b: &L2Book| -> RefBook {
                    let m = |l: &[Level]| l.iter().map(|l| (l.price.0, l.qty.0)).collect();
                    [m(b.bids()), m(b.asks())]
                };
                n.on_connected(UnixNanos(1), &mut |_| {});
                feed(&mut n, &snapshot(&states[0]), &mut book, &mut live);
                prop_assert!(live);
                let (mut venue_pos, mut errors, mut resubscribed) = (0usize, 0usize, 0usize);
                for (k, &(i, reject)) in order.iter().enumerate() {
                    if i < venue_pos && resubscribed > 0 && k > fault_frame {
                        // Sent on the connection that was replaced.
                        continue;
                    }
                    venue_pos = venue_pos.max(i + 1);
                    let mut f = update(i, &evs[i], reject);
                    if reject && matches!(fault, Fault::Reject { cut: true }) {
                        f.truncate(f.len() / 2 + 10);
                    }
                    let (action, err) = feed(&mut n, &f, &mut book, &mut live);
                    errors += usize::from(err);
                    if k >= fault_frame {
                        prop_assert!(
                            !live || as_ref_book(&book) == states[venue_pos],
                            "frame {} ({:?} at {}): LIVE and wrong", k, fault, p
                        );
                    }
                    if action == Action::Reconnect {
                        prop_assert!(!live, "resubscribing while LIVE");
                        // A new subscription starts with the venue's current book.
                        resubscribed += 1;
                        n.on_connected(UnixNanos(1), &mut |_| {});
                        feed(&mut n, &snapshot(&states[venue_pos]), &mut book, &mut live);
                        prop_assert!(live && as_ref_book(&book) == states[venue_pos]);
                    }
                }
                prop_assert_eq!(errors, usize::from(matches!(fault, Fault::Reject { .. })));
                prop_assert!(live);
                prop_assert_eq!(as_ref_book(&book), states[evs.len()].clone(), "{:?} at {}", fault, p);
            }
        }
    }
}
