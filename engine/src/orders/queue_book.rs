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
///
/// One `[prev, next]` pair per slot, so that unlinking an order reads and writes one
/// cache line for its own links, not one in each of two arrays (the walk of a deep
/// level's queue touches cold slots). Images keep the two columns they always had:
/// `prev`, then `next`, then the slot mask.
#[derive(Clone)]
pub struct Links {
    pairs: Vec<Pair>,
    slot_mask: u64,
}

/// One slot's neighbours in its level's queue ([`NIL`]: none).
#[derive(Clone, Copy)]
struct Pair {
    prev: u64,
    next: u64,
}

/// One column of [`Links`] as the image holds it (a sequence of ids).
struct Column<'a>(&'a [Pair], fn(&Pair) -> u64);

impl serde::Serialize for Column<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(self.1))
    }
}

impl serde::Serialize for Links {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Links", 3)?;
        st.serialize_field("prev", &Column(&self.pairs, |p| p.prev))?;
        st.serialize_field("next", &Column(&self.pairs, |p| p.next))?;
        st.serialize_field("slot_mask", &self.slot_mask)?;
        st.end()
    }
}

/// [`Links`] as images hold it.
#[derive(serde::Deserialize)]
#[serde(rename = "Links")]
struct LinksWire {
    prev: Vec<u64>,
    next: Vec<u64>,
    slot_mask: u64,
}

impl<'de> serde::Deserialize<'de> for Links {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = LinksWire::deserialize(d)?;
        if w.prev.len() != w.next.len() {
            return Err(serde::de::Error::custom("links: prev and next differ in length"));
        }
        Ok(Self {
            pairs: w
                .prev
                .iter()
                .zip(&w.next)
                .map(|(&prev, &next)| Pair { prev, next })
                .collect(),
            slot_mask: w.slot_mask,
        })
    }
}

impl Links {
    /// Slots linked (the pool's capacity).
    pub fn capacity(&self) -> usize {
        self.pairs.len()
    }

    pub fn new(capacity: usize, slot_mask: u64) -> Self {
        Self {
            pairs: vec![Pair { prev: NIL, next: NIL }; capacity],
            slot_mask,
        }
    }

    fn slot(&self, id: OrderId) -> usize {
        (id.0 & self.slot_mask) as usize
    }

    fn next_of(&self, id: OrderId) -> Option<OrderId> {
        self.pairs
            .get(self.slot(id))
            .map(|p| p.next)
            .filter(|&n| n != NIL)
            .map(OrderId)
    }

    fn set(&mut self, id: OrderId, prev: u64, next: u64) {
        let s = self.slot(id);
        if let Some(p) = self.pairs.get_mut(s) {
            *p = Pair { prev, next };
        }
    }

    fn set_next(&mut self, id: u64, next: u64) {
        if id != NIL {
            let s = self.slot(OrderId(id));
            if let Some(p) = self.pairs.get_mut(s) {
                p.next = next;
            }
        }
    }

    fn set_prev(&mut self, id: u64, prev: u64) {
        if id != NIL {
            let s = self.slot(OrderId(id));
            if let Some(p) = self.pairs.get_mut(s) {
                p.prev = prev;
            }
        }
    }

    fn get(&self, id: OrderId) -> (u64, u64) {
        let s = self.slot(id);
        self.pairs.get(s).map_or((NIL, NIL), |p| (p.prev, p.next))
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The layout images had before the pairs: two columns, then the mask.
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Columns {
        prev: Vec<u64>,
        next: Vec<u64>,
        slot_mask: u64,
    }

    proptest! {
        /// After any pushes and removes, the links encode to the bytes of the two
        /// columns they were kept as before, and decode back to the same queues.
        #[test]
        fn links_image_bytes_are_the_two_columns(ops in proptest::collection::vec((any::<bool>(), 0u64..16, 0u8..3), 1..80)) {
            let mut links = Links::new(16, 0xff);
            let mut book = QueueBook::with_capacity(8);
            let mut resting: Vec<(u64, Price)> = Vec::new();
            for (push, slot, p) in ops {
                let price = Price(100 + i64::from(p));
                let id = OrderId((1 << 24) | slot);
                match resting.iter().position(|r| r.0 == slot) {
                    Some(i) if !push => {
                        let (_, at) = resting.swap_remove(i);
                        book.remove(&mut links, Side::Buy, at, id, Qty(1));
                    }
                    None if push => {
                        book.push(&mut links, Side::Buy, price, id, Qty(1));
                        resting.push((slot, price));
                    }
                    _ => {}
                }
            }
            let columns = Columns {
                prev: links.pairs.iter().map(|p| p.prev).collect(),
                next: links.pairs.iter().map(|p| p.next).collect(),
                slot_mask: links.slot_mask,
            };
            let bytes = postcard::to_allocvec(&links).unwrap();
            prop_assert_eq!(&bytes, &postcard::to_allocvec(&columns).unwrap());
            let back: Links = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(postcard::to_allocvec(&back).unwrap(), bytes);
            for level in book.levels(Side::Buy) {
                let mut walked = Vec::new();
                let mut next = QueueBook::head(level);
                while let Some(id) = next {
                    walked.push(id);
                    next = QueueBook::next(&back, id);
                }
                prop_assert_eq!(walked.len() as u32, level.orders);
            }
        }
    }

    #[test]
    fn links_of_unequal_columns_are_refused() {
        let bad = Columns {
            prev: vec![NIL; 2],
            next: vec![NIL; 3],
            slot_mask: 0xff,
        };
        let bytes = postcard::to_allocvec(&bad).unwrap();
        assert!(postcard::from_bytes::<Links>(&bytes).is_err());
    }
}
