//! Mapping a venue's instrument names to our dense ids and fixed-point scales.
//!
//! Built once when a handler starts; lookups borrow the key, so resolving a symbol or a
//! token from a frame never allocates.

use std::collections::HashMap;
use std::hash::Hash;

use stocksblitz_engine::{Instrument, InstrumentId};

/// What a parser needs to know about an instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VenueInstrument {
    pub id: InstrumentId,
    pub price_scale: u8,
    pub qty_scale: u8,
}

impl VenueInstrument {
    pub fn of(i: &Instrument) -> Self {
        Self {
            id: i.id,
            price_scale: i.price_scale,
            qty_scale: i.qty_scale,
        }
    }
}

/// Venue key (symbol bytes, numeric token) to instrument.
#[derive(Debug, Clone, Default)]
pub struct SymbolMap<K: Eq + Hash> {
    map: HashMap<K, VenueInstrument>,
}

impl<K: Eq + Hash> SymbolMap<K> {
    pub fn new() -> Self {
        Self { map: HashMap::new() }
    }

    pub fn insert(&mut self, key: K, inst: VenueInstrument) {
        self.map.insert(key, inst);
    }

    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<VenueInstrument>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn values(&self) -> impl Iterator<Item = &VenueInstrument> {
        self.map.values()
    }
}
