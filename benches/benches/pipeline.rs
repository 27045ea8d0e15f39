//! The whole hot path: synthetic feed -> input ring -> engine -> output ring.
//!
//! 1. Engine cost per tick, single thread: pre-generated ticks through
//!    `Engine::process`, the output ring drained every batch.
//! 2. End to end, three threads: a feed thread generating and pushing into its ring, the
//!    engine polling on core 1... (this thread), a consumer draining the output ring.
//!    Capacity: the feed pushes as fast as the ring takes; the latency columns are the
//!    engine's time per tick over windows.
//! 3. End to end, per tick: the feed paced below capacity, and every output event's
//!    latency from the moment its tick was stamped and pushed to the moment the consumer
//!    popped it (feed ring, engine, output ring). The feed and the consumer share one
//!    thread and core (the machine has two; the engine has the other), so both read the
//!    same clock and neither waits for a core: a regression in any stage shows here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use stocksblitz_benches::{batched, histogram, iters, pin, print_table, synthetic_ticks, Row};
use stocksblitz_engine::ring::ring;
use stocksblitz_engine::tick_ring::tick_ring;
use stocksblitz_engine::{Engine, EngineConfig, EngineEvent, InstrumentId, Price, Qty, Tick, UnixNanos};
use stocksblitz_feed_handlers::{SimSpec, SyntheticMarket, TickBuf};

fn specs() -> Vec<SimSpec> {
    (0..5)
        .map(|i| SimSpec {
            id: InstrumentId(i),
            tick_size: Price(1),
            lot_size: Qty(1_000),
            start_price: Price(6_500_000 + i64::from(i) * 10_000),
        })
        .collect()
}

fn generate(n: usize) -> Vec<Tick> {
    // 2 us of market time per step: bars close as they would live.
    synthetic_ticks(&specs(), n, UnixNanos(1_700_000_000 * UnixNanos::NANOS_PER_SEC), 2_000)
}

fn single_thread(n: u64) -> Row {
    let ticks = generate(n as usize);
    let (_in_tx, in_rx) = tick_ring("in", 1024);
    let (out_tx, mut out_rx) = ring::<EngineEvent>("out", 1 << 16);
    let mut engine = Engine::new(&EngineConfig::default(), 5, vec![in_rx], vec![out_tx]);
    let mut row = batched("Engine::process (books, bars, quality, publish)", n, 32, |i| {
        engine.process(&ticks[i as usize]);
        if i % 256 == 255 {
            while out_rx.pop().is_some() {}
        }
    });
    let events = engine.handles().stats.events.get();
    row.note = format!("{:.2} output events per tick", events as f64 / n as f64);
    row
}

fn end_to_end(n: u64) -> Row {
    let specs = specs();
    let (mut in_tx, in_rx) = tick_ring("in", 1 << 16);
    let (out_tx, mut out_rx) = ring::<EngineEvent>("out", 1 << 16);
    let mut engine = Engine::new(&EngineConfig::default(), specs.len(), vec![in_rx], vec![out_tx]);
    let handles = engine.handles();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_c = Arc::clone(&stop);
    let consumer = std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop_c.load(Ordering::Relaxed) {
            while out_rx.pop().is_some() {
                n += 1;
            }
            std::hint::spin_loop();
        }
        n
    });
    let producer = std::thread::spawn(move || {
        pin(0);
        let mut m = SyntheticMarket::new(3, 20, &specs);
        let now = UnixNanos::now();
        for i in 0..m.len() {
            m.snapshot(i, now, |t| while !in_tx.push(t) {});
        }
        let mut buf = TickBuf::default();
        let mut sent = 0u64;
        while sent < n {
            m.step(UnixNanos::now(), &mut buf);
            for t in buf.as_slice() {
                // Spin rather than drop: this measures capacity, not shedding.
                while in_tx.free_slots() == 0 {
                    std::hint::spin_loop();
                }
                in_tx.push(*t);
                sent += 1;
            }
        }
        sent
    });
    pin(1);
    let start = Instant::now();
    let mut hist = histogram();
    let mut processed = 0u64;
    let mut last = Instant::now();
    let mut since = 0u64;
    while !producer.is_finished() || processed < handles.inputs[0].pushed.get() {
        let k = engine.poll() as u64;
        processed += k;
        since += k;
        engine.housekeeping(UnixNanos::now());
        if since >= 4096 {
            let per = (last.elapsed().as_nanos() as u64 / since).max(1);
            let _ = hist.record(per);
            last = Instant::now();
            since = 0;
        }
    }
    let elapsed = start.elapsed();
    let sent = producer.join().unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    let received = consumer.join().unwrap_or(0);
    let out_drops = handles.outputs.first().map_or(0, |(r, _)| r.dropped.get());
    Row {
        case: "feed thread -> ring -> engine -> ring -> consumer".into(),
        ops: sent,
        elapsed,
        hist,
        note: format!("latency columns = engine time per tick over 4096-tick windows; {received} events out, {out_drops} output drops"),
    }
}

/// Market steps at `rate` per second (a step is one to a few ticks) through feed ring,
/// engine and output ring; every output event's one-way latency (tick stamped and
/// pushed -> event popped).
fn per_tick(n: u64, rate: u64) -> Row {
    let specs = specs();
    let (mut in_tx, in_rx) = tick_ring("in", 1 << 16);
    let (out_tx, mut out_rx) = ring::<EngineEvent>("out", 1 << 16);
    let mut engine = Engine::new(&EngineConfig::default(), specs.len(), vec![in_rx], vec![out_tx]);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_e = Arc::clone(&stop);
    let engine_thread = std::thread::spawn(move || {
        pin(1);
        while !stop_e.load(Ordering::Relaxed) {
            if engine.poll() == 0 {
                std::hint::spin_loop();
            }
        }
    });
    pin(0);
    let mut m = SyntheticMarket::new(3, 20, &specs);
    let now = UnixNanos::now();
    for i in 0..m.len() {
        m.snapshot(i, now, |t| while !in_tx.push(t) {});
    }
    let gap = 1_000_000_000 / rate.max(1);
    let mut hist = histogram();
    let mut buf = TickBuf::default();
    let (mut sent, mut received) = (0u64, 0u64);
    let start = Instant::now();
    let mut due = start;
    let drain = |out_rx: &mut stocksblitz_engine::ring::RingConsumer<EngineEvent>,
                 hist: &mut hdrhistogram::Histogram<u64>,
                 received: &mut u64| {
        while let Some(ev) = out_rx.pop() {
            let now = UnixNanos::now().0;
            if ev.recv_ts.0 > 0 {
                let _ = hist.record((now - ev.recv_ts.0).max(1) as u64);
            }
            *received += 1;
        }
    };
    while sent < n {
        if Instant::now() >= due {
            m.step(UnixNanos::now(), &mut buf);
            for t in buf.as_slice() {
                if in_tx.push(*t) {
                    sent += 1;
                }
            }
            due += std::time::Duration::from_nanos(gap);
        }
        drain(&mut out_rx, &mut hist, &mut received);
    }
    let elapsed = start.elapsed();
    let settle = Instant::now();
    while settle.elapsed() < std::time::Duration::from_millis(50) {
        drain(&mut out_rx, &mut hist, &mut received);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = engine_thread.join();
    let dropped = in_tx.stats().dropped.get();
    Row {
        case: format!(
            "feed -> ring -> engine -> ring -> consumer, per tick, feed at {}k steps/s",
            rate / 1000
        ),
        ops: sent,
        elapsed,
        hist,
        note: format!(
            "latency columns = one-way per output event (tick stamped -> event popped); {received} events, {dropped} ticks dropped"
        ),
    }
}

fn main() {
    let rows = vec![
        single_thread(iters(2_000_000)),
        end_to_end(iters(5_000_000)),
        per_tick(iters(1_000_000), 500_000),
    ];
    print_table(
        "hot path: synthetic feed -> engine -> output ring (5 instruments, 20-level books)",
        &rows,
    );
}
