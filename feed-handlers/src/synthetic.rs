//! A deterministic synthetic market: a random-walk book per instrument with level
//! updates, trades that consume liquidity, and price moves.
//!
//! Used for demos, load tests and benches, and as the embedded default feed until the
//! real venue handlers are wired in. The same seed and instrument list always produce
//! the same sequence of events (only the timestamps differ). Generating a step touches
//! only preallocated arrays: no heap allocation per event.

use stocksblitz_engine::side::{Aggressor, Side};
use stocksblitz_engine::stack_vec::StackVec;
use stocksblitz_engine::tick::{BookFlags, FeedStatus, Tick, TickData};
use stocksblitz_engine::{InstrumentId, Price, Qty, UnixNanos};

use crate::rng::SplitMix64;

/// Most ticks one step emits (a trade that empties a level: trade + 4 deltas).
pub const MAX_TICKS_PER_STEP: usize = 8;

/// Ticks produced by one step, on the stack.
pub type TickBuf = StackVec<Tick, MAX_TICKS_PER_STEP>;

/// Adds a tick to the step's buffer (sized for the largest step).
#[inline]
fn push(out: &mut TickBuf, t: Tick) {
    let _ = out.push(t);
}

/// One instrument to simulate.
#[derive(Debug, Clone, Copy)]
pub struct SimSpec {
    pub id: InstrumentId,
    pub tick_size: Price,
    pub lot_size: Qty,
    pub start_price: Price,
}

#[derive(Debug, Clone)]
struct SimBook {
    spec: SimSpec,
    /// Best bid, in units of `tick_size`; the best ask is one tick above.
    best_bid: i64,
    /// Quantities in lots, best first.
    bids: Vec<i64>,
    asks: Vec<i64>,
    next_trade_id: u64,
}

impl SimBook {
    fn price(&self, level: i64) -> Price {
        Price(level.saturating_mul(self.spec.tick_size.0))
    }

    fn qty(&self, lots: i64) -> Qty {
        Qty(lots.saturating_mul(self.spec.lot_size.0))
    }

    fn level_price(&self, side: Side, k: usize) -> Price {
        let k = k as i64;
        match side {
            Side::Buy => self.price(self.best_bid - k),
            Side::Sell => self.price(self.best_bid + 1 + k),
        }
    }
}

/// The generator for all instruments of one feed.
#[derive(Debug, Clone)]
pub struct SyntheticMarket {
    rng: SplitMix64,
    books: Vec<SimBook>,
    depth: usize,
}

fn tick(id: InstrumentId, now: UnixNanos, data: TickData) -> Tick {
    Tick {
        exchange_ts: now,
        recv_ts: now,
        instrument: id,
        data,
    }
}

impl SyntheticMarket {
    /// Allocates every book once. `depth` levels per side (at least 1).
    pub fn new(seed: u64, depth: usize, specs: &[SimSpec]) -> Self {
        let depth = depth.max(1);
        let mut rng = SplitMix64::new(seed);
        let books = specs
            .iter()
            .map(|&spec| {
                let tick = spec.tick_size.0.max(1);
                let best_bid = (spec.start_price.0 / tick).max(depth as i64 + 2);
                SimBook {
                    spec,
                    best_bid,
                    bids: (0..depth).map(|_| 1 + rng.below(50) as i64).collect(),
                    asks: (0..depth).map(|_| 1 + rng.below(50) as i64).collect(),
                    next_trade_id: 1,
                }
            })
            .collect();
        Self { rng, books, depth }
    }

    pub fn instruments(&self) -> impl Iterator<Item = InstrumentId> + '_ {
        self.books.iter().map(|b| b.spec.id)
    }

    /// The start-up sequence for instrument number `i` of this feed: SYNCING, a full
    /// book snapshot, LIVE.
    pub fn snapshot(&self, i: usize, now: UnixNanos, mut out: impl FnMut(Tick)) {
        let Some(b) = self.books.get(i) else { return };
        let id = b.spec.id;
        out(tick(
            id,
            now,
            TickData::Status {
                status: FeedStatus::Syncing,
                detail: 0,
            },
        ));
        let total = 2 * self.depth;
        let levels = b
            .bids
            .iter()
            .enumerate()
            .map(|(k, &q)| (Side::Buy, k, q))
            .chain(b.asks.iter().enumerate().map(|(k, &q)| (Side::Sell, k, q)));
        for (n, (side, k, lots)) in levels.enumerate() {
            let mut flags = BookFlags::SNAPSHOT;
            if n == 0 {
                flags = flags.with(BookFlags::CLEAR);
            }
            if n + 1 == total {
                flags = flags.with(BookFlags::END_OF_BATCH);
            }
            out(tick(
                id,
                now,
                TickData::BookDelta {
                    side,
                    price: b.level_price(side, k),
                    qty: b.qty(lots),
                    update_id: 0,
                    flags,
                },
            ));
        }
        out(tick(
            id,
            now,
            TickData::Status {
                status: FeedStatus::Live,
                detail: 0,
            },
        ));
    }

    pub fn len(&self) -> usize {
        self.books.len()
    }

    pub fn is_empty(&self) -> bool {
        self.books.is_empty()
    }

    /// One market event for a randomly chosen instrument.
    pub fn step(&mut self, now: UnixNanos, out: &mut TickBuf) {
        out.clear();
        if self.books.is_empty() {
            return;
        }
        let i = self.rng.below(self.books.len() as u64) as usize;
        let roll = self.rng.below(100);
        let side = if self.rng.chance(50) { Side::Buy } else { Side::Sell };
        let depth = self.depth;
        let (rng, books) = (&mut self.rng, &mut self.books);
        let Some(b) = books.get_mut(i) else { return };
        if roll < 55 {
            // A resting quantity changes.
            let k = rng.below(depth as u64) as usize;
            let lots = 1 + rng.below(50) as i64;
            let levels = match side {
                Side::Buy => &mut b.bids,
                Side::Sell => &mut b.asks,
            };
            if let Some(q) = levels.get_mut(k) {
                *q = lots;
            }
            push(out, delta(b, now, side, k, lots, BookFlags::END_OF_BATCH));
        } else if roll < 80 {
            // A trade: the aggressor takes from the opposite best level.
            let aggressor = side;
            let resting = aggressor.opposite();
            let available = match resting {
                Side::Buy => b.bids.first().copied().unwrap_or(1),
                Side::Sell => b.asks.first().copied().unwrap_or(1),
            };
            let lots = 1 + rng.below(available.max(1) as u64) as i64;
            let price = b.level_price(resting, 0);
            let trade_id = b.next_trade_id;
            b.next_trade_id += 1;
            push(
                out,
                tick(
                    b.spec.id,
                    now,
                    TickData::Trade {
                        price,
                        qty: b.qty(lots),
                        trade_id,
                        aggressor: match aggressor {
                            Side::Buy => Aggressor::Buy,
                            Side::Sell => Aggressor::Sell,
                        },
                    },
                ),
            );
            let left = available - lots;
            if left > 0 {
                match resting {
                    Side::Buy => b.bids[0] = left,
                    Side::Sell => b.asks[0] = left,
                }
                push(out, delta(b, now, resting, 0, left, BookFlags::END_OF_BATCH));
            } else {
                // The level is gone: the price moves towards the aggressor.
                shift(b, rng, now, aggressor, out);
            }
        } else {
            shift(b, rng, now, side, out);
        }
    }
}

fn delta(b: &SimBook, now: UnixNanos, side: Side, k: usize, lots: i64, flags: BookFlags) -> Tick {
    tick(
        b.spec.id,
        now,
        TickData::BookDelta {
            side,
            price: b.level_price(side, k),
            qty: b.qty(lots),
            update_id: 0,
            flags,
        },
    )
}

/// Moves the market one tick up (`Buy`) or down (`Sell`), keeping `depth` levels a side.
fn shift(b: &mut SimBook, rng: &mut SplitMix64, now: UnixNanos, dir: Side, out: &mut TickBuf) {
    let depth = b.bids.len();
    let fresh = 1 + rng.below(50) as i64;
    let far = 1 + rng.below(50) as i64;
    let none = BookFlags::NONE;
    match dir {
        Side::Buy => {
            // Best ask level becomes the new best bid; a new worst ask appears.
            push(out, delta(b, now, Side::Sell, 0, 0, none));
            push(out, delta(b, now, Side::Buy, depth - 1, 0, none));
            b.best_bid += 1;
            b.bids.rotate_right(1);
            b.bids[0] = fresh;
            b.asks.rotate_left(1);
            b.asks[depth - 1] = far;
            push(out, delta(b, now, Side::Buy, 0, fresh, none));
            push(out, delta(b, now, Side::Sell, depth - 1, far, BookFlags::END_OF_BATCH));
        }
        Side::Sell if b.best_bid > depth as i64 + 1 => {
            push(out, delta(b, now, Side::Buy, 0, 0, none));
            push(out, delta(b, now, Side::Sell, depth - 1, 0, none));
            b.best_bid -= 1;
            b.asks.rotate_right(1);
            b.asks[0] = fresh;
            b.bids.rotate_left(1);
            b.bids[depth - 1] = far;
            push(out, delta(b, now, Side::Sell, 0, fresh, none));
            push(out, delta(b, now, Side::Buy, depth - 1, far, BookFlags::END_OF_BATCH));
        }
        // At the price floor: refresh the best bid instead of moving below it.
        Side::Sell => {
            b.bids[0] = fresh;
            push(out, delta(b, now, Side::Buy, 0, fresh, BookFlags::END_OF_BATCH));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksblitz_engine::book::L2Book;

    fn specs() -> Vec<SimSpec> {
        vec![
            SimSpec {
                id: InstrumentId(0),
                tick_size: Price(1),
                lot_size: Qty(1000),
                start_price: Price(6_500_000),
            },
            SimSpec {
                id: InstrumentId(1),
                tick_size: Price(5),
                lot_size: Qty(1),
                start_price: Price(245_000),
            },
        ]
    }

    fn run(seed: u64, steps: usize) -> Vec<Tick> {
        let mut m = SyntheticMarket::new(seed, 5, &specs());
        let mut all = Vec::new();
        let mut buf = TickBuf::default();
        for i in 0..m.len() {
            m.snapshot(i, UnixNanos(0), |t| all.push(t));
        }
        for _ in 0..steps {
            m.step(UnixNanos(0), &mut buf);
            all.extend_from_slice(buf.as_slice());
        }
        all
    }

    #[test]
    fn deterministic_for_a_seed() {
        assert_eq!(run(42, 2_000), run(42, 2_000));
        assert_ne!(run(42, 2_000), run(43, 2_000));
    }

    /// Applying the stream to a book keeps it uncrossed, full depth, on the tick grid.
    #[test]
    fn produces_a_consistent_book() {
        let mut books = [L2Book::new(100), L2Book::new(100)];
        let mut trades = 0;
        for t in run(7, 20_000) {
            let b = &mut books[t.instrument.index()];
            b.apply_tick(&t.data);
            match t.data {
                TickData::BookDelta { price, flags, .. } => {
                    assert_eq!(price.0 % specs()[t.instrument.index()].tick_size.0, 0);
                    if flags.contains(BookFlags::END_OF_BATCH) {
                        assert_eq!(b.bids().len(), 5);
                        assert_eq!(b.asks().len(), 5);
                        assert!(!b.is_crossed());
                        let (bid, ask) = (b.best_bid().unwrap(), b.best_ask().unwrap());
                        assert!(bid.price < ask.price);
                    }
                }
                TickData::Trade { qty, .. } => {
                    assert!(qty.0 > 0);
                    trades += 1;
                }
                _ => {}
            }
        }
        assert!(trades > 1_000);
    }
}
