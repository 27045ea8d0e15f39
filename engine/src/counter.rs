//! Single-writer counters shared with metrics readers.
//!
//! Each counter has exactly one writing thread, so an increment is a relaxed load and
//! store (plain `mov`s) instead of a locked read-modify-write: no bus lock on the hot
//! path. Readers (the metrics endpoint) see a value at most a few increments stale.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Adds one. Only the owning thread may call this.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`. Only the owning thread may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    /// Overwrites the value (gauges). Only the owning thread may call this.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
