//! Bounded lock-free SPSC rings between threads, with the counters operators need.
//!
//! Built on `rtrb` (wait-free single-producer single-consumer). A push onto a full ring
//! never blocks and never overwrites: the item is dropped and counted, because a feed
//! handler that stalls loses far more (its socket backs up) than one dropped tick, and
//! the in-band sequence numbers let consumers notice and resync.

use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::counter::Counter;
use crate::doorbell::{ConsumerWake, Doorbell};

/// Counters for one ring; the producer writes `pushed`/`dropped`, the consumer `popped`.
/// The two per-item counters sit on cache lines of their own: sharing one, the two
/// threads would bounce it between their cores on every item (measured: 3x the
/// per-item cost of bare `rtrb` on a 2-core Xeon).
#[derive(Debug)]
pub struct RingStats {
    pub name: String,
    pub capacity: usize,
    pub pushed: CachePadded<Counter>,
    pub dropped: Counter,
    pub popped: CachePadded<Counter>,
}

impl RingStats {
    /// Items currently in the ring (approximate while both sides run).
    pub fn fill(&self) -> u64 {
        self.pushed.get().saturating_sub(self.popped.get())
    }
}

/// The sending half.
pub struct RingProducer<T> {
    inner: rtrb::Producer<T>,
    /// Boxed for the reason [`Shared`] gives.
    end: Box<ProducerEnd>,
}

/// The producer's share of the counters, and the consumer's doorbell if it has one.
struct ProducerEnd {
    stats: Arc<RingStats>,
    wake: ConsumerWake,
}

/// The receiving half.
pub struct RingConsumer<T> {
    inner: rtrb::Consumer<T>,
    stats: Shared,
}

/// An end's share of the counters, boxed. An `Arc` held inline is dropped by the end's
/// drop glue through the field's address (`Arc::drop_slow(&mut self)`, out of line), so
/// the whole end's address escapes and LLVM keeps an owned end's fields (rtrb's cached
/// indices, its buffer pointer) in memory, stored and reloaded around every slot write;
/// boxed, the glue takes the box's heap address instead (issue 20 point 3,
/// BENCHMARKS.md). The price is one more load per operation to reach a counter.
#[allow(clippy::redundant_allocation)]
type Shared = Box<Arc<RingStats>>;

/// A ring of `capacity` slots (allocated once, here).
pub fn ring<T>(name: impl Into<String>, capacity: usize) -> (RingProducer<T>, RingConsumer<T>) {
    let capacity = capacity.max(1);
    let (p, c) = rtrb::RingBuffer::new(capacity);
    let stats = Arc::new(RingStats {
        name: name.into(),
        capacity,
        pushed: CachePadded::new(Counter::new()),
        dropped: Counter::new(),
        popped: CachePadded::new(Counter::new()),
    });
    (
        RingProducer {
            inner: p,
            end: Box::new(ProducerEnd {
                stats: Arc::clone(&stats),
                wake: ConsumerWake::default(),
            }),
        },
        RingConsumer {
            inner: c,
            stats: Box::new(stats),
        },
    )
}

impl<T> RingProducer<T> {
    /// Pushes without blocking; a full ring drops `item`, counts it and returns `false`.
    #[inline]
    pub fn push(&mut self, item: T) -> bool {
        match self.inner.push(item) {
            Ok(()) => {
                self.end.stats.pushed.inc();
                true
            }
            Err(_) => {
                self.end.stats.dropped.inc();
                false
            }
        }
    }

    /// Lets this end wake the consumer's thread (see [`Doorbell`]) from
    /// [`wake_consumer`](Self::wake_consumer).
    pub fn waking(mut self, bell: &Doorbell) -> Self {
        self.end.wake.set(bell);
        self
    }

    /// Call after a batch of pushes (an engine round, a journal commit): wakes the
    /// consumer if it sleeps and anything was pushed since the last call (see
    /// [`ConsumerWake::after_pushes`]).
    #[inline]
    pub fn wake_consumer(&mut self) {
        let end = &mut *self.end;
        end.wake.after_pushes(end.stats.pushed.get());
    }

    /// Free slots right now.
    #[inline]
    pub fn free_slots(&self) -> usize {
        self.inner.slots()
    }

    pub fn stats(&self) -> &Arc<RingStats> {
        &self.end.stats
    }

    /// Whether the consumer has gone away (its thread ended).
    pub fn is_abandoned(&self) -> bool {
        self.inner.is_abandoned()
    }
}

impl<T> RingConsumer<T> {
    /// Moves up to `max` items into `into` (appended); returns how many. One read of
    /// the producer's index, one store of ours and one counter update for the batch,
    /// instead of one each per item.
    pub fn pop_batch(&mut self, into: &mut Vec<T>, max: usize) -> usize {
        let n = self.inner.slots().min(max);
        if n == 0 {
            return 0;
        }
        let Ok(chunk) = self.inner.read_chunk(n) else {
            return 0;
        };
        into.extend(chunk);
        self.stats.popped.add(n as u64);
        n
    }

    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        match self.inner.pop() {
            Ok(v) => {
                self.stats.popped.inc();
                Some(v)
            }
            Err(_) => None,
        }
    }

    /// Items ready to pop.
    #[inline]
    pub fn len(&self) -> usize {
        self.inner.slots()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    pub fn stats(&self) -> &Arc<RingStats> {
        &self.stats
    }

    /// Whether the producer has gone away (its thread ended).
    pub fn is_abandoned(&self) -> bool {
        self.inner.is_abandoned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_ring_drops_and_counts_without_overwriting() {
        let (mut p, mut c) = ring::<u32>("t", 2);
        assert!(p.push(1));
        assert!(p.push(2));
        assert!(!p.push(3));
        assert_eq!(p.stats().dropped.get(), 1);
        assert_eq!(p.stats().fill(), 2);
        assert_eq!(c.pop(), Some(1));
        assert_eq!(c.pop(), Some(2));
        assert_eq!(c.pop(), None);
        assert_eq!(c.stats().fill(), 0);
    }

    /// Both ends count into one `RingStats` (the one metrics clone), and dropping the
    /// ends releases their boxed shares of it: metrics' clone is then the only owner.
    #[test]
    fn ends_share_one_stats_and_release_it_on_drop() {
        let (mut p, mut c) = ring::<u32>("t", 4);
        assert!(Arc::ptr_eq(p.stats(), c.stats()));
        let metrics = Arc::clone(p.stats());
        assert_eq!(Arc::strong_count(&metrics), 3);
        assert!(p.push(7));
        assert_eq!(c.pop(), Some(7));
        assert_eq!((metrics.pushed.get(), metrics.popped.get()), (1, 1));
        drop(p);
        assert_eq!(Arc::strong_count(&metrics), 2);
        drop(c);
        assert_eq!(Arc::strong_count(&metrics), 1);
    }

    /// Any interleaving of pushes, pops and batch pops (across the wrap of the
    /// buffer) hands over the same items in the same order as a FIFO model, and the
    /// counters match the model's.
    mod model {
        use std::collections::VecDeque;

        use proptest::prelude::*;

        use super::super::ring;

        #[derive(Debug, Clone)]
        enum Op {
            Push(u32),
            Pop,
            Batch(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                any::<u32>().prop_map(Op::Push),
                Just(Op::Pop),
                (0usize..8).prop_map(Op::Batch),
            ]
        }

        proptest! {
            #[test]
            fn ring_matches_a_fifo(cap in 1usize..6, ops in proptest::collection::vec(op(), 0..200)) {
                let (mut p, mut c) = ring::<u32>("m", cap);
                let mut model = VecDeque::new();
                let (mut pushed, mut dropped, mut popped) = (0u64, 0u64, 0u64);
                let mut got = Vec::new();
                for op in ops {
                    match op {
                        Op::Push(v) => {
                            let fits = model.len() < cap;
                            prop_assert_eq!(p.push(v), fits);
                            if fits {
                                model.push_back(v);
                                pushed += 1;
                            } else {
                                dropped += 1;
                            }
                        }
                        Op::Pop => {
                            let want = model.pop_front();
                            popped += u64::from(want.is_some());
                            prop_assert_eq!(c.pop(), want);
                        }
                        Op::Batch(max) => {
                            got.clear();
                            got.push(u32::MAX);
                            let n = c.pop_batch(&mut got, max);
                            let want: Vec<u32> = model.drain(..max.min(model.len())).collect();
                            prop_assert_eq!(n, want.len());
                            prop_assert_eq!(&got[1..], &want[..]);
                            prop_assert_eq!(got[0], u32::MAX);
                            popped += n as u64;
                        }
                    }
                    let s = p.stats();
                    prop_assert_eq!(s.pushed.get(), pushed);
                    prop_assert_eq!(s.dropped.get(), dropped);
                    prop_assert_eq!(s.popped.get(), popped);
                    prop_assert_eq!(s.fill(), model.len() as u64);
                    prop_assert_eq!(c.len(), model.len());
                    prop_assert_eq!(p.free_slots(), cap - model.len());
                }
            }
        }
    }
}
