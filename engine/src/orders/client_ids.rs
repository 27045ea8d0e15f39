//! The open orders' client order ids: which (account, client order id) pairs are in
//! use, probed on every new order and updated when one is placed or finishes.
//!
//! A `HashMap<(AccountId, ClientOrderId), OrderId>` stores the 41-byte key next to
//! the id (57 bytes a bucket with its control byte; 2^21 buckets, 114 MiB, for a
//! million-order pool) and hashes the key on each of its three operations per order. This table keeps one `u64` per
//! bucket, a 32-bit fingerprint of the key and the order's pool slot; the full key
//! stays in the pooled order, which the caller compares on a fingerprint match. The
//! caller hashes a key once ([`ClientIdTable::key`]) and uses it for the check and the
//! insert. Open addressing with linear probing and backward-shift deletion (no
//! tombstones, so probe lengths never degrade), at most half full: the table has
//! twice as many buckets as the pool has slots, rounded up to a power of two (16 MiB
//! for a million orders). Keys are hashed with foldhash seeded at random per process,
//! so a client cannot precompute ids that collide.
//!
//! Each new order probes one random bucket of this table, which no cache level holds:
//! on the orders bench that probe was the order path's largest single cost (~80 ns a
//! command of ~210, for ~15 instructions). Reading the bucket early does not hide it
//! (a missing load blocks retirement), nor did `u32` buckets (8 MiB); a prefetch of the
//! next command's bucket ([`ClientIdTable::prefetch`], from the engine loop) does.
//! What was measured is in BENCHMARKS.md (order path, cache misses).

use core::hash::BuildHasher;

use super::types::{AccountId, ClientOrderId};

/// A hashed (account, client order id): the bucket it starts probing at and the
/// fingerprint stored with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientKey(u32);

/// An empty bucket; a used one holds `fingerprint << 32 | (slot + 1)`.
const EMPTY: u64 = 0;

fn pack(key: ClientKey, slot: u32) -> u64 {
    (u64::from(key.0) << 32) | (u64::from(slot) + 1)
}

fn fingerprint(entry: u64) -> u32 {
    (entry >> 32) as u32
}

fn slot_of(entry: u64) -> u32 {
    (entry as u32).wrapping_sub(1)
}

/// Open orders' client ids, by pool slot (see the module docs).
#[derive(Clone)]
pub struct ClientIdTable {
    hasher: foldhash::fast::RandomState,
    buckets: Vec<u64>,
    /// `buckets.len() - 1` (a power of two minus one).
    mask: usize,
    len: usize,
}

impl ClientIdTable {
    /// A table for a pool of `slots` orders, all memory allocated now.
    pub fn with_slots(slots: usize) -> Self {
        Self::with_hasher(slots, foldhash::fast::RandomState::default())
    }

    fn with_hasher(slots: usize, hasher: foldhash::fast::RandomState) -> Self {
        let n = slots.saturating_mul(2).max(16).next_power_of_two();
        Self {
            hasher,
            buckets: vec![EMPTY; n],
            mask: n - 1,
            len: 0,
        }
    }

    /// Hashes a key (once per command: the check and the insert share it).
    #[inline]
    pub fn key(&self, account: AccountId, client_id: &ClientOrderId) -> ClientKey {
        ClientKey((self.hasher.hash_one((account, client_id)) >> 32) as u32)
    }

    /// Keys in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn home(&self, key: ClientKey) -> usize {
        key.0 as usize & self.mask
    }

    /// Starts loading `key`'s home bucket into the cache without waiting for it: the
    /// engine hints the next command's key while it runs the current one, so the
    /// probe finds the line there (see the module docs).
    #[inline]
    pub fn prefetch(&self, key: ClientKey) {
        if let Some(b) = self.buckets.get(self.home(key)) {
            stocksblitz_cache_hint::prefetch_read(b);
        }
    }

    /// The slot stored under `key` for which `is_key(slot)` (the caller compares the
    /// full key with the order in that slot), if any.
    #[inline]
    pub fn find(&self, key: ClientKey, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut i = self.home(key);
        loop {
            let e = *self.buckets.get(i)?;
            if e == EMPTY {
                return None;
            }
            if fingerprint(e) == key.0 && is_key(slot_of(e)) {
                return Some(slot_of(e));
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Stores `slot` under `key`, which must not be in the table (the caller checked
    /// with [`find`](Self::find)). False, and unchanged, when the table is full (it
    /// cannot be: it has twice as many buckets as the pool has slots).
    #[inline]
    pub fn insert(&mut self, key: ClientKey, slot: u32) -> bool {
        // One bucket always stays empty, so every probe ends.
        if self.len + 1 >= self.buckets.len() {
            return false;
        }
        let mut i = self.home(key);
        loop {
            match self.buckets.get_mut(i) {
                Some(b) if *b == EMPTY => {
                    *b = pack(key, slot);
                    self.len += 1;
                    return true;
                }
                Some(_) => i = (i + 1) & self.mask,
                None => return false,
            }
        }
    }

    /// Removes the entry of `slot` stored under `key`; false when there is none.
    /// Later entries of the probe run move back into the hole, so lookups never
    /// have to step over deleted buckets.
    #[inline]
    pub fn remove(&mut self, key: ClientKey, slot: u32) -> bool {
        let wanted = pack(key, slot);
        let mut hole = self.home(key);
        loop {
            match self.buckets.get(hole) {
                Some(&e) if e == wanted => break,
                Some(&e) if e != EMPTY => hole = (hole + 1) & self.mask,
                _ => return false,
            }
        }
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let Some(&e) = self.buckets.get(j) else { break };
            if e == EMPTY {
                break;
            }
            // The entry may fill the hole if its home is not after the hole on its
            // probe run (cyclically): its distance from home reaches back to the hole.
            let from_home = j.wrapping_sub(fingerprint(e) as usize & self.mask) & self.mask;
            let from_hole = j.wrapping_sub(hole) & self.mask;
            if from_home >= from_hole {
                if let Some(h) = self.buckets.get_mut(hole) {
                    *h = e;
                }
                hole = j;
            }
        }
        if let Some(h) = self.buckets.get_mut(hole) {
            *h = EMPTY;
        }
        self.len -= 1;
        true
    }

    /// Empties it (keeps the memory).
    pub fn clear(&mut self) {
        self.buckets.iter_mut().for_each(|b| *b = EMPTY);
        self.len = 0;
    }

    /// The slots in the table, in bucket order (not a meaningful order: sort).
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.buckets.iter().filter(|&&e| e != EMPTY).map(|&e| slot_of(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u8),
        Remove(u8),
        Find(u32, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..3, 0u8..40).prop_map(|(a, c)| Op::Insert(a, c)),
            (0u8..64).prop_map(Op::Remove),
            (0u32..3, 0u8..40).prop_map(|(a, c)| Op::Find(a, c)),
        ]
    }

    fn cid(c: u8) -> ClientOrderId {
        ClientOrderId::new(&format!("c{c}")).unwrap()
    }

    proptest! {
        /// Against a `HashMap` model, on a small table (many collisions and wrapping
        /// probe runs), with fingerprints cut to a few bits so that unequal keys
        /// share them: every lookup agrees after any mix of inserts and removes, and
        /// the table never holds a key twice.
        #[test]
        fn agrees_with_a_hash_map(few_bits in any::<bool>(), ops in proptest::collection::vec(op(), 1..300)) {
            let mut t = ClientIdTable::with_hasher(12, foldhash::fast::RandomState::default());
            // slot -> key (the "pool"); model: key -> slot.
            let mut pool: HashMap<u32, (AccountId, ClientOrderId)> = HashMap::new();
            let mut model: HashMap<(AccountId, ClientOrderId), u32> = HashMap::new();
            let key = |t: &ClientIdTable, a: AccountId, c: &ClientOrderId| {
                let k = t.key(a, c);
                if few_bits { ClientKey(k.0 & 0x8000_0007) } else { k }
            };
            let mut next_slot = 0u32;
            for op in ops {
                match op {
                    Op::Insert(a, c) => {
                        let (a, c) = (AccountId(a), cid(c));
                        let k = key(&t, a, &c);
                        let found = t.find(k, |s| pool.get(&s) == Some(&(a, c)));
                        prop_assert_eq!(found, model.get(&(a, c)).copied());
                        if found.is_none() && model.len() < 12 {
                            let slot = next_slot;
                            next_slot += 1;
                            prop_assert!(t.insert(k, slot));
                            pool.insert(slot, (a, c));
                            model.insert((a, c), slot);
                        }
                    }
                    Op::Remove(n) => {
                        let Some((&(a, c), &slot)) = model.iter().nth(usize::from(n) % model.len().max(1)) else { continue };
                        prop_assert!(t.remove(key(&t, a, &c), slot));
                        prop_assert!(!t.remove(key(&t, a, &c), slot), "removed twice");
                        model.remove(&(a, c));
                        pool.remove(&slot);
                    }
                    Op::Find(a, c) => {
                        let (a, c) = (AccountId(a), cid(c));
                        let found = t.find(key(&t, a, &c), |s| pool.get(&s) == Some(&(a, c)));
                        prop_assert_eq!(found, model.get(&(a, c)).copied());
                    }
                }
                prop_assert_eq!(t.len(), model.len());
                let mut slots: Vec<u32> = t.slots().collect();
                slots.sort_unstable();
                let mut want: Vec<u32> = model.values().copied().collect();
                want.sort_unstable();
                prop_assert_eq!(slots, want);
                // Every key is still reachable from its home (no probe run broken).
                for (&(a, c), &slot) in &model {
                    prop_assert_eq!(t.find(key(&t, a, &c), |s| s == slot), Some(slot));
                }
            }
        }
    }

    #[test]
    fn a_full_table_refuses_instead_of_looping() {
        let mut t = ClientIdTable::with_slots(1);
        let n = t.buckets.len();
        for s in 0..n as u32 - 1 {
            assert!(t.insert(ClientKey(0), s));
        }
        assert!(!t.insert(ClientKey(0), 99));
        assert_eq!(t.find(ClientKey(0), |s| s == 99), None);
        assert!(t.remove(ClientKey(0), 0));
        assert_eq!(t.find(ClientKey(0), |s| s == n as u32 - 2), Some(n as u32 - 2));
        t.clear();
        assert!(t.is_empty());
    }
}
