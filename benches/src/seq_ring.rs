//! A "slot-sequence" SPSC ring for [`Tick`], built for the `ring_handoff` bench (issue
//! 20 point 3): an experiment, not the engine's ring.
//!
//! rtrb's consumer polls the producer's tail index (one cache line), then reads the
//! slot (another line, or two: its 64-byte slots are not line-aligned): two dependent
//! transfers per hand-off. Here each slot is one 64-byte line of eight `AtomicU64`
//! words: word 0 is the slot's sequence (the position written plus one, stored last
//! with `Release`), words 1..7 the tick encoded. The consumer polls the sequence word
//! of the slot it wants next, in the same line as the data: one transfer.
//!
//! The producer never reads the consumer's line per item: it keeps a cached copy of
//! the consumer's published head and refreshes it only when the cache says the ring is
//! full. The consumer publishes its head lazily: every [`PUBLISH_EVERY`] items, and
//! whenever it finds the ring empty (only when it changed).
//!
//! Safe Rust throughout (atomics only). Ordering argument: the producer writes words
//! 1..7 (`Relaxed`), then the sequence (`Release`); the consumer loads the sequence
//! (`Acquire`) and, when it is the one it waits for, the data words (`Relaxed`): they
//! are the producer's. The producer rewrites a slot only after loading (`Acquire`) a
//! head the consumer published (`Release`) after reading that slot, so a slot is never
//! overwritten while it is being read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use stocksblitz_engine::{Aggressor, BookFlags, FeedStatus, InstrumentId, Price, Qty, Side, Tick, TickData, UnixNanos};

/// The consumer publishes its head at least this often (items), and when it finds the
/// ring empty.
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

/// The producer end: `push` returns false when the ring is full.
pub struct SeqProducer {
    shared: Arc<Shared>,
    mask: u64,
    cap: u64,
    /// Next position to write.
    tail: u64,
    /// The consumer's head as last read.
    head_cache: u64,
}

/// The consumer end: `pop` returns the next tick, or `None` when the ring is empty.
pub struct SeqConsumer {
    shared: Arc<Shared>,
    mask: u64,
    /// Next position to read.
    head: u64,
    /// The head as last published.
    published: u64,
}

/// A ring of `capacity` ticks (rounded up to a power of two, at least 2).
pub fn seq_ring(capacity: usize) -> (SeqProducer, SeqConsumer) {
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
    let mask = cap as u64 - 1;
    (
        SeqProducer {
            shared: Arc::clone(&shared),
            mask,
            cap: cap as u64,
            tail: 0,
            head_cache: 0,
        },
        SeqConsumer {
            shared,
            mask,
            head: 0,
            published: 0,
        },
    )
}

impl SeqProducer {
    /// Writes `tick` into the next slot; false (nothing written) when the ring is full.
    #[inline]
    pub fn push(&mut self, tick: Tick) -> bool {
        if self.tail.wrapping_sub(self.head_cache) >= self.cap {
            self.head_cache = self.shared.head.0.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head_cache) >= self.cap {
                return false;
            }
        }
        let Some(slot) = self.shared.slots.get((self.tail & self.mask) as usize) else {
            return false;
        };
        let words = encode(&tick);
        for (w, v) in slot.w[1..].iter().zip(words) {
            w.store(v, Ordering::Relaxed);
        }
        self.tail = self.tail.wrapping_add(1);
        slot.w[0].store(self.tail, Ordering::Release);
        true
    }

    /// Capacity in ticks.
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }
}

impl SeqConsumer {
    /// The next tick, or `None` when the ring is empty.
    #[inline]
    pub fn pop(&mut self) -> Option<Tick> {
        let slot = self.shared.slots.get((self.head & self.mask) as usize)?;
        let want = self.head.wrapping_add(1);
        if slot.w[0].load(Ordering::Acquire) != want {
            // Empty: let the producer see everything read so far.
            if self.published != self.head {
                self.published = self.head;
                self.shared.head.0.store(self.head, Ordering::Release);
            }
            return None;
        }
        let mut words = [0u64; 7];
        for (v, w) in words.iter_mut().zip(&slot.w[1..]) {
            *v = w.load(Ordering::Relaxed);
        }
        self.head = want;
        if self.head.wrapping_sub(self.published) >= PUBLISH_EVERY {
            self.published = self.head;
            self.shared.head.0.store(self.head, Ordering::Release);
        }
        Some(decode(&words))
    }
}

const TAG_TRADE: u64 = 0;
const TAG_QUOTE: u64 = 1;
const TAG_DELTA: u64 = 2;
const TAG_STATUS: u64 = 3;
const TAG_LAST: u64 = 4;
const TAG_DAYSTATS: u64 = 5;

/// `tick` as seven words: exchange_ts, recv_ts, then instrument (bits 0..32), the
/// variant's tag (32..40) and its one-byte fields (40..48, 48..56), then up to four
/// words of the variant's payload (unused words are zero).
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
    use super::*;
    use proptest::prelude::*;

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

    fn tick() -> impl Strategy<Value = Tick> {
        (any::<i64>(), any::<i64>(), any::<u32>(), data()).prop_map(|(e, r, i, data)| Tick {
            exchange_ts: UnixNanos(e),
            recv_ts: UnixNanos(r),
            instrument: InstrumentId(i),
            data,
        })
    }

    proptest! {
        /// Every tick of every variant survives encode/decode exactly.
        #[test]
        fn encode_decode_round_trips(t in tick()) {
            prop_assert_eq!(decode(&encode(&t)), t);
        }

        /// On one thread, pushes and pops in any interleaving behave as a bounded FIFO:
        /// a push fails exactly when `capacity` ticks are unread, pops return the ticks
        /// in order, and an empty ring pops `None`.
        #[test]
        fn ring_is_a_bounded_fifo(
            cap in 2usize..9,
            ops in proptest::collection::vec((any::<bool>(), tick()), 0..400),
        ) {
            let (mut p, mut c) = seq_ring(cap);
            let cap = p.capacity();
            let mut model = std::collections::VecDeque::new();
            for (is_push, t) in ops {
                if is_push {
                    // The producer may see the ring full before the model does, but
                    // only while the consumer's published head lags (it publishes
                    // when it finds the ring empty, or every PUBLISH_EVERY items).
                    let lagging = p.tail - c.published >= p.cap;
                    if p.push(t) {
                        prop_assert!(model.len() < cap);
                        model.push_back(t);
                    } else {
                        prop_assert!(model.len() == cap || lagging);
                    }
                } else {
                    prop_assert_eq!(c.pop(), model.pop_front());
                }
            }
            while let Some(t) = model.pop_front() {
                prop_assert_eq!(c.pop(), Some(t));
            }
            prop_assert_eq!(c.pop(), None);
            // Drained and published: the whole capacity is free again.
            for i in 0..cap {
                let t = Tick { instrument: InstrumentId(i as u32), ..Tick::EMPTY };
                prop_assert!(p.push(t));
            }
            prop_assert!(!p.push(Tick::EMPTY));
        }
    }

    /// Two threads: every tick arrives once, in order, through a small ring (so the
    /// producer keeps finding it full and the consumer keeps finding it empty).
    #[test]
    fn two_threads_hand_over_every_tick_in_order() {
        const N: u64 = 200_000;
        let (mut p, mut c) = seq_ring(8);
        let consumer = std::thread::spawn(move || {
            let mut next = 0u64;
            while next < N {
                if let Some(t) = c.pop() {
                    assert_eq!(t.recv_ts.0 as u64, next);
                    assert_eq!(t.exchange_ts.0 as u64, !next);
                    next += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
            c.pop()
        });
        for i in 0..N {
            let t = Tick {
                exchange_ts: UnixNanos(!i as i64),
                recv_ts: UnixNanos(i as i64),
                ..Tick::EMPTY
            };
            while !p.push(t) {
                std::hint::spin_loop();
            }
        }
        assert_eq!(consumer.join().ok(), Some(None));
    }
}
