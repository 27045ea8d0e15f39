//! One instrument's resting orders: price levels, each a FIFO queue (price-time
//! priority). Used by the internal venue (orders match each other) and by the paper
//! venue (resting orders wait for the live market to reach them).
//!
//! Levels are kept in a sorted `Vec` per side with the best price at the end, so the
//! common operations (touch the best level, pop an emptied best level) are O(1) and an
//! insert shifts only the levels better than it. Orders in a level are linked through
//! [`Links`], one prev/next pair per pool slot, so queue operations never allocate.

use crate::fixed::{Price, Qty};
use crate::side::Side;

use super::types::OrderId;

const NIL: u64 = u64::MAX;

/// prev/next order ids per pool slot (shared by every book of one engine).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Links {
    prev: Vec<u64>,
    next: Vec<u64>,
    slot_mask: u64,
}

impl Links {
    /// Slots linked (the pool's capacity).
    pub fn capacity(&self) -> usize {
        self.prev.len()
    }

    pub fn new(capacity: usize, slot_mask: u64) -> Self {
        Self {
            prev: vec![NIL; capacity],
            next: vec![NIL; capacity],
            slot_mask,
        }
    }

    fn slot(&self, id: OrderId) -> usize {
        (id.0 & self.slot_mask) as usize
    }

    fn next_of(&self, id: OrderId) -> Option<OrderId> {
        self.next.get(self.slot(id)).copied().filter(|&n| n != NIL).map(OrderId)
    }

    fn set(&mut self, id: OrderId, prev: u64, next: u64) {
        let s = self.slot(id);
        if let Some(p) = self.prev.get_mut(s) {
            *p = prev;
        }
        if let Some(n) = self.next.get_mut(s) {
            *n = next;
        }
    }

    fn set_next(&mut self, id: u64, next: u64) {
        if id != NIL {
            let s = self.slot(OrderId(id));
            if let Some(n) = self.next.get_mut(s) {
                *n = next;
            }
        }
    }

    fn set_prev(&mut self, id: u64, prev: u64) {
        if id != NIL {
            let s = self.slot(OrderId(id));
            if let Some(p) = self.prev.get_mut(s) {
                *p = prev;
            }
        }
    }

    fn get(&self, id: OrderId) -> (u64, u64) {
        let s = self.slot(id);
        (
            self.prev.get(s).copied().unwrap_or(NIL),
            self.next.get(s).copied().unwrap_or(NIL),
        )
    }
}

/// One price level: total resting quantity and its FIFO of orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueLevel {
    pub price: Price,
    pub qty: Qty,
    pub orders: u32,
    head: u64,
    tail: u64,
}

#[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct QueueBook {
    /// Ascending by price: best bid is last.
    bids: Vec<QueueLevel>,
    /// Descending by price: best ask is last.
    asks: Vec<QueueLevel>,
}

impl QueueBook {
    pub fn with_capacity(levels: usize) -> Self {
        Self {
            bids: Vec::with_capacity(levels),
            asks: Vec::with_capacity(levels),
        }
    }

    fn side(&self, side: Side) -> &Vec<QueueLevel> {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut Vec<QueueLevel> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// Where `price` sits (or would sit) in a side's vector: Ok = existing level.
    fn find(levels: &[QueueLevel], side: Side, price: Price) -> Result<usize, usize> {
        match side {
            Side::Buy => levels.binary_search_by(|l| l.price.cmp(&price)),
            Side::Sell => levels.binary_search_by(|l| price.cmp(&l.price)),
        }
    }

    /// Levels each side can hold without allocating.
    pub fn capacity(&self) -> usize {
        self.bids.capacity().min(self.asks.capacity())
    }

    /// Makes room for `levels` per side (a restored book gets its configured size back).
    pub fn reserve_to(&mut self, levels: usize) {
        self.bids.reserve_exact(levels.saturating_sub(self.bids.len()));
        self.asks.reserve_exact(levels.saturating_sub(self.asks.len()));
    }

    pub fn best(&self, side: Side) -> Option<&QueueLevel> {
        self.side(side).last()
    }

    /// Levels from the best outwards.
    pub fn levels(&self, side: Side) -> impl Iterator<Item = &QueueLevel> {
        self.side(side).iter().rev()
    }

    pub fn level(&self, side: Side, price: Price) -> Option<&QueueLevel> {
        let levels = self.side(side);
        Self::find(levels, side, price).ok().and_then(|i| levels.get(i))
    }

    /// The first order in the level's queue.
    pub fn head(level: &QueueLevel) -> Option<OrderId> {
        (level.head != NIL).then_some(OrderId(level.head))
    }

    pub fn next(links: &Links, id: OrderId) -> Option<OrderId> {
        links.next_of(id)
    }

    /// Appends an order to the back of its price level's queue.
    pub fn push(&mut self, links: &mut Links, side: Side, price: Price, id: OrderId, qty: Qty) {
        let levels = self.side_mut(side);
        let i = match Self::find(levels, side, price) {
            Ok(i) => i,
            Err(i) => {
                levels.insert(
                    i,
                    QueueLevel {
                        price,
                        qty: Qty(0),
                        orders: 0,
                        head: NIL,
                        tail: NIL,
                    },
                );
                i
            }
        };
        let Some(level) = levels.get_mut(i) else { return };
        links.set(id, level.tail, NIL);
        links.set_next(level.tail, id.0);
        if level.head == NIL {
            level.head = id.0;
        }
        level.tail = id.0;
        level.qty = Qty(level.qty.0 + qty.0);
        level.orders += 1;
    }

    /// Unlinks an order whose remaining quantity was `qty`; drops the level if empty.
    pub fn remove(&mut self, links: &mut Links, side: Side, price: Price, id: OrderId, qty: Qty) {
        let levels = self.side_mut(side);
        let Ok(i) = Self::find(levels, side, price) else { return };
        let Some(level) = levels.get_mut(i) else { return };
        let (prev, next) = links.get(id);
        links.set_next(prev, next);
        links.set_prev(next, prev);
        if level.head == id.0 {
            level.head = next;
        }
        if level.tail == id.0 {
            level.tail = prev;
        }
        links.set(id, NIL, NIL);
        level.qty = Qty(level.qty.0 - qty.0);
        level.orders = level.orders.saturating_sub(1);
        if level.orders == 0 {
            levels.remove(i);
        }
    }

    /// An order kept its place but rests `by` less (partial fill, qty decrease).
    pub fn reduce(&mut self, side: Side, price: Price, by: Qty) {
        let levels = self.side_mut(side);
        if let Ok(i) = Self::find(levels, side, price) {
            if let Some(level) = levels.get_mut(i) {
                level.qty = Qty(level.qty.0 - by.0);
            }
        }
    }

    /// Quantity resting at prices an incoming `side` order with limit `limit` (None =
    /// market) would trade against, stopping once `enough` is reached.
    pub fn crossing_qty(&self, side: Side, limit: Option<Price>, enough: Qty) -> Qty {
        let mut total = 0i64;
        for level in self.levels(side.opposite()) {
            if !crosses(side, limit, level.price) || total >= enough.0 {
                break;
            }
            total += level.qty.0;
        }
        Qty(total)
    }

    pub fn is_empty(&self) -> bool {
        self.bids.is_empty() && self.asks.is_empty()
    }
}

/// Would an incoming `side` order limited at `limit` (None = market) trade at `price`?
#[inline]
pub fn crosses(side: Side, limit: Option<Price>, price: Price) -> bool {
    match (side, limit) {
        (_, None) => true,
        (Side::Buy, Some(l)) => price <= l,
        (Side::Sell, Some(l)) => price >= l,
    }
}
