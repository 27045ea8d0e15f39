//! The benchmark harness shared by every `cargo bench` target.
//!
//! Custom (no criterion) because each case must report throughput and latency
//! percentiles (p50/p99/p99.9 from hdrhistogram) side by side with its baseline in the
//! same run. Operations too fast to time one by one (a parse is ~10 ns; a clock read
//! costs ~20 ns) are timed in small batches, and each batch's per-operation mean goes
//! into the histogram. `BENCH_QUICK=1` cuts iterations about 20x for a smoke run (the
//! test script uses it so a broken bench cannot land); numbers from it mean nothing.
#![forbid(unsafe_code)]

pub mod fanout;
pub mod frame_scan;
pub mod naive;
pub mod ws_client;

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// True when `BENCH_QUICK=1`.
pub fn quick() -> bool {
    std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1")
}

/// `n`, or `n / 20` (at least 1) in quick mode.
pub fn iters(n: u64) -> u64 {
    if quick() {
        (n / 20).max(1)
    } else {
        n
    }
}

/// Pins the current thread to `core` when the machine has it (benches still run
/// unpinned otherwise). It does not consult `get_core_ids`: that lists the calling
/// thread's own mask, which a thread spawned by an already pinned thread inherits.
pub fn pin(core: usize) {
    core_affinity::set_for_current(core_affinity::CoreId { id: core });
}

/// Latency histogram in nanoseconds (1 ns .. 10 s, 3 significant digits).
#[allow(clippy::expect_used)] // constant bounds, valid by construction
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid histogram bounds")
}

/// One row of results.
pub struct Row {
    pub case: String,
    pub ops: u64,
    pub elapsed: Duration,
    pub hist: Histogram<u64>,
    pub note: String,
}

impl Row {
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-12)
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e9 {
        format!("{:.2} G/s", r / 1e9)
    } else if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.2} k/s", r / 1e3)
    } else {
        format!("{r:.0} /s")
    }
}

fn fmt_ns(v: u64) -> String {
    if v >= 1_000_000 {
        format!("{:.2} ms", v as f64 / 1e6)
    } else if v >= 10_000 {
        format!("{:.1} us", v as f64 / 1e3)
    } else {
        format!("{v} ns")
    }
}

/// Prints a group of rows as an aligned table (also valid Markdown).
pub fn print_table(title: &str, rows: &[Row]) {
    println!(
        "\n## {title}{}\n",
        if quick() {
            " (BENCH_QUICK: smoke run, numbers not meaningful)"
        } else {
            ""
        }
    );
    println!("| case | ops | throughput | p50 | p99 | p99.9 | max | note |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for r in rows {
        let h = &r.hist;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.case,
            r.ops,
            fmt_rate(r.throughput()),
            fmt_ns(h.value_at_quantile(0.5)),
            fmt_ns(h.value_at_quantile(0.99)),
            fmt_ns(h.value_at_quantile(0.999)),
            fmt_ns(h.max()),
            r.note
        );
    }
}

/// Runs `op(i)` for `total` operations in batches of `batch`, recording each batch's
/// mean per-operation time. Returns a row named `case`.
pub fn batched(case: &str, total: u64, batch: u64, mut op: impl FnMut(u64)) -> Row {
    let batch = batch.max(1);
    let mut hist = histogram();
    let start = Instant::now();
    let mut i = 0;
    while i < total {
        let n = batch.min(total - i);
        let t = Instant::now();
        for k in 0..n {
            op(i + k);
        }
        let per_op = (t.elapsed().as_nanos() as u64 / n).max(1);
        let _ = hist.record(per_op);
        i += n;
    }
    Row {
        case: case.to_owned(),
        ops: total,
        elapsed: start.elapsed(),
        hist,
        note: String::new(),
    }
}

/// Keeps a value alive so the optimizer cannot drop the work that made it.
#[inline]
pub fn keep<T>(v: T) -> T {
    std::hint::black_box(v)
}

/// One case of an [`interleaved`] group: `op(i)` for `total` operations, timed in
/// batches of `batch`.
pub struct Case<'a> {
    pub name: String,
    pub total: u64,
    pub batch: u64,
    pub op: Box<dyn FnMut(u64) + 'a>,
}

impl<'a> Case<'a> {
    pub fn new(name: &str, total: u64, batch: u64, op: impl FnMut(u64) + 'a) -> Self {
        Self {
            name: name.to_owned(),
            total,
            batch,
            op: Box::new(op),
        }
    }
}

/// Runs a group of cases that are compared with each other in `rounds` interleaved
/// rounds (each round runs a slice of every case, starting with a different case each
/// time), so a noisy neighbour or a frequency change hits all of them alike. Returns
/// the rows (totals over all rounds) and each case's throughput per round.
pub fn interleaved(rounds: u64, cases: &mut [Case<'_>]) -> (Vec<Row>, Vec<Vec<f64>>) {
    let rounds = rounds.max(1);
    let mut hists: Vec<Histogram<u64>> = cases.iter().map(|_| histogram()).collect();
    let mut elapsed = vec![Duration::ZERO; cases.len()];
    let mut done = vec![0u64; cases.len()];
    let mut per_round = vec![Vec::with_capacity(rounds as usize); cases.len()];
    for r in 0..rounds {
        for k in 0..cases.len() {
            let c = (k + r as usize) % cases.len();
            let case = &mut cases[c];
            let share = case.total / rounds + u64::from(r < case.total % rounds);
            let start = Instant::now();
            let mut i = 0;
            while i < share {
                let n = case.batch.max(1).min(share - i);
                let t = Instant::now();
                for j in 0..n {
                    (case.op)(done[c] + i + j);
                }
                let _ = hists[c].record((t.elapsed().as_nanos() as u64 / n).max(1));
                i += n;
            }
            let took = start.elapsed();
            elapsed[c] += took;
            done[c] += share;
            per_round[c].push(share as f64 / took.as_secs_f64().max(1e-12));
        }
    }
    let rows = cases
        .iter()
        .zip(hists)
        .zip(elapsed)
        .map(|((case, hist), elapsed)| Row {
            case: case.name.clone(),
            ops: case.total,
            elapsed,
            hist,
            note: String::new(),
        })
        .collect();
    (rows, per_round)
}

/// The median over rounds of `ours` throughput divided by the best of `baselines` in
/// the same round.
pub fn median_ratio(per_round: &[Vec<f64>], ours: usize, baselines: &[usize]) -> f64 {
    let Some(rounds) = per_round.get(ours).map(Vec::len) else {
        return 0.0;
    };
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|r| {
            let best = baselines
                .iter()
                .filter_map(|&b| per_round.get(b).and_then(|v| v.get(r)))
                .fold(0.0f64, |a, &b| a.max(b));
            per_round[ours][r] / best.max(1e-12)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios.get(ratios.len() / 2).copied().unwrap_or(0.0)
}

/// `n` (or a few more) ticks of a synthetic market over `specs`: a snapshot of every
/// book, then random-walk steps `step_ns` of market time apart starting at `t0`.
pub fn synthetic_ticks(
    specs: &[stocksblitz_feed_handlers::SimSpec],
    n: usize,
    t0: stocksblitz_engine::UnixNanos,
    step_ns: i64,
) -> Vec<stocksblitz_engine::Tick> {
    let mut m = stocksblitz_feed_handlers::SyntheticMarket::new(11, 20, specs);
    let mut out = Vec::with_capacity(n + 64);
    for i in 0..m.len() {
        m.snapshot(i, t0, |t| out.push(t));
    }
    let mut buf = stocksblitz_feed_handlers::TickBuf::default();
    let mut k = 0i64;
    while out.len() < n {
        k += 1;
        m.step(t0.saturating_add_nanos(k * step_ns), &mut buf);
        out.extend_from_slice(buf.as_slice());
    }
    out
}

/// Risk limits no bench stream reaches: benches measure the work, not refusals.
pub fn unlimited() -> stocksblitz_engine::orders::RiskLimits {
    let big = i128::MAX / 4;
    stocksblitz_engine::orders::RiskLimits {
        max_order_qty: big,
        max_order_notional: big,
        price_collar_bps: 1_000_000,
        max_open_orders: 1_000_000,
        max_position_qty: big,
        max_gross_exposure: big,
        daily_loss_limit: big,
        orders_per_sec: 1_000_000_000,
        cancels_per_sec: 1_000_000_000,
        self_trade: stocksblitz_engine::orders::SelfTradeMode::CancelNewest,
    }
}
