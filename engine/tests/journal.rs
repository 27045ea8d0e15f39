//! The order journal end to end: the engine runs random order flow, market data,
//! admin changes and restarts, the real journal thread makes it durable and forwards
//! it, and recovery from the files rebuilds exactly the same state (state hash) and the
//! same acknowledged events; generated client order ids never repeat across restarts.
//! Also: only a torn last record is cut, and fault injection over every byte of
//! several records (flip, zero, truncate, insert) shows that damage stops start-up
//! with the segment and offset instead of dropping acknowledged records; tampering is
//! caught, a changed configuration is caught, limits set at run time survive while a
//! changed configuration applies, and a full disk stops acknowledgement instead of
//! lying.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
    AccountId, ClientOrderId, Command, CommandKind, IdemTag, KillScope, OrderCapacity, OrderEvent, OrderEventData,
    OrderEventKind, OrderId, OrderManager, OrderType, Reject, RiskLimits, Step, StepAssembler, TimeInForce,
    TradingState, VenueKind,
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
    /// How it was opened (a restart opens it the same way).
    dir: PathBuf,
    policy: FsyncPolicy,
    segment_bytes: u64,
    snapshot_every: u64,
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
        dir: dir.to_path_buf(),
        policy,
        segment_bytes,
        snapshot_every,
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

    /// Stops the engine and starts a new one from the journal (snapshot plus replay, as
    /// at start-up), checking that it rebuilt exactly what was acknowledged.
    fn restart(mut self) -> Rig {
        self.settle();
        let hash = self.manager().state_hash();
        let (store, events) = (self.store.clone(), std::mem::take(&mut self.events));
        let (now, next_request, trade_id) = (self.now, self.next_request, self.trade_id);
        let (dir, policy, segment_bytes, every) =
            (self.dir.clone(), self.policy, self.segment_bytes, self.snapshot_every);
        drop(self);
        let mut r = rig(&dir, policy, segment_bytes, every);
        assert_eq!(r.manager().state_hash(), hash, "the restart rebuilt the same state");
        assert!(r.store == store, "the restart rebuilt the same read model");
        (r.now, r.next_request, r.trade_id, r.events) = (now, next_request, trade_id, events);
        r.store = store;
        r
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
        /// Sent without a client order id (the engine generates one).
        no_client_id: bool,
    },
    Cancel(usize),
    Replace {
        pick: usize,
        qty: Option<i64>,
        offset: Option<i64>,
    },
    MassCancel(u32),
    Kill(bool),
    /// Global (0) or instrument (1) kill switch.
    KillScope(u8, bool),
    State(u32, u8),
    /// An admin sets an account's max open orders.
    Limits(u32, u32),
    /// The engine stops and starts again from the journal.
    Restart,
    Quote(i64, i64, i64),
    Trade(i64, i64),
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2u32, any::<bool>(), any::<bool>(), 0..4u8, 0..5u8, -6..6i64, 1..20i64, prop::bool::weighted(0.1),
              prop::bool::weighted(0.4))
            .prop_map(|(account, paper, side, kind, tif, offset, qty, post_only, no_client_id)| Op::New {
                account, paper, side, kind, tif, offset, qty, post_only, no_client_id
            }),
        2 => any::<usize>().prop_map(Op::Cancel),
        2 => (any::<usize>(), prop::option::of(1..20i64), prop::option::of(-6..6i64))
            .prop_map(|(pick, qty, offset)| Op::Replace { pick, qty, offset }),
        1 => (0..2u32).prop_map(Op::MassCancel),
        1 => prop::bool::weighted(0.3).prop_map(Op::Kill),
        1 => (0..2u32, 0..4u8).prop_map(|(a, s)| Op::State(a, s)),
        1 => (0..2u8, prop::bool::weighted(0.3)).prop_map(|(k, on)| Op::KillScope(k, on)),
        1 => (0..2u32, 1..15u32).prop_map(|(a, n)| Op::Limits(a, n)),
        1 => Just(Op::Restart),
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
            no_client_id,
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
            if no_client_id {
                o.client_id = ClientOrderId::EMPTY;
            }
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
        Op::KillScope(k, on) => r.send(
            0,
            CommandKind::KillSwitch {
                scope: if k == 0 {
                    KillScope::Global
                } else {
                    KillScope::Instrument(INTERNAL)
                },
                on,
            },
        ),
        Op::Limits(a, n) => {
            let mut l = limits()[0];
            l.max_open_orders = n;
            r.send(
                0,
                CommandKind::SetLimits {
                    target: AccountId(a),
                    limits: l,
                },
            );
        }
        // Needs the rig by value: see `run_ops`.
        Op::Restart => {}
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

/// Applies `ops` in order (restarts included).
fn run_ops(mut r: Rig, ops: &[Op]) -> Rig {
    for (n, op) in ops.iter().enumerate() {
        if matches!(op, Op::Restart) {
            r = r.restart();
        } else {
            apply(&mut r, op, n);
        }
    }
    r
}

/// Every accepted order has its own client order id within its account, across every
/// restart, and no order sent without one was refused as a duplicate.
fn generated_ids_never_repeat(acked: &[(Step, Vec<OrderEvent>)]) {
    let mut seen = std::collections::HashSet::new();
    for e in acked.iter().flat_map(|(_, e)| e) {
        match e.data {
            OrderEventData::Order {
                kind: OrderEventKind::Accepted,
                order,
            } => assert!(
                seen.insert((order.account, order.client_id)),
                "client order id {:?} accepted twice for account {:?}",
                order.client_id,
                order.account
            ),
            OrderEventData::Rejected {
                reject: Reject::DuplicateClientOrderId,
                client_id,
                ..
            } => assert!(
                !client_id.as_str().starts_with("auto-"),
                "a generated id {client_id:?} was refused as a duplicate"
            ),
            _ => {}
        }
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
        let r = run_ops(rig(&dir, FsyncPolicy::None, 1 << 20, snapshot_every), &ops);
        generated_ids_never_repeat(&r.events);
        let live_hash = r.manager().state_hash();
        let live_store = r.store.clone();
        prop_assert_eq!(r.stats.discarded.get(), 0);
        prop_assert_eq!(r.stats.snapshot_errors.get(), 0);
        drop(r);
        // Taken by this run or an earlier one (before a restart).
        let snapshots = journal::snapshot::list(&dir).expect("list").len();

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
                // Some without a client order id.
                no_client_id: n % 5 == 1,
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
    let records = records_of(&last);
    let &(last_start, last_len) = records.last().expect("records");
    // Cut inside the last record at several points.
    for cut in [1, 7, 8, 20, 47, 59, 60, 61, last_len - 1] {
        std::fs::write(&last, &full[..last_start + last_len - cut]).expect("write");
        let (_, s, rec) = recover_into(&dir).expect("a torn tail is not corruption");
        let torn = rec.tail.torn.expect("reported torn");
        assert_eq!(torn.offset, last_start as u64);
        assert!(s == store_upto(&acked, s.last_seq), "a prefix of what was acknowledged");
    }
    // Zeros after the last record: under batch, not what a crash leaves.
    let mut padded = full.clone();
    padded.extend_from_slice(&[0; 100]);
    std::fs::write(&last, &padded).expect("write");
    let err = recover_into(&dir).err().expect("zeros under batch are damage");
    assert!(
        matches!(&err, JournalError::Corrupt { path, offset, .. } if *path == last && *offset == full.len() as u64),
        "{err}"
    );
    // A partial record header there is a torn tail; opening for writing cuts it off
    // and the next run appends cleanly after it.
    let mut partial = full.clone();
    partial.extend_from_slice(&journal::format::RECORD_MARKER[..3]);
    std::fs::write(&last, &partial).expect("write");
    let (m, _, rec) = recover_into(&dir).expect("a torn tail");
    assert_eq!(m.state_hash(), hash);
    assert_eq!(rec.tail.torn.map(|t| t.bytes), Some(3));
    let (mut m, mut s) = (manager_with(&limits()), store());
    let (w, rec) = journal::open(&dir, FsyncPolicy::Batch, 1 << 20, &mut m, &mut s, &run_start()).expect("open");
    assert_eq!(rec.tail.torn.map(|t| t.bytes), Some(3));
    drop(w);
    let (m, _, rec) = recover_into(&dir).expect("clean again");
    assert!(rec.tail.torn.is_none());
    assert_eq!(m.state_hash(), hash);
}

/// Every record of a segment file: (offset, length).
fn records_of(seg: &Path) -> Vec<(usize, usize)> {
    let buf = std::fs::read(seg).expect("read");
    let mut out = Vec::new();
    let mut at = journal::format::SEGMENT_HEADER;
    while at < buf.len() {
        let r = journal::format::read_record(&buf[at..]).expect("an intact record");
        out.push((at, r.len));
        at += r.len;
    }
    out
}

/// One way of damaging a segment file at a byte position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// One bit flipped.
    Flip(usize),
    /// The byte set to zero.
    Zero(usize),
    /// The file cut there.
    Truncate(usize),
    /// A byte inserted there (the file grows by one).
    Insert(usize),
}

impl Fault {
    /// The damaged file, or `None` when the fault changes nothing.
    fn apply(self, orig: &[u8]) -> Option<Vec<u8>> {
        let mut b = orig.to_vec();
        match self {
            Fault::Flip(i) => b[i] ^= 1 << (i % 8),
            Fault::Zero(i) if b[i] == 0 => return None,
            Fault::Zero(i) => b[i] = 0,
            Fault::Truncate(i) => b.truncate(i),
            Fault::Insert(i) => b.insert(i, (i as u8).wrapping_mul(31) | 1),
        }
        Some(b)
    }
}

/// Records' payloads as `scan` (the reader start-up and `journal verify` use) returns them.
fn scan_payloads(dir: &Path) -> Result<(Tail, Vec<Vec<u8>>), JournalError> {
    let mut out = Vec::new();
    let tail = journal::scan(dir, |_, p| {
        out.push(p.to_vec());
        Ok(())
    })?;
    Ok((tail, out))
}

/// The read model built from journal records (decoded here, not by recovery).
fn store_of(payloads: &[Vec<u8>]) -> OrderStore {
    let mut s = store();
    for p in payloads {
        if let journal::Record::Step { step, events } = journal::record::decode(p).expect("decodes") {
            s.apply_step(&step, &events);
        }
    }
    s
}

/// A scratch directory in memory where there is one (`/dev/shm`): thousands of
/// rewritten files cost nothing there.
fn scratch_dir(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let dir = temp_dir(name);
    match (shm.is_dir(), dir.file_name()) {
        (true, Some(leaf)) => shm.join(leaf),
        _ => dir,
    }
}

/// Replaces a file's contents in place (no truncation to zero, which some file
/// systems answer with a flush).
fn overwrite(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).expect("open");
    f.write_all_at(bytes, 0).expect("write");
    f.set_len(bytes.len() as u64).expect("set length");
}

fn copy_journal(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).expect("dir");
    for seg in segments(from) {
        std::fs::copy(&seg, to.join(seg.file_name().expect("name"))).expect("copy");
    }
}

/// Fault injection: every byte of a middle segment and of the last segment (their
/// headers and every record) is flipped, zeroed, cut and extended in turn. Start-up
/// must then either recover exactly the acknowledged records or refuse with the
/// damaged segment and the offset of the damaged record; only a cut inside the last
/// segment (the file ends inside its last record) may lose records, and then exactly
/// those that are not complete in the file. The reader is checked for every fault,
/// the whole start-up path (`journal::open`: recovery, cutting a torn tail, a new
/// run) for a sample.
#[test]
fn damage_anywhere_is_refused_and_only_a_record_the_file_ends_inside_is_cut() {
    let dir = temp_dir("faults");
    let _c1 = Cleanup(dir.clone());
    let work = scratch_dir("faults-work");
    let _c2 = Cleanup(work.clone());
    // The smallest segment size that gives several segments with several records in
    // the last one (record sizes follow the step format, so this is not a constant).
    let mut hash = [0; 32];
    for segment_bytes in [2 << 10, 3 << 10, 4 << 10, 6 << 10, 8 << 10, 12 << 10] {
        let _ = std::fs::remove_dir_all(&dir);
        hash = sample_run(&dir, FsyncPolicy::Batch, segment_bytes).1;
        let segs = segments(&dir);
        if segs.len() >= 3 && segs.last().is_some_and(|l| records_of(l).len() >= 3) {
            break;
        }
    }
    let segs = segments(&dir);
    assert!(segs.len() >= 3, "several segments ({})", segs.len());
    let (_, all) = scan_payloads(&dir).expect("clean");
    let last = segs.len() - 1;
    assert!(
        records_of(&segs[last]).len() >= 3,
        "several records in the last segment"
    );
    let before_last: usize = segs[..last].iter().map(|s| records_of(s).len()).sum();
    // The state after each prefix of the journal that a cut in the last segment can
    // leave (computed from clean copies cut at record boundaries).
    let mut prefix_hash = std::collections::HashMap::new();
    for (k, &(at, _)) in records_of(&segs[last]).iter().enumerate() {
        copy_journal(&dir, &work);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(work.join(segs[last].file_name().expect("name")))
            .expect("open");
        f.set_len(at as u64).expect("cut");
        let (m, _, _) = recover_into(&work).expect("a clean prefix");
        prefix_hash.insert(before_last + k, m.state_hash());
    }
    prefix_hash.insert(all.len(), hash);

    let mut faults = 0;
    let mut opened = 0;
    for target in [1, last] {
        let seg = &segs[target];
        let name = seg.file_name().expect("name");
        let orig = std::fs::read(seg).expect("read");
        let recs = records_of(seg);
        let before: usize = segs[..target].iter().map(|s| records_of(s).len()).sum();
        // Where the record holding byte `i` starts (0 in the segment header; the end
        // of the file past the last record).
        let record_at = |i: usize| -> usize {
            if i < journal::format::SEGMENT_HEADER {
                0
            } else if i >= orig.len() {
                orig.len()
            } else {
                recs.iter().rev().map(|r| r.0).find(|&at| at <= i).unwrap_or(0)
            }
        };
        // Records kept when the file is cut at `i`.
        let whole_before = |i: usize| recs.iter().filter(|r| r.0 + r.1 <= i).count();
        copy_journal(&dir, &work);
        let path = work.join(name);
        for i in 0..=orig.len() {
            for fault in [Fault::Flip(i), Fault::Zero(i), Fault::Truncate(i), Fault::Insert(i)] {
                if i == orig.len() && !matches!(fault, Fault::Insert(_)) {
                    continue;
                }
                let Some(bad) = fault.apply(&orig) else { continue };
                overwrite(&path, &bad);
                faults += 1;
                let outcome = scan_payloads(&work);
                let cut = matches!(fault, Fault::Truncate(_));
                let expect_kept = if cut { before + whole_before(i) } else { all.len() };
                match &outcome {
                    Ok((tail, got)) => {
                        assert!(
                            target == last && (cut || got.len() == all.len()),
                            "{fault:?} in segment {target}: accepted, {} of {} records",
                            got.len(),
                            all.len()
                        );
                        assert_eq!(got.len(), expect_kept, "{fault:?}: records kept");
                        assert!(
                            got[..] == all[..expect_kept],
                            "{fault:?}: exactly the records in the file"
                        );
                        if cut && i < orig.len() && i != recs.get(whole_before(i)).map_or(orig.len(), |r| r.0) {
                            let torn = tail.torn.as_ref().expect("a cut record is reported");
                            assert_eq!(torn.offset as usize, record_at(i), "{fault:?}");
                        }
                    }
                    Err(e) => {
                        assert!(
                            !(cut && target == last),
                            "{fault:?}: a cut inside the last segment is a torn tail, got {e}"
                        );
                        let JournalError::Corrupt { path: p, offset, .. } = e else {
                            panic!("{fault:?}: {e}")
                        };
                        if !cut {
                            assert_eq!(p, &path, "{fault:?}: {e}");
                            assert_eq!(*offset as usize, record_at(i), "{fault:?}: {e}");
                        }
                    }
                }
                // The whole start-up path, for a sample.
                if faults % 97 == 0 {
                    opened += 1;
                    let (mut m, mut s) = (manager_with(&limits()), store());
                    let scratch = scratch_dir("faults-open");
                    let _c3 = Cleanup(scratch.clone());
                    copy_journal(&work, &scratch);
                    let started = journal::open(&scratch, FsyncPolicy::None, 1 << 11, &mut m, &mut s, &run_start());
                    match (&outcome, started) {
                        (Ok((_, got)), Ok((w, _))) => {
                            drop(w);
                            assert_eq!(m.state_hash(), prefix_hash[&got.len()], "{fault:?}: state");
                            assert!(s == store_of(got), "{fault:?}: read model");
                            let (m2, _, rec) = recover_into(&scratch).expect("clean after the cut");
                            assert!(rec.tail.torn.is_none(), "{fault:?}");
                            assert_eq!(m2.state_hash(), m.state_hash(), "{fault:?}");
                        }
                        (Err(_), Err(e)) => assert!(matches!(e, JournalError::Corrupt { .. }), "{fault:?}: {e}"),
                        (a, b) => panic!("{fault:?}: the reader said {:?}, start-up {:?}", a.is_ok(), b.is_ok()),
                    }
                }
            }
        }
        overwrite(&path, &orig);
    }
    assert!(faults > 4000, "{faults} faults");
    assert!(opened > 40, "{opened} start-ups");
}

/// The two reports: a length field off by one in the middle of the last
/// segment, and the last three records zeroed. Both stop start-up under `batch`;
/// without fsync per commit, zeros where records were are what a power cut leaves and
/// are cut with a warning (the documented risk of those policies).
#[test]
fn a_damaged_length_or_zeroed_records_stop_start_up() {
    for policy in [FsyncPolicy::Batch, FsyncPolicy::None] {
        let dir = temp_dir("issue");
        let _cleanup = Cleanup(dir.clone());
        let (_, hash, _) = sample_run(&dir, policy, 1 << 20);
        let seg = segments(&dir).pop().expect("segment");
        let orig = std::fs::read(&seg).expect("read");
        let recs = records_of(&seg);
        let (mid, _) = recs[recs.len() / 2];
        let mut bad = orig.clone();
        let len = u32::from_le_bytes(bad[mid + 8..mid + 12].try_into().unwrap());
        bad[mid + 8..mid + 12].copy_from_slice(&(len + 1).to_le_bytes());
        std::fs::write(&seg, &bad).expect("write");
        let err = recover_into(&dir).err().expect("a damaged length is damage");
        assert!(
            matches!(&err, JournalError::Corrupt { path, offset, .. } if *path == seg && *offset == mid as u64),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("at byte {mid}")), "{err}");

        let mut zeroed = orig.clone();
        let (from, _) = recs[recs.len() - 3];
        zeroed[from..].fill(0);
        std::fs::write(&seg, &zeroed).expect("write");
        match (policy, recover_into(&dir)) {
            (FsyncPolicy::Batch, Err(e)) => assert!(
                matches!(&e, JournalError::Corrupt { offset, .. } if *offset == from as u64),
                "{e}"
            ),
            (FsyncPolicy::None, Ok((m, _, rec))) => {
                assert_eq!(
                    rec.tail.torn.map(|t| (t.offset, t.bytes)),
                    Some((from as u64, (orig.len() - from) as u64))
                );
                assert_ne!(m.state_hash(), hash);
            }
            (p, r) => panic!("{p:?}: {:?}", r.map(|_| ())),
        }
        // Zeros appended after the last record: damage under batch, a lost block
        // otherwise; nothing is lost either way.
        let mut padded = orig.clone();
        padded.extend_from_slice(&[0; 700]);
        std::fs::write(&seg, &padded).expect("write");
        let r = recover_into(&dir);
        match policy {
            FsyncPolicy::Batch => assert!(r.is_err()),
            _ => assert_eq!(r.expect("a torn tail").0.state_hash(), hash),
        }
    }
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

    // A payload changed and both checksums recomputed: the hash chain catches it.
    let mut tampered = original.clone();
    let at = journal::format::SEGMENT_HEADER;
    let header = journal::format::RECORD_HEADER;
    let len = u32::from_le_bytes(tampered[at + 8..at + 12].try_into().unwrap()) as usize;
    tampered[at + header] ^= 0x01;
    let crc = crc32(&tampered[at + header..at + header + len]);
    tampered[at + 12..at + 16].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32(&tampered[at..at + header - 4]);
    tampered[at + header - 4..at + header].copy_from_slice(&crc.to_le_bytes());
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
fn limits_replay_as_they_were_and_a_changed_configuration_applies_from_the_next_run() {
    let dir = temp_dir("limits");
    let _cleanup = Cleanup(dir.clone());
    let (_, hash, _) = sample_run(&dir, FsyncPolicy::None, 1 << 20);
    // Recovered with tighter configured limits: history replays under the old ones.
    let mut tight = limits();
    tight[0].max_open_orders = 1;
    let (m, _, rec) = recover_with(manager_with(&tight), &dir).expect("replays");
    assert_eq!(m.state_hash(), hash);
    assert_eq!(rec.limits, limits());
    // The next run starts with the configured limits where they changed, and says so
    // in its start record.
    let (mut m, mut s) = (manager_with(&tight), store());
    let mut run = run_start();
    run.limits = tight.clone();
    let (w, rec) = journal::open(&dir, FsyncPolicy::None, 1 << 20, &mut m, &mut s, &run).expect("open");
    assert_eq!(m.limits(), tight);
    assert_eq!(
        rec.reconfigured,
        vec![AccountId(0)],
        "only account 0's configuration changed"
    );
    drop(w);
    let (m, _, _) = recover_into(&dir).expect("replays");
    assert_eq!(m.limits(), tight);
    assert_eq!(m.configured_limits(), &tight[..]);
}

/// Opens the journal as the engine does at start-up, with `configured` limits.
fn start_with(dir: &Path, configured: &[RiskLimits]) -> (OrderManager, Recovered) {
    let (mut m, mut s) = (manager_with(configured), store());
    let mut run = run_start();
    run.limits = configured.to_vec();
    let (w, rec) = journal::open(dir, FsyncPolicy::Batch, 1 << 20, &mut m, &mut s, &run).expect("open");
    drop(w);
    (m, rec)
}

#[test]
fn admin_changes_survive_restarts_from_the_journal_and_from_snapshots() {
    for snapshot_every in [u64::MAX, 1] {
        let dir = temp_dir("admin");
        let _cleanup = Cleanup(dir.clone());
        let mut r = rig(&dir, FsyncPolicy::Batch, 1 << 20, snapshot_every);
        let mut changed = limits()[1];
        changed.max_open_orders = 3;
        changed.orders_per_sec = 7;
        r.send(
            0,
            CommandKind::SetLimits {
                target: AccountId(1),
                limits: changed,
            },
        );
        r.send(
            0,
            CommandKind::SetTradingState {
                target: AccountId(0),
                state: TradingState::ReduceOnly,
            },
        );
        r.send(
            0,
            CommandKind::KillSwitch {
                scope: KillScope::Instrument(PAPER),
                on: true,
            },
        );
        r.send(
            0,
            CommandKind::KillSwitch {
                scope: KillScope::Account(AccountId(1)),
                on: true,
            },
        );
        let hash = r.manager().state_hash();
        drop(r);
        let check = |m: &OrderManager, why: &str| {
            assert_eq!(
                m.account(AccountId(1)).map(|a| a.limits),
                Some(changed),
                "{why}: limits"
            );
            assert_eq!(
                m.account(AccountId(0)).map(|a| a.state),
                Some(TradingState::ReduceOnly),
                "{why}: trading state"
            );
            assert_eq!(
                m.account(AccountId(1)).map(|a| a.killed),
                Some(true),
                "{why}: account kill switch"
            );
            let mut m = m.clone();
            let events = run(&mut m, 0, 0, CommandKind::New(limit(PAPER, "after", Side::Buy, MID, 1)));
            assert_eq!(
                rejection(&events),
                Some("KILL_SWITCH_ACTIVE"),
                "{why}: instrument kill switch"
            );
        };
        // A restart with the same configuration keeps every change (twice: the second
        // start record must not undo them either).
        for round in 0..2 {
            let (m, rec) = start_with(&dir, &limits());
            assert!(rec.reconfigured.is_empty());
            assert_eq!(m.state_hash(), hash, "round {round}");
            check(&m, "restart");
            assert_eq!(
                rec.snapshot.is_some(),
                snapshot_every == 1,
                "from a snapshot when one was taken"
            );
        }
        // The global switch, and releasing, survive as well.
        let mut r = rig(&dir, FsyncPolicy::Batch, 1 << 20, snapshot_every);
        r.send(
            0,
            CommandKind::KillSwitch {
                scope: KillScope::Global,
                on: true,
            },
        );
        r.send(
            0,
            CommandKind::KillSwitch {
                scope: KillScope::Account(AccountId(1)),
                on: false,
            },
        );
        drop(r);
        let (m, _) = start_with(&dir, &limits());
        assert_eq!(m.account(AccountId(1)).map(|a| a.killed), Some(false));
        let mut m2 = m.clone();
        let events = run(&mut m2, 0, 0, CommandKind::New(limit(INTERNAL, "g", Side::Buy, MID, 1)));
        assert_eq!(rejection(&events), Some("KILL_SWITCH_ACTIVE"), "global kill switch");
        // A changed configuration replaces the limits an admin set for that account
        // (and only there); account 0's unchanged configuration does not touch it.
        let mut conf = limits();
        conf[1].max_open_orders = 9;
        let (m, rec) = start_with(&dir, &conf);
        assert_eq!(rec.reconfigured, vec![AccountId(1)]);
        assert_eq!(m.account(AccountId(1)).map(|a| a.limits), Some(conf[1]));
        assert_eq!(m.account(AccountId(0)).map(|a| a.limits), Some(limits()[0]));
    }
}

/// The client order id the last acknowledged order got.
fn last_accepted_client_id(r: &Rig) -> Option<String> {
    r.events
        .iter()
        .rev()
        .flat_map(|(_, e)| e.iter().rev())
        .find_map(|e| match e.data {
            OrderEventData::Order {
                kind: OrderEventKind::Accepted,
                order,
            } => Some(order.client_id.as_str().to_owned()),
            _ => None,
        })
}

#[test]
fn generated_client_ids_skip_taken_ones_and_continue_after_restarts() {
    let dir = temp_dir("auto-ids");
    let _cleanup = Cleanup(dir.clone());
    let mut r = rig(&dir, FsyncPolicy::Batch, 1 << 20, 2);
    let unnamed = |price: i64| {
        let mut o = limit(INTERNAL, "x", Side::Buy, price, 1);
        o.client_id = ClientOrderId::EMPTY;
        o
    };
    // A client took "auto-1" itself: the engine does not hand it out again.
    r.send(0, CommandKind::New(limit(INTERNAL, "auto-1", Side::Buy, MID - 10, 1)));
    r.send(0, CommandKind::New(unnamed(MID - 11)));
    assert_eq!(last_accepted_client_id(&r).as_deref(), Some("auto-2"));
    // A dry run does not use one up.
    r.send(0, CommandKind::Test(unnamed(MID - 12)));
    r.send(1, CommandKind::New(unnamed(MID - 12)));
    assert_eq!(last_accepted_client_id(&r).as_deref(), Some("auto-3"));
    assert_eq!(r.manager().generated_client_ids(), 3);
    for (round, want) in [(0, "auto-4"), (1, "auto-5")] {
        r = r.restart();
        assert_eq!(r.manager().generated_client_ids(), 3 + round);
        r.send(0, CommandKind::New(unnamed(MID - 13 - round as i64)));
        assert_eq!(
            last_accepted_client_id(&r).as_deref(),
            Some(want),
            "after restart {round}"
        );
    }
    generated_ids_never_repeat(&r.events);
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
fn a_segment_header_cut_short_by_a_crash_is_torn_and_anything_else_is_refused() {
    let dir = temp_dir("short-header");
    let _cleanup = Cleanup(dir.clone());
    std::fs::create_dir_all(&dir).expect("dir");
    let first = dir.join(journal::format::segment_name(1));
    let header = journal::format::encode_header(1, &journal::format::GENESIS);
    for cut in [0, 8, 30, journal::format::SEGMENT_HEADER - 1] {
        std::fs::write(&first, &header[..cut]).expect("write");
        let (_, _, rec) = recover_into(&dir).expect("a crash while creating the first segment");
        assert_eq!(rec.tail.torn.map(|t| t.bytes), Some(cut as u64));
    }
    let mut wrong = header;
    wrong[20] ^= 1;
    std::fs::write(&first, &wrong[..30]).expect("write");
    assert!(recover_into(&dir).is_err(), "not the header this segment must have");
    // Opening cuts the torn one and starts the journal cleanly.
    std::fs::write(&first, &header[..20]).expect("write");
    let (m, rec) = start_with(&dir, &limits());
    assert_eq!(rec.tail.records, 0);
    let (m2, _, rec) = recover_into(&dir).expect("clean");
    assert!(rec.tail.torn.is_none());
    assert_eq!((rec.tail.records, m2.state_hash()), (1, m.state_hash()));
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
