//! A price-level (L2) order book built from absolute-quantity deltas.
//!
//! Each side is a sorted, fixed-capacity array of levels, best first. Real books are
//! read from the top and updated near the top, where a short `memmove` in one or two
//! cache lines beats a pointer-chasing tree (see `cargo bench --bench book`). Capacity
//! is fixed at construction, so applying a delta never allocates: when a side is full,
//! a level worse than all kept levels is discarded and counted, and a better one evicts
//! the worst. Consumers that need more depth configure a larger `book_max_levels`.

use crate::event::EventData;
use crate::fixed::{Price, Qty};
use crate::side::Side;
use crate::tick::{BookFlags, TickData};

/// One price level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Level {
    pub price: Price,
    pub qty: Qty,
}

/// What applying a delta did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Inserted,
    Updated,
    Deleted,
    /// A delete for a price that was not in the book (normal after an eviction).
    DeleteMissing,
    /// Inserted, and the worst level was evicted to make room.
    InsertedEvicting,
    /// The side is full and this level is worse than all kept levels: discarded.
    Discarded,
    /// Negative quantity: rejected, book unchanged.
    Invalid,
}

#[derive(Debug, Clone)]
struct BookSide {
    /// Best first: descending prices for bids, ascending for asks.
    levels: Vec<Level>,
    capacity: usize,
    descending: bool,
}

impl BookSide {
    fn new(capacity: usize, descending: bool) -> Self {
        Self {
            levels: Vec::with_capacity(capacity),
            capacity,
            descending,
        }
    }

    /// `Ok(i)` if the price is at `i`, `Err(i)` where it would be inserted.
    #[inline]
    fn find(&self, price: Price) -> Result<usize, usize> {
        if self.descending {
            self.levels.binary_search_by(|l| price.cmp(&l.price))
        } else {
            self.levels.binary_search_by(|l| l.price.cmp(&price))
        }
    }

    fn apply(&mut self, price: Price, qty: Qty) -> ApplyOutcome {
        if qty.0 < 0 {
            return ApplyOutcome::Invalid;
        }
        match self.find(price) {
            Ok(i) if qty.is_zero() => {
                self.levels.remove(i);
                ApplyOutcome::Deleted
            }
            Ok(i) => {
                if let Some(l) = self.levels.get_mut(i) {
                    l.qty = qty;
                }
                ApplyOutcome::Updated
            }
            Err(_) if qty.is_zero() => ApplyOutcome::DeleteMissing,
            Err(i) if self.levels.len() < self.capacity => {
                self.levels.insert(i, Level { price, qty });
                ApplyOutcome::Inserted
            }
            Err(i) if i < self.levels.len() => {
                // Full: evict the worst, then insert. `pop` frees a slot so `insert`
                // stays within the reserved capacity.
                self.levels.pop();
                self.levels.insert(i, Level { price, qty });
                ApplyOutcome::InsertedEvicting
            }
            Err(_) => ApplyOutcome::Discarded,
        }
    }
}

/// Both sides of one instrument's book.
#[derive(Debug, Clone)]
pub struct L2Book {
    bids: BookSide,
    asks: BookSide,
}

impl L2Book {
    /// A book keeping at most `max_levels` levels per side. Allocates once, here.
    pub fn new(max_levels: usize) -> Self {
        let max_levels = max_levels.max(1);
        Self {
            bids: BookSide::new(max_levels, true),
            asks: BookSide::new(max_levels, false),
        }
    }

    /// Sets the level at `price` on `side` to `qty`; zero deletes it.
    #[inline]
    pub fn apply(&mut self, side: Side, price: Price, qty: Qty) -> ApplyOutcome {
        match side {
            Side::Buy => self.bids.apply(price, qty),
            Side::Sell => self.asks.apply(price, qty),
        }
    }

    /// Applies a delta that carries batch flags: `CLEAR` (the first delta of a
    /// snapshot) empties both sides first.
    #[inline]
    pub fn apply_flagged(&mut self, side: Side, price: Price, qty: Qty, flags: BookFlags) -> ApplyOutcome {
        if flags.contains(BookFlags::CLEAR) {
            self.clear();
        }
        self.apply(side, price, qty)
    }

    /// Applies a tick if it is a book delta (with its flags, as [`Self::apply_flagged`]);
    /// any other tick leaves the book alone and returns `None`. The one way a consumer
    /// of ticks (simulator, capture inspection, tests' reference books) keeps a book.
    #[inline]
    pub fn apply_tick(&mut self, data: &TickData) -> Option<ApplyOutcome> {
        match *data {
            TickData::BookDelta {
                side,
                price,
                qty,
                flags,
                ..
            } => Some(self.apply_flagged(side, price, qty, flags)),
            _ => None,
        }
    }

    /// Applies an engine event if it is a book change (as [`Self::apply_tick`] does
    /// for ticks): how a consumer of the engine's output mirrors a book.
    #[inline]
    pub fn apply_event(&mut self, data: &EventData) -> Option<ApplyOutcome> {
        match *data {
            EventData::Book {
                side,
                price,
                qty,
                flags,
                ..
            } => Some(self.apply_flagged(side, price, qty, flags)),
            _ => None,
        }
    }

    pub fn clear(&mut self) {
        self.bids.levels.clear();
        self.asks.levels.clear();
    }

    #[inline]
    pub fn best_bid(&self) -> Option<Level> {
        self.bids.levels.first().copied()
    }

    #[inline]
    pub fn best_ask(&self) -> Option<Level> {
        self.asks.levels.first().copied()
    }

    /// Bids, best (highest) first.
    pub fn bids(&self) -> &[Level] {
        &self.bids.levels
    }

    /// Asks, best (lowest) first.
    pub fn asks(&self) -> &[Level] {
        &self.asks.levels
    }

    pub fn side(&self, side: Side) -> &[Level] {
        match side {
            Side::Buy => self.bids(),
            Side::Sell => self.asks(),
        }
    }

    /// Best bid strictly above best ask.
    pub fn is_crossed(&self) -> bool {
        matches!((self.best_bid(), self.best_ask()), (Some(b), Some(a)) if b.price > a.price)
    }

    pub fn is_empty(&self) -> bool {
        self.bids.levels.is_empty() && self.asks.levels.is_empty()
    }

    pub fn max_levels(&self) -> usize {
        self.bids.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn lv(p: i64, q: i64) -> Level {
        Level {
            price: Price(p),
            qty: Qty(q),
        }
    }

    #[test]
    fn keeps_sides_sorted_best_first() {
        let mut b = L2Book::new(10);
        b.apply(Side::Buy, Price(100), Qty(1));
        b.apply(Side::Buy, Price(102), Qty(2));
        b.apply(Side::Buy, Price(101), Qty(3));
        b.apply(Side::Sell, Price(105), Qty(1));
        b.apply(Side::Sell, Price(103), Qty(1));
        assert_eq!(b.bids(), &[lv(102, 2), lv(101, 3), lv(100, 1)]);
        assert_eq!(b.asks(), &[lv(103, 1), lv(105, 1)]);
        assert_eq!(b.apply(Side::Buy, Price(101), Qty(0)), ApplyOutcome::Deleted);
        assert_eq!(b.apply(Side::Buy, Price(99), Qty(0)), ApplyOutcome::DeleteMissing);
        assert_eq!(b.apply(Side::Buy, Price(100), Qty(7)), ApplyOutcome::Updated);
        assert_eq!(b.bids(), &[lv(102, 2), lv(100, 7)]);
        assert!(!b.is_crossed());
        b.apply(Side::Buy, Price(104), Qty(1));
        assert!(b.is_crossed());
        assert_eq!(b.apply(Side::Sell, Price(1), Qty(-1)), ApplyOutcome::Invalid);
    }

    #[test]
    fn full_side_evicts_worst_or_discards() {
        let mut b = L2Book::new(2);
        b.apply(Side::Sell, Price(10), Qty(1));
        b.apply(Side::Sell, Price(11), Qty(1));
        assert_eq!(b.apply(Side::Sell, Price(12), Qty(1)), ApplyOutcome::Discarded);
        assert_eq!(b.apply(Side::Sell, Price(9), Qty(1)), ApplyOutcome::InsertedEvicting);
        assert_eq!(b.asks(), &[lv(9, 1), lv(10, 1)]);
        assert_eq!(b.asks().len(), 2);
    }

    fn model_side(m: &BTreeMap<i64, i64>, descending: bool) -> Vec<Level> {
        let it = m.iter().map(|(&p, &q)| lv(p, q));
        if descending {
            it.rev().collect()
        } else {
            it.collect()
        }
    }

    proptest! {
        /// With room for every price, the book equals a BTreeMap model exactly.
        #[test]
        fn matches_btreemap_model(ops in proptest::collection::vec((any::<bool>(), 0i64..64, 0i64..5), 0..400)) {
            let mut book = L2Book::new(64);
            let mut bids = BTreeMap::new();
            let mut asks = BTreeMap::new();
            for (buy, p, q) in ops {
                let (side, m) = if buy { (Side::Buy, &mut bids) } else { (Side::Sell, &mut asks) };
                book.apply(side, Price(p), Qty(q));
                if q == 0 { m.remove(&p); } else { m.insert(p, q); }
            }
            prop_assert_eq!(book.bids().to_vec(), model_side(&bids, true));
            prop_assert_eq!(book.asks().to_vec(), model_side(&asks, false));
        }

        /// With a small capacity, the book never grows past it, stays sorted, and every
        /// level it keeps carries the model's current quantity.
        #[test]
        fn bounded_book_is_sorted_subset(ops in proptest::collection::vec((any::<bool>(), 0i64..64, 0i64..5), 0..400)) {
            let mut book = L2Book::new(4);
            let mut bids = BTreeMap::new();
            let mut asks = BTreeMap::new();
            for (buy, p, q) in ops {
                let (side, m) = if buy { (Side::Buy, &mut bids) } else { (Side::Sell, &mut asks) };
                book.apply(side, Price(p), Qty(q));
                if q == 0 { m.remove(&p); } else { m.insert(p, q); }
                prop_assert!(book.bids().len() <= 4 && book.asks().len() <= 4);
            }
            prop_assert!(book.bids().windows(2).all(|w| w[0].price > w[1].price));
            prop_assert!(book.asks().windows(2).all(|w| w[0].price < w[1].price));
            for l in book.bids() { prop_assert_eq!(bids.get(&l.price.0), Some(&l.qty.0)); }
            for l in book.asks() { prop_assert_eq!(asks.get(&l.price.0), Some(&l.qty.0)); }
        }

        /// `apply_tick` is `apply_flagged` for every book delta (CLEAR included) and
        /// leaves the book untouched for every other kind of tick.
        #[test]
        fn apply_tick_applies_book_deltas_only(ops in proptest::collection::vec((0u8..4, any::<bool>(), 0i64..64, -1i64..5, 0u8..8), 0..300)) {
            let mut by_tick = L2Book::new(8);
            let mut by_hand = L2Book::new(8);
            for (kind, buy, p, q, f) in ops {
                let side = if buy { Side::Buy } else { Side::Sell };
                let flags = BookFlags(f);
                let data = match kind {
                    0 | 1 => TickData::BookDelta { side, price: Price(p), qty: Qty(q), update_id: 0, flags },
                    2 => TickData::Trade { price: Price(p), qty: Qty(q), trade_id: 0, aggressor: crate::side::Aggressor::Buy },
                    _ => TickData::Quote { bid: Price(p), bid_qty: Qty(q), ask: Price(p), ask_qty: Qty(q) },
                };
                let got = by_tick.apply_tick(&data);
                if kind <= 1 {
                    prop_assert_eq!(got, Some(by_hand.apply_flagged(side, Price(p), Qty(q), flags)));
                } else {
                    prop_assert_eq!(got, None);
                }
                prop_assert_eq!(by_tick.bids(), by_hand.bids());
                prop_assert_eq!(by_tick.asks(), by_hand.asks());
            }
        }

        /// `apply_event` is `apply_flagged` for every book event and leaves the book
        /// untouched for every other event.
        #[test]
        fn apply_event_applies_book_events_only(ops in proptest::collection::vec((any::<bool>(), any::<bool>(), 0i64..64, -1i64..5, 0u8..8), 0..300)) {
            let mut by_event = L2Book::new(8);
            let mut by_hand = L2Book::new(8);
            for (book, buy, p, q, f) in ops {
                let side = if buy { Side::Buy } else { Side::Sell };
                let flags = BookFlags(f);
                let data = if book {
                    EventData::Book { side, price: Price(p), qty: Qty(q), flags }
                } else {
                    EventData::Trade { price: Price(p), qty: Qty(q), aggressor: crate::side::Aggressor::Sell, trade_id: 1 }
                };
                let got = by_event.apply_event(&data);
                if book {
                    prop_assert_eq!(got, Some(by_hand.apply_flagged(side, Price(p), Qty(q), flags)));
                } else {
                    prop_assert_eq!(got, None);
                }
                prop_assert_eq!(by_event.bids(), by_hand.bids());
                prop_assert_eq!(by_event.asks(), by_hand.asks());
            }
        }
    }
}
