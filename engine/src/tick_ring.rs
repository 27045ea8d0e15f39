//! The feed -> engine rings: a bounded lock-free SPSC ring for [`Tick`] in which the
//! consumer polls the slot itself (a "slot-sequence" ring), with the same counters as
//! [`crate::ring`].
//!
//! Why not `rtrb` as the other rings (issue 20 point 3, BENCHMARKS.md "a slot-sequence
//! ring against the floors"): rtrb's consumer polls the producer's tail index (one cache
//! line) and then reads the slot (another line, or two: its 64-byte slots are not
//! line-aligned), two dependent transfers per hand-off. Here each slot is one 64-byte
//! line of eight `AtomicU64` words: word 0 is the slot's sequence (the position written
//! plus one, stored last with `Release`), words 1..7 the tick encoded ([`encode`]). The
//! consumer polls the sequence word of the slot it wants next, in the same line as the
//! data: one transfer. Measured on the shared 2-vCPU EPYC VM at 4096 slots, counters
//! included (`ring_handoff`): burst 0.95x raw rtrb on close vCPUs and 1.13x-1.17x on far
//! ones, where the rtrb ring does 0.75x; paced one-way ~90 ns less than the rtrb ring
//! on far vCPUs (1.13x the stamped floor against 1.59x); 58 instructions per item
//! against the rtrb ring's 67.5 (raw rtrb: 58).
//!
//! The producer never reads the consumer's line per item: it keeps a cached copy of the
//! consumer's published head and reloads it only when the cache says the ring is full.
//! The consumer publishes its head lazily: every `min(64, capacity / 4)` items, and
//! whenever it finds the ring empty (only when it changed). So a push may find the ring
//! full while up to that many slots were already read but not yet published: the tick
//! is dropped and counted as on a full ring (never blocks, never overwrites). A consumer
//! that keeps up finds the ring empty and publishes everything; one that falls behind
//! is the case in which ticks are dropped anyway.
//!
//! Safe Rust throughout (atomics only). Ordering: the producer writes words 1..7
//! (`Relaxed`), then the sequence (`Release`); the consumer loads the sequence
//! (`Acquire`) and, when it is the one it waits for, the data words (`Relaxed`): they
//! are the producer's. The producer rewrites a slot only after loading (`Acquire`) a
//! head the consumer published (`Release`) after reading that slot, so a slot is never
//! overwritten while it is being read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::counter::Counter;
use crate::doorbell::{ConsumerWake, Doorbell};
use crate::ring::RingStats;
use crate::{Aggressor, BookFlags, FeedStatus, InstrumentId, Price, Qty, Side, Tick, TickData, UnixNanos};

/// The consumer publishes its head at least this often (items), and when it finds the
/// ring empty; smaller rings every quarter of their capacity.
pub const PUBLISH_EVERY: u64 = 64;

/// One slot: one cache line. Word 0 is the sequence, words 1..7 the encoded tick.
#[repr(align(64))]
struct Slot {
    w: [AtomicU64; 8],
}

/// The consumer's published head, on a line of its own.
#[repr(align(128))]
struct Head(AtomicU64);

struct Shared {
    slots: Box<[Slot]>,
    head: Head,
}

/// What an end shares with the other end and with metrics, boxed: an `Arc` held inline
/// would make the end's drop glue take the end's address, and LLVM then keeps the end's
/// fields (positions, caches) in memory around every slot write (see [`crate::ring`]).
struct ProducerEnd {
    shared: Arc<Shared>,
    stats: Arc<RingStats>,
    wake: ConsumerWake,
}

struct ConsumerEnd {
    shared: Arc<Shared>,
    stats: Arc<RingStats>,
}

/// The sending half (a feed handler's).
pub struct TickProducer {
    end: Box<ProducerEnd>,
    mask: u64,
    cap: u64,
    /// Next position to write.
    tail: u64,
    /// The consumer's head as last read.
    head_cache: u64,
}

/// The receiving half (the engine's).
pub struct TickConsumer {
    end: Box<ConsumerEnd>,
    mask: u64,
    /// Publish the head after this many reads.
    publish_every: u64,
    /// Next position to read.
    head: u64,
    /// The head as last published.
    published: u64,
}

/// A ring of `capacity` ticks, rounded up to a power of two (at least 2); the rounded
/// capacity is the one [`RingStats::capacity`] reports. Allocated once, here.
pub fn tick_ring(name: impl Into<String>, capacity: usize) -> (TickProducer, TickConsumer) {
    let cap = capacity.max(2).next_power_of_two();
    let slots: Box<[Slot]> = (0..cap)
        .map(|_| Slot {
            w: std::array::from_fn(|_| AtomicU64::new(0)),
        })
        .collect();
    let shared = Arc::new(Shared {
        slots,
        head: Head(AtomicU64::new(0)),
    });
    let stats = Arc::new(RingStats {
        name: name.into(),
        capacity: cap,
        pushed: CachePadded::new(Counter::new()),
        dropped: Counter::new(),
        popped: CachePadded::new(Counter::new()),
    });
    let mask = cap as u64 - 1;
    (
        TickProducer {
            end: Box::new(ProducerEnd {
                shared: Arc::clone(&shared),
                stats: Arc::clone(&stats),
                wake: ConsumerWake::default(),
            }),
            mask,
            cap: cap as u64,
            tail: 0,
            head_cache: 0,
        },
        TickConsumer {
            end: Box::new(ConsumerEnd { shared, stats }),
            mask,
            publish_every: (cap as u64 / 4).clamp(1, PUBLISH_EVERY),
            head: 0,
            published: 0,
        },
    )
}

impl TickProducer {
    /// Pushes without blocking; a full ring drops `tick`, counts it and returns `false`.
    #[inline]
    pub fn push(&mut self, tick: Tick) -> bool {
        if self.tail.wrapping_sub(self.head_cache) >= self.cap {
            self.head_cache = self.end.shared.head.0.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head_cache) >= self.cap {
                self.end.stats.dropped.inc();
                return false;
            }
        }
        let end = &*self.end;
        let Some(slot) = end.shared.slots.get((self.tail & self.mask) as usize) else {
            end.stats.dropped.inc();
            return false;
        };
        let words = encode(&tick);
        for (w, v) in slot.w[1..].iter().zip(words) {
            w.store(v, Ordering::Relaxed);
        }
        self.tail = self.tail.wrapping_add(1);
        slot.w[0].store(self.tail, Ordering::Release);
        // Every successful push moves `tail` by one: `pushed` is `tail` (a store, no
        // read-modify-write).
        end.stats.pushed.set(self.tail);
        true
    }

    /// Lets this end wake the consumer's thread (see [`Doorbell`]) from
    /// [`wake_consumer`](Self::wake_consumer).
    pub fn waking(mut self, bell: &Doorbell) -> Self {
        self.end.wake.set(bell);
        self
    }

    /// Call after a batch of pushes (a frame's ticks): wakes the consumer if it sleeps
    /// and anything was pushed since the last call (see [`ConsumerWake::after_pushes`]).
    #[inline]
    pub fn wake_consumer(&mut self) {
        let end = &mut *self.end;
        end.wake.after_pushes(end.stats.pushed.get());
    }

    /// Free slots as far as this end knows: a lower bound, since the consumer publishes
    /// its head lazily (see the module doc). Reads the consumer's line.
    #[inline]
    pub fn free_slots(&self) -> usize {
        let head = self.end.shared.head.0.load(Ordering::Acquire);
        self.cap.saturating_sub(self.tail.wrapping_sub(head)) as usize
    }

    pub fn stats(&self) -> &Arc<RingStats> {
        &self.end.stats
    }
}

impl TickConsumer {
    /// The next tick, or `None` when the ring is empty.
    #[inline]
    pub fn pop(&mut self) -> Option<Tick> {
        let end = &*self.end;
        let slot = end.shared.slots.get((self.head & self.mask) as usize)?;
        let want = self.head.wrapping_add(1);
        if slot.w[0].load(Ordering::Acquire) != want {
            // Empty: let the producer see everything read so far.
            if self.published != self.head {
                self.published = self.head;
                end.shared.head.0.store(self.head, Ordering::Release);
            }
            return None;
        }
        let mut words = [0u64; 7];
        for (v, w) in words.iter_mut().zip(&slot.w[1..]) {
            *v = w.load(Ordering::Relaxed);
        }
        self.head = want;
        if self.head.wrapping_sub(self.published) >= self.publish_every {
            self.published = self.head;
            end.shared.head.0.store(self.head, Ordering::Release);
        }
        // As `pushed` on the producer: `popped` is `head`.
        end.stats.popped.set(self.head);
        Some(decode(&words))
    }

    pub fn stats(&self) -> &Arc<RingStats> {
        &self.end.stats
    }
}

const TAG_TRADE: u64 = 0;
const TAG_QUOTE: u64 = 1;
const TAG_DELTA: u64 = 2;
const TAG_STATUS: u64 = 3;
const TAG_LAST: u64 = 4;
const TAG_DAYSTATS: u64 = 5;

/// `t` as seven words: exchange_ts, recv_ts, then instrument (bits 0..32), the variant's
/// tag (32..40) and its one-byte fields (40..48, 48..56), then up to four words of the
/// variant's payload (unused words are zero). [`decode`] inverts it exactly.
#[inline]
pub fn encode(t: &Tick) -> [u64; 7] {
    let small = |tag: u64, a: u8, b: u8| -> u64 {
        u64::from(t.instrument.0) | tag << 32 | u64::from(a) << 40 | u64::from(b) << 48
    };
    let (w2, p) = match t.data {
        TickData::Trade {
            price,
            qty,
            trade_id,
            aggressor,
        } => (
            small(TAG_TRADE, aggressor as u8, 0),
            [price.0 as u64, qty.0 as u64, trade_id, 0],
        ),
        TickData::Quote {
            bid,
            bid_qty,
            ask,
            ask_qty,
        } => (
            small(TAG_QUOTE, 0, 0),
            [bid.0 as u64, bid_qty.0 as u64, ask.0 as u64, ask_qty.0 as u64],
        ),
        TickData::BookDelta {
            side,
            price,
            qty,
            update_id,
            flags,
        } => (
            small(TAG_DELTA, side as u8, flags.0),
            [price.0 as u64, qty.0 as u64, update_id, 0],
        ),
        TickData::Status { status, detail } => (small(TAG_STATUS, status as u8, 0), [detail, 0, 0, 0]),
        TickData::LastPrice { price, qty } => (small(TAG_LAST, 0, 0), [price.0 as u64, qty.0 as u64, 0, 0]),
        TickData::DayStats { open, high, low, close } => (
            small(TAG_DAYSTATS, 0, 0),
            [open.0 as u64, high.0 as u64, low.0 as u64, close.0 as u64],
        ),
    };
    [t.exchange_ts.0 as u64, t.recv_ts.0 as u64, w2, p[0], p[1], p[2], p[3]]
}

/// The tick [`encode`] made `w` from. Total (no panic): byte values `encode` never
/// writes map to the last variant of their enum.
#[inline]
pub fn decode(w: &[u64; 7]) -> Tick {
    let tag = (w[2] >> 32) & 0xff;
    let a = (w[2] >> 40) as u8;
    let b = (w[2] >> 48) as u8;
    let side = if a == 0 { Side::Buy } else { Side::Sell };
    let data = match tag {
        TAG_TRADE => TickData::Trade {
            price: Price(w[3] as i64),
            qty: Qty(w[4] as i64),
            trade_id: w[5],
            aggressor: match a {
                0 => Aggressor::Buy,
                1 => Aggressor::Sell,
                _ => Aggressor::Unknown,
            },
        },
        TAG_QUOTE => TickData::Quote {
            bid: Price(w[3] as i64),
            bid_qty: Qty(w[4] as i64),
            ask: Price(w[5] as i64),
            ask_qty: Qty(w[6] as i64),
        },
        TAG_DELTA => TickData::BookDelta {
            side,
            price: Price(w[3] as i64),
            qty: Qty(w[4] as i64),
            update_id: w[5],
            flags: BookFlags(b),
        },
        TAG_STATUS => TickData::Status {
            status: match a {
                0 => FeedStatus::Syncing,
                1 => FeedStatus::Live,
                2 => FeedStatus::Gap,
                3 => FeedStatus::Stale,
                4 => FeedStatus::Halted,
                _ => FeedStatus::Resumed,
            },
            detail: w[3],
        },
        TAG_LAST => TickData::LastPrice {
            price: Price(w[3] as i64),
            qty: Qty(w[4] as i64),
        },
        _ => TickData::DayStats {
            open: Price(w[3] as i64),
            high: Price(w[4] as i64),
            low: Price(w[5] as i64),
            close: Price(w[6] as i64),
        },
    };
    Tick {
        exchange_ts: UnixNanos(w[0] as i64),
        recv_ts: UnixNanos(w[1] as i64),
        instrument: InstrumentId(w[2] as u32),
        data,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    fn side() -> impl Strategy<Value = Side> {
        prop_oneof![Just(Side::Buy), Just(Side::Sell)]
    }

    fn aggressor() -> impl Strategy<Value = Aggressor> {
        prop_oneof![Just(Aggressor::Buy), Just(Aggressor::Sell), Just(Aggressor::Unknown)]
    }

    fn status() -> impl Strategy<Value = FeedStatus> {
        prop_oneof![
            Just(FeedStatus::Syncing),
            Just(FeedStatus::Live),
            Just(FeedStatus::Gap),
            Just(FeedStatus::Stale),
            Just(FeedStatus::Halted),
            Just(FeedStatus::Resumed),
        ]
    }

    fn data() -> impl Strategy<Value = TickData> {
        let p = || any::<i64>().prop_map(Price);
        let q = || any::<i64>().prop_map(Qty);
        prop_oneof![
            (p(), q(), any::<u64>(), aggressor()).prop_map(|(price, qty, trade_id, aggressor)| {
                TickData::Trade {
                    price,
                    qty,
                    trade_id,
                    aggressor,
                }
            }),
            (p(), q(), p(), q()).prop_map(|(bid, bid_qty, ask, ask_qty)| TickData::Quote {
                bid,
                bid_qty,
                ask,
                ask_qty
            }),
            (side(), p(), q(), any::<u64>(), any::<u8>()).prop_map(|(side, price, qty, update_id, f)| {
                TickData::BookDelta {
                    side,
                    price,
                    qty,
                    update_id,
                    flags: BookFlags(f),
                }
            }),
            (status(), any::<u64>()).prop_map(|(status, detail)| TickData::Status { status, detail }),
            (p(), q()).prop_map(|(price, qty)| TickData::LastPrice { price, qty }),
            (p(), p(), p(), p()).prop_map(|(open, high, low, close)| TickData::DayStats { open, high, low, close }),
        ]
    }

    /// The one-byte fields travel as their `repr(u8)` values and come back through
    /// `decode`'s matches, which map any other value to the last variant: a variant
    /// added to one of these enums must be added there and to the strategies above.
    /// This match stops compiling until it is listed here, as a reminder.
    #[allow(dead_code)]
    fn every_variant_is_listed(s: FeedStatus, a: Aggressor, d: Side) {
        use FeedStatus::*;
        match s {
            Syncing | Live | Gap | Stale | Halted | Resumed => {}
        }
        match a {
            Aggressor::Buy | Aggressor::Sell | Aggressor::Unknown => {}
        }
        match d {
            Side::Buy | Side::Sell => {}
        }
    }

    fn tick() -> impl Strategy<Value = Tick> {
        (any::<i64>(), any::<i64>(), any::<u32>(), data()).prop_map(|(e, r, i, data)| Tick {
            exchange_ts: UnixNanos(e),
            recv_ts: UnixNanos(r),
            instrument: InstrumentId(i),
            data,
        })
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(Tick),
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![tick().prop_map(Op::Push), Just(Op::Pop)]
    }

    proptest! {
        /// Every tick of every variant survives encode/decode exactly.
        #[test]
        fn encode_decode_round_trips(t in tick()) {
            prop_assert_eq!(decode(&encode(&t)), t);
        }

        /// Any interleaving of pushes and pops (across many wraps) hands over the same
        /// ticks in the same order as a bounded FIFO, and after every operation the
        /// counters match the model's. A push fails exactly when the FIFO's ticks plus
        /// the reads the consumer has not published yet (fewer than `publish_every`,
        /// none once it found the ring empty) fill the capacity.
        #[test]
        fn ring_matches_a_fifo(cap in 1usize..20, ops in proptest::collection::vec(op(), 0..400)) {
            let (mut p, mut c) = tick_ring("m", cap);
            let cap = p.stats().capacity;
            prop_assert!(cap.is_power_of_two() && cap >= 2);
            let mut model = VecDeque::new();
            let (mut pushed, mut dropped, mut popped) = (0u64, 0u64, 0u64);
            for op in ops {
                match op {
                    Op::Push(t) => {
                        // Read but not yet published: the producer counts them as full.
                        let unpublished = (c.head - c.published) as usize;
                        prop_assert!((unpublished as u64) < c.publish_every);
                        let fits = model.len() + unpublished < cap;
                        prop_assert_eq!(p.push(t), fits);
                        if fits {
                            model.push_back(t);
                            pushed += 1;
                        } else {
                            dropped += 1;
                        }
                    }
                    Op::Pop => {
                        let want = model.pop_front();
                        popped += u64::from(want.is_some());
                        prop_assert_eq!(c.pop(), want);
                        if want.is_none() {
                            // Found empty: everything read is published.
                            prop_assert_eq!(c.published, c.head);
                        }
                    }
                }
                let s = p.stats();
                prop_assert!(Arc::ptr_eq(s, c.stats()));
                prop_assert_eq!(s.pushed.get(), pushed);
                prop_assert_eq!(s.dropped.get(), dropped);
                prop_assert_eq!(s.popped.get(), popped);
                prop_assert_eq!(s.fill(), model.len() as u64);
                prop_assert!(p.free_slots() <= cap - model.len());
            }
            // Drained: the whole capacity is free again, and exactly it.
            while let Some(t) = model.pop_front() {
                prop_assert_eq!(c.pop(), Some(t));
            }
            prop_assert_eq!(c.pop(), None);
            prop_assert_eq!(p.free_slots(), cap);
            for i in 0..cap {
                let t = Tick { instrument: InstrumentId(i as u32), ..Tick::EMPTY };
                prop_assert!(p.push(t));
            }
            prop_assert!(!p.push(Tick::EMPTY));
            prop_assert_eq!(p.free_slots(), 0);
        }
    }

    /// Two threads: every tick arrives once, in order, through a small ring (so the
    /// producer keeps finding it full and the consumer keeps finding it empty: many
    /// wraps), and the counters add up.
    #[test]
    fn two_threads_hand_over_every_tick_in_order() {
        const N: u64 = 200_000;
        let (mut p, mut c) = tick_ring("t", 8);
        let consumer = std::thread::spawn(move || {
            let mut next = 0u64;
            let mut in_order = true;
            while next < N {
                if let Some(t) = c.pop() {
                    in_order &= t.recv_ts.0 as u64 == next && t.exchange_ts.0 as u64 == !next;
                    next += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
            (in_order, c.pop().is_none())
        });
        let mut full = 0u64;
        for i in 0..N {
            let t = Tick {
                exchange_ts: UnixNanos(!i as i64),
                recv_ts: UnixNanos(i as i64),
                ..Tick::EMPTY
            };
            while !p.push(t) {
                full += 1;
                std::hint::spin_loop();
            }
        }
        assert_eq!(consumer.join().ok(), Some((true, true)));
        let s = p.stats();
        assert_eq!((s.pushed.get(), s.popped.get(), s.dropped.get()), (N, N, full));
    }

    /// `wake_consumer` rings the doorbell only when something was pushed since the
    /// last call, and a ring without a doorbell ignores it.
    #[test]
    fn doorbell_rings_only_after_pushes() {
        let bell = Doorbell::new();
        bell.bind_current_thread();
        let (p, mut c) = tick_ring("w", 4);
        let mut p = p.waking(&bell);
        bell.arm();
        p.wake_consumer();
        assert!(bell.is_armed(), "nothing pushed: not rung");
        assert!(p.push(Tick::EMPTY));
        p.wake_consumer();
        assert!(!bell.is_armed());
        assert_eq!(bell.wakes(), 1);
        bell.arm();
        p.wake_consumer();
        assert!(bell.is_armed(), "nothing pushed since: not rung again");
        // A dropped push is no reason to ring.
        for _ in 0..4 {
            p.push(Tick::EMPTY);
        }
        p.wake_consumer();
        assert_eq!(bell.wakes(), 2);
        bell.arm();
        assert!(!p.push(Tick::EMPTY));
        p.wake_consumer();
        assert!(bell.is_armed());
        bell.disarm();
        assert!(c.pop().is_some());
        let (mut q, _c) = tick_ring("no-bell", 4);
        assert!(q.push(Tick::EMPTY));
        q.wake_consumer();
        assert_eq!(bell.wakes(), 2);
    }
}
