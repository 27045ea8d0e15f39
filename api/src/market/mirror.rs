//! The API's read model of the market, rebuilt from the engine's output events.
//!
//! The engine never answers queries (that would put locks or waiting on its thread);
//! instead the fan-out thread applies every event to this mirror, which REST handlers
//! and WebSocket sessions read. Books are replayed with the engine's own `L2Book`, so
//! the copy is exact. A sequence gap (the output ring overflowed) marks the instrument
//! GAPPED here until the engine's resync snapshot arrives.

use std::collections::VecDeque;

use stocksblitz_engine::instrument_state::Bbo;
use stocksblitz_engine::{
    Aggressor, Bar, BarInterval, BarState, BookFlags, DataQuality, EngineEvent, EventData, InstrumentId, L2Book, Price,
    Qty, UnixNanos,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradeView {
    /// The engine's per-instrument sequence of the event.
    pub seq: u64,
    pub price: Price,
    pub qty: Qty,
    pub trade_id: u64,
    pub aggressor: Aggressor,
    pub exchange_ts: UnixNanos,
    pub recv_ts: UnixNanos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuoteView {
    pub bbo: Bbo,
    pub exchange_ts: UnixNanos,
    pub recv_ts: UnixNanos,
    pub seq: u64,
}

/// The venue's day open/high/low and previous close (zero: not reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DayView {
    pub open: Price,
    pub high: Price,
    pub low: Price,
    pub close: Price,
}

/// Closed bars (oldest first, bounded) plus the forming one.
#[derive(Debug, Clone)]
pub struct BarSeries {
    pub closed: VecDeque<Bar>,
    pub current: Option<Bar>,
    cap: usize,
}

impl BarSeries {
    fn new(cap: usize) -> Self {
        Self {
            closed: VecDeque::with_capacity(cap.min(4096)),
            current: None,
            cap: cap.max(1),
        }
    }

    fn apply(&mut self, bar: Bar, state: BarState) {
        match state {
            BarState::Open => self.current = Some(bar),
            BarState::Closed => {
                if self.current.is_some_and(|c| c.start <= bar.start) {
                    self.current = None;
                }
                if self.closed.back().is_some_and(|b| b.start >= bar.start) {
                    // Already have it (e.g. replayed after a resync): replace in place.
                    self.replace(bar);
                    return;
                }
                if self.closed.len() == self.cap {
                    self.closed.pop_front();
                }
                self.closed.push_back(bar);
            }
            BarState::Revised => self.replace(bar),
        }
    }

    fn replace(&mut self, bar: Bar) {
        if let Some(b) = self.closed.iter_mut().rev().find(|b| b.start == bar.start) {
            *b = bar;
        }
    }
}

/// What an applied event changed, for the WebSocket fan-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    Quote,
    /// A book batch completed (the book is consistent).
    Book,
    Trade(TradeView),
    Bar(Bar, BarState),
    /// Data quality changed: quotes and books carry it.
    Status,
}

#[derive(Debug, Clone)]
pub struct InstrumentView {
    pub id: InstrumentId,
    /// Quality as the engine reported it.
    quality: DataQuality,
    /// Events were lost between engine and API; waiting for a snapshot.
    pub gap: bool,
    /// Last engine sequence applied.
    pub seq: u64,
    pub book: L2Book,
    /// Engine sequence of the last completed book batch.
    pub book_seq: u64,
    pub quote: Option<QuoteView>,
    /// The last trade as the venue reported it outside a trade (Kite quote packets):
    /// trade id 0, aggressor unknown. Never in `trades` or bars.
    pub venue_last: Option<TradeView>,
    /// The venue's day statistics, when it reports them.
    pub day: Option<DayView>,
    pub trades: VecDeque<TradeView>,
    trades_cap: usize,
    pub bars: [BarSeries; 2],
    /// Receive time of the last event.
    pub last_update: UnixNanos,
    /// When the engine published the last event (`engine_ts_us` of snapshots).
    pub engine_ts: UnixNanos,
    /// When [`quality`](Self::quality) last changed (UNKNOWN: it has not since start).
    pub quality_since: UnixNanos,
}

impl InstrumentView {
    pub fn new(id: InstrumentId, book_levels: usize, trades_cap: usize, bars_cap: usize) -> Self {
        Self {
            id,
            quality: DataQuality::Syncing,
            gap: false,
            seq: 0,
            book: L2Book::new(book_levels),
            book_seq: 0,
            quote: None,
            venue_last: None,
            day: None,
            trades: VecDeque::with_capacity(trades_cap.min(4096)),
            trades_cap: trades_cap.max(1),
            bars: [BarSeries::new(bars_cap), BarSeries::new(bars_cap)],
            last_update: UnixNanos::UNKNOWN,
            engine_ts: UnixNanos::UNKNOWN,
            quality_since: UnixNanos::UNKNOWN,
        }
    }

    /// The state consumers see: GAPPED while this copy waits for a resync.
    pub fn quality(&self) -> DataQuality {
        if self.gap {
            DataQuality::Gapped
        } else {
            self.quality
        }
    }

    pub fn last_trade(&self) -> Option<&TradeView> {
        self.trades.back()
    }

    /// The latest last price known: the last trade, or the venue's report of its
    /// last trade when that is newer.
    pub fn last_price(&self) -> Option<&TradeView> {
        match (self.last_trade(), self.venue_last.as_ref()) {
            (Some(t), Some(v)) => Some(if v.seq > t.seq { v } else { t }),
            (t, v) => t.or(v),
        }
    }

    /// The price positions are marked at: the last price, else the mid.
    pub fn mark_price(&self) -> Option<Price> {
        if let Some(t) = self.last_price() {
            return Some(t.price);
        }
        let q = self.quote?.bbo;
        (!q.bid_qty.is_zero() && !q.ask_qty.is_zero()).then(|| Price((q.bid.0 + q.ask.0) / 2))
    }

    pub fn bars(&self, interval: BarInterval) -> &BarSeries {
        &self.bars[interval.index()]
    }

    pub fn apply(&mut self, ev: &EngineEvent) -> Change {
        let was = self.quality();
        if ev.seq != self.seq.wrapping_add(1) && !ev.is_snapshot_start() {
            self.gap = true;
        }
        if ev.is_snapshot_start() {
            self.gap = false;
        }
        self.seq = ev.seq;
        self.quality = ev.quality;
        if ev.recv_ts.is_known() {
            self.last_update = ev.recv_ts;
        }
        if ev.engine_ts.is_known() {
            self.engine_ts = ev.engine_ts;
        }
        let change = match ev.data {
            EventData::Quote {
                bid,
                bid_qty,
                ask,
                ask_qty,
            } => {
                self.quote = Some(QuoteView {
                    bbo: Bbo {
                        bid,
                        bid_qty,
                        ask,
                        ask_qty,
                    },
                    exchange_ts: ev.exchange_ts,
                    recv_ts: ev.recv_ts,
                    seq: ev.seq,
                });
                Change::Quote
            }
            EventData::Trade {
                price,
                qty,
                trade_id,
                aggressor,
            } => {
                let t = TradeView {
                    seq: ev.seq,
                    price,
                    qty,
                    trade_id,
                    aggressor,
                    exchange_ts: ev.exchange_ts,
                    recv_ts: ev.recv_ts,
                };
                if self.trades.len() == self.trades_cap {
                    self.trades.pop_front();
                }
                self.trades.push_back(t);
                Change::Trade(t)
            }
            EventData::Book {
                side,
                price,
                qty,
                flags,
            } => {
                self.book.apply_flagged(side, price, qty, flags);
                if flags.contains(BookFlags::END_OF_BATCH) {
                    self.book_seq = ev.seq;
                    Change::Book
                } else {
                    Change::None
                }
            }
            EventData::Bar { bar, state } => {
                self.bars[bar.interval.index()].apply(bar, state);
                Change::Bar(bar, state)
            }
            EventData::Status { .. } => Change::Status,
            // Quotes carry the last price and the day statistics.
            EventData::LastPrice { price, qty } => {
                self.venue_last = Some(TradeView {
                    seq: ev.seq,
                    price,
                    qty,
                    trade_id: 0,
                    aggressor: Aggressor::Unknown,
                    exchange_ts: ev.exchange_ts,
                    recv_ts: ev.recv_ts,
                });
                Change::Quote
            }
            EventData::DayStats { open, high, low, close } => {
                self.day = Some(DayView { open, high, low, close });
                Change::Quote
            }
        };
        if self.quality() != was {
            self.quality_since = if ev.recv_ts.is_known() {
                ev.recv_ts
            } else {
                UnixNanos::now()
            };
        }
        if change == Change::None && self.quality() != was {
            Change::Status
        } else {
            // A change that also moved the quality is still that change (a trade is
            // still a trade): the fan-out sees the move itself and refreshes the
            // channels that show the quality.
            change
        }
    }
}

/// All instruments' views, indexed by id.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub instruments: Vec<InstrumentView>,
}

impl Mirror {
    pub fn new(count: usize, book_levels: usize, trades_cap: usize, bars_cap: usize) -> Self {
        Self {
            instruments: (0..count)
                .map(|i| InstrumentView::new(InstrumentId(i as u32), book_levels, trades_cap, bars_cap))
                .collect(),
        }
    }

    pub fn get(&self, id: InstrumentId) -> Option<&InstrumentView> {
        self.instruments.get(id.index())
    }

    pub fn apply(&mut self, ev: &EngineEvent) -> Change {
        match self.instruments.get_mut(ev.instrument.index()) {
            Some(v) => v.apply(ev),
            None => Change::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksblitz_engine::Side;

    fn ev(seq: u64, data: EventData) -> EngineEvent {
        EngineEvent {
            seq,
            instrument: InstrumentId(0),
            quality: DataQuality::Live,
            exchange_ts: UnixNanos::UNKNOWN,
            recv_ts: UnixNanos(1),
            engine_ts: UnixNanos::UNKNOWN,
            data,
        }
    }

    fn book(side: Side, p: i64, q: i64, flags: BookFlags) -> EventData {
        EventData::Book {
            side,
            price: Price(p),
            qty: Qty(q),
            flags,
        }
    }

    #[test]
    fn gap_marks_gapped_until_snapshot() {
        let mut v = InstrumentView::new(InstrumentId(0), 10, 10, 10);
        assert_eq!(
            v.apply(&ev(1, book(Side::Buy, 10, 1, BookFlags::END_OF_BATCH))),
            Change::Book
        );
        assert_eq!(v.quality(), DataQuality::Live);
        // seq 2 lost.
        v.apply(&ev(3, book(Side::Buy, 11, 1, BookFlags::END_OF_BATCH)));
        assert_eq!(v.quality(), DataQuality::Gapped);
        let snap = BookFlags::CLEAR.with(BookFlags::SNAPSHOT);
        v.apply(&ev(9, book(Side::Buy, 12, 5, snap)));
        assert_eq!(v.quality(), DataQuality::Live);
        v.apply(&ev(
            10,
            book(Side::Sell, 13, 5, BookFlags::SNAPSHOT.with(BookFlags::END_OF_BATCH)),
        ));
        assert_eq!(v.book.bids().len(), 1);
        assert_eq!(v.book.best_bid().map(|l| l.price), Some(Price(12)));
        assert_eq!(v.book_seq, 10);
    }

    /// "Since when" moves exactly when the quality a consumer sees changes (the
    /// engine's or this copy's GAPPED), never on an event that keeps it.
    #[test]
    fn quality_since_moves_only_on_transitions() {
        let mut v = InstrumentView::new(InstrumentId(0), 10, 10, 10);
        let at = |seq: u64, t: i64, q: DataQuality| EngineEvent {
            recv_ts: UnixNanos(t),
            quality: q,
            ..ev(seq, book(Side::Buy, 10, 1, BookFlags::END_OF_BATCH))
        };
        assert_eq!(v.quality_since, UnixNanos::UNKNOWN);
        v.apply(&at(1, 100, DataQuality::Live));
        assert_eq!(v.quality_since, UnixNanos(100));
        v.apply(&at(2, 200, DataQuality::Live));
        assert_eq!(v.quality_since, UnixNanos(100), "no change, no move");
        v.apply(&at(3, 300, DataQuality::Stale));
        assert_eq!((v.quality(), v.quality_since), (DataQuality::Stale, UnixNanos(300)));
        v.apply(&at(5, 400, DataQuality::Stale));
        assert_eq!((v.quality(), v.quality_since), (DataQuality::Gapped, UnixNanos(400)));
        v.apply(&at(6, 500, DataQuality::Stale));
        assert_eq!(v.quality_since, UnixNanos(400));
    }

    #[test]
    fn trades_are_bounded_and_bars_revise() {
        let mut v = InstrumentView::new(InstrumentId(0), 10, 2, 2);
        for s in 1..=3 {
            v.apply(&ev(
                s,
                EventData::Trade {
                    price: Price(s as i64),
                    qty: Qty(1),
                    trade_id: s,
                    aggressor: Aggressor::Buy,
                },
            ));
        }
        assert_eq!(v.trades.len(), 2);
        assert_eq!(v.last_trade().map(|t| t.trade_id), Some(3));
        let bar = Bar {
            interval: BarInterval::OneSecond,
            start: UnixNanos(0),
            open: Price(1),
            high: Price(1),
            low: Price(1),
            close: Price(1),
            volume: Qty(1),
            trades: 1,
        };
        v.apply(&ev(
            4,
            EventData::Bar {
                bar,
                state: BarState::Closed,
            },
        ));
        let revised = Bar { high: Price(9), ..bar };
        v.apply(&ev(
            5,
            EventData::Bar {
                bar: revised,
                state: BarState::Revised,
            },
        ));
        assert_eq!(
            v.bars(BarInterval::OneSecond).closed.back().map(|b| b.high),
            Some(Price(9))
        );
    }

    /// Issue 14 point 4: a venue-reported last price (Kite's first quote packet) is the
    /// quote's last price at once, without entering trades or bars; a later trade
    /// takes over, and a later report again. Day statistics are kept for quotes.
    #[test]
    fn venue_reported_last_price_and_day_stats() {
        let mut v = InstrumentView::new(InstrumentId(0), 10, 10, 10);
        let change = v.apply(&EngineEvent {
            exchange_ts: UnixNanos(5_000),
            ..ev(
                1,
                EventData::LastPrice {
                    price: Price(245_005),
                    qty: Qty(10),
                },
            )
        });
        assert_eq!(change, Change::Quote);
        assert!(v.trades.is_empty() && v.bars(BarInterval::OneSecond).closed.is_empty());
        let last = v.last_price().copied().expect("last price");
        assert_eq!(
            (last.price, last.qty, last.trade_id, last.aggressor, last.exchange_ts),
            (Price(245_005), Qty(10), 0, Aggressor::Unknown, UnixNanos(5_000))
        );
        assert_eq!(v.mark_price(), Some(Price(245_005)));
        v.apply(&ev(
            2,
            EventData::Trade {
                price: Price(245_010),
                qty: Qty(25),
                trade_id: 0,
                aggressor: Aggressor::Unknown,
            },
        ));
        assert_eq!(v.last_price().map(|t| (t.price, t.seq)), Some((Price(245_010), 2)));
        v.apply(&ev(
            3,
            EventData::LastPrice {
                price: Price(245_020),
                qty: Qty(5),
            },
        ));
        assert_eq!(v.last_price().map(|t| t.price), Some(Price(245_020)));
        assert_eq!(v.trades.len(), 1, "reports are never trades");
        let day = EventData::DayStats {
            open: Price(244_000),
            high: Price(246_000),
            low: Price(243_500),
            close: Price(244_900),
        };
        assert_eq!(v.apply(&ev(4, day)), Change::Quote);
        assert_eq!(v.day.map(|d| d.close), Some(Price(244_900)));
    }
}
