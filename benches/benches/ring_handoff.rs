//! Hand-off of 64-byte ticks between two threads: the project's ring (rtrb plus
//! counters) and raw rtrb against the queues a user would otherwise reach for:
//! crossbeam's `ArrayQueue` (MPMC, lock-free) and `std::sync::mpsc::sync_channel`.
//!
//! Throughput: the producer pushes as fast as it can (spinning while full). Latency:
//! the producer sends one tick every ~2 us stamped with its send time, and the consumer
//! records receive minus send, so the number is the hand-off, not queueing. The cases
//! run in interleaved rounds (a noisy neighbour hits them alike), and each burst row
//! says how our ring compares with it, as the median of the rounds' ratios and as the
//! ratio of the best rounds (on a shared machine, the rounds nobody preempted).
//!
//! More cases answer questions about the ring: a replica of its earlier layout built in
//! this file (its ends hold the counters' `Arc` inline), the replica with that `Arc`
//! boxed (the ring's layout since issue 20 point 3: it removes the producer loop's
//! spills), the replica's producer or consumer paired with rtrb's other end (which
//! end's counters cost), raw rtrb
//! with each tick in a slot of its own cache line, the rtrb-based rings with their
//! ends behind a pointer (boxed) as the engine and feed handlers hold them inside their
//! own structs, where no end's fields can live in registers across the loop, and two
//! placement checks (raw rtrb with a ring's counters allocated after it and never
//! touched; the replica with its counters allocated first), and the engine's tick ring
//! (`stocksblitz_engine::tick_ring`, the feed -> engine rings since issue 20 point 3: a
//! "slot-sequence" ring, Tick only, with the same counters; the consumer polls a
//! sequence word in the slot's own cache line instead of the producer's index; cases 14
//! and 15, which until then ran a bench-only copy without counters). A round-trip
//! section sends each paced tick back through a second ring of the same kind (ours, raw
//! rtrb, the tick ring)
//! and records half the round trip on the producer's clock; its floor is the ping-pong
//! paced the same way (one round trip per 2 us, each timed), with one word or with all
//! eight words of the line moved each way. Two more floors close the table,
//! measured
//! in the same run: one cache line bounced between the two pinned threads (half the
//! round trip: no queue hands an item over faster), and a clock stamp sent through one
//! atomic at the paced rows' pace (the paced rows' clock reads, without a queue).
//!
//! Knobs: `BENCH_ROUNDS` (default 7), `BENCH_CASES=0,1,4` (only those rows),
//! `BENCH_PACED=0` (burst only), `BENCH_RTT=0` (no round-trip rows),
//! `BENCH_SMALL_CAP=8` (the capacity of the small tick and rtrb rings, cases
//! 15 and 16).
//! `RING_IR=ours|raw|replica|tick` (and `ours-ref|raw-ref|replica-ref|tick-ref`, the ends
//! behind references as the engine holds them) runs a one-thread push/pop loop for callgrind's instruction counts;
//! `RING_CODEGEN=1` runs the `produce_*` loops whose generated code BENCHMARKS.md
//! compares (objdump).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use hdrhistogram::Histogram;
use stocksblitz_benches::{histogram, iters, median_ratio, pin, print_table, Row};
use stocksblitz_engine::ring::ring;
use stocksblitz_engine::tick_ring::tick_ring;
use stocksblitz_engine::{InstrumentId, Tick, UnixNanos};

const CAPACITY: usize = 4096;
const CASES: [&str; 17] = [
    "stocksblitz ring (rtrb + counters; the event and order rings)",
    "rtrb raw",
    "crossbeam ArrayQueue",
    "std mpsc sync_channel",
    "replica of our ring built in the bench (inline Arc to the counters)",
    "rtrb raw, slots 64-aligned",
    "ours, ends behind a pointer (as in a struct on the heap)",
    "rtrb raw, ends behind a pointer",
    "replica, ends behind a pointer",
    "replica with the counters' Arc boxed (the ring's layout since issue 20 point 3)",
    "rtrb raw, with a ring's counters allocated after it and never touched",
    "replica, counters allocated before rtrb's buffer",
    "replica's producer (counters) -> raw rtrb consumer",
    "raw rtrb producer -> replica's consumer (counters)",
    "stocksblitz tick ring (slot-sequence + counters; the feed -> engine rings)",
    "stocksblitz tick ring, BENCH_SMALL_CAP slots (default 8: every slot's line stays in both cores' caches)",
    "rtrb raw, BENCH_SMALL_CAP slots (default 8)",
];
/// The engine's tick ring (`stocksblitz_engine::tick_ring`, counters included).
const SEQ: usize = 14;
/// The tick ring with 8 slots: a slot's line is written again 8 items later,
/// not 4096, so it stays cached on both cores (is a cold slot line the remainder?).
const SEQ_SMALL: usize = 15;
/// Raw rtrb with 8 slots: the same question for an index-plus-slot queue.
const RAW_SMALL: usize = 16;

/// The capacity of the two small-ring cases (`BENCH_SMALL_CAP`, default 8): where paced
/// latency starts to rise with capacity.
fn small_cap() -> usize {
    std::env::var("BENCH_SMALL_CAP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8usize)
        .max(2)
}
/// Interleaved rounds (`BENCH_ROUNDS`, default 7): every case once per round, a
/// different one first each round, each on a fresh queue.
fn rounds_n() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7usize)
        .max(1)
}

/// A copy of the project's ring as it was before issue 20 point 3 (same `Counter`s, same
/// padding, the counters' `Arc` held inline by each end), built here. Its generated code
/// was the ring's (the same spills, see `produce_replica`), and it ran at the ring's
/// speed, not raw rtrb's: the cost was in the ring's own layout, not in crossing into
/// the engine crate. `BoxedP`/`BoxedC` are the ring's layout now.
mod replica {
    use std::sync::Arc;

    use stocksblitz_engine::counter::Counter;

    #[repr(align(128))]
    pub struct Padded<T>(pub T);

    #[allow(dead_code)] // read by metrics in the original; kept for the same layout
    pub struct Stats {
        pub name: String,
        pub capacity: usize,
        pub pushed: Padded<Counter>,
        pub dropped: Counter,
        pub popped: Padded<Counter>,
    }

    pub struct Producer<T> {
        inner: rtrb::Producer<T>,
        stats: Arc<Stats>,
    }

    pub struct Consumer<T> {
        inner: rtrb::Consumer<T>,
        stats: Arc<Stats>,
    }

    pub fn stats(name: &str, capacity: usize) -> Arc<Stats> {
        Arc::new(Stats {
            name: name.into(),
            capacity,
            pushed: Padded(Counter::new()),
            dropped: Counter::new(),
            popped: Padded(Counter::new()),
        })
    }

    /// The replica with its counters allocated before rtrb's buffer instead of after
    /// (a check of placement: rtrb's allocations then land where raw rtrb's do).
    pub fn ring_stats_first<T>(name: &str, capacity: usize) -> (Producer<T>, Consumer<T>) {
        let stats = self::stats(name, capacity);
        let (p, c) = rtrb::RingBuffer::new(capacity);
        (
            Producer {
                inner: p,
                stats: Arc::clone(&stats),
            },
            Consumer { inner: c, stats },
        )
    }

    /// Only the producer end counts (the consumer is rtrb's own): which end's
    /// counters cost, measured one at a time.
    pub fn counting_producer<T>(name: &str, capacity: usize) -> (Producer<T>, rtrb::Consumer<T>) {
        let (p, c) = ring(name, capacity);
        (p, c.inner)
    }

    /// Only the consumer end counts (the producer is rtrb's own).
    pub fn counting_consumer<T>(name: &str, capacity: usize) -> (rtrb::Producer<T>, Consumer<T>) {
        let (p, c) = ring(name, capacity);
        (p.inner, c)
    }

    pub fn ring<T>(name: &str, capacity: usize) -> (Producer<T>, Consumer<T>) {
        let (p, c) = rtrb::RingBuffer::new(capacity);
        let stats = self::stats(name, capacity);
        (
            Producer {
                inner: p,
                stats: Arc::clone(&stats),
            },
            Consumer { inner: c, stats },
        )
    }

    /// The replica with the counters' `Arc` boxed: dropping the end then takes the
    /// box's heap address instead of the end's, and the producer loop keeps rtrb's
    /// indices in registers (the ring's layout since issue 20 point 3; BENCHMARKS.md).
    pub struct BoxedP<T> {
        inner: rtrb::Producer<T>,
        #[allow(clippy::redundant_allocation)]
        stats: Box<Arc<Stats>>,
    }

    pub struct BoxedC<T> {
        inner: rtrb::Consumer<T>,
        #[allow(clippy::redundant_allocation)]
        stats: Box<Arc<Stats>>,
    }

    pub fn boxed<T>(name: &str, capacity: usize) -> (BoxedP<T>, BoxedC<T>) {
        let (p, c) = ring(name, capacity);
        (
            BoxedP {
                inner: p.inner,
                stats: Box::new(p.stats),
            },
            BoxedC {
                inner: c.inner,
                stats: Box::new(c.stats),
            },
        )
    }

    impl<T> BoxedP<T> {
        #[inline]
        pub fn push(&mut self, item: T) -> bool {
            match self.inner.push(item) {
                Ok(()) => {
                    self.stats.pushed.0.inc();
                    true
                }
                Err(_) => {
                    self.stats.dropped.inc();
                    false
                }
            }
        }
    }

    impl<T> BoxedC<T> {
        #[inline]
        pub fn pop(&mut self) -> Option<T> {
            match self.inner.pop() {
                Ok(v) => {
                    self.stats.popped.0.inc();
                    Some(v)
                }
                Err(_) => None,
            }
        }
    }

    impl<T> Producer<T> {
        #[inline]
        pub fn push(&mut self, item: T) -> bool {
            match self.inner.push(item) {
                Ok(()) => {
                    self.stats.pushed.0.inc();
                    true
                }
                Err(_) => {
                    self.stats.dropped.inc();
                    false
                }
            }
        }
    }

    impl<T> Consumer<T> {
        #[inline]
        pub fn pop(&mut self) -> Option<T> {
            match self.inner.pop() {
                Ok(v) => {
                    self.stats.popped.0.inc();
                    Some(v)
                }
                Err(_) => None,
            }
        }
    }
}

/// A tick in a slot of its own cache line (the ring's buffer comes from the allocator
/// at 16-byte alignment, so a 64-byte tick otherwise spans two lines).
#[derive(Clone, Copy)]
#[repr(align(64))]
struct Line(Tick);

/// What is measured.
#[derive(Clone, Copy)]
enum Mode {
    /// `n` ticks as fast as possible; the sample is the mean time per item.
    Burst,
    /// One tick every ~2 us, stamped; the samples are one-way send -> receive.
    Paced,
    /// One tick every ~2 us, echoed back through a second ring of the same kind; the
    /// samples are half the round trip on the producer's clock alone.
    RoundTrip,
}

/// The cases with a round-trip row: ours, raw rtrb, the tick ring (and its
/// 8-slot variant), raw rtrb with 8 slots.
const RTT_CASES: [usize; 5] = [0, 1, SEQ, SEQ_SMALL, RAW_SMALL];

/// Runs case `case` once. Each case's two ends are concrete closures (no boxing), the
/// consumer's moved onto the consumer thread's stack and the producer's kept on this
/// thread's, as an application would hold them: nothing of one end shares a cache
/// line with the other's.
fn run(case: usize, mode: Mode, n: u64, hist: &mut Histogram<u64>) -> Duration {
    match case {
        0 => {
            let (mut p, mut c) = ring::<Tick>("bench", CAPACITY);
            measure(mode, n, hist, move |t| p.push(t), move || c.pop())
        }
        1 => {
            let (mut p, mut c) = rtrb::RingBuffer::<Tick>::new(CAPACITY);
            measure(mode, n, hist, move |t| p.push(t).is_ok(), move || c.pop().ok())
        }
        2 => {
            let q = Arc::new(ArrayQueue::<Tick>::new(CAPACITY));
            let q2 = Arc::clone(&q);
            measure(mode, n, hist, move |t| q.push(t).is_ok(), move || q2.pop())
        }
        4 => {
            let (mut p, mut c) = replica::ring::<Tick>("bench", CAPACITY);
            measure(mode, n, hist, move |t| p.push(t), move || c.pop())
        }
        5 => {
            let (mut p, mut c) = rtrb::RingBuffer::<Line>::new(CAPACITY);
            measure(
                mode,
                n,
                hist,
                move |t| p.push(Line(t)).is_ok(),
                move || c.pop().ok().map(|l| l.0),
            )
        }
        6 => {
            let (p, c) = ring::<Tick>("bench", CAPACITY);
            let (mut p, mut c) = (Box::new(p), Box::new(c));
            measure(mode, n, hist, move |t| p.push(t), move || c.pop())
        }
        7 => {
            let (p, c) = rtrb::RingBuffer::<Tick>::new(CAPACITY);
            let (mut p, mut c) = (Box::new(p), Box::new(c));
            measure(mode, n, hist, move |t| p.push(t).is_ok(), move || c.pop().ok())
        }
        8 => {
            let (p, c) = replica::ring::<Tick>("bench", CAPACITY);
            let (mut p, mut c) = (Box::new(p), Box::new(c));
            measure(mode, n, hist, move |t| p.push(t), move || c.pop())
        }
        9 => {
            let (mut p, mut c) = replica::boxed::<Tick>("bench", CAPACITY);
            measure(mode, n, hist, move |t| p.push(t), move || c.pop())
        }
        10 => {
            let (mut p, mut c) = rtrb::RingBuffer::<Tick>::new(CAPACITY);
            let keep = replica::stats("bench", CAPACITY);
            let took = measure(mode, n, hist, move |t| p.push(t).is_ok(), move || c.pop().ok());
            drop(keep);
            took
        }
        11 => {
            let (mut p, mut c) = replica::ring_stats_first::<Tick>("bench", CAPACITY);
            measure(mode, n, hist, move |t| p.push(t), move || c.pop())
        }
        12 => {
            let (mut p, mut c) = replica::counting_producer::<Tick>("bench", CAPACITY);
            measure(mode, n, hist, move |t| p.push(t), move || c.pop().ok())
        }
        13 => {
            let (mut p, mut c) = replica::counting_consumer::<Tick>("bench", CAPACITY);
            measure(mode, n, hist, move |t| p.push(t).is_ok(), move || c.pop())
        }
        SEQ => {
            let (mut p, mut c) = tick_ring("bench", CAPACITY);
            measure(mode, n, hist, move |t| p.push(t), move || c.pop())
        }
        SEQ_SMALL => {
            let (mut p, mut c) = tick_ring("bench", small_cap());
            measure(mode, n, hist, move |t| p.push(t), move || c.pop())
        }
        RAW_SMALL => {
            let (mut p, mut c) = rtrb::RingBuffer::<Tick>::new(small_cap());
            measure(mode, n, hist, move |t| p.push(t).is_ok(), move || c.pop().ok())
        }
        _ => {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Tick>(CAPACITY);
            measure(
                mode,
                n,
                hist,
                move |t| tx.try_send(t).is_ok(),
                move || rx.try_recv().ok(),
            )
        }
    }
}

/// Runs case `case` as a paced round trip (`Mode::RoundTrip`).
fn run_rtt(case: usize, n: u64, hist: &mut Histogram<u64>) -> Duration {
    match case {
        0 => {
            let (mut p, mut c) = ring::<Tick>("bench", CAPACITY);
            let (mut pb, mut cb) = ring::<Tick>("back", CAPACITY);
            round_trip(
                n,
                hist,
                move |t| p.push(t),
                move || cb.pop(),
                move || c.pop(),
                move |t| pb.push(t),
            )
        }
        SEQ | SEQ_SMALL => {
            let cap = if case == SEQ { CAPACITY } else { small_cap() };
            let (mut p, mut c) = tick_ring("bench", cap);
            let (mut pb, mut cb) = tick_ring("back", cap);
            round_trip(
                n,
                hist,
                move |t| p.push(t),
                move || cb.pop(),
                move || c.pop(),
                move |t| pb.push(t),
            )
        }
        _ => {
            let cap = if case == RAW_SMALL { small_cap() } else { CAPACITY };
            let (mut p, mut c) = rtrb::RingBuffer::<Tick>::new(cap);
            let (mut pb, mut cb) = rtrb::RingBuffer::<Tick>::new(cap);
            round_trip(
                n,
                hist,
                move |t| p.push(t).is_ok(),
                move || cb.pop().ok(),
                move || c.pop().ok(),
                move |t| pb.push(t).is_ok(),
            )
        }
    }
}

/// Paced round trip: the producer sends one tick every ~2 us through one ring, the
/// consumer thread pops it and pushes it back through a second ring, and the producer
/// records half the time from just before its push to just after the echo's pop, on
/// its own clock only: no cross-core clock reads, so it compares like for like with
/// the ping-pong floor (two clock reads per sample instead of two per 16 round trips).
fn round_trip<P, CB, C, PB>(
    n: u64,
    hist: &mut Histogram<u64>,
    mut push: P,
    mut pop_back: CB,
    mut pop: C,
    mut push_back: PB,
) -> Duration
where
    P: FnMut(Tick) -> bool,
    CB: FnMut() -> Option<Tick>,
    C: FnMut() -> Option<Tick> + Send + 'static,
    PB: FnMut(Tick) -> bool + Send + 'static,
{
    let done = Arc::new(AtomicBool::new(false));
    let done2 = Arc::clone(&done);
    let ready = Arc::new(AtomicBool::new(false));
    let ready_c = Arc::clone(&ready);
    let echo = std::thread::spawn(move || {
        pin(1);
        ready_c.store(true, Ordering::Release);
        while !done2.load(Ordering::Relaxed) {
            if let Some(t) = pop() {
                while !push_back(t) {
                    std::hint::spin_loop();
                }
            } else {
                std::hint::spin_loop();
            }
        }
    });
    pin(0);
    while !ready.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let start = Instant::now();
    let gap = Duration::from_micros(2);
    let mut sum = 0i64;
    for i in 0..n {
        let t0 = Instant::now();
        let due = t0 + gap;
        while !push(tick(i, i as i64)) {
            std::hint::spin_loop();
        }
        let back = loop {
            if let Some(t) = pop_back() {
                break t;
            }
            std::hint::spin_loop();
        };
        let _ = hist.record((t0.elapsed().as_nanos() as u64 / 2).max(1));
        sum = sum.wrapping_add(back.recv_ts.0);
        while Instant::now() < due {
            std::hint::spin_loop();
        }
    }
    let elapsed = start.elapsed();
    std::hint::black_box(sum);
    done.store(true, Ordering::Relaxed);
    let _ = echo.join();
    elapsed
}

fn tick(i: u64, stamp: i64) -> Tick {
    Tick {
        recv_ts: UnixNanos(stamp),
        instrument: InstrumentId((i % 8) as u32),
        ..Tick::EMPTY
    }
}

fn measure<P, C>(mode: Mode, n: u64, hist: &mut Histogram<u64>, push: P, pop: C) -> Duration
where
    P: FnMut(Tick) -> bool,
    C: FnMut() -> Option<Tick> + Send + 'static,
{
    match mode {
        Mode::Burst => {
            let took = throughput(n, push, pop);
            let _ = hist.record((took.as_nanos() as u64 / n.max(1)).max(1));
            took
        }
        // Round trips go through `run_rtt`, never here.
        Mode::Paced | Mode::RoundTrip => latency(n, hist, push, pop),
    }
}

/// Burst throughput: `n` ticks through the queue as fast as possible.
fn throughput<P, C>(n: u64, mut push: P, mut pop: C) -> Duration
where
    P: FnMut(Tick) -> bool,
    C: FnMut() -> Option<Tick> + Send + 'static,
{
    let ready = Arc::new(AtomicBool::new(false));
    let ready_c = Arc::clone(&ready);
    let consumer = std::thread::spawn(move || {
        pin(1);
        ready_c.store(true, Ordering::Release);
        let mut got = 0u64;
        let mut sum = 0i64;
        while got < n {
            if let Some(t) = pop() {
                got += 1;
                sum = sum.wrapping_add(t.recv_ts.0);
            } else {
                std::hint::spin_loop();
            }
        }
        sum
    });
    pin(0);
    while !ready.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let start = Instant::now();
    for i in 0..n {
        while !push(tick(i, i as i64)) {
            std::hint::spin_loop();
        }
    }
    let _ = consumer.join();
    start.elapsed()
}

/// One-way latency at a paced rate, recorded into `hist`.
fn latency<P, C>(n: u64, hist: &mut Histogram<u64>, mut push: P, mut pop: C) -> Duration
where
    P: FnMut(Tick) -> bool,
    C: FnMut() -> Option<Tick> + Send + 'static,
{
    let base = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let done2 = Arc::clone(&done);
    let ready = Arc::new(AtomicBool::new(false));
    let ready_c = Arc::clone(&ready);
    let consumer = std::thread::spawn(move || {
        pin(1);
        ready_c.store(true, Ordering::Release);
        let mut hist = histogram();
        let mut got = 0u64;
        while got < n && !done2.load(Ordering::Relaxed) {
            if let Some(t) = pop() {
                let now = base.elapsed().as_nanos() as i64;
                let _ = hist.record((now - t.recv_ts.0).max(1) as u64);
                got += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        hist
    });
    pin(0);
    while !ready.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let start = Instant::now();
    let gap = Duration::from_micros(2);
    for i in 0..n {
        let due = Instant::now() + gap;
        let stamp = base.elapsed().as_nanos() as i64;
        while !push(tick(i, stamp)) {
            std::hint::spin_loop();
        }
        while Instant::now() < due {
            std::hint::spin_loop();
        }
    }
    let elapsed = start.elapsed();
    std::thread::sleep(Duration::from_millis(50));
    done.store(true, Ordering::Relaxed);
    if let Ok(h) = consumer.join() {
        let _ = hist.add(h);
    }
    elapsed
}

/// Every case in `BENCH_ROUNDS` interleaved rounds; one row per case (totals over the
/// rounds), and each round's throughput per case.
/// `BENCH_CASES=0,1,4` runs only those cases; `BENCH_PACED=0` skips the paced part.
fn selected(c: usize, mode: Mode) -> bool {
    if !matches!(mode, Mode::Burst) && std::env::var("BENCH_PACED").is_ok_and(|v| v == "0") {
        return false;
    }
    if matches!(mode, Mode::RoundTrip)
        && (!RTT_CASES.contains(&c) || std::env::var("BENCH_RTT").is_ok_and(|v| v == "0"))
    {
        return false;
    }
    std::env::var("BENCH_CASES").map_or(true, |v| v.split(',').any(|x| x.trim().parse() == Ok(c)))
}

/// The floors run inside the paced and round-trip rounds (indices after `CASES`):
/// the vCPUs' distance changes during a sitting, so each round's p50 is compared with
/// the same round's floors.
const N_FLOORS: usize = 4;
const FLOOR_PONG: usize = CASES.len();
const FLOOR_STAMPED: usize = CASES.len() + 1;
const FLOOR_PACED_PONG: usize = CASES.len() + 2;
const FLOOR_PACED_LINE: usize = CASES.len() + 3;

fn floor(index: usize, n: u64) -> Row {
    match index {
        FLOOR_PONG => ping_pong((n / 16).max(1)),
        FLOOR_STAMPED => stamped_floor(n),
        FLOOR_PACED_PONG => paced_ping_pong(n),
        _ => paced_line_ping_pong(n, 8),
    }
}

/// Per case (and, in the paced and round-trip modes, per floor after the cases), each
/// round's p50 (0 when not run).
type P50s = Vec<Vec<u64>>;

fn rounds(mode: Mode, n: u64) -> (Vec<Row>, Vec<Vec<f64>>, P50s) {
    let rounds = rounds_n();
    let share = (n / rounds as u64).max(1);
    let floors = if !matches!(mode, Mode::Burst) && (0..CASES.len()).any(|c| selected(c, mode)) {
        N_FLOORS
    } else {
        0
    };
    let total = CASES.len() + floors;
    let mut hists: Vec<Histogram<u64>> = (0..total).map(|_| histogram()).collect();
    let mut elapsed = vec![Duration::ZERO; total];
    let mut per_round = vec![Vec::with_capacity(rounds); CASES.len()];
    let mut p50s = vec![Vec::with_capacity(rounds); CASES.len() + N_FLOORS];
    let mut floor_names = vec![String::new(); N_FLOORS];
    for r in 0..rounds {
        for k in 0..total {
            let c = (k + r) % total;
            if c >= CASES.len() {
                let row = floor(c, share);
                p50s[c].push(row.hist.value_at_quantile(0.5));
                let _ = hists[c].add(&row.hist);
                elapsed[c] += row.elapsed;
                floor_names[c - CASES.len()] = row.case;
                continue;
            }
            if !selected(c, mode) {
                per_round[c].push(0.0);
                p50s[c].push(0);
                continue;
            }
            let mut h = histogram();
            let took = match mode {
                Mode::RoundTrip => run_rtt(c, share, &mut h),
                _ => run(c, mode, share, &mut h),
            };
            p50s[c].push(h.value_at_quantile(0.5));
            let _ = hists[c].add(&h);
            elapsed[c] += took;
            per_round[c].push(share as f64 / took.as_secs_f64().max(1e-12));
        }
    }
    let (suffix, note) = match mode {
        Mode::Burst => ("burst", "latency columns = mean time per item, over rounds"),
        Mode::Paced => ("paced 1 per 2 us", "one-way send->receive"),
        Mode::RoundTrip => (
            "round trip, paced 1 per 2 us",
            "half the round trip, producer's clock only",
        ),
    };
    let names = CASES
        .iter()
        .map(|name| format!("{name} ({suffix})"))
        .chain(floor_names.iter().map(|name| format!("{name}, in the {suffix} rounds")));
    let rows = names
        .zip(hists)
        .zip(elapsed)
        .map(|((case, hist), elapsed)| Row {
            case,
            ops: share * rounds as u64,
            elapsed,
            hist,
            note: note.into(),
        })
        .collect();
    (rows, per_round, p50s)
}

/// The median over rounds of case `a`'s p50 divided by `b`'s in the same round.
fn median_p50_ratio(p50s: &P50s, a: usize, b: usize) -> Option<f64> {
    let (xa, xb) = (p50s.get(a)?, p50s.get(b)?);
    let mut r: Vec<f64> = xa
        .iter()
        .zip(xb)
        .filter(|(&x, &y)| x > 0 && y > 0)
        .map(|(&x, &y)| x as f64 / y as f64)
        .collect();
    r.sort_by(f64::total_cmp);
    r.get(r.len() / 2).copied()
}

/// The core-to-core floor, measured in the same run: two threads pinned as the ring's
/// ends bounce one cache line through an atomic (`BATCH` round trips per sample; the
/// sample is half the mean round trip). No queue can hand an item over faster.
fn ping_pong(samples: u64) -> Row {
    const BATCH: u64 = 16;
    let line = Arc::new(replica::Padded(AtomicU64::new(0)));
    let other = Arc::clone(&line);
    let rounds = samples * BATCH;
    let echo = std::thread::spawn(move || {
        pin(1);
        let mut expect = 1u64;
        while expect < 2 * rounds {
            if other.0.load(Ordering::Acquire) == expect {
                other.0.store(expect + 1, Ordering::Release);
                expect += 2;
            } else {
                std::hint::spin_loop();
            }
        }
    });
    pin(0);
    let mut hist = histogram();
    let start = Instant::now();
    let mut v = 0u64;
    for _ in 0..samples {
        let t = Instant::now();
        for _ in 0..BATCH {
            line.0.store(v + 1, Ordering::Release);
            while line.0.load(Ordering::Acquire) != v + 2 {
                std::hint::spin_loop();
            }
            v += 2;
        }
        let _ = hist.record((t.elapsed().as_nanos() as u64 / (2 * BATCH)).max(1));
    }
    let elapsed = start.elapsed();
    let _ = echo.join();
    Row {
        case: "core-to-core floor: one cache line ping-pong (half round trip)".into(),
        ops: rounds,
        elapsed,
        hist,
        note: format!("sample = half the mean of {BATCH} round trips"),
    }
}

/// The floor for the round-trip rows: the ping-pong of one cache line, but one round
/// trip every ~2 us, timed alone with the producer's clock (as `round_trip` times
/// them): what pacing and per-sample clock reads add to the ping-pong floor.
fn paced_ping_pong(n: u64) -> Row {
    paced_line_ping_pong(n, 1)
}

/// One 64-byte line of eight words (word 0 the flag).
#[repr(align(64))]
struct Words([AtomicU64; 8]);

/// `paced_ping_pong` with `words` words of the line written before the flag and read
/// after it, both ways (8: a whole line of data, as the slot-sequence ring moves): what
/// the seven data words cost the hand-off, without any ring.
fn paced_line_ping_pong(n: u64, words: usize) -> Row {
    let words = words.clamp(1, 8);
    let line = Arc::new(Words(std::array::from_fn(|_| AtomicU64::new(0))));
    let other = Arc::clone(&line);
    let echo = std::thread::spawn(move || {
        pin(1);
        let mut expect = 1u64;
        let mut sum = 0u64;
        while expect < 2 * n {
            if other.0[0].load(Ordering::Acquire) == expect {
                for w in &other.0[1..words] {
                    sum = sum.wrapping_add(w.load(Ordering::Relaxed));
                }
                for w in &other.0[1..words] {
                    w.store(expect + 1, Ordering::Relaxed);
                }
                other.0[0].store(expect + 1, Ordering::Release);
                expect += 2;
            } else {
                std::hint::spin_loop();
            }
        }
        sum
    });
    pin(0);
    let mut hist = histogram();
    let start = Instant::now();
    let gap = Duration::from_micros(2);
    let mut v = 0u64;
    let mut sum = 0u64;
    for _ in 0..n {
        let t0 = Instant::now();
        let due = t0 + gap;
        for w in &line.0[1..words] {
            w.store(v + 1, Ordering::Relaxed);
        }
        line.0[0].store(v + 1, Ordering::Release);
        while line.0[0].load(Ordering::Acquire) != v + 2 {
            std::hint::spin_loop();
        }
        for w in &line.0[1..words] {
            sum = sum.wrapping_add(w.load(Ordering::Relaxed));
        }
        v += 2;
        let _ = hist.record((t0.elapsed().as_nanos() as u64 / 2).max(1));
        while Instant::now() < due {
            std::hint::spin_loop();
        }
    }
    let elapsed = start.elapsed();
    std::hint::black_box(sum);
    let _ = echo.join();
    Row {
        case: if words == 1 {
            "floor: one cache line ping-pong, one round trip per 2 us (half round trip)".into()
        } else {
            format!("floor: {words} words of one line ping-pong, one round trip per 2 us (half round trip)")
        },
        ops: n,
        elapsed,
        hist,
        note: "each round trip timed alone, producer's clock only".into(),
    }
}

/// The floor for a paced, clock-stamped hand-off: the producer's send time goes
/// through one atomic instead of a queue, at the same pace and with the same clock
/// reads on both sides as the paced rows.
fn stamped_floor(n: u64) -> Row {
    let base = Instant::now();
    let line = Arc::new(replica::Padded(AtomicU64::new(0)));
    let other = Arc::clone(&line);
    let done = Arc::new(AtomicBool::new(false));
    let done2 = Arc::clone(&done);
    let consumer = std::thread::spawn(move || {
        pin(1);
        let mut hist = histogram();
        let mut last = 0u64;
        while !done2.load(Ordering::Relaxed) {
            let s = other.0.load(Ordering::Acquire);
            if s != last {
                let now = base.elapsed().as_nanos() as u64;
                let _ = hist.record(now.saturating_sub(s).max(1));
                last = s;
            } else {
                std::hint::spin_loop();
            }
        }
        hist
    });
    pin(0);
    let start = Instant::now();
    let gap = Duration::from_micros(2);
    for _ in 0..n {
        let due = Instant::now() + gap;
        line.0.store(base.elapsed().as_nanos() as u64, Ordering::Release);
        while Instant::now() < due {
            std::hint::spin_loop();
        }
    }
    let elapsed = start.elapsed();
    std::thread::sleep(Duration::from_millis(50));
    done.store(true, Ordering::Relaxed);
    let hist = consumer.join().unwrap_or_else(|_| histogram());
    Row {
        case: "floor: clock stamp through one atomic (paced 1 per 2 us)".into(),
        ops: n,
        elapsed,
        hist,
        note: "one-way send->receive, no queue".into(),
    }
}

/// Instruction counts per item without a second thread (`RING_IR=ours|raw|replica`,
/// run under `valgrind --tool=callgrind --toggle-collect='*ir_loop*'`): `n` items
/// pushed and popped in turns of 1024 (a quarter of the ring).
#[inline(never)]
fn ir_loop<P, C>(n: u64, mut push: P, mut pop: C) -> i64
where
    P: FnMut(Tick) -> bool,
    C: FnMut() -> Option<Tick>,
{
    let mut sum = 0i64;
    let mut i = 0u64;
    while i < n {
        for k in 0..1024 {
            let _ = push(tick(i + k, (i + k) as i64));
        }
        while let Some(t) = pop() {
            sum = sum.wrapping_add(t.recv_ts.0);
        }
        i += 1024;
    }
    sum
}

/// Loops that own their producer end as the bench's closures do, for reading the
/// generated code (`objdump -d`, symbols `ring_handoff::produce_*`); `RING_CODEGEN=1`.
macro_rules! produce {
    ($name:ident, $make:expr, $push:expr) => {
        #[inline(never)]
        fn $name(n: u64) -> u64 {
            let (mut p, c) = $make;
            let n = std::hint::black_box(n);
            for i in 0..n {
                while !$push(&mut p, tick(i, i as i64)) {
                    std::hint::spin_loop();
                }
            }
            std::hint::black_box(&c);
            n
        }
    };
}
produce!(
    produce_raw,
    rtrb::RingBuffer::<Tick>::new(CAPACITY),
    |p: &mut rtrb::Producer<Tick>, t| p.push(t).is_ok()
);
produce!(
    produce_ours,
    ring::<Tick>("x", CAPACITY),
    |p: &mut stocksblitz_engine::ring::RingProducer<Tick>, t| p.push(t)
);
produce!(
    produce_replica,
    replica::ring::<Tick>("x", CAPACITY),
    |p: &mut replica::Producer<Tick>, t| p.push(t)
);
produce!(
    produce_boxed,
    replica::boxed::<Tick>("x", CAPACITY),
    |p: &mut replica::BoxedP<Tick>, t| p.push(t)
);

fn ir_mode(which: &str, n: u64) {
    let sum = match which {
        "ours" => {
            let (mut p, mut c) = ring::<Tick>("bench", CAPACITY);
            ir_loop(n, move |t| p.push(t), move || c.pop())
        }
        "replica" => {
            let (mut p, mut c) = replica::ring::<Tick>("bench", CAPACITY);
            ir_loop(n, move |t| p.push(t), move || c.pop())
        }
        // The ends held as the engine holds them: the consumer in a `Vec`, the
        // producer behind a `&mut` the optimizer cannot see through.
        "ours-ref" => {
            let (mut p, c) = ring::<Tick>("bench", CAPACITY);
            let mut cs = vec![c];
            let p = std::hint::black_box(&mut p);
            let cs = std::hint::black_box(&mut cs);
            ir_loop(n, |t| p.push(t), || cs[0].pop())
        }
        "replica-ref" => {
            let (mut p, c) = replica::ring::<Tick>("bench", CAPACITY);
            let mut cs = vec![c];
            let p = std::hint::black_box(&mut p);
            let cs = std::hint::black_box(&mut cs);
            ir_loop(n, |t| p.push(t), || cs[0].pop())
        }
        "raw-ref" => {
            let (mut p, c) = rtrb::RingBuffer::<Tick>::new(CAPACITY);
            let mut cs = vec![c];
            let p = std::hint::black_box(&mut p);
            let cs = std::hint::black_box(&mut cs);
            ir_loop(n, |t| p.push(t).is_ok(), || cs[0].pop().ok())
        }
        "tick" | "seq" => {
            let (mut p, mut c) = tick_ring("bench", CAPACITY);
            ir_loop(n, move |t| p.push(t), move || c.pop())
        }
        "tick-ref" | "seq-ref" => {
            let (mut p, c) = tick_ring("bench", CAPACITY);
            let mut cs = vec![c];
            let p = std::hint::black_box(&mut p);
            let cs = std::hint::black_box(&mut cs);
            ir_loop(n, |t| p.push(t), || cs[0].pop())
        }
        _ => {
            let (mut p, mut c) = rtrb::RingBuffer::<Tick>::new(CAPACITY);
            ir_loop(n, move |t| p.push(t).is_ok(), move || c.pop().ok())
        }
    };
    println!("RING_IR={which}: {n} items, checksum {sum}");
}

fn main() {
    if std::env::var("RING_CODEGEN").is_ok() {
        let n = 16;
        let sum = produce_raw(n) + produce_ours(n) + produce_replica(n) + produce_boxed(n);
        println!("{sum}");
        return;
    }
    if let Ok(which) = std::env::var("RING_IR") {
        ir_mode(&which, iters(1 << 20));
        return;
    }
    let n_rounds = rounds_n();
    let (mut rows, burst, _) = rounds(Mode::Burst, iters(5_000_000));
    // The best round of each case as well: on a shared machine a round in which
    // neither thread was preempted shows what the queue itself costs.
    let best = |c: usize| burst[c].iter().copied().fold(0.0f64, f64::max);
    rows[0].note = format!("{}; best round {:.2} M/s", rows[0].note, best(0) / 1e6);
    for (i, row) in rows.iter_mut().enumerate().skip(1) {
        row.note = format!(
            "{}; ours is {:.2}x this (median of {n_rounds} rounds); best round {:.2} M/s (ours/this {:.2}x)",
            row.note,
            median_ratio(&burst, 0, &[i]),
            best(i) / 1e6,
            best(0) / best(i).max(1e-12),
        );
    }
    // Issue 20 point 3's burst goal, for the tick ring: against raw rtrb and crossbeam
    // (each when it ran).
    let ran = |c: usize| burst.get(c).is_some_and(|v| v.iter().any(|&x| x > 0.0));
    for (base, name) in [(1, "raw rtrb"), (2, "crossbeam ArrayQueue")] {
        if ran(SEQ) && ran(base) {
            println!(
                "tick ring burst: {:.2}x {name} (median of {n_rounds} rounds), best rounds {:.2}x",
                median_ratio(&burst, SEQ, &[base]),
                best(SEQ) / best(base).max(1e-12),
            );
        }
    }
    let (paced, _, paced_p50s) = rounds(Mode::Paced, iters(500_000));
    let ours_p50 = paced[0].hist.value_at_quantile(0.5);
    let seq_p50 = paced[SEQ].hist.value_at_quantile(0.5);
    rows.extend(paced);
    let (rtt, _, rtt_p50s) = rounds(Mode::RoundTrip, iters(500_000));
    let rtt_p50: Vec<(usize, u64)> = RTT_CASES
        .iter()
        .filter(|&&c| !rtt[c].hist.is_empty())
        .map(|&c| (c, rtt[c].hist.value_at_quantile(0.5)))
        .collect();
    rows.extend(rtt);
    let pong = ping_pong(iters(200_000));
    let stamped = stamped_floor(iters(200_000));
    let paced_pong = paced_ping_pong(iters(200_000));
    let (pong_p50, stamped_p50) = (pong.hist.value_at_quantile(0.5), stamped.hist.value_at_quantile(0.5));
    let paced_pong_p50 = paced_pong.hist.value_at_quantile(0.5);
    rows.push(pong);
    rows.push(stamped);
    rows.push(paced_pong);
    // What one clock read costs here (every paced sample takes two).
    let mut clock =
        stocksblitz_benches::batched("one clock read (Instant::now), on core 0", iters(2_000_000), 64, |_| {
            stocksblitz_benches::keep(Instant::now());
        });
    clock.note = "mean of 64 reads per sample".into();
    rows.push(clock);
    // Rows of cases left out by `BENCH_CASES` / `BENCH_PACED` recorded nothing.
    rows.retain(|r| !r.hist.is_empty());
    print_table(
        &format!(
            "ring hand-off: 64-byte Tick, capacity {CAPACITY}, producer core 0 -> consumer core 1, {n_rounds} interleaved rounds"
        ),
        &rows,
    );
    println!(
        "\nour paced p50 {ours_p50} ns = {:.2}x the core-to-core floor ({pong_p50} ns, half a ping-pong round trip), {:.2}x the stamped one-way floor ({stamped_p50} ns)",
        ours_p50 as f64 / pong_p50.max(1) as f64,
        ours_p50 as f64 / stamped_p50.max(1) as f64,
    );
    if seq_p50 > 0 {
        println!(
            "tick ring paced p50 {seq_p50} ns = {:.2}x the ping-pong floor, {:.2}x the stamped floor",
            seq_p50 as f64 / pong_p50.max(1) as f64,
            seq_p50 as f64 / stamped_p50.max(1) as f64,
        );
    }
    for (c, p50) in rtt_p50 {
        println!(
            "round trip / 2, case {c}: p50 {p50} ns = {:.2}x the ping-pong floor, {:.2}x the paced ping-pong floor ({paced_pong_p50} ns)",
            p50 as f64 / pong_p50.max(1) as f64,
            p50 as f64 / paced_pong_p50.max(1) as f64,
        );
    }
    // The same ratios per round (the floors run inside the rounds), median of rounds:
    // robust to the vCPUs' distance changing during the run.
    let fmt = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x"));
    for &c in &[0, 1, SEQ, SEQ_SMALL, RAW_SMALL] {
        if paced_p50s.get(c).is_some_and(|v| v.iter().any(|&x| x > 0)) {
            println!(
                "paced, case {c}: p50 / same-round floors, median of {n_rounds} rounds: {} ping-pong, {} stamped",
                fmt(median_p50_ratio(&paced_p50s, c, FLOOR_PONG)),
                fmt(median_p50_ratio(&paced_p50s, c, FLOOR_STAMPED)),
            );
        }
        if rtt_p50s.get(c).is_some_and(|v| v.iter().any(|&x| x > 0)) {
            println!(
                "round trip / 2, case {c}: p50 / same-round floors, median of {n_rounds} rounds: {} ping-pong, {} paced ping-pong, {} paced 8-word ping-pong",
                fmt(median_p50_ratio(&rtt_p50s, c, FLOOR_PONG)),
                fmt(median_p50_ratio(&rtt_p50s, c, FLOOR_PACED_PONG)),
                fmt(median_p50_ratio(&rtt_p50s, c, FLOOR_PACED_LINE)),
            );
        }
    }
    for (name, p) in [("paced", &paced_p50s), ("round trip", &rtt_p50s)] {
        let show = |i: usize| {
            p.get(i)
                .map(|v| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        if p.get(FLOOR_PONG).is_some_and(|v| !v.is_empty()) {
            println!(
                "{name} rounds' p50s (ns): ours [{}], raw [{}], tick [{}], tick small [{}], raw small [{}], ping-pong [{}], stamped [{}], paced ping-pong [{}], paced 8-word ping-pong [{}]",
                show(0),
                show(1),
                show(SEQ),
                show(SEQ_SMALL),
                show(RAW_SMALL),
                show(FLOOR_PONG),
                show(FLOOR_STAMPED),
                show(FLOOR_PACED_PONG),
                show(FLOOR_PACED_LINE)
            );
        }
    }
}
