//! The order pool: every order the engine knows, in one preallocated slab.
//!
//! Slots are reused through a free list, so steady-state order entry allocates
//! nothing. An [`OrderId`] encodes its slot and the slot's generation, so looking an
//! order up is an array index plus a generation check (no hashing), and a stale id
//! (the slot was reused) is simply "not found". Terminal orders stay readable in their
//! slot until it is reused; the API keeps the history.
//!
//! An id is `shard << 56 | (generation mod 2^32) << 24 | slot`: the engine's shard
//! ([`super::shard`]) in the top 8 bits, so an id of another engine is "not found"
//! here too. Shard 0 gives the ids a single engine always gave. Generations are
//! compared modulo 2^32: after 4 billion reuses of one slot an id would alias the
//! slot's first (unreachable in practice, and never a wrong-slot lookup; shard 255's
//! last id of a full-size pool at that generation would also be the books' "none"
//! link, `u64::MAX`).

use std::collections::VecDeque;

use super::shard::{ShardMismatch, SHARD_SHIFT};
use super::types::{Order, OrderId};

const SLOT_BITS: u32 = 24;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
/// The generation bits an id carries (between the slot and the shard).
const GENERATION_MASK: u64 = (1 << (SHARD_SHIFT - SLOT_BITS)) - 1;

/// Most slots a pool can have (ids carry a 24-bit slot number).
pub const MAX_POOL: usize = 1 << SLOT_BITS;

/// The slot of an id.
pub const fn slot_of(id: OrderId) -> u32 {
    (id.0 & SLOT_MASK) as u32
}

/// The slot bits of an id, for structures indexed by slot.
pub const fn slot_mask() -> u64 {
    SLOT_MASK
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct OrderPool {
    slots: Vec<Slot>,
    /// Free slots, oldest-released first: a finished order stays readable as long as
    /// possible before its slot is reused.
    free: VecDeque<u32>,
    /// The engine's shard (the top 8 bits of every id it issues). Configuration, not
    /// state: not serialized (shard 0's images are what they always were), kept by
    /// [`super::OrderManager::restore_image`].
    #[serde(skip)]
    shard: u8,
}

/// Aligned to a cache line: a slot is 192 bytes, so each one spans exactly three
/// lines (unaligned, the heap's 16-byte alignment made each span four, and reading a
/// cold order, as a fill or a cancel does, missed four times).
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
#[repr(align(64))]
struct Slot {
    generation: u64,
    live: bool,
    order: Option<Order>,
}

impl OrderPool {
    /// A pool of `capacity` orders (at most [`MAX_POOL`]), all memory allocated now.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_POOL);
        Self {
            slots: vec![
                Slot {
                    generation: 0,
                    live: false,
                    order: None
                };
                capacity
            ],
            free: (0..capacity as u32).collect(),
            shard: 0,
        }
    }

    /// The shard in this pool's ids.
    pub fn shard(&self) -> u8 {
        self.shard
    }

    /// Issues ids of `shard` from now on. Refused when the pool holds an order
    /// (open or finished) of another shard: its ids would no longer be found.
    pub fn set_shard(&mut self, shard: u8) -> Result<(), ShardMismatch> {
        match self.foreign_shard(shard) {
            Some(found) => Err(ShardMismatch {
                configured: shard,
                found,
            }),
            None => {
                self.shard = shard;
                Ok(())
            }
        }
    }

    /// Takes `shard` without looking at the orders held (a restored image: recovery
    /// then checks them with [`foreign_shard`](Self::foreign_shard)).
    pub(super) fn set_shard_unchecked(&mut self, shard: u8) {
        self.shard = shard;
    }

    /// The shard of an order held here that is not `shard`, if any.
    pub fn foreign_shard(&self, shard: u8) -> Option<u8> {
        self.slots
            .iter()
            .filter_map(|s| s.order.as_ref())
            .map(|o| super::shard::shard_of_order(o.id))
            .find(|s| *s != shard)
    }

    /// The id of `slot` at `generation` in this pool's shard.
    #[inline]
    fn id(&self, generation: u64, slot: u64) -> OrderId {
        OrderId((u64::from(self.shard) << SHARD_SHIFT) | ((generation & GENERATION_MASK) << SLOT_BITS) | slot)
    }

    /// Whether `id` names `slot` at its current generation in this pool's shard.
    #[inline]
    fn names(&self, s: &Slot, id: OrderId) -> bool {
        id.0 >> SHARD_SHIFT == u64::from(self.shard)
            && (id.0 >> SLOT_BITS) & GENERATION_MASK == s.generation & GENERATION_MASK
    }

    /// Writes everything that decides future ids and lookups (every slot and the free
    /// list, in order) for [`super::OrderManager::state_hash`].
    pub(super) fn fingerprint(&self, w: &mut impl std::io::Write) -> Result<(), postcard::Error> {
        for s in &self.slots {
            postcard::to_io(&(s.generation, s.live, s.order), &mut *w)?;
        }
        for f in &self.free {
            postcard::to_io(f, &mut *w)?;
        }
        Ok(())
    }

    /// Orders in use (live).
    pub fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The id the next [`insert`](Self::insert) will assign, if there is room.
    pub fn next_id(&self) -> Option<OrderId> {
        let slot = *self.free.front()?;
        let generation = self.slots.get(slot as usize)?.generation + 1;
        Some(self.id(generation, u64::from(slot)))
    }

    /// Stores `order` under a new id (its `id` field is overwritten). `None` when full.
    pub fn insert(&mut self, mut order: Order) -> Option<OrderId> {
        let id = self.next_id()?;
        let slot = self.free.pop_front()?;
        let s = self.slots.get_mut(slot as usize)?;
        s.generation += 1;
        s.live = true;
        order.id = id;
        s.order = Some(order);
        Some(id)
    }

    fn slot(&self, id: OrderId) -> Option<&Slot> {
        let s = self.slots.get((id.0 & SLOT_MASK) as usize)?;
        self.names(s, id).then_some(s)
    }

    /// Starts loading `id`'s slot into the cache without reading it (the engine hints
    /// the next command's order while it runs the current one).
    #[inline]
    pub fn prefetch(&self, id: OrderId) {
        if let Some(s) = self.slots.get((id.0 & SLOT_MASK) as usize) {
            stocksblitz_cache_hint::prefetch_read(s);
        }
    }

    pub fn get(&self, id: OrderId) -> Option<&Order> {
        self.slot(id)?.order.as_ref()
    }

    pub fn get_mut(&mut self, id: OrderId) -> Option<&mut Order> {
        let (shard, generation) = (id.0 >> SHARD_SHIFT, (id.0 >> SLOT_BITS) & GENERATION_MASK);
        let s = self.slots.get_mut((id.0 & SLOT_MASK) as usize)?;
        if shard != u64::from(self.shard) || s.generation & GENERATION_MASK != generation {
            return None;
        }
        s.order.as_mut()
    }

    /// Marks a terminal order's slot reusable; the order stays readable until then.
    pub fn release(&mut self, id: OrderId) {
        let slot = (id.0 & SLOT_MASK) as u32;
        let (shard, generation) = (id.0 >> SHARD_SHIFT, (id.0 >> SLOT_BITS) & GENERATION_MASK);
        if shard != u64::from(self.shard) {
            return;
        }
        if let Some(s) = self.slots.get_mut(slot as usize) {
            if s.generation & GENERATION_MASK == generation && s.live {
                s.live = false;
                self.free.push_back(slot);
            }
        }
    }

    /// The live order in `slot`, if any.
    #[inline]
    pub fn live_order(&self, slot: u32) -> Option<&Order> {
        let s = self.slots.get(slot as usize)?;
        if s.live {
            s.order.as_ref()
        } else {
            None
        }
    }

    /// The id of the live order in `slot`, if any.
    pub fn live_id(&self, slot: usize) -> Option<OrderId> {
        let s = self.slots.get(slot)?;
        s.live.then(|| self.id(s.generation, slot as u64))
    }

    /// Every live order, in slot order.
    pub fn iter_live(&self) -> impl Iterator<Item = &Order> {
        self.slots.iter().filter(|s| s.live).filter_map(|s| s.order.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::shard::shard_of_order;

    fn order() -> Order {
        Order {
            id: OrderId(0),
            account: crate::orders::AccountId(0),
            instrument: crate::ids::InstrumentId(0),
            client_id: crate::orders::ClientOrderId::EMPTY,
            side: crate::side::Side::Buy,
            kind: crate::orders::OrderType::Limit,
            tif: crate::orders::TimeInForce::Gtc,
            post_only: false,
            reduce_only: false,
            price: crate::fixed::Price(1),
            stop_price: crate::fixed::Price(0),
            qty: crate::fixed::Qty(1),
            filled: crate::fixed::Qty(0),
            status: crate::orders::OrderStatus::Open,
            triggered: true,
            created: crate::time::UnixNanos(0),
            updated: crate::time::UnixNanos(0),
            fill_cost: 0,
            notional_price: crate::fixed::Price(1),
            reserved: 0,
            last_trade: 0,
            place: crate::orders::Placement::None,
        }
    }

    #[test]
    fn shard_zero_ids_are_generation_and_slot() {
        let mut p = OrderPool::new(4);
        assert_eq!(p.insert(order()), Some(OrderId(1 << 24)), "slot 0");
        assert_eq!(p.insert(order()), Some(OrderId((1 << 24) | 1)));
    }

    #[test]
    fn ids_carry_the_shard_and_other_shards_are_not_found() {
        let mut p = OrderPool::new(4);
        p.set_shard(9).expect("empty pool");
        let id = p.insert(order()).expect("room");
        assert_eq!(id, OrderId((9 << 56) | (1 << 24)));
        assert_eq!(shard_of_order(id), 9);
        assert_eq!(p.live_id(0), Some(id));
        assert!(p.get(id).is_some());
        // The same generation and slot under another shard: not ours.
        for other in [0u64, 8, 10, 255] {
            let foreign = OrderId((other << 56) | (id.0 & ((1 << 56) - 1)));
            assert!(p.get(foreign).is_none());
            assert!(p.get_mut(foreign).is_none());
            p.release(foreign);
            assert_eq!(p.live(), 1, "another shard's id releases nothing");
        }
        // Holding a shard-9 order, the pool refuses to change shard.
        assert_eq!(
            p.set_shard(3),
            Err(ShardMismatch {
                configured: 3,
                found: 9
            })
        );
        assert_eq!(p.set_shard(9), Ok(()));
        p.release(id);
        assert_eq!(p.live(), 0);
    }

    #[test]
    fn generations_compare_modulo_32_bits() {
        let mut p = OrderPool::new(1);
        p.set_shard(1).expect("empty pool");
        // The slot has been reused 2^32 times: the next generation wraps in the id.
        if let Some(s) = p.slots.get_mut(0) {
            s.generation = GENERATION_MASK;
        }
        let id = p.insert(order()).expect("room");
        assert_eq!(id, OrderId(1 << 56), "generation 2^32 is 0 in the id, the shard stays");
        assert!(p.get(id).is_some(), "found by the masked generation");
        assert_eq!(p.live_id(0), Some(id));
        // The previous generation's id is stale.
        let stale = OrderId((1 << 56) | (GENERATION_MASK << 24));
        assert!(p.get(stale).is_none());
        p.release(id);
        assert_eq!(p.live(), 0);
        // A generation past 32 bits never reaches the shard bits.
        assert_eq!(shard_of_order(p.next_id().expect("free")), 1);
    }
}
