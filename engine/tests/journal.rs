//! The order journal end to end: the engine runs random order flow and market data,
//! the real journal thread makes it durable and forwards it, and recovery from the
//! files rebuilds exactly the same state (state hash) and the same acknowledged
//! events. Also: torn tails are cut, corruption and tampering stop start-up with a
//! clear error, a changed configuration is caught, and a full disk stops
//! acknowledgement instead of lying.

mod orders_common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use orders_common::*;
use proptest::prelude::*;
use stocksblitz_engine::journal::{
    self, FsyncPolicy, JournalError, JournalStats, JournalThread, Recovered, RunStart, Snapshotter, Tail,
};
use stocksblitz_engine::orders::gateway::{command_queue, CommandQueue, OrderGateway, OrderOutput};
use stocksblitz_engine::orders::store::OrderStore;
use stocksblitz_engine::orders::{
    AccountId, Command, CommandKind, IdemTag, KillScope, OrderCapacity, OrderEvent, OrderEventData, OrderId,
    OrderManager, OrderType, RiskLimits, Step, StepAssembler, TimeInForce, TradingState, VenueKind,
};
use stocksblitz_engine::ring::{ring, RingConsumer, RingProducer};
use stocksblitz_engine::{
    Aggressor, BookFlags, Engine, EngineConfig, EngineEvent, FeedStatus, Price, Qty, Side, Tick, TickData, UnixNanos,
};

fn temp_dir(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sbz-journal-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Removes the directory when the test is done with it.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_start() -> RunStart {
    RunStart {
        format: journal::FORMAT_VERSION,
        at: UnixNanos(T0),
        engine: "test".into(),
        instruments: 3,
        accounts: 2,
        max_orders: 4096,
        limits: limits(),
    }
}

fn store() -> OrderStore {
    OrderStore::new(2, 10_000)
}

/// The engine with order entry, wired to a real journal thread (pumped by the test).
struct Rig {
    engine: Engine,
    feed: RingProducer<Tick>,
    market: RingConsumer<EngineEvent>,
    journal: JournalThread,
    acked: RingConsumer<OrderOutput>,
    assembler: StepAssembler,
    queue: CommandQueue,
    stats: Arc<JournalStats>,
    next_request: u64,
    trade_id: u64,
    now: i64,
    items: Vec<OrderOutput>,
    stop: AtomicBool,
    /// Everything acknowledged (forwarded after being made durable), step by step.
    events: Vec<(Step, Vec<OrderEvent>)>,
    /// The read model the API would build from them.
    store: OrderStore,
    snapshots: Snapshotter,
}

fn rig(dir: &Path, policy: FsyncPolicy, segment_bytes: u64, snapshot_every: u64) -> Rig {
    let (feed, input) = ring("feed", 4096);
    let (out, market) = ring("api", 1 << 16);
    // Small: steps wait in the engine's backlog and cross ring batches.
    let (order_out, journal_in) = ring("order-journal", 64);
    let (journal_out, acked) = ring("orders", 1 << 16);
    let queue = command_queue(1024);
    let mut manager = manager_with(&limits());
    let mut store = store();
    let (writer, rec) =
        journal::open(dir, policy, segment_bytes, &mut manager, &mut store, &run_start()).expect("open");
    manager.republish_internal_books(UnixNanos(T0));
    let stats = Arc::new(JournalStats::default());
    let snapshots = Snapshotter::new(
        dir,
        &rec.tail,
        manager.clone(),
        store.clone(),
        snapshot_every,
        2,
        Arc::clone(&stats),
    );
    let journal = JournalThread::new(writer, journal_in, journal_out, Arc::clone(&stats));
    let engine = Engine::new(&EngineConfig::default(), 3, vec![input], vec![out]).with_orders(
        manager,
        OrderGateway::new(queue.clone(), order_out, 1 << 16),
        UnixNanos(T0),
    );
    let mut r = Rig {
        engine,
        feed,
        market,
        journal,
        acked,
        assembler: StepAssembler::default(),
        queue,
        stats,
        next_request: 1,
        trade_id: 0,
        now: T0,
        items: Vec::new(),
        stop: AtomicBool::new(false),
        events: Vec::new(),
        store,
        snapshots,
    };
    r.tick(TickData::Status {
        status: FeedStatus::Live,
        detail: 0,
    });
    r
}

impl Rig {
    fn manager(&self) -> &OrderManager {
        self.engine.order_manager().expect("orders on")
    }

    /// Runs the engine and the journal until nothing moves.
    fn settle(&mut self) {
        loop {
            let worked = self.engine.poll() + self.journal.pump(&mut self.items, &self.stop);
            while let Some(item) = self.acked.pop() {
                if let Some((step, events)) = self.assembler.push(&item) {
                    self.store.apply_step(&step, events);
                    self.events.push((step, events.to_vec()));
                }
            }
            self.snapshots
                .catch_up(self.stats.head.get())
                .expect("snapshot thread follows");
            self.snapshots.snapshot_if_due().expect("snapshot");
            while self.market.pop().is_some() {}
            if worked == 0 {
                return;
            }
        }
    }

    fn send(&mut self, account: u32, kind: CommandKind) {
        self.send_keyed(account, kind, None);
    }

    fn send_keyed(&mut self, account: u32, kind: CommandKind, idempotency: Option<IdemTag>) {
        let request = self.next_request;
        self.next_request += 1;
        let cmd = Command {
            request,
            account: AccountId(account),
            at: UnixNanos(self.now),
            kind,
            idempotency,
        };
        assert!(self.queue.push(cmd).is_ok());
        self.settle();
    }

    fn tick(&mut self, data: TickData) {
        let t = Tick {
            exchange_ts: UnixNanos(self.now),
            recv_ts: UnixNanos(self.now),
            instrument: PAPER,
            data,
        };
        assert!(self.feed.push(t));
        self.settle();
    }

    fn quote(&mut self, bid: i64, ask: i64, qty: i64) {
        for (side, price, last) in [(Side::Buy, bid, false), (Side::Sell, ask, true)] {
            self.tick(TickData::BookDelta {
                side,
                price: Price(price),
                qty: Qty(qty),
                update_id: 0,
                flags: if last { BookFlags::END_OF_BATCH } else { BookFlags::NONE },
            });
        }
    }

    fn trade(&mut self, price: i64, qty: i64) {
        self.trade_id += 1;
        self.tick(TickData::Trade {
            price: Price(price),
            qty: Qty(qty),
            trade_id: self.trade_id,
            aggressor: Aggressor::Buy,
        });
    }

    fn advance(&mut self, ms: i64) {
        self.now += ms * 1_000_000;
        self.engine.housekeeping(UnixNanos(self.now));
        self.settle();
    }

    /// An order id the manager knows, picked by `k` (open orders first).
    fn pick(&self, k: usize) -> OrderId {
        let open: Vec<OrderId> = self.manager().open_orders().map(|o| o.id).collect();
        if open.is_empty() {
            OrderId(k as u64)
        } else {
            open[k % open.len()]
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    New {
        account: u32,
        paper: bool,
        side: bool,
        kind: u8,
        tif: u8,
        offset: i64,
        qty: i64,
        post_only: bool,
    },
    Cancel(usize),
    Replace {
        pick: usize,
        qty: Option<i64>,
        offset: Option<i64>,
    },
    MassCancel(u32),
    Kill(bool),
    State(u32, u8),
    Quote(i64, i64, i64),
    Trade(i64, i64),
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2u32, any::<bool>(), any::<bool>(), 0..4u8, 0..5u8, -6..6i64, 1..20i64, prop::bool::weighted(0.1))
            .prop_map(|(account, paper, side, kind, tif, offset, qty, post_only)| Op::New {
                account, paper, side, kind, tif, offset, qty, post_only
            }),
        2 => any::<usize>().prop_map(Op::Cancel),
        2 => (any::<usize>(), prop::option::of(1..20i64), prop::option::of(-6..6i64))
            .prop_map(|(pick, qty, offset)| Op::Replace { pick, qty, offset }),
        1 => (0..2u32).prop_map(Op::MassCancel),
        1 => prop::bool::weighted(0.3).prop_map(Op::Kill),
        1 => (0..2u32, 0..4u8).prop_map(|(a, s)| Op::State(a, s)),
        3 => (-6..0i64, 1..6i64, 0..15i64).prop_map(|(b, a, q)| Op::Quote(b, a, q)),
        3 => (-6..6i64, 1..15i64).prop_map(|(p, q)| Op::Trade(p, q)),
        2 => (1..400i64).prop_map(Op::Advance),
    ]
}

const MID: i64 = 10_000;

fn apply(r: &mut Rig, op: &Op, n: usize) {
    match *op {
        Op::New {
            account,
            paper,
            side,
            kind,
            tif,
            offset,
            qty,
            post_only,
        } => {
            let kind = [
                OrderType::Limit,
                OrderType::Market,
                OrderType::Stop,
                OrderType::StopLimit,
            ][kind as usize];
            let tif = match tif {
                0 => TimeInForce::Gtc,
                1 => TimeInForce::Ioc,
                2 => TimeInForce::Fok,
                3 => TimeInForce::Day,
                _ => TimeInForce::Gtd(UnixNanos(r.now + 300_000_000)),
            };
            let instrument = if paper { PAPER } else { INTERNAL };
            let side = if side { Side::Buy } else { Side::Sell };
            let mut o = new_order(instrument, &format!("c{n}"), side, kind, tif, 0, qty);
            if kind.has_limit_price() {
                o.price = Price(MID + offset);
            }
            if kind.has_stop_price() {
                o.stop_price = Price(MID + offset + if side == Side::Buy { 2 } else { -2 });
            }
            o.post_only = post_only;
            // Every third order carries an Idempotency-Key (its answer is journaled).
            let key = n
                .is_multiple_of(3)
                .then(|| IdemTag::new(&format!("key-{n}"), format!("{op:?}").as_bytes()));
            r.send_keyed(account, CommandKind::New(o), key);
        }
        Op::Cancel(k) => {
            let id = r.pick(k);
            let account = r.manager().order(id).map_or(0, |o| o.account.0);
            r.send(account, CommandKind::Cancel { order: id });
        }
        Op::Replace { pick, qty, offset } => {
            let id = r.pick(pick);
            let account = r.manager().order(id).map_or(0, |o| o.account.0);
            r.send(
                account,
                CommandKind::Replace {
                    order: id,
                    qty: qty.map(Qty),
                    price: offset.map(|o| Price(MID + o)),
                },
            );
        }
        Op::MassCancel(a) => r.send(a, CommandKind::MassCancel { instrument: None }),
        Op::Kill(on) => r.send(
            0,
            CommandKind::KillSwitch {
                scope: KillScope::Account(AccountId(1)),
                on,
            },
        ),
        Op::State(a, s) => {
            let state = [
                TradingState::Active,
                TradingState::ReduceOnly,
                TradingState::Throttled,
                TradingState::Blocked,
            ][s as usize];
            r.send(
                0,
                CommandKind::SetTradingState {
                    target: AccountId(a),
                    state,
                },
            );
        }
        Op::Quote(b, a, q) => r.quote(MID + b, MID + a, q),
        Op::Trade(p, q) => r.trade(MID + p, q),
        Op::Advance(ms) => r.advance(ms),
    }
}

/// Limits that bite sometimes: rate limits and open-order caps are part of the state.
fn limits() -> Vec<RiskLimits> {
    let mut l = loose();
    l.max_open_orders = 12;
    l.orders_per_sec = 40;
    l.cancels_per_sec = 40;
    vec![l; 2]
}

fn recover_with(mut m: OrderManager, dir: &Path) -> Result<(OrderManager, OrderStore, Recovered), JournalError> {
    let mut s = store();
    let rec = journal::recover(dir, &mut m, &mut s)?;
    Ok((m, s, rec))
}

fn recover_into(dir: &Path) -> Result<(OrderManager, OrderStore, Recovered), JournalError> {
    recover_with(manager_with(&limits()), dir)
}

/// A manager like `manager_with(&limits())` but with other venues or pool size (a
/// changed configuration).
fn shaped(venues: [VenueKind; 3], orders: usize) -> OrderManager {
    OrderManager::new(
        &registry(),
        &venues,
        &[100_000_000; 3],
        &limits(),
        OrderCapacity {
            orders,
            levels: 256,
            stops: 256,
            day_offset_secs: 19_800,
        },
    )
}

fn remove_snapshots(dir: &Path) {
    for (_, p) in journal::snapshot::list(dir).expect("list") {
        std::fs::remove_file(p).expect("remove");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn recovery_rebuilds_exactly_what_was_acknowledged(
        ops in prop::collection::vec(op(), 1..120),
        snapshot_every in 1..60u64,
    ) {
        let dir = temp_dir("prop");
        let _cleanup = Cleanup(dir.clone());
        let mut r = rig(&dir, FsyncPolicy::None, 1 << 20, snapshot_every);
        for (n, op) in ops.iter().enumerate() {
            apply(&mut r, op, n);
        }
        let live_hash = r.manager().state_hash();
        let live_store = r.store.clone();
        prop_assert_eq!(r.stats.discarded.get(), 0);
        prop_assert_eq!(r.stats.snapshot_errors.get(), 0);
        let snapshots = r.stats.snapshots.get();
        drop(r);

        // From the newest snapshot (when one was taken) plus the tail.
        let (m, s, rec) = recover_into(&dir).expect("recovers");
        prop_assert!(rec.tail.torn.is_none());
        prop_assert_eq!(rec.snapshot.is_some(), snapshots > 0);
        prop_assert!(rec.skipped.is_empty(), "{:?}", rec.skipped);
        prop_assert_eq!(m.state_hash(), live_hash, "the same orders, books, positions and risk usage");
        prop_assert!(s == live_store, "the same read model (orders, fills, positions)");
        // And from the journal alone.
        remove_snapshots(&dir);
        let (m, s, rec) = recover_into(&dir).expect("recovers");
        prop_assert_eq!(rec.snapshot, None);
        prop_assert_eq!(m.state_hash(), live_hash);
        prop_assert!(s == live_store);
    }
}

/// A run with some of everything, on small segments; returns the acknowledged events.
type Acked = Vec<(Step, Vec<OrderEvent>)>;

fn sample_run(dir: &Path, policy: FsyncPolicy, segment_bytes: u64) -> (Acked, [u8; 32], Arc<JournalStats>) {
    sample_run_with(dir, policy, segment_bytes, u64::MAX)
}

fn sample_run_with(
    dir: &Path,
    policy: FsyncPolicy,
    segment_bytes: u64,
    snapshot_every: u64,
) -> (Acked, [u8; 32], Arc<JournalStats>) {
    let mut r = rig(dir, policy, segment_bytes, snapshot_every);
    r.quote(MID - 1, MID + 1, 5);
    for n in 0..30 {
        let side = n % 2 == 0;
        apply(
            &mut r,
            &Op::New {
                account: (n % 2) as u32,
                paper: n % 3 == 0,
                side,
                kind: 0,
                tif: 0,
                offset: (n % 5) as i64 - 2,
                qty: 3,
                post_only: false,
            },
            n,
        );
        if n % 4 == 0 {
            r.trade(MID, 2);
        }
    }
    let hash = r.manager().state_hash();
    let events = std::mem::take(&mut r.events);
    let stats = Arc::clone(&r.stats);
    drop(r);
    (events, hash, stats)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    journal::reader::segments(dir)
        .expect("segments")
        .into_iter()
        .map(|s| s.path)
        .collect()
}

/// The read model built from the acknowledged steps up to event `last_seq`.
fn store_upto(steps: &[(Step, Vec<OrderEvent>)], last_seq: u64) -> OrderStore {
    let mut s = store();
    for (step, events) in steps {
        if events.last().is_some_and(|e| e.seq <= last_seq) {
            s.apply_step(step, events);
        }
    }
    s
}

#[test]
fn a_torn_tail_is_cut_off_and_only_unacknowledged_work_is_lost() {
    let dir = temp_dir("torn");
    let _cleanup = Cleanup(dir.clone());
    let (acked, hash, _) = sample_run(&dir, FsyncPolicy::Batch, 1 << 20);
    let last = segments(&dir).pop().expect("a segment");
    let full = std::fs::read(&last).expect("read");
    let (m, all, rec) = recover_into(&dir).expect("clean");
    assert_eq!(m.state_hash(), hash);
    assert!(all == store_upto(&acked, u64::MAX));
    assert_eq!(rec.tail.segment.as_ref().map(|s| s.1), Some(full.len() as u64));
    let mut sizes = Vec::new();
    journal::scan(&dir, |_, payload| {
        sizes.push(payload.len());
        Ok(())
    })
    .expect("scan");
    // Cut inside the last record at several points.
    let last_len = 8 + 40 + *sizes.last().expect("records") as u64;
    let last_start = full.len() as u64 - last_len;
    for cut in [1, 7, 8, 20, 47, last_len - 1] {
        std::fs::write(&last, &full[..(last_start + last_len - cut) as usize]).expect("write");
        let (_, s, rec) = recover_into(&dir).expect("a torn tail is not corruption");
        let torn = rec.tail.torn.expect("reported torn");
        assert_eq!(torn.offset, last_start);
        assert!(s == store_upto(&acked, s.last_seq), "a prefix of what was acknowledged");
    }
    // Garbage (zeros, as a crashed file system may leave) after the last record.
    let mut padded = full.clone();
    padded.extend_from_slice(&[0; 100]);
    std::fs::write(&last, &padded).expect("write");
    let (m, _, rec) = recover_into(&dir).expect("zeros are a torn tail");
    assert_eq!(m.state_hash(), hash);
    assert_eq!(rec.tail.torn.map(|t| t.bytes), Some(100));
    // Opening for writing cuts it off; the next run appends cleanly after it.
    let (mut m, mut s) = (manager_with(&limits()), store());
    let (w, rec) = journal::open(&dir, FsyncPolicy::Batch, 1 << 20, &mut m, &mut s, &run_start()).expect("open");
    assert_eq!(rec.tail.torn.map(|t| t.bytes), Some(100));
    drop(w);
    let (m, _, rec) = recover_into(&dir).expect("clean again");
    assert!(rec.tail.torn.is_none());
    assert_eq!(m.state_hash(), hash);
}

#[test]
fn corruption_tampering_and_missing_segments_stop_recovery() {
    let dir = temp_dir("corrupt");
    let _cleanup = Cleanup(dir.clone());
    // Small segments: the run spans several files.
    let (_, hash, _) = sample_run(&dir, FsyncPolicy::None, 1 << 10);
    let segs = segments(&dir);
    assert!(segs.len() >= 3, "rotation happened ({} segments)", segs.len());
    let (m, _, _) = recover_into(&dir).expect("clean");
    assert_eq!(m.state_hash(), hash, "recovers across segments");
    let mid = &segs[1];
    let original = std::fs::read(mid).expect("read");

    // A flipped bit in an earlier segment.
    let mut bad = original.clone();
    bad[journal::format::SEGMENT_HEADER + 30] ^= 0x10;
    std::fs::write(mid, &bad).expect("write");
    let err = recover_into(&dir).err().expect("corruption is an error");
    assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("corrupt at byte"), "{err}");

    // A payload changed and its checksum recomputed: the hash chain catches it.
    let mut tampered = original.clone();
    let body = journal::format::SEGMENT_HEADER + 8;
    let len = u32::from_le_bytes(tampered[body - 8..body - 4].try_into().unwrap()) as usize;
    tampered[body + 40] ^= 0x01;
    let crc = crc32(&tampered[body..body + len]);
    tampered[body - 4..body].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(mid, &tampered).expect("write");
    let err = recover_into(&dir).err().expect("tampering is an error");
    assert!(err.to_string().contains("hash chain broken"), "{err}");

    // A missing segment.
    std::fs::write(mid, &original).expect("restore");
    std::fs::remove_file(mid).expect("remove");
    let err = recover_into(&dir).err().expect("a gap is an error");
    assert!(err.to_string().contains("segment is missing"), "{err}");
}

#[test]
fn bad_snapshots_are_skipped_down_to_a_full_replay() {
    let dir = temp_dir("snap");
    let _cleanup = Cleanup(dir.clone());
    let (acked, hash, stats) = sample_run_with(&dir, FsyncPolicy::None, 1 << 20, 10);
    assert!(stats.snapshots.get() >= 2, "snapshots were taken");
    let snaps = journal::snapshot::list(&dir).expect("list");
    assert_eq!(snaps.len(), 2, "only the newest two are kept");
    let (m, s, rec) = recover_into(&dir).expect("from the newest");
    assert_eq!(rec.snapshot, Some(snaps[0].0));
    assert!(rec.steps < 20, "only the tail was replayed ({} steps)", rec.steps);
    assert_eq!(m.state_hash(), hash);
    assert!(s == store_upto(&acked, u64::MAX));

    // A damaged newest snapshot: the older one is used.
    let newest = std::fs::read(&snaps[0].1).expect("read");
    let mut bad = newest.clone();
    let n = bad.len();
    bad[n - 3] ^= 0xFF;
    std::fs::write(&snaps[0].1, &bad).expect("write");
    let (m, _, rec) = recover_into(&dir).expect("from the older");
    assert_eq!(rec.snapshot, Some(snaps[1].0));
    assert_eq!(rec.skipped.len(), 1);
    assert!(rec.skipped[0].contains("checksum"), "{:?}", rec.skipped);
    assert_eq!(m.state_hash(), hash);

    // Both from another configuration (pool size): a full replay.
    std::fs::write(&snaps[0].1, &newest).expect("restore");
    let other = shaped([VenueKind::Internal, VenueKind::Paper, VenueKind::Paper], 4096);
    let (m, _, rec) = recover_with(other, &dir).expect("same shape: snapshot fits");
    assert_eq!((rec.snapshot, m.state_hash()), (Some(snaps[0].0), hash));
    let bigger = shaped([VenueKind::Internal, VenueKind::Paper, VenueKind::Paper], 8192);
    let (_, _, rec) = recover_with(bigger, &dir).expect("full replay");
    assert_eq!(rec.snapshot, None);
    assert_eq!(rec.skipped.len(), 2, "{:?}", rec.skipped);
    assert!(rec.skipped[0].contains("max_orders"), "{:?}", rec.skipped);

    // A snapshot ahead of the journal (journal records lost, say to a power cut under
    // fsync = "none"): not used.
    let segs = segments(&dir);
    let last = segs.last().expect("segment");
    let len = std::fs::metadata(last).expect("meta").len();
    let mut sizes = Vec::new();
    journal::scan(&dir, |_, p| {
        sizes.push(p.len() as u64 + 48);
        Ok(())
    })
    .expect("scan");
    let cut: u64 = sizes.iter().rev().take(15).sum();
    let f = std::fs::OpenOptions::new().write(true).open(last).expect("open");
    f.set_len(len - cut).expect("truncate");
    let (_, _, rec) = recover_into(&dir).expect("older snapshot or full replay");
    assert!(rec.snapshot.is_none_or(|s| s < rec.tail.next_seq), "{rec:?}");
    assert!(!rec.skipped.is_empty());
}

fn crc32(b: &[u8]) -> u32 {
    // The same CRC-32 (IEEE) the journal uses, computed bit by bit.
    let mut crc = !0u32;
    for &byte in b {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_changed_configuration_that_alters_history_is_caught() {
    let dir = temp_dir("diverge");
    let _cleanup = Cleanup(dir.clone());
    let (acked, _, _) = sample_run(&dir, FsyncPolicy::None, 1 << 20);
    assert!(acked
        .iter()
        .flat_map(|(_, e)| e)
        .any(|e| matches!(e.data, OrderEventData::Order { .. })));
    // The internal instrument moved to the paper venue: history no longer replays.
    let moved = shaped([VenueKind::Paper, VenueKind::Paper, VenueKind::Paper], 4096);
    let err = recover_with(moved, &dir).err().expect("diverges");
    assert!(matches!(err, JournalError::Diverged { .. }), "{err}");
    assert!(err.to_string().contains("configuration"), "{err}");
}

#[test]
fn limits_replay_as_they_were_and_the_configuration_applies_from_the_next_run() {
    let dir = temp_dir("limits");
    let _cleanup = Cleanup(dir.clone());
    let (_, hash, _) = sample_run(&dir, FsyncPolicy::None, 1 << 20);
    // Recovered with tighter configured limits: history replays under the old ones.
    let mut tight = limits();
    tight[0].max_open_orders = 1;
    let (m, _, rec) = recover_with(manager_with(&tight), &dir).expect("replays");
    assert_eq!(m.state_hash(), hash);
    assert_eq!(rec.limits, limits());
    // The next run starts with the configured limits, and says so in its start record.
    let (mut m, mut s) = (manager_with(&tight), store());
    let mut run = run_start();
    run.limits = tight.clone();
    let (w, _) = journal::open(&dir, FsyncPolicy::None, 1 << 20, &mut m, &mut s, &run).expect("open");
    assert_eq!(m.limits(), tight);
    drop(w);
    let (m, _, _) = recover_into(&dir).expect("replays");
    assert_eq!(m.limits(), tight);
}

#[test]
fn fsync_policies_sync_as_documented() {
    let dir = temp_dir("batch");
    let _c1 = Cleanup(dir.clone());
    let (_, _, stats) = sample_run(&dir, FsyncPolicy::Batch, 1 << 20);
    assert!(stats.commits.get() > 0);
    assert_eq!(stats.fsyncs.get(), stats.commits.get(), "one fsync per group commit");
    let dir = temp_dir("none");
    let _c2 = Cleanup(dir.clone());
    let (_, _, stats) = sample_run(&dir, FsyncPolicy::None, 1 << 20);
    assert!(stats.commits.get() > 0);
    assert_eq!(stats.fsyncs.get(), 0);
    let dir = temp_dir("interval");
    let _c3 = Cleanup(dir.clone());
    let (_, _, stats) = sample_run(
        &dir,
        FsyncPolicy::Interval(std::time::Duration::from_secs(3600)),
        1 << 20,
    );
    assert_eq!(stats.fsyncs.get(), 0, "not due within the run");
}

#[test]
fn a_second_writer_is_refused() {
    let dir = temp_dir("lock");
    let _cleanup = Cleanup(dir.clone());
    let (mut m, mut s) = (manager_with(&limits()), store());
    let (_w, _) = journal::open(&dir, FsyncPolicy::None, 1 << 20, &mut m, &mut s, &run_start()).expect("open");
    let (mut m2, mut s2) = (manager_with(&limits()), store());
    let err = journal::open(&dir, FsyncPolicy::None, 1 << 20, &mut m2, &mut s2, &run_start())
        .err()
        .expect("locked");
    assert!(err.to_string().contains("another process"), "{err}");
}

#[test]
fn a_full_disk_stops_acknowledgement_instead_of_lying() {
    let dir = temp_dir("full");
    let _cleanup = Cleanup(dir.clone());
    std::fs::create_dir_all(&dir).expect("dir");
    // A segment that is /dev/full: every write fails with ENOSPC.
    let seg = dir.join(journal::format::segment_name(1));
    std::os::unix::fs::symlink("/dev/full", &seg).expect("symlink");
    let tail = Tail {
        segment: Some((seg, journal::format::SEGMENT_HEADER as u64)),
        next_seq: 1,
        last_hash: journal::format::GENESIS,
        records: 0,
        torn: None,
    };
    let writer = journal::JournalWriter::open(&dir, &tail, FsyncPolicy::Batch, 1 << 20).expect("open");
    let (mut order_out, journal_in) = ring::<OrderOutput>("order-journal", 64);
    let (journal_out, mut acked) = ring::<OrderOutput>("orders", 64);
    let stats = Arc::new(JournalStats::default());
    let mut thread = JournalThread::new(writer, journal_in, journal_out, Arc::clone(&stats));
    let mut m = manager(1);
    m.handle(&Command {
        request: 1,
        account: AccountId(0),
        at: UnixNanos(T0),
        kind: CommandKind::New(limit(PAPER, "a", Side::Buy, 100, 1)),
        idempotency: None,
    });
    let mut next = 0;
    for step in m.steps() {
        assert!(order_out.push(OrderOutput::Step(*step)));
        for e in &m.events()[next..next + step.events as usize] {
            assert!(order_out.push(OrderOutput::Event(*e)));
        }
        next += step.events as usize;
    }
    let stop = AtomicBool::new(false);
    assert!(thread.pump(&mut Vec::new(), &stop) > 0);
    assert!(stats.is_failed());
    assert!(
        stats.failure().is_some_and(|f| f.contains("No space")),
        "{:?}",
        stats.failure()
    );
    assert!(acked.pop().is_none(), "nothing acknowledged");
    assert_eq!(stats.discarded.get(), m.events().len() as u64);
}
