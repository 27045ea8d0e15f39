//! The QuestDB sink: ILP serialization into questdb-rs buffers (goal: at least 3 M
//! rows/s per core) against hand-formatted ILP text, and the engine's per-tick latency
//! with the sink running (the engine's recorder output, a ring of its own drained by the
//! real sink thread sending to a real VictoriaMetrics over ILP/HTTP) against the same
//! engine without it (goal: p99 under 5% worse), in alternating rounds, with the rows/s
//! the sink delivered.
//!
//! The second part needs `victoria-metrics` (Debian package; scripts/test.sh installs
//! it); without it that part is skipped with a note.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use questdb::ingress::{Buffer, ProtocolVersion};
use stocksblitz_api::config::questdb::{IlpTransport, QuestDbSetup};
use stocksblitz_api::sink::ilp::{write_row, Names};
use stocksblitz_api::sink::row::{SinkRow, Table};
use stocksblitz_api::sink::{QuestDbSink, SinkStats};
use stocksblitz_benches::{batched, histogram, iters, keep, print_table, synthetic_ticks, Row};
use stocksblitz_engine::publisher::OutputKind;
use stocksblitz_engine::ring::{ring, RingConsumer};
use stocksblitz_engine::tick_ring::tick_ring;
use stocksblitz_engine::{
    Aggressor, Engine, EngineConfig, EngineEvent, InstrumentConfig, InstrumentId, InstrumentRegistry, Price, Qty, Tick,
    UnixNanos,
};
use stocksblitz_feed_handlers::SimSpec;
use stocksblitz_testkit::instruments::crypto_spot;

const INSTRUMENTS: u32 = 5;

fn registry() -> InstrumentRegistry {
    let cfg: Vec<InstrumentConfig> = (0..INSTRUMENTS)
        .map(|i| crypto_spot(&format!("SYM{i}"), "binance"))
        .collect();
    InstrumentRegistry::from_config(&cfg).expect("registry")
}

fn rows(n: usize) -> Vec<SinkRow> {
    let t0 = 1_796_205_600_000_000_000i64;
    (0..n)
        .map(|i| {
            let instrument = InstrumentId((i % INSTRUMENTS as usize) as u32);
            let p = 6_500_000 + (i % 97) as i64;
            if i % 2 == 0 {
                SinkRow::Trade {
                    ts: t0 + i as i64 * 1_000,
                    recv: t0 + i as i64 * 1_000 + 300,
                    instrument,
                    price: Price(p),
                    qty: Qty(1_250 + (i % 13) as i64),
                    trade_id: 1_000_000 + i as u64,
                    aggressor: Aggressor::Buy,
                    seq: i as u64,
                }
            } else {
                SinkRow::Quote {
                    ts: t0 + i as i64 * 1_000,
                    seq: i as u64,
                    instrument,
                    bid: Price(p - 1),
                    bid_qty: Qty(4_000),
                    ask: Price(p + 1),
                    ask_qty: Qty(3_500),
                }
            }
        })
        .collect()
}

/// What a user would write by hand: `write!` of each field into a String.
fn hand_ilp(out: &mut String, r: &SinkRow, symbols: &[String]) {
    match *r {
        SinkRow::Trade {
            ts,
            recv,
            instrument,
            price,
            qty,
            trade_id,
            seq,
            ..
        } => {
            let _ = writeln!(
                out,
                "trades,symbol={},aggressor=buy price={},qty={},trade_id={}i,recv_ts={}t,seq={}i {}",
                symbols[instrument.index()],
                price.0 as f64 / 100.0,
                qty.0 as f64 / 1000.0,
                trade_id,
                recv / 1000,
                seq,
                ts
            );
        }
        SinkRow::Quote {
            ts,
            seq,
            instrument,
            bid,
            bid_qty,
            ask,
            ask_qty,
        } => {
            let _ = writeln!(
                out,
                "quotes,symbol={} bid={},bid_qty={},ask={},ask_qty={},seq={}i {}",
                symbols[instrument.index()],
                bid.0 as f64 / 100.0,
                bid_qty.0 as f64 / 1000.0,
                ask.0 as f64 / 100.0,
                ask_qty.0 as f64 / 1000.0,
                seq,
                ts
            );
        }
        _ => {}
    }
}

fn serialization() {
    let rows = rows(100_000);
    let names = Names::new(&registry(), &[]);
    let symbols: Vec<String> = (0..INSTRUMENTS).map(|i| format!("SYM{i}")).collect();
    let n = iters(10_000_000);
    let mut buf = Buffer::new(ProtocolVersion::V1);
    let mut out = vec![batched("ILP rows into a questdb-rs Buffer (protocol 1)", n, 64, |i| {
        let _ = write_row(&mut buf, &rows[i as usize % rows.len()], &names);
        if buf.len() > 8 << 20 {
            buf.clear();
        }
        keep(&buf);
    })];
    let mut buf2 = Buffer::new(ProtocolVersion::V2);
    out.push(batched("ILP rows into a questdb-rs Buffer (protocol 2)", n, 64, |i| {
        let _ = write_row(&mut buf2, &rows[i as usize % rows.len()], &names);
        if buf2.len() > 8 << 20 {
            buf2.clear();
        }
        keep(&buf2);
    }));
    let mut text = String::with_capacity(9 << 20);
    out.push(batched("hand-written ILP text with write! (baseline)", n, 64, |i| {
        hand_ilp(&mut text, &rows[i as usize % rows.len()], &symbols);
        if text.len() > 8 << 20 {
            text.clear();
        }
        keep(&text);
    }));
    print_table("QuestDB sink: ILP serialization (rows)", &out);
}

fn ticks(n: usize) -> Vec<Tick> {
    let specs: Vec<SimSpec> = (0..INSTRUMENTS)
        .map(|i| SimSpec {
            id: InstrumentId(i),
            tick_size: Price(1),
            lot_size: Qty(1),
            start_price: Price(6_500_000 + i64::from(i) * 10_000),
        })
        .collect();
    synthetic_ticks(&specs, n, UnixNanos::now(), 2_000)
}

struct Victoria(Child, String);

impl Drop for Victoria {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn victoria() -> Option<(Victoria, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let dir = std::env::temp_dir().join(format!("sbz-bench-vm-{}", std::process::id()));
    let child = Command::new("victoria-metrics")
        .arg(format!("-httpListenAddr={addr}"))
        .arg(format!("-storageDataPath={}", dir.display()))
        .arg("-retentionPeriod=100y")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let vm = Victoria(child, dir.display().to_string());
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(&addr).is_ok() {
            return Some((vm, addr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn with_and_without_sink() {
    let Some((_vm, addr)) = victoria() else {
        println!("\n(victoria-metrics not installed: the engine-with-sink comparison is skipped)");
        return;
    };
    let n = iters(2_000_000);
    let ticks = ticks(n as usize);
    let engine = |outputs| {
        let (_tx, rx) = tick_ring("in", 16);
        Engine::new(&EngineConfig::default(), INSTRUMENTS as usize, vec![rx], outputs)
    };
    // Without: one output ring (the API's), drained in the loop.
    let (a_tx, mut a_rx) = ring::<EngineEvent>("api", 1 << 16);
    let mut plain = engine(vec![a_tx]);
    // With: the same engine, its API output drained in the loop as the fan-out does,
    // and the store's recorder output drained by the real sink thread.
    let (b_tx, mut b_rx) = ring::<EngineEvent>("api", 1 << 16);
    let (s_tx, s_rx): (_, RingConsumer<EngineEvent>) = ring("questdb", 1 << 16);
    let tap_stats = Arc::clone(s_tx.stats());
    let mut with_sink = engine(vec![b_tx]).with_output(s_tx, OutputKind::Recorder(Table::stored));
    let stats = Arc::new(SinkStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let spill = std::env::temp_dir().join(format!("sbz-bench-spill-{}", std::process::id()));
    let setup = QuestDbSetup {
        transport: IlpTransport::Http,
        addr,
        protocol_version: 1,
        create_tables: false,
        batch_rows: 10_000,
        flush_interval: Duration::from_millis(100),
        memory_rows: 2_000_000,
        ring_capacity: 1 << 16,
        spill_dir: spill.clone(),
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_secs(1),
        request_timeout: Duration::from_secs(10),
        orders: false,
        auth: stocksblitz_api::config::questdb::IlpAuth::None,
        idle: stocksblitz_api::config::questdb::DEFAULT_IDLE,
    };
    let sink = QuestDbSink::new(
        setup,
        None,
        Names::new(&registry(), &[]),
        Some(s_rx),
        None,
        Arc::clone(&stats),
    )
    .expect("sink")
    .spawn(Arc::clone(&stop))
    .expect("sink thread");
    // Paced like a busy live feed (a tick every 5 us = 200 k ticks/s), both engines in
    // alternating rounds; each `process` call is timed on its own.
    let rounds = if stocksblitz_benches::quick() { 2 } else { 10 };
    let per_round = (n / rounds).max(1);
    let mut hists = [histogram(), histogram()];
    let started = Instant::now();
    let mut i = 0usize;
    for _ in 0..rounds {
        for (k, hist) in hists.iter_mut().enumerate() {
            let mut next = Instant::now();
            let mut housekeeping = Instant::now();
            for _ in 0..per_round {
                next += Duration::from_micros(5);
                while Instant::now() < next {
                    std::hint::spin_loop();
                }
                let tick = &ticks[i % ticks.len()];
                i += 1;
                let t = Instant::now();
                if k == 0 {
                    plain.process(tick);
                } else {
                    with_sink.process(tick);
                }
                let _ = hist.record((t.elapsed().as_nanos() as u64).max(1));
                if i.is_multiple_of(256) {
                    while a_rx.pop().is_some() {}
                    while b_rx.pop().is_some() {}
                }
                if housekeeping.elapsed() >= Duration::from_millis(1) {
                    housekeeping = Instant::now();
                    let now = UnixNanos::now();
                    plain.housekeeping(now);
                    with_sink.housekeeping(now);
                }
            }
        }
    }
    let ticks_elapsed = started.elapsed();
    // Let the sink finish what it holds, then stop it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.rows_sent.get() < stats.rows_in.get() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Release);
    let _ = sink.join();
    let _ = std::fs::remove_dir_all(spill);
    let [h0, h1] = hists;
    let ratio = h1.value_at_quantile(0.99) as f64 / (h0.value_at_quantile(0.99) as f64).max(1.0);
    let dropped = tap_stats.dropped.get();
    let rows = vec![
        Row {
            case: "engine, no sink (200 k ticks/s paced)".into(),
            ops: per_round * rounds,
            elapsed: ticks_elapsed / 2,
            hist: h0,
            note: "latency columns = one Engine::process call".into(),
        },
        Row {
            case: "engine + QuestDB sink thread -> VictoriaMetrics".into(),
            ops: per_round * rounds,
            elapsed: ticks_elapsed / 2,
            hist: h1,
            note: format!(
                "p99 x{ratio:.3} of no sink; the sink stored {} of {} rows, {:.0} rows/s end to end; {} dropped at its ring; {} send errors",
                stats.rows_sent.get(),
                stats.rows_in.get(),
                stats.rows_sent.get() as f64 / elapsed.as_secs_f64(),
                dropped,
                stats.errors.get()
            ),
        },
    ];
    print_table(
        "QuestDB sink: engine per-tick latency with and without it (interleaved rounds)",
        &rows,
    );
}

fn main() {
    serialization();
    with_and_without_sink();
}
