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
use crate::session::TradingSession;
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
    /// When the instrument trades; out of it the state is CLOSED.
    session: TradingSession,
    /// Whether a feed delivers its market data. Without one (the internal venue: its
    /// data is its own book's) silence is just a quiet market, never STALE.
    has_feed: bool,
    /// When the session is next looked at (once a second: sessions change on minutes).
    next_session_check: UnixNanos,
}

/// How often the session is looked at.
const SESSION_CHECK_NS: i64 = UnixNanos::NANOS_PER_SEC;

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
            session: TradingSession::Always,
            has_feed: true,
            next_session_check: UnixNanos(i64::MIN),
        }
    }

    /// Sets the trading session and applies it at `now` (emitting a status event if
    /// the state changes).
    pub fn set_session(&mut self, session: TradingSession, now: UnixNanos, out: &mut Emitted) {
        self.session = session;
        self.next_session_check = UnixNanos(i64::MIN);
        self.check_session(now);
        self.update_quality(out);
    }

    /// Marks the instrument as having no feed: silence never makes it STALE.
    pub fn set_feedless(&mut self, out: &mut Emitted) {
        self.has_feed = false;
        self.flags.stale = false;
        self.update_quality(out);
    }

    pub fn has_feed(&self) -> bool {
        self.has_feed
    }

    pub fn session(&self) -> &TradingSession {
        &self.session
    }

    /// Receive time of the last market data (UNKNOWN before the first).
    pub fn last_data(&self) -> UnixNanos {
        self.last_data
    }

    /// Opens or closes the instrument by its session, at most once a second. At the
    /// open the feed gets a full stale period from then: a market that just opened is
    /// not stale for the silence of the night before.
    #[inline]
    fn check_session(&mut self, now: UnixNanos) {
        if now < self.next_session_check {
            return;
        }
        self.next_session_check = UnixNanos(now.0.saturating_add(SESSION_CHECK_NS));
        let closed = !self.session.is_open(now);
        if closed != self.flags.closed {
            self.flags.closed = closed;
            if !closed {
                self.flags.stale = false;
                if self.last_data.is_known() {
                    self.last_data = now;
                }
            }
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
                FeedStatus::Stale => self.flags.stale = self.has_feed,
                FeedStatus::Halted => self.flags.halted = true,
                FeedStatus::Resumed => self.flags.halted = false,
            },
        }
        self.update_quality(out);
        outcome
    }

    /// Time-driven work: bar closes, the session, and staleness (only in session and
    /// only for an instrument with a feed).
    pub fn on_timer(&mut self, now: UnixNanos, stale_after_ns: i64, out: &mut Emitted) {
        for b in &mut self.bars {
            if let BarEvent::Closed(bar) = b.on_timer(now) {
                out.push_event(EventData::Bar {
                    bar,
                    state: BarState::Closed,
                });
            }
        }
        self.check_session(now);
        if self.has_feed
            && !self.flags.closed
            && self.flags.synced
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::side::Aggressor;

    const S: i64 = UnixNanos::NANOS_PER_SEC;
    /// 2026-11-24 00:00 UTC, a Tuesday.
    const T0: i64 = 1_795_478_400 * S;

    fn tick(t: i64, data: TickData) -> Tick {
        Tick {
            exchange_ts: UnixNanos(t),
            recv_ts: UnixNanos(t),
            instrument: InstrumentId(0),
            data,
        }
    }

    fn quote(t: i64) -> Tick {
        tick(
            t,
            TickData::Quote {
                bid: Price(100),
                bid_qty: Qty(1),
                ask: Price(101),
                ask_qty: Qty(1),
            },
        )
    }

    fn trade(t: i64) -> Tick {
        tick(
            t,
            TickData::Trade {
                price: Price(100),
                qty: Qty(1),
                trade_id: t as u64,
                aggressor: Aggressor::Buy,
            },
        )
    }

    fn status(t: i64, status: FeedStatus) -> Tick {
        tick(t, TickData::Status { status, detail: 0 })
    }

    fn nse() -> TradingSession {
        "Asia/Kolkata 09:15-15:30 mon-fri".parse().unwrap()
    }

    /// What can happen to an instrument between two looks: time passes, then one input.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Quote,
        Trade,
        FeedStale,
        FeedLive,
        Timer,
    }

    fn step() -> impl Strategy<Value = (i64, Step)> {
        (
            0i64..600 * S,
            prop_oneof![
                Just(Step::Quote),
                Just(Step::Trade),
                Just(Step::FeedStale),
                Just(Step::FeedLive),
                Just(Step::Timer),
            ],
        )
    }

    fn apply(st: &mut InstrumentState, t: i64, s: Step, stale_after: i64, out: &mut Emitted) {
        match s {
            Step::Quote => {
                st.on_tick(&quote(t), out);
            }
            Step::Trade => {
                st.on_tick(&trade(t), out);
            }
            Step::FeedStale => {
                st.on_tick(&status(t, FeedStatus::Stale), out);
            }
            Step::FeedLive => {
                st.on_tick(&status(t, FeedStatus::Live), out);
            }
            Step::Timer => {}
        }
        out.clear();
        st.on_timer(UnixNanos(t), stale_after, out);
        out.clear();
    }

    proptest! {
        /// An instrument without a feed (the internal venue) is never STALE, however
        /// long it stays quiet and whatever arrives in between, with a short threshold.
        #[test]
        fn feedless_is_never_stale(steps in proptest::collection::vec(step(), 1..60), stale_ms in 1i64..5_000) {
            let mut st = InstrumentState::new(InstrumentId(0), 8, 0);
            let mut out = Emitted::default();
            st.set_feedless(&mut out);
            st.on_tick(&status(T0, FeedStatus::Live), &mut out);
            let mut t = T0;
            for (dt, s) in steps {
                t += dt;
                apply(&mut st, t, s, stale_ms * 1_000_000, &mut out);
                prop_assert_ne!(st.quality(), DataQuality::Stale);
            }
        }

        /// Out of session the state is CLOSED (never LIVE, never STALE) whatever the feed
        /// does; in session it is never CLOSED. Over two weeks of NSE sessions.
        #[test]
        fn out_of_session_is_closed(steps in proptest::collection::vec((0i64..7_200 * S, 0u8..5), 1..80)) {
            let session = nse();
            let mut st = InstrumentState::new(InstrumentId(0), 8, 0);
            let mut out = Emitted::default();
            st.set_session(session.clone(), UnixNanos(T0), &mut out);
            st.on_tick(&status(T0, FeedStatus::Live), &mut out);
            let mut t = T0;
            for (dt, k) in steps {
                // Past the once-a-second session look.
                t += dt + S;
                let s = [Step::Quote, Step::Trade, Step::FeedStale, Step::FeedLive, Step::Timer][k as usize];
                apply(&mut st, t, s, 3 * S, &mut out);
                let open = session.is_open(UnixNanos(t));
                prop_assert_eq!(st.quality() == DataQuality::Closed, !open, "at {} ({:?})", t, s);
            }
        }
    }

    /// The market opening after a quiet night is not STALE at once: the feed gets a
    /// full stale period from the open. Silence after that is STALE.
    #[test]
    fn the_open_starts_a_fresh_stale_period() {
        let mut st = InstrumentState::new(InstrumentId(0), 8, 0);
        let mut out = Emitted::default();
        // 2026-11-24 09:14:00 IST = 03:44 UTC.
        let before_open = T0 + (3 * 3600 + 44 * 60) * S;
        st.set_session(nse(), UnixNanos(before_open - 3600 * S), &mut out);
        st.on_tick(&quote(before_open - 3600 * S), &mut out);
        assert_eq!(st.quality(), DataQuality::Closed);
        st.on_timer(UnixNanos(before_open), 5 * S, &mut out);
        assert_eq!(st.quality(), DataQuality::Closed);
        let open = before_open + 60 * S;
        out.clear();
        st.on_timer(UnixNanos(open), 5 * S, &mut out);
        assert_eq!(st.quality(), DataQuality::Live, "open, data an hour old, not stale yet");
        assert!(out.as_slice().iter().any(|e| matches!(
            e,
            EventData::Status {
                previous: DataQuality::Closed
            }
        )));
        st.on_timer(UnixNanos(open + 4 * S), 5 * S, &mut out);
        assert_eq!(st.quality(), DataQuality::Live);
        st.on_timer(UnixNanos(open + 6 * S), 5 * S, &mut out);
        assert_eq!(st.quality(), DataQuality::Stale, "silent in session past the threshold");
        st.on_tick(&trade(open + 7 * S), &mut out);
        assert_eq!(st.quality(), DataQuality::Live);
    }

    /// A fed instrument does go STALE (the rule the feedless exemption is an exception to).
    #[test]
    fn a_fed_instrument_goes_stale_in_session() {
        let mut st = InstrumentState::new(InstrumentId(0), 8, 0);
        let mut out = Emitted::default();
        st.on_tick(&quote(T0), &mut out);
        st.on_timer(UnixNanos(T0 + 2 * S), S, &mut out);
        assert_eq!(st.quality(), DataQuality::Stale);
        st.on_tick(&status(T0 + 3 * S, FeedStatus::Stale), &mut out);
        assert_eq!(st.quality(), DataQuality::Stale);
    }
}
