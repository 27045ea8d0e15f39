//! The simulator's true market for one venue: a synthetic random walk per instrument,
//! the exact book it implies, and venue-style ids (update ids, trade ids).
//!
//! Each step yields venue-neutral events; the venue modules render them in their wire
//! format. The true book is what a correct client must end up with, so tests compare
//! a handler's book against it after every fault.

use stocksblitz_engine::{Aggressor, BookFlags, L2Book, Price, Qty, Side, TickData, UnixNanos};

use crate::synthetic::{SimSpec, SyntheticMarket, TickBuf};

/// One instrument as the simulator serves it.
#[derive(Debug, Clone)]
pub struct SimInstrument {
    /// Our symbol (for logs and the control API).
    pub symbol: String,
    /// The venue's name for it (Binance `btcusdt`, Coinbase `BTC-USD`, Kite token).
    pub venue_symbol: String,
    pub price_scale: u8,
    pub qty_scale: u8,
    pub spec: SimSpec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimEvent {
    Trade {
        index: usize,
        trade_id: u64,
        price: Price,
        qty: Qty,
        aggressor: Aggressor,
        time: UnixNanos,
    },
    /// One venue message worth of book changes, with the update ids it spans.
    Depth {
        index: usize,
        first_id: u64,
        last_id: u64,
        levels: Vec<(Side, Price, Qty)>,
        time: UnixNanos,
    },
}

pub struct VenueMarket {
    pub instruments: Vec<SimInstrument>,
    market: SyntheticMarket,
    books: Vec<L2Book>,
    last_update_id: Vec<u64>,
    next_trade_id: Vec<u64>,
    /// Cumulative traded volume (Kite reports this).
    volume: Vec<i64>,
    /// Last traded price per instrument (the start price before any trade).
    last_price: Vec<Price>,
    /// Size and time of the last trade per instrument (Kite reports them).
    last_trade: Vec<(Qty, UnixNanos)>,
    /// Day open, high, low and previous close per instrument (Kite reports them):
    /// the start price is the previous close; open/high/low are zero until a trade.
    day: Vec<[Price; 4]>,
    pending: Vec<Vec<(Side, Price, Qty)>>,
    buf: TickBuf,
}

impl VenueMarket {
    pub fn new(instruments: Vec<SimInstrument>, seed: u64, depth: usize) -> Self {
        let specs: Vec<SimSpec> = instruments
            .iter()
            .enumerate()
            .map(|(i, inst)| SimSpec {
                id: stocksblitz_engine::InstrumentId(i as u32),
                ..inst.spec
            })
            .collect();
        let market = SyntheticMarket::new(seed, depth, &specs);
        let n = instruments.len();
        let mut books: Vec<L2Book> = (0..n).map(|_| L2Book::new(depth * 4 + 8)).collect();
        for (i, book) in books.iter_mut().enumerate() {
            market.snapshot(i, UnixNanos(0), |t| {
                book.apply_tick(&t.data);
            });
        }
        let last_price = instruments.iter().map(|i| i.spec.start_price).collect();
        let day = instruments
            .iter()
            .map(|i| [Price::ZERO, Price::ZERO, Price::ZERO, i.spec.start_price])
            .collect();
        Self {
            last_price,
            last_trade: vec![(Qty::ZERO, UnixNanos::UNKNOWN); n],
            day,
            instruments,
            market,
            books,
            // Venue-like large starting ids (Binance ids exceed 2^32).
            last_update_id: (0..n).map(|i| 5_000_000_000 + i as u64 * 1_000_000).collect(),
            next_trade_id: (0..n).map(|i| 4_300_000_000 + i as u64 * 1_000_000).collect(),
            volume: vec![100_000; n],
            pending: vec![Vec::new(); n],
            buf: TickBuf::default(),
        }
    }

    pub fn book(&self, index: usize) -> Option<&L2Book> {
        self.books.get(index)
    }

    pub fn last_update_id(&self, index: usize) -> u64 {
        self.last_update_id.get(index).copied().unwrap_or(0)
    }

    pub fn last_trade_id(&self, index: usize) -> u64 {
        self.next_trade_id.get(index).map_or(0, |n| n - 1)
    }

    pub fn last_price(&self, index: usize) -> Price {
        self.last_price.get(index).copied().unwrap_or_default()
    }

    /// Size and time of the last trade (zero and unknown before any).
    pub fn last_trade(&self, index: usize) -> (Qty, UnixNanos) {
        self.last_trade
            .get(index)
            .copied()
            .unwrap_or((Qty::ZERO, UnixNanos::UNKNOWN))
    }

    /// Day open, high, low and previous close.
    pub fn day(&self, index: usize) -> [Price; 4] {
        self.day.get(index).copied().unwrap_or_default()
    }

    pub fn volume(&self, index: usize) -> i64 {
        self.volume.get(index).copied().unwrap_or(0)
    }

    pub fn index_of(&self, venue_symbol: &str) -> Option<usize> {
        self.instruments
            .iter()
            .position(|i| i.venue_symbol.eq_ignore_ascii_case(venue_symbol))
    }

    /// Advances the market by one synthetic step.
    pub fn step(&mut self, now: UnixNanos) -> Vec<SimEvent> {
        let mut out = Vec::new();
        self.market.step(now, &mut self.buf);
        for t in self.buf.as_slice() {
            let i = t.instrument.index();
            match t.data {
                TickData::Trade {
                    price, qty, aggressor, ..
                } => {
                    let Some(id) = self.next_trade_id.get_mut(i) else {
                        continue;
                    };
                    let trade_id = *id;
                    *id += 1;
                    if let Some(v) = self.volume.get_mut(i) {
                        *v += qty.0;
                    }
                    if let Some(p) = self.last_price.get_mut(i) {
                        *p = price;
                    }
                    if let Some(l) = self.last_trade.get_mut(i) {
                        *l = (qty, now);
                    }
                    if let Some([open, high, low, _]) = self.day.get_mut(i) {
                        if open.0 == 0 {
                            (*open, *high, *low) = (price, price, price);
                        }
                        *high = (*high).max(price);
                        *low = (*low).min(price);
                    }
                    out.push(SimEvent::Trade {
                        index: i,
                        trade_id,
                        price,
                        qty,
                        aggressor,
                        time: now,
                    });
                }
                TickData::BookDelta {
                    side,
                    price,
                    qty,
                    flags,
                    ..
                } => {
                    if let Some(book) = self.books.get_mut(i) {
                        book.apply_tick(&t.data);
                    }
                    let Some(p) = self.pending.get_mut(i) else { continue };
                    p.push((side, price, qty));
                    if flags.contains(BookFlags::END_OF_BATCH) {
                        let levels = std::mem::take(p);
                        let Some(last) = self.last_update_id.get_mut(i) else {
                            continue;
                        };
                        let first_id = *last + 1;
                        *last += levels.len() as u64;
                        out.push(SimEvent::Depth {
                            index: i,
                            first_id,
                            last_id: *last,
                            levels,
                            time: now,
                        });
                    }
                }
                TickData::Quote { .. }
                | TickData::Status { .. }
                | TickData::LastPrice { .. }
                | TickData::DayStats { .. } => {}
            }
        }
        out
    }
}
