//! The order journal: append throughput (encode, frame, checksum, hash chain, write)
//! and commit latency under each fsync policy, against what a user would otherwise
//! write: a JSON-lines audit log (serde_json, one line per event) on the same disk.
//!
//! The steps are real: a command stream run through the `OrderManager`, each step
//! with the events it produced. The journal lives in the system temp directory (see
//! BENCHMARKS.md for the file system it was measured on).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use stocksblitz_benches::{batched, histogram, iters, keep, print_table, Row};
use stocksblitz_engine::instrument::InstrumentKind;
use stocksblitz_engine::journal::{FsyncPolicy, JournalWriter, RecordRef, Tail, GENESIS};
use stocksblitz_engine::orders::{
    AccountId, ClientOrderId, Command, CommandKind, NewOrder, OrderCapacity, OrderEvent, OrderManager, OrderType, Step,
    TimeInForce, VenueKind,
};
use stocksblitz_engine::{InstrumentConfig, InstrumentId, InstrumentRegistry, Price, Qty, Side, UnixNanos};

/// Steps of a realistic order flow (limit orders around a mid from three accounts,
/// some crossing), each with its events.
fn steps(n: usize) -> Vec<(Step, Vec<OrderEvent>)> {
    let registry = InstrumentRegistry::from_config(&[InstrumentConfig {
        symbol: "SBZ".into(),
        venue: "stocksblitz".into(),
        venue_symbol: "SBZ".into(),
        kind: InstrumentKind::Equity,
        currency: "INR".into(),
        price_decimals: 2,
        qty_decimals: 0,
        tick_size: "0.01".into(),
        lot_size: "1".into(),
        session: "24x7".into(),
    }])
    .expect("registry");
    let limits = stocksblitz_benches::unlimited();
    let mut m = OrderManager::new(
        &registry,
        &[VenueKind::Internal],
        &[100_000_000],
        &[limits; 3],
        OrderCapacity {
            orders: 1 << 20,
            levels: 4096,
            stops: 16,
            day_offset_secs: 0,
        },
    );
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(n);
    for i in 0..n as u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let side = if x & 8 == 0 { Side::Buy } else { Side::Sell };
        let base = if side == Side::Buy { 9_990 } else { 9_995 };
        m.clear();
        m.handle(&Command {
            request: i,
            account: AccountId((x >> 8) as u32 % 3),
            at: UnixNanos(1_796_205_600_000_000_000 + i as i64 * 1_000),
            kind: CommandKind::New(NewOrder {
                instrument: InstrumentId(0),
                client_id: ClientOrderId::new(&format!("c{i}")).expect("id"),
                side,
                kind: OrderType::Limit,
                tif: TimeInForce::Ioc,
                price: Price(base + (x % 20) as i64),
                stop_price: Price(0),
                qty: Qty(1 + (x % 10) as i64),
                post_only: false,
                reduce_only: false,
            }),
            idempotency: None,
        });
        let events = m.events().to_vec();
        if let Some(step) = m.steps().first() {
            out.push((*step, events));
        }
    }
    out
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sbz-bench-journal-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn writer(name: &str, policy: FsyncPolicy) -> (JournalWriter, PathBuf) {
    let d = dir(name);
    let tail = Tail {
        segment: None,
        next_seq: 1,
        last_hash: GENESIS,
        records: 0,
        torn: None,
    };
    (JournalWriter::open(&d, &tail, policy, 1 << 30).expect("journal"), d)
}

/// Appends every step, committing each `group` records; each commit's time goes in
/// the histogram (that is the acknowledgement delay the policy adds).
fn commits(case: &str, policy: FsyncPolicy, group: usize, steps: &[(Step, Vec<OrderEvent>)], total: usize) -> Row {
    let (mut w, d) = writer(case, policy);
    let mut hist = histogram();
    let start = Instant::now();
    let mut done = 0;
    while done < total {
        let t = Instant::now();
        for k in 0..group {
            let (step, events) = &steps[(done + k) % steps.len()];
            w.append(&RecordRef::Step { step, events }).expect("append");
        }
        w.commit().expect("commit");
        let _ = hist.record((t.elapsed().as_nanos() as u64).max(1));
        done += group;
    }
    let elapsed = start.elapsed();
    drop(w);
    let _ = std::fs::remove_dir_all(d);
    Row {
        case: case.to_owned(),
        ops: done as u64,
        elapsed,
        hist,
        note: format!("per commit of {group} records"),
    }
}

/// The JSON-lines audit log a user might write instead: one line per event, written
/// and (optionally) fsynced per group.
fn json_lines(case: &str, fsync: bool, group: usize, steps: &[(Step, Vec<OrderEvent>)], total: usize) -> Row {
    let d = dir(case);
    std::fs::create_dir_all(&d).expect("dir");
    let mut f = std::fs::File::create(d.join("audit.jsonl")).expect("file");
    let mut buf = Vec::with_capacity(1 << 20);
    let mut hist = histogram();
    let start = Instant::now();
    let mut done = 0;
    while done < total {
        let t = Instant::now();
        for k in 0..group {
            let (step, events) = &steps[(done + k) % steps.len()];
            serde_json::to_writer(&mut buf, &(step, events)).expect("json");
            buf.push(b'\n');
        }
        f.write_all(&buf).expect("write");
        buf.clear();
        if fsync {
            f.sync_data().expect("fsync");
        }
        let _ = hist.record((t.elapsed().as_nanos() as u64).max(1));
        done += group;
    }
    let elapsed = start.elapsed();
    let _ = std::fs::remove_dir_all(d);
    Row {
        case: case.to_owned(),
        ops: done as u64,
        elapsed,
        hist,
        note: format!("per write of {group} records"),
    }
}

fn main() {
    let steps = steps(20_000);
    let events: usize = steps.iter().map(|(_, e)| e.len()).sum();
    println!(
        "{} steps, {:.1} events per step on average",
        steps.len(),
        events as f64 / steps.len() as f64
    );

    // Append alone: encode + frame + CRC + SHA-256 chain into the batch buffer.
    let (mut w, d) = writer("append", FsyncPolicy::None);
    let total = iters(2_000_000);
    let mut rows = vec![batched(
        "journal append (postcard + CRC-32 + SHA-256 chain)",
        total,
        64,
        |i| {
            let (step, events) = &steps[i as usize % steps.len()];
            keep(w.append(&RecordRef::Step { step, events }).expect("append"));
            if w.batched() > 4 << 20 {
                w.commit().expect("commit");
            }
        },
    )];
    drop(w);
    let _ = std::fs::remove_dir_all(d);
    let mut buf = Vec::with_capacity(8 << 20);
    rows.push(batched("serde_json line per step (baseline)", total, 64, |i| {
        let (step, events) = &steps[i as usize % steps.len()];
        serde_json::to_writer(&mut buf, &(step, events)).expect("json");
        buf.push(b'\n');
        if buf.len() > 4 << 20 {
            buf.clear();
        }
        keep(&buf);
    }));
    print_table("order journal: record encoding", &rows);

    // Commits: the delay each policy adds before an acknowledgement.
    let n = iters(200_000) as usize;
    let synced = iters(2_000) as usize;
    let rows = vec![
        commits("fsync = none, groups of 64", FsyncPolicy::None, 64, &steps, n),
        commits(
            "fsync = interval (10 ms), groups of 64",
            FsyncPolicy::Interval(std::time::Duration::from_millis(10)),
            64,
            &steps,
            n,
        ),
        commits(
            "fsync = batch, groups of 64",
            FsyncPolicy::Batch,
            64,
            &steps,
            synced * 16,
        ),
        commits(
            "fsync = batch, one record per commit",
            FsyncPolicy::Batch,
            1,
            &steps,
            synced,
        ),
        json_lines("JSON lines, write per 64 (baseline)", false, 64, &steps, n),
        json_lines("JSON lines, fsync per 64 (baseline)", true, 64, &steps, synced * 16),
        json_lines("JSON lines, fsync per record (baseline)", true, 1, &steps, synced),
    ];
    print_table("order journal: commit latency per fsync policy (ops = records)", &rows);
}
