//! Everything the engine knows about one instrument's market, and how a tick changes it.
//!
//! Pure state transitions, no I/O: `on_tick` and `on_timer` write the resulting events
//! into a small stack buffer that the engine then publishes. Kept apart from the loop so
//! it can be tested tick by tick.

use crate::bars::{BarBuilder, BarEvent, BarInterval, BarState};
use crate::book::{ApplyOutcome, L2Book};
use crate::event::EventData;
use crate::fixed::{Price, Qty};
use crate::ids::InstrumentId;
use crate::quality::{DataQuality, QualityFlags};
use crate::side::{Aggressor, Side};
use crate::stack_vec::{Placeholder, StackVec};
use crate::tick::{BookFlags, FeedStatus, Tick, TickData};
use crate::time::UnixNanos;

/// Best bid and offer; a side with zero quantity is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bbo {
    pub bid: Price,
    pub bid_qty: Qty,
    pub ask: Price,
    pub ask_qty: Qty,
}

impl Bbo {
    fn is_crossed(&self) -> bool {
        !self.bid_qty.is_zero() && !self.ask_qty.is_zero() && self.bid > self.ask
    }

    fn from_book(book: &L2Book) -> Self {
        let (bid, ask) = (book.best_bid().unwrap_or_default(), book.best_ask().unwrap_or_default());
        Self {
            bid: bid.price,
            bid_qty: bid.qty,
            ask: ask.price,
            ask_qty: ask.qty,
        }
    }

    pub fn data(&self) -> EventData {
        EventData::Quote {
            bid: self.bid,
            bid_qty: self.bid_qty,
            ask: self.ask,
            ask_qty: self.ask_qty,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastTrade {
    pub price: Price,
    pub qty: Qty,
    pub trade_id: u64,
    pub aggressor: Aggressor,
    pub time: UnixNanos,
}

/// Events produced by one tick: at most a data event, two bar events and a status.
pub type Emitted = StackVec<EventData, 4>;

/// Adding to a tick's events: capacity is sized to the most one tick emits.
trait PushEvent {
    fn push_event(&mut self, e: EventData);
}

impl PushEvent for Emitted {
    #[inline]
    fn push_event(&mut self, e: EventData) {
        let _ = self.push(e);
    }
}

impl Placeholder for EventData {
    const PLACEHOLDER: Self = EventData::Status {
        previous: DataQuality::Syncing,
    };
}

/// Side effects worth counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TickOutcome {
    pub book_discarded: bool,
    pub invalid_delta: bool,
    pub late_trade: bool,
}

#[derive(Debug, Clone)]
pub struct InstrumentState {
    pub id: InstrumentId,
    pub book: L2Book,
    pub bbo: Bbo,
    pub last_trade: Option<LastTrade>,
    bars: [BarBuilder; 2],
    flags: QualityFlags,
    quality: DataQuality,
    /// Receive time of the last data tick (for staleness).
    last_data: UnixNanos,
}

impl InstrumentState {
    pub fn new(id: InstrumentId, book_max_levels: usize, bar_grace_ns: i64) -> Self {
        Self {
            id,
            book: L2Book::new(book_max_levels),
            bbo: Bbo::default(),
            last_trade: None,
            bars: [
                BarBuilder::new(BarInterval::OneSecond, bar_grace_ns),
                BarBuilder::new(BarInterval::OneMinute, bar_grace_ns),
            ],
            flags: QualityFlags::default(),
            quality: DataQuality::Syncing,
            last_data: UnixNanos::UNKNOWN,
        }
    }

    #[inline]
    pub fn quality(&self) -> DataQuality {
        self.quality
    }

    pub fn bar(&self, interval: BarInterval) -> &BarBuilder {
        &self.bars[interval.index()]
    }

    /// Recomputes the quality; emits a status event if it changed.
    #[inline]
    fn update_quality(&mut self, out: &mut Emitted) {
        let q = DataQuality::derive(self.flags);
        if q != self.quality {
            out.push_event(EventData::Status { previous: self.quality });
            self.quality = q;
        }
    }

    #[inline]
    fn mark_data(&mut self, recv: UnixNanos) {
        self.last_data = recv;
        self.flags.stale = false;
    }

    /// Applies one tick.
    pub fn on_tick(&mut self, tick: &Tick, out: &mut Emitted) -> TickOutcome {
        let mut outcome = TickOutcome::default();
        match tick.data {
            TickData::Quote {
                bid,
                bid_qty,
                ask,
                ask_qty,
            } => {
                self.mark_data(tick.recv_ts);
                let bbo = Bbo {
                    bid,
                    bid_qty,
                    ask,
                    ask_qty,
                };
                if bbo != self.bbo {
                    self.bbo = bbo;
                    out.push_event(bbo.data());
                }
                if !self.flags.gapped {
                    self.flags.synced = true;
                }
                self.flags.crossed = bbo.is_crossed();
            }
            TickData::Trade {
                price,
                qty,
                trade_id,
                aggressor,
            } => {
                self.mark_data(tick.recv_ts);
                let time = tick.event_time();
                self.last_trade = Some(LastTrade {
                    price,
                    qty,
                    trade_id,
                    aggressor,
                    time,
                });
                out.push_event(EventData::Trade {
                    price,
                    qty,
                    trade_id,
                    aggressor,
                });
                for b in &mut self.bars {
                    match b.on_trade(time, price, qty) {
                        BarEvent::None => {}
                        BarEvent::Closed(bar) => out.push_event(EventData::Bar {
                            bar,
                            state: BarState::Closed,
                        }),
                        BarEvent::Revised(bar) => out.push_event(EventData::Bar {
                            bar,
                            state: BarState::Revised,
                        }),
                        BarEvent::Late => outcome.late_trade = true,
                    }
                }
            }
            TickData::BookDelta {
                side,
                price,
                qty,
                flags,
                ..
            } => {
                self.mark_data(tick.recv_ts);
                match self.book.apply_flagged(side, price, qty, flags) {
                    ApplyOutcome::Discarded => outcome.book_discarded = true,
                    ApplyOutcome::Invalid => outcome.invalid_delta = true,
                    _ => {}
                }
                out.push_event(EventData::Book {
                    side,
                    price,
                    qty,
                    flags,
                });
                if flags.contains(BookFlags::END_OF_BATCH) {
                    if flags.contains(BookFlags::SNAPSHOT) {
                        // A full snapshot resolves a gap and completes a sync.
                        self.flags.synced = true;
                        self.flags.gapped = false;
                    }
                    let bbo = Bbo::from_book(&self.book);
                    if bbo != self.bbo {
                        self.bbo = bbo;
                        out.push_event(bbo.data());
                    }
                    self.flags.crossed = self.book.is_crossed();
                }
            }
            // Venue-reported last price and day statistics: passed on, never a trade.
            TickData::LastPrice { price, qty } => {
                self.mark_data(tick.recv_ts);
                out.push_event(EventData::LastPrice { price, qty });
            }
            TickData::DayStats { open, high, low, close } => {
                self.mark_data(tick.recv_ts);
                out.push_event(EventData::DayStats { open, high, low, close });
            }
            TickData::Status { status, .. } => match status {
                FeedStatus::Syncing => self.flags.synced = false,
                FeedStatus::Live => {
                    self.flags.synced = true;
                    self.flags.gapped = false;
                    self.flags.stale = false;
                }
                FeedStatus::Gap => self.flags.gapped = true,
                FeedStatus::Stale => self.flags.stale = true,
                FeedStatus::Halted => self.flags.halted = true,
                FeedStatus::Resumed => self.flags.halted = false,
            },
        }
        self.update_quality(out);
        outcome
    }

    /// Time-driven work: bar closes and staleness.
    pub fn on_timer(&mut self, now: UnixNanos, stale_after_ns: i64, out: &mut Emitted) {
        for b in &mut self.bars {
            if let BarEvent::Closed(bar) = b.on_timer(now) {
                out.push_event(EventData::Bar {
                    bar,
                    state: BarState::Closed,
                });
            }
        }
        if self.flags.synced
            && !self.flags.stale
            && self.last_data.is_known()
            && now.0.saturating_sub(self.last_data.0) > stale_after_ns
        {
            self.flags.stale = true;
        }
        self.update_quality(out);
    }

    /// Progress of forming bars changed since the last call.
    pub fn on_progress(&mut self, out: &mut Emitted) {
        for b in &mut self.bars {
            if let Some(bar) = b.take_progress() {
                out.push_event(EventData::Bar {
                    bar,
                    state: BarState::Open,
                });
            }
        }
    }

    /// Events that rebuild a consumer's copy of this instrument from nothing: the book
    /// (`CLEAR` first, `END_OF_BATCH` last), then the quote.
    pub fn snapshot(&self, mut emit: impl FnMut(EventData)) {
        let levels = self
            .book
            .bids()
            .iter()
            .map(|l| (Side::Buy, *l))
            .chain(self.book.asks().iter().map(|l| (Side::Sell, *l)));
        let total = self.book.bids().len() + self.book.asks().len();
        let base = BookFlags::SNAPSHOT;
        if total == 0 {
            emit(EventData::Book {
                side: Side::Buy,
                price: Price::ZERO,
                qty: Qty::ZERO,
                flags: base.with(BookFlags::CLEAR).with(BookFlags::END_OF_BATCH),
            });
        }
        for (n, (side, l)) in levels.enumerate() {
            let mut flags = base;
            if n == 0 {
                flags = flags.with(BookFlags::CLEAR);
            }
            if n + 1 == total {
                flags = flags.with(BookFlags::END_OF_BATCH);
            }
            emit(EventData::Book {
                side,
                price: l.price,
                qty: l.qty,
                flags,
            });
        }
        emit(self.bbo.data());
    }

    /// Events a snapshot needs at most.
    pub fn snapshot_len(book_max_levels: usize) -> usize {
        2 * book_max_levels + 2
    }
}
