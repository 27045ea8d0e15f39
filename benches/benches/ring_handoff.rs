//! Hand-off of 64-byte ticks between two threads: the project's ring (rtrb plus
//! counters) and raw rtrb against the queues a user would otherwise reach for:
//! crossbeam's `ArrayQueue` (MPMC, lock-free) and `std::sync::mpsc::sync_channel`.
//!
//! Throughput: the producer pushes as fast as it can (spinning while full). Latency:
//! the producer sends one tick every ~2 us stamped with its send time, and the consumer
//! records receive minus send, so the number is the hand-off, not queueing. The cases
//! run in interleaved rounds (a noisy neighbour hits them alike), and each burst row
//! says how our ring compares with it, as the median of the rounds' ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use hdrhistogram::Histogram;
use stocksblitz_benches::{histogram, iters, median_ratio, pin, print_table, Row};
use stocksblitz_engine::ring::ring;
use stocksblitz_engine::{InstrumentId, Tick, UnixNanos};

const CAPACITY: usize = 4096;
const CASES: [&str; 4] = [
    "stocksblitz ring (rtrb + counters)",
    "rtrb raw",
    "crossbeam ArrayQueue",
    "std mpsc sync_channel",
];
/// Interleaved rounds: every case once per round, a different one first each round,
/// each on a fresh queue.
const ROUNDS: usize = 7;

/// What is measured.
#[derive(Clone, Copy)]
enum Mode {
    /// `n` ticks as fast as possible; the sample is the mean time per item.
    Burst,
    /// One tick every ~2 us, stamped; the samples are one-way send -> receive.
    Paced,
}

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
        Mode::Paced => latency(n, hist, push, pop),
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

/// Every case in `ROUNDS` interleaved rounds; one row per case (totals over the
/// rounds), and each round's throughput per case.
fn rounds(mode: Mode, n: u64) -> (Vec<Row>, Vec<Vec<f64>>) {
    let share = (n / ROUNDS as u64).max(1);
    let mut hists: Vec<Histogram<u64>> = CASES.iter().map(|_| histogram()).collect();
    let mut elapsed = [Duration::ZERO; CASES.len()];
    let mut per_round = vec![Vec::with_capacity(ROUNDS); CASES.len()];
    for r in 0..ROUNDS {
        for k in 0..CASES.len() {
            let c = (k + r) % CASES.len();
            let took = run(c, mode, share, &mut hists[c]);
            elapsed[c] += took;
            per_round[c].push(share as f64 / took.as_secs_f64().max(1e-12));
        }
    }
    let (suffix, note) = match mode {
        Mode::Burst => ("burst", "latency columns = mean time per item, over rounds"),
        Mode::Paced => ("paced 1 per 2 us", "one-way send->receive"),
    };
    let rows = CASES
        .iter()
        .zip(hists)
        .zip(elapsed)
        .map(|((name, hist), elapsed)| Row {
            case: format!("{name} ({suffix})"),
            ops: share * ROUNDS as u64,
            elapsed,
            hist,
            note: note.into(),
        })
        .collect();
    (rows, per_round)
}

fn main() {
    let (mut rows, burst) = rounds(Mode::Burst, iters(5_000_000));
    for (i, row) in rows.iter_mut().enumerate().skip(1) {
        row.note = format!(
            "{}; ours is {:.2}x this (median of {ROUNDS} rounds)",
            row.note,
            median_ratio(&burst, 0, &[i])
        );
    }
    let (paced, _) = rounds(Mode::Paced, iters(500_000));
    rows.extend(paced);
    print_table(
        &format!(
            "ring hand-off: 64-byte Tick, capacity {CAPACITY}, producer core 0 -> consumer core 1, {ROUNDS} interleaved rounds"
        ),
        &rows,
    );
}
