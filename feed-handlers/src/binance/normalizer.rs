//! Binance frames to ticks: trades, best bid/offer, and a locally synchronized book.
//!
//! REST depth snapshots enter as frames too, wrapped as
//! `{"stream":"<symbol>@depthSnapshot","data":<REST body>}`: that is how the live
//! handler feeds them in and how captures record them, so replaying a capture repeats
//! the exact sync sequence.

use stocksblitz_engine::{FeedStatus, InstrumentId, Price, Qty, Side, Tick, TickData, UnixNanos};

use super::depth_sync::{DepthSync, SyncOutcome};
use super::parse::{parse_frame, parse_snapshot, BinanceError, BinanceEvent, TradeEvent};
use crate::json_scan::{for_each_field, Value};
use crate::normalize::{status, Action, FrameRef};
use crate::stats::FeedStats;
use crate::symbols::{SymbolMap, VenueInstrument};

/// Which trade stream produces trade ticks (subscribing to both would double count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TradeSource {
    Trade,
    AggTrade,
}

/// Suffix of the pseudo stream that carries REST snapshots.
pub const SNAPSHOT_STREAM: &str = "@depthSnapshot";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error(transparent)]
    Parse(#[from] BinanceError),
    #[error("symbol not configured")]
    UnknownSymbol,
    #[error("binary frames are not part of the Binance protocol")]
    Binary,
    /// A diff whose ids were read but whose levels were not: its changes are lost, so
    /// the book left LIVE. `fetch`: a snapshot must be requested for `instrument`
    /// (false while one is already on its way).
    #[error("{source}; the book resyncs from a new snapshot")]
    BookRejected {
        source: BinanceError,
        instrument: InstrumentId,
        fetch: bool,
    },
}

impl NormalizeError {
    /// The instrument whose snapshot must be fetched because of this error, if any.
    pub fn snapshot_needed(&self) -> Option<InstrumentId> {
        match self {
            NormalizeError::BookRejected {
                instrument, fetch: true, ..
            } => Some(*instrument),
            _ => None,
        }
    }
}

pub struct BinanceNormalizer {
    symbols: SymbolMap<Vec<u8>>,
    /// Book sync per instrument id (None when that instrument has no depth stream).
    books: Vec<Option<DepthSync>>,
    trades: TradeSource,
    /// Highest trade id seen per instrument: trade ids increase per symbol, so a repeat
    /// (two connections overlapping during make-before-break, a venue re-send) is dropped.
    last_trade_id: Vec<u64>,
}

impl BinanceNormalizer {
    /// `instruments`: (Binance symbol in upper case, instrument, keeps a depth book).
    pub fn new(instruments: &[(String, VenueInstrument, bool)], registry_len: usize, trades: TradeSource) -> Self {
        let mut symbols = SymbolMap::new();
        let mut books: Vec<Option<DepthSync>> = (0..registry_len).map(|_| None).collect();
        for (sym, inst, depth) in instruments {
            symbols.insert(sym.to_ascii_uppercase().into_bytes(), *inst);
            if let (true, Some(slot)) = (*depth, books.get_mut(inst.id.index())) {
                *slot = Some(DepthSync::new(20_000, inst.price_scale, inst.qty_scale));
            }
        }
        Self {
            symbols,
            books,
            trades,
            last_trade_id: vec![0; registry_len],
        }
    }

    fn lookup(&self, sym: &[u8]) -> Result<VenueInstrument, NormalizeError> {
        self.symbols.get(sym).ok_or(NormalizeError::UnknownSymbol)
    }

    /// After (re)connecting: every book restarts its sync. Emits SYNCING for every
    /// instrument and returns the instruments whose snapshots must be fetched.
    pub fn on_connected(&mut self, recv: UnixNanos, out: &mut impl FnMut(Tick), mut need: impl FnMut(InstrumentId)) {
        for inst in self.symbols.values() {
            out(status(inst.id, FeedStatus::Syncing, 0, recv));
            if let Some(Some(sync)) = self.books.get_mut(inst.id.index()) {
                sync.reset();
                need(inst.id);
            }
        }
    }

    fn trade(&mut self, t: &TradeEvent<'_>, recv: UnixNanos, out: &mut impl FnMut(Tick)) -> Result<(), NormalizeError> {
        let inst = self.lookup(t.symbol)?;
        if let Some(last) = self.last_trade_id.get_mut(inst.id.index()) {
            if t.id <= *last {
                return Ok(());
            }
            *last = t.id;
        }
        let price =
            Price::parse(t.price, inst.price_scale).map_err(|source| BinanceError::Decimal { field: "p", source })?;
        let qty = Qty::parse(t.qty, inst.qty_scale).map_err(|source| BinanceError::Decimal { field: "q", source })?;
        out(Tick {
            exchange_ts: t.trade_time,
            recv_ts: recv,
            instrument: inst.id,
            data: TickData::Trade {
                price,
                qty,
                trade_id: t.id,
                aggressor: t.aggressor(),
            },
        });
        Ok(())
    }

    /// Handles one frame. Errors are per frame: count them and go on.
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
        if let Some(action) = self.snapshot_frame(text, recv, stats, out)? {
            return Ok(action);
        }
        match parse_frame(text)? {
            BinanceEvent::Trade(t) if self.trades == TradeSource::Trade => self.trade(&t, recv, out)?,
            BinanceEvent::AggTrade(t) if self.trades == TradeSource::AggTrade => self.trade(&t, recv, out)?,
            BinanceEvent::Trade(_) | BinanceEvent::AggTrade(_) | BinanceEvent::Other => {}
            BinanceEvent::BookTicker {
                symbol,
                bid,
                bid_qty,
                ask,
                ask_qty,
                ..
            } => {
                let inst = self.lookup(symbol)?;
                let p = |s, field| {
                    Price::parse(s, inst.price_scale).map_err(|source| BinanceError::Decimal { field, source })
                };
                let q =
                    |s, field| Qty::parse(s, inst.qty_scale).map_err(|source| BinanceError::Decimal { field, source });
                out(Tick {
                    // bookTicker carries no event time.
                    exchange_ts: UnixNanos::UNKNOWN,
                    recv_ts: recv,
                    instrument: inst.id,
                    data: TickData::Quote {
                        bid: p(bid, "b")?,
                        bid_qty: q(bid_qty, "B")?,
                        ask: p(ask, "a")?,
                        ask_qty: q(ask_qty, "A")?,
                    },
                });
            }
            BinanceEvent::Depth(d) => {
                let inst = self.lookup(d.symbol)?;
                let Some(Some(sync)) = self.books.get_mut(inst.id.index()) else {
                    return Ok(Action::None);
                };
                let (id, ts) = (inst.id, d.event_time);
                let mut emit = |side: Side, price: Price, qty: Qty, flags, update_id| {
                    out(Tick {
                        exchange_ts: ts,
                        recv_ts: recv,
                        instrument: id,
                        data: TickData::BookDelta {
                            side,
                            price,
                            qty,
                            update_id,
                            flags,
                        },
                    })
                };
                match sync.on_diff(&d, &mut emit) {
                    SyncOutcome::Gap { expected, .. } => {
                        stats.gaps.inc();
                        stats.resyncs.inc();
                        out(status(id, FeedStatus::Gap, expected, recv));
                        return Ok(Action::Snapshot(id));
                    }
                    SyncOutcome::BufferGap { expected, .. } => {
                        // The snapshot on its way is refetched if it is older.
                        stats.gaps.inc();
                        out(status(id, FeedStatus::Gap, expected, recv));
                    }
                    SyncOutcome::Rejected {
                        error,
                        expected,
                        fetch,
                    } => {
                        stats.gaps.inc();
                        if fetch {
                            stats.resyncs.inc();
                        }
                        out(status(id, FeedStatus::Gap, expected, recv));
                        return Err(NormalizeError::BookRejected {
                            source: error,
                            instrument: id,
                            fetch,
                        });
                    }
                    SyncOutcome::NeedSnapshot => {
                        stats.resyncs.inc();
                        return Ok(Action::Snapshot(id));
                    }
                    SyncOutcome::Ok | SyncOutcome::Buffered | SyncOutcome::Synced => {}
                }
            }
            BinanceEvent::ServerShutdown { .. } => return Ok(Action::Reconnect),
        }
        Ok(Action::None)
    }

    /// A wrapped REST snapshot (`<symbol>@depthSnapshot`), if `text` is one.
    fn snapshot_frame(
        &mut self,
        text: &[u8],
        recv: UnixNanos,
        stats: &FeedStats,
        out: &mut impl FnMut(Tick),
    ) -> Result<Option<Action>, NormalizeError> {
        // Cheap pre-check: only snapshot frames mention the pseudo stream.
        if !text
            .windows(SNAPSHOT_STREAM.len())
            .any(|w| w == SNAPSHOT_STREAM.as_bytes())
        {
            return Ok(None);
        }
        let (mut stream, mut data) = (None, None);
        for_each_field(text, |k, v| {
            match (k, v) {
                (b"stream", Value::Str(s)) => stream = Some(s),
                (b"data", Value::Object(o)) => data = Some(o),
                _ => {}
            }
            Ok(())
        })
        .map_err(BinanceError::from)?;
        let (Some(stream), Some(data)) = (stream, data) else {
            return Ok(None);
        };
        let Some(sym) = stream.strip_suffix(SNAPSHOT_STREAM.as_bytes()) else {
            return Ok(None);
        };
        let mut upper = [0u8; 32];
        let Some(upper) = upper.get_mut(..sym.len()) else {
            return Err(NormalizeError::UnknownSymbol);
        };
        upper.copy_from_slice(sym);
        upper.make_ascii_uppercase();
        let inst = self.lookup(upper)?;
        let snap = parse_snapshot(data)?;
        let Some(Some(sync)) = self.books.get_mut(inst.id.index()) else {
            return Ok(Some(Action::None));
        };
        let id = inst.id;
        let mut emit = |side: Side, price: Price, qty: Qty, flags, update_id| {
            out(Tick {
                exchange_ts: UnixNanos::UNKNOWN,
                recv_ts: recv,
                instrument: id,
                data: TickData::BookDelta {
                    side,
                    price,
                    qty,
                    update_id,
                    flags,
                },
            })
        };
        match sync.on_snapshot(&snap, &mut emit)? {
            SyncOutcome::Synced => {
                out(status(id, FeedStatus::Live, 0, recv));
                Ok(Some(Action::None))
            }
            _ => {
                stats.resyncs.inc();
                Ok(Some(Action::Snapshot(id)))
            }
        }
    }

    /// Wraps a REST snapshot body as the frame `on_frame` understands.
    pub fn wrap_snapshot(symbol: &str, body: &str) -> String {
        format!(
            "{{\"stream\":\"{}{SNAPSHOT_STREAM}\",\"data\":{body}}}",
            symbol.to_ascii_lowercase()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksblitz_engine::L2Book;

    fn normalizer(trades: TradeSource) -> BinanceNormalizer {
        let inst = VenueInstrument {
            id: InstrumentId(0),
            price_scale: 2,
            qty_scale: 5,
        };
        BinanceNormalizer::new(&[("btcusdt".into(), inst, true)], 1, trades)
    }

    fn run(n: &mut BinanceNormalizer, frames: &[String]) -> (Vec<Tick>, Vec<Action>) {
        let stats = FeedStats::default();
        let mut ticks = Vec::new();
        let mut actions = Vec::new();
        for f in frames {
            match n.on_frame(FrameRef::Text(f.as_bytes()), UnixNanos(5), &stats, &mut |t| {
                ticks.push(t)
            }) {
                Ok(a) => actions.push(a),
                Err(e) => panic!("{f}: {e}"),
            }
        }
        (ticks, actions)
    }

    fn depth(u0: u64, u1: u64, bid: &str) -> String {
        format!(
            r#"{{"stream":"btcusdt@depth@100ms","data":{{"e":"depthUpdate","E":1700000000000,"s":"BTCUSDT","U":{u0},"u":{u1},"b":[["{bid}","1.5"]],"a":[]}}}}"#
        )
    }

    #[test]
    fn sync_then_live_then_gap() {
        let mut n = normalizer(TradeSource::Trade);
        let mut ticks = Vec::new();
        let mut need = Vec::new();
        n.on_connected(UnixNanos(1), &mut |t| ticks.push(t), |id| need.push(id));
        assert_eq!(need, vec![InstrumentId(0)]);
        let snap = BinanceNormalizer::wrap_snapshot(
            "BTCUSDT",
            r#"{"lastUpdateId":100,"bids":[["100.00","1"]],"asks":[["101.00","2"]]}"#,
        );
        let (t, a) = run(&mut n, &[depth(99, 101, "100.50"), snap, depth(102, 102, "100.60")]);
        assert!(a.iter().all(|a| *a == Action::None));
        let mut book = L2Book::new(10);
        for tick in &t {
            if let TickData::BookDelta {
                side,
                price,
                qty,
                flags,
                ..
            } = tick.data
            {
                book.apply_flagged(side, price, qty, flags);
            }
        }
        assert_eq!(
            book.bids().iter().map(|l| l.price.0).collect::<Vec<_>>(),
            vec![10_060, 10_050, 10_000]
        );
        assert!(t.iter().any(|t| t.data
            == TickData::Status {
                status: FeedStatus::Live,
                detail: 0
            }));

        let (t, a) = run(&mut n, &[depth(110, 111, "100.70")]);
        assert_eq!(a, vec![Action::Snapshot(InstrumentId(0))]);
        assert!(matches!(
            t[0].data,
            TickData::Status {
                status: FeedStatus::Gap,
                detail: 103
            }
        ));
    }

    #[test]
    fn trades_from_the_configured_stream_only() {
        let trade = r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":5000000000,"p":"65000.10","q":"0.00100","T":1700000000123,"m":false,"M":true}}"#;
        let agg = r#"{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","a":7,"p":"65000.10","q":"0.00100","f":1,"l":2,"T":1700000000123,"m":true,"M":true}}"#;
        let (t, _) = run(&mut normalizer(TradeSource::Trade), &[trade.into(), agg.into()]);
        assert_eq!(t.len(), 1);
        assert_eq!(
            t[0].data,
            TickData::Trade {
                price: Price(6_500_010),
                qty: Qty(100),
                trade_id: 5_000_000_000,
                aggressor: stocksblitz_engine::Aggressor::Buy
            }
        );
        assert_eq!(t[0].exchange_ts, UnixNanos::from_millis(1_700_000_000_123));
        let (t, _) = run(&mut normalizer(TradeSource::AggTrade), &[trade.into(), agg.into()]);
        assert!(matches!(
            t[..],
            [Tick {
                data: TickData::Trade { trade_id: 7, .. },
                ..
            }]
        ));
        // A repeated trade (overlapping connections) is dropped.
        let (t, _) = run(&mut normalizer(TradeSource::Trade), &[trade.into(), trade.into()]);
        assert_eq!(t.len(), 1);
        let (t, _) = run(&mut normalizer(TradeSource::AggTrade), &[agg.into()]);
        assert!(matches!(
            t[..],
            [Tick {
                data: TickData::Trade { trade_id: 7, .. },
                ..
            }]
        ));
    }

    #[test]
    fn book_ticker_has_unknown_exchange_time() {
        let f = r#"{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"65000.00","B":"1.00000","a":"65000.01","A":"2.00000"}}"#;
        let (t, _) = run(&mut normalizer(TradeSource::Trade), &[f.into()]);
        assert_eq!(t[0].exchange_ts, UnixNanos::UNKNOWN);
        assert!(matches!(
            t[0].data,
            TickData::Quote {
                bid: Price(6_500_000),
                ask_qty: Qty(200_000),
                ..
            }
        ));
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut n = normalizer(TradeSource::Trade);
        let stats = FeedStats::default();
        let mut sink = |_| {};
        for bad in [
            r#"{"stream":"ethusdt@trade","data":{"e":"trade","E":1,"s":"ETHUSDT","t":1,"p":"1","q":"1","T":1,"m":true}}"#,
            r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"1.001","q":"1","T":1,"m":true}}"#,
            r#"{"stream":"btcusdt@depthSnapshot","data":{"bids":[]}}"#,
            r#"{"stream":"averyveryveryveryverylongsymbolname@depthSnapshot","data":{}}"#,
            "not json",
        ] {
            assert!(
                n.on_frame(FrameRef::Text(bad.as_bytes()), UnixNanos(1), &stats, &mut sink)
                    .is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            n.on_frame(FrameRef::Binary(b"x"), UnixNanos(1), &stats, &mut sink),
            Err(NormalizeError::Binary)
        );
        let shutdown = r#"{"e":"serverShutdown","E":1700000000000}"#;
        assert_eq!(
            n.on_frame(FrameRef::Text(shutdown.as_bytes()), UnixNanos(1), &stats, &mut sink),
            Ok(Action::Reconnect)
        );
    }
}
