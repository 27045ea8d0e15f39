//! Hand-off of 64-byte ticks between two threads: the project's ring (rtrb plus
//! counters) and raw rtrb against the queues a user would otherwise reach for:
//! crossbeam's `ArrayQueue` (MPMC, lock-free) and `std::sync::mpsc::sync_channel`.
//!
//! Throughput: the producer pushes as fast as it can (spinning while full). Latency:
//! the producer sends one tick every ~2 us stamped with its send time, and the consumer
//! records receive minus send, so the number is the hand-off, not queueing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use stocksblitz_benches::{histogram, iters, pin, print_table, Row};
use stocksblitz_engine::ring::ring;
use stocksblitz_engine::{InstrumentId, Tick, UnixNanos};

const CAPACITY: usize = 4096;

/// A named queue constructor.
type Case = (&'static str, fn() -> Ends);

/// A queue's two ends, type-erased behind closures so each case runs the same driver.
struct Ends {
    push: Box<dyn FnMut(Tick) -> bool + Send>,
    pop: Box<dyn FnMut() -> Option<Tick> + Send>,
}

fn rtrb_raw() -> Ends {
    let (mut p, mut c) = rtrb::RingBuffer::<Tick>::new(CAPACITY);
    Ends {
        push: Box::new(move |t| p.push(t).is_ok()),
        pop: Box::new(move || c.pop().ok()),
    }
}

fn project_ring() -> Ends {
    let (mut p, mut c) = ring::<Tick>("bench", CAPACITY);
    Ends {
        push: Box::new(move |t| p.push(t)),
        pop: Box::new(move || c.pop()),
    }
}

fn crossbeam() -> Ends {
    let q = Arc::new(ArrayQueue::<Tick>::new(CAPACITY));
    let q2 = Arc::clone(&q);
    Ends {
        push: Box::new(move |t| q.push(t).is_ok()),
        pop: Box::new(move || q2.pop()),
    }
}

fn std_mpsc() -> Ends {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Tick>(CAPACITY);
    Ends {
        push: Box::new(move |t| tx.try_send(t).is_ok()),
        pop: Box::new(move || rx.try_recv().ok()),
    }
}

fn tick(i: u64, stamp: i64) -> Tick {
    Tick {
        recv_ts: UnixNanos(stamp),
        instrument: InstrumentId((i % 8) as u32),
        ..Tick::EMPTY
    }
}

/// Burst throughput: `n` ticks through the queue as fast as possible.
fn throughput(name: &str, ends: Ends, n: u64) -> Row {
    let Ends { mut push, mut pop } = ends;
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
    let elapsed = start.elapsed();
    let mut hist = histogram();
    // Mean per item, for the table's latency columns in throughput mode.
    let _ = hist.record((elapsed.as_nanos() as u64 / n.max(1)).max(1));
    Row {
        case: format!("{name} (burst)"),
        ops: n,
        elapsed,
        hist,
        note: "latency columns = mean time per item".into(),
    }
}

/// One-way latency at a paced rate.
fn latency(name: &str, ends: Ends, n: u64) -> Row {
    let Ends { mut push, mut pop } = ends;
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
    let hist = consumer.join().unwrap_or_else(|_| histogram());
    Row {
        case: format!("{name} (paced 1 per 2 us)"),
        ops: n,
        elapsed,
        hist,
        note: "one-way send->receive".into(),
    }
}

fn main() {
    let n = iters(5_000_000);
    let m = iters(500_000);
    let cases: [Case; 4] = [
        ("stocksblitz ring (rtrb + counters)", project_ring),
        ("rtrb raw", rtrb_raw),
        ("crossbeam ArrayQueue", crossbeam),
        ("std mpsc sync_channel", std_mpsc),
    ];
    let mut rows = Vec::new();
    for (name, make) in cases {
        rows.push(throughput(name, make(), n));
    }
    for (name, make) in cases {
        rows.push(latency(name, make(), m));
    }
    print_table(
        &format!("ring hand-off: 64-byte Tick, capacity {CAPACITY}, producer core 0 -> consumer core 1"),
        &rows,
    );
}
