//! The order pool: every order the engine knows, in one preallocated slab.
//!
//! Slots are reused through a free list, so steady-state order entry allocates
//! nothing. An [`OrderId`] encodes its slot and the slot's generation, so looking an
//! order up is an array index plus a generation check (no hashing), and a stale id
//! (the slot was reused) is simply "not found". Terminal orders stay readable in their
//! slot until it is reused; the API keeps the history.

use std::collections::VecDeque;

use super::types::{Order, OrderId};

const SLOT_BITS: u32 = 24;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;

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
}

#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
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
        }
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
        Some(OrderId((generation << SLOT_BITS) | u64::from(slot)))
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
        (s.generation == id.0 >> SLOT_BITS).then_some(s)
    }

    pub fn get(&self, id: OrderId) -> Option<&Order> {
        self.slot(id)?.order.as_ref()
    }

    pub fn get_mut(&mut self, id: OrderId) -> Option<&mut Order> {
        let s = self.slots.get_mut((id.0 & SLOT_MASK) as usize)?;
        if s.generation != id.0 >> SLOT_BITS {
            return None;
        }
        s.order.as_mut()
    }

    /// Marks a terminal order's slot reusable; the order stays readable until then.
    pub fn release(&mut self, id: OrderId) {
        let slot = (id.0 & SLOT_MASK) as u32;
        if let Some(s) = self.slots.get_mut(slot as usize) {
            if s.generation == id.0 >> SLOT_BITS && s.live {
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
        s.live.then_some(OrderId((s.generation << SLOT_BITS) | slot as u64))
    }

    /// Every live order, in slot order.
    pub fn iter_live(&self) -> impl Iterator<Item = &Order> {
        self.slots.iter().filter(|s| s.live).filter_map(|s| s.order.as_ref())
    }
}
