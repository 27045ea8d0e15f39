//! Proves the hot path allocates nothing per tick after warm-up: synthetic feed step ->
//! input ring -> engine poll/housekeeping -> output ring -> consumer pop.
//!
//! A counting global allocator counts only while this thread has armed it, so the test
//! harness's own threads do not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use stocksblitz_engine::ring::ring;
use stocksblitz_engine::{Engine, EngineConfig, EngineEvent, InstrumentId, Price, Qty, Tick, UnixNanos};
use stocksblitz_feed_handlers::{SimSpec, SyntheticMarket, TickBuf};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if ARMED.with(Cell::get) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn engine_loop_allocates_nothing_per_tick_after_warm_up() {
    let specs: Vec<SimSpec> = (0..4)
        .map(|i| SimSpec {
            id: InstrumentId(i),
            tick_size: Price(1),
            lot_size: Qty(100),
            start_price: Price(100_000 + i64::from(i) * 1_000),
        })
        .collect();
    let config = EngineConfig {
        book_max_levels: 16,
        ..EngineConfig::default()
    };
    let (mut input, input_rx) = ring::<Tick>("in", 4096);
    let (output, mut output_rx) = ring::<EngineEvent>("out", 8192);
    let mut engine = Engine::new(&config, specs.len(), vec![input_rx], vec![output]);
    // Depth above book_max_levels exercises eviction and discards too.
    let mut market = SyntheticMarket::new(9, 20, &specs);
    let mut buf = TickBuf::default();
    let mut now = UnixNanos(1_700_000_000 * UnixNanos::NANOS_PER_SEC);
    for i in 0..market.len() {
        market.snapshot(i, now, |t| {
            input.push(t);
        });
    }

    let mut run = |steps: usize, now: &mut UnixNanos| {
        let mut events = 0u64;
        for step in 0..steps {
            // 1 ms of market time per 10 steps: bars close, progress is published.
            if step % 10 == 0 {
                *now = now.saturating_add_nanos(UnixNanos::NANOS_PER_MILLI);
            }
            market.step(*now, &mut buf);
            for t in buf.as_slice() {
                input.push(*t);
            }
            engine.poll();
            engine.housekeeping(*now);
            while output_rx.pop().is_some() {
                events += 1;
            }
        }
        events
    };

    let warm = run(50_000, &mut now);
    assert!(warm > 50_000, "warm-up produced {warm} events");

    // The counter works: an allocation while armed is seen.
    ARMED.with(|a| a.set(true));
    let probe = std::hint::black_box(vec![1u8; 16]);
    ARMED.with(|a| a.set(false));
    drop(probe);
    assert!(ALLOCS.load(Ordering::Relaxed) > 0, "counting allocator is not counting");

    ALLOCS.store(0, Ordering::Relaxed);
    ARMED.with(|a| a.set(true));
    let events = run(100_000, &mut now);
    ARMED.with(|a| a.set(false));

    assert!(events > 100_000, "measured run produced {events} events");
    assert_eq!(ALLOCS.load(Ordering::Relaxed), 0, "heap allocations on the hot path");
    let stats = engine.handles().stats;
    assert_eq!(stats.unknown_instrument.get(), 0);
    assert!(stats.book_discarded.get() > 0 || stats.events.get() > 0);
}
