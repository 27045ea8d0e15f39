//! The order journal end to end: the engine runs random order flow, market data,
//! admin changes and restarts, the real journal thread makes it durable and forwards
//! it, and recovery from the files rebuilds exactly the same state (state hash) and the
//! same acknowledged events; generated client order ids never repeat across restarts.
//! Also: only a torn last record is cut, and fault injection over every byte of
//! several records (flip, zero, truncate, insert) shows that damage stops start-up
//! with the segment and offset instead of dropping acknowledged records; tampering is
//! caught, a changed configuration is caught, limits set at run time survive while a
//! changed configuration applies, and a full disk stops acknowledgement instead of
//! lying. Retention never removes a segment recovery needs, over generated runs with
//! restarts and damaged snapshots. The encoded bytes of every journaled type (records,
//! step inputs, events, a snapshot file) are pinned (`journal_bytes`), so the format
//! cannot change by accident.

use crate::orders_common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use orders_common::*;
use proptest::prelude::*;
use stocksblitz_engine::journal::{
    self, FsyncPolicy, JournalError, JournalStats, JournalThread, Recovered, Retention, RetentionAction, RunStart,
    Snapshotter, Tail,
};
use stocksblitz_engine::orders::gateway::{command_queue, CommandQueue, OrderGateway, OrderOutput};
use stocksblitz_engine::orders::store::OrderStore;
use stocksblitz_engine::orders::{
    AccountId, ClientOrderId, Command, CommandKind, IdemTag, Input, KillScope, OrderCapacity, OrderEvent,
    OrderEventData, OrderEventKind, OrderId, OrderManager, OrderType, Reject, RiskLimits, Step, StepAssembler,
    TimeInForce, TradingState, VenueKind,
};
use stocksblitz_engine::ring::{ring, RingConsumer};
use stocksblitz_engine::tick_ring::{tick_ring, TickProducer};
use stocksblitz_engine::{
    Aggressor, BookFlags, Engine, EngineConfig, EngineEvent, FeedStatus, InstrumentId, Price, Qty, Side, Tick,
    TickData, UnixNanos,
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
    feed: TickProducer,
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
    retention: Retention,
    /// The engine's `[cluster]` shard and owned instruments.
    node: Node,
}

/// An engine node's `cluster.shard` and `cluster.instruments` (default: a single
/// engine's: shard 0, every instrument).
#[derive(Debug, Clone, Default)]
struct Node {
    shard: u8,
    owned: Option<Vec<InstrumentId>>,
}

impl Node {
    fn shard(shard: u8) -> Self {
        Node { shard, owned: None }
    }
}

fn rig(dir: &Path, policy: FsyncPolicy, segment_bytes: u64, snapshot_every: u64) -> Rig {
    rig_with(dir, policy, segment_bytes, snapshot_every, Retention::default(), 0)
}

/// `export_hold`: the record a journal reader (the QuestDB sink's export) still needs
/// (0: none), in place before the snapshot thread's first round, as the server does.
fn rig_with(
    dir: &Path,
    policy: FsyncPolicy,
    segment_bytes: u64,
    snapshot_every: u64,
    retention: Retention,
    export_hold: u64,
) -> Rig {
    rig_sharded(
        dir,
        policy,
        segment_bytes,
        snapshot_every,
        retention,
        export_hold,
        Node::default(),
    )
}

/// [`rig_with`] for an engine node: its shard set before recovery and its owned
/// instruments when the journal opens, as the server does.
fn rig_sharded(
    dir: &Path,
    policy: FsyncPolicy,
    segment_bytes: u64,
    snapshot_every: u64,
    retention: Retention,
    export_hold: u64,
    node: Node,
) -> Rig {
    let (feed, input) = tick_ring("feed", 4096);
    let (out, market) = ring("api", 1 << 16);
    // Small: steps wait in the engine's backlog and cross ring batches.
    let (order_out, journal_in) = ring("order-journal", 64);
    let (journal_out, acked) = ring("orders", 1 << 16);
    let queue = command_queue(1024);
    let mut manager = manager_with(&limits());
    manager.set_shard(node.shard).expect("a fresh manager takes any shard");
    manager.set_owned(node.owned.as_deref());
    let mut store = store();
    let (writer, rec) =
        journal::open(dir, policy, segment_bytes, &mut manager, &mut store, &run_start()).expect("open");
    manager.republish_internal_books(UnixNanos(T0));
    let stats = Arc::new(JournalStats::default());
    stats.export_hold.set(export_hold);
    let snapshots = Snapshotter::new(
        dir,
        &rec,
        manager.clone(),
        store.clone(),
        snapshot_every,
        2,
        Arc::clone(&stats),
    )
    .with_retention(retention);
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
        retention,
        node,
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
            // One round of the snapshot thread (errors are counted in the stats).
            stocksblitz_engine::agent::Agent::poll(&mut self.snapshots);
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
        self.queue_command(account, kind, idempotency);
        self.settle();
    }

    /// Queues a command without running the engine: several queued commands are taken
    /// one ahead, the next one hinted to the order path (`OrderManager::prefetch`).
    fn queue_command(&mut self, account: u32, kind: CommandKind, idempotency: Option<IdemTag>) {
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
    fn restart(self) -> Rig {
        let node = self.node.clone();
        self.restart_as(node)
    }

    /// [`restart`](Self::restart) with another `[cluster]` configuration (a changed
    /// ownership is in the state hash: then the open orders are compared instead).
    fn restart_as(mut self, node: Node) -> Rig {
        self.settle();
        let same_owned = node.owned == self.node.owned;
        let open: Vec<_> = self.manager().open_orders().copied().collect();
        let hash = self.manager().state_hash();
        let (store, events) = (self.store.clone(), std::mem::take(&mut self.events));
        let (now, next_request, trade_id) = (self.now, self.next_request, self.trade_id);
        let (dir, policy, segment_bytes, every, retention) = (
            self.dir.clone(),
            self.policy,
            self.segment_bytes,
            self.snapshot_every,
            self.retention,
        );
        let hold = self.stats.export_hold.get();
        drop(self);
        let mut r = rig_sharded(&dir, policy, segment_bytes, every, retention, hold, node);
        if same_owned {
            assert_eq!(r.manager().state_hash(), hash, "the restart rebuilt the same state");
        }
        let reopened: Vec<_> = r.manager().open_orders().copied().collect();
        assert_eq!(reopened, open, "the restart rebuilt the same open orders");
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
        // Needs the rig by value: see `run_ops`.
        Op::Restart => {}
        Op::Quote(b, a, q) => r.quote(MID + b, MID + a, q),
        Op::Trade(p, q) => r.trade(MID + p, q),
        Op::Advance(ms) => r.advance(ms),
        _ => {
            if let Some((account, kind, key)) = command_of(r, op, n) {
                r.send_keyed(account, kind, key);
            }
        }
    }
}

/// The command `op` sends (account, kind, idempotency key), or `None` for an op that
/// is not a command (market data, time, restarts).
fn command_of(r: &Rig, op: &Op, n: usize) -> Option<(u32, CommandKind, Option<IdemTag>)> {
    Some(match *op {
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
            (account, CommandKind::New(o), key)
        }
        Op::Cancel(k) => {
            let id = r.pick(k);
            let account = r.manager().order(id).map_or(0, |o| o.account.0);
            (account, CommandKind::Cancel { order: id }, None)
        }
        Op::Replace { pick, qty, offset } => {
            let id = r.pick(pick);
            let account = r.manager().order(id).map_or(0, |o| o.account.0);
            let kind = CommandKind::Replace {
                order: id,
                qty: qty.map(Qty),
                price: offset.map(|o| Price(MID + o)),
            };
            (account, kind, None)
        }
        Op::MassCancel(a) => (a, CommandKind::MassCancel { instrument: None }, None),
        Op::Kill(on) => {
            let scope = KillScope::Account(AccountId(1));
            (0, CommandKind::KillSwitch { scope, on }, None)
        }
        Op::KillScope(k, on) => {
            let scope = if k == 0 {
                KillScope::Global
            } else {
                KillScope::Instrument(INTERNAL)
            };
            (0, CommandKind::KillSwitch { scope, on }, None)
        }
        Op::Limits(a, n) => {
            let mut l = limits()[0];
            l.max_open_orders = n;
            let target = AccountId(a);
            (0, CommandKind::SetLimits { target, limits: l }, None)
        }
        Op::State(a, s) => {
            let state = [
                TradingState::Active,
                TradingState::ReduceOnly,
                TradingState::Throttled,
                TradingState::Blocked,
            ][s as usize];
            (
                0,
                CommandKind::SetTradingState {
                    target: AccountId(a),
                    state,
                },
                None,
            )
        }
        Op::Restart | Op::Quote(..) | Op::Trade(..) | Op::Advance(_) => return None,
    })
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

/// [`recover_into`] for an engine configured as shard `shard`.
fn recover_shard(dir: &Path, shard: u8) -> Result<(OrderManager, OrderStore, Recovered), JournalError> {
    let mut m = manager_with(&limits());
    m.set_shard(shard).expect("a fresh manager takes any shard");
    recover_with(m, dir)
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
        // Half the runs on shard 0 (a single engine), half on another; most owning
        // every instrument, some only one (the other's orders are rejected).
        shard in prop_oneof![Just(0u8), any::<u8>()],
        owned in prop_oneof![4 => Just(None), 1 => Just(Some(vec![INTERNAL])), 1 => Just(Some(vec![PAPER]))],
    ) {
        let dir = temp_dir("prop");
        let _cleanup = Cleanup(dir.clone());
        let node = Node { shard, owned: owned.clone() };
        let rig = rig_sharded(&dir, FsyncPolicy::None, 1 << 20, snapshot_every, Retention::default(), 0, node);
        let r = run_ops(rig, &ops);
        ids_are_of_shard(&r.events, shard)?;
        orders_only_on(&r.events, owned.as_deref())?;
        generated_ids_never_repeat(&r.events);
        let live_hash = r.manager().state_hash();
        let live_store = r.store.clone();
        prop_assert_eq!(r.stats.discarded.get(), 0);
        prop_assert_eq!(r.stats.snapshot_errors.get(), 0);
        drop(r);
        // Taken by this run or an earlier one (before a restart).
        let snapshots = journal::snapshot::list(&dir).expect("list").len();

        // From the newest snapshot (when one was taken) plus the tail.
        let (m, s, rec) = recover_shard(&dir, shard).expect("recovers");
        prop_assert!(rec.tail.torn.is_none());
        prop_assert_eq!(rec.snapshot.is_some(), snapshots > 0);
        prop_assert!(rec.skipped.is_empty(), "{:?}", rec.skipped);
        // However often it was restarted, a start replays fewer records than the
        // snapshot interval.
        let replayed = rec.tail.next_seq - 1 - rec.snapshot.unwrap_or(0);
        prop_assert!(replayed < snapshot_every, "{replayed} records replayed, snapshots every {snapshot_every}");
        prop_assert_eq!(m.state_hash(), live_hash, "the same orders, books, positions and risk usage");
        prop_assert!(s == live_store, "the same read model (orders, fills, positions)");
        // And from the journal alone.
        remove_snapshots(&dir);
        let (m, s, rec) = recover_shard(&dir, shard).expect("recovers");
        prop_assert_eq!(rec.snapshot, None);
        prop_assert_eq!(m.state_hash(), live_hash);
        prop_assert!(s == live_store);
    }
}

/// Orders were placed only on `owned` instruments (all when `None`); new orders for
/// the others were rejected as not this engine's.
fn orders_only_on(acked: &[(Step, Vec<OrderEvent>)], owned: Option<&[InstrumentId]>) -> Result<(), TestCaseError> {
    let owns = |i: InstrumentId| owned.is_none_or(|o| o.contains(&i));
    for (step, events) in acked {
        for e in events {
            if let OrderEventData::Order { order, .. } = e.data {
                prop_assert!(owns(order.instrument), "{:?} placed on an instrument not owned", order);
            }
        }
        if let Input::Command(cmd) = step.input {
            if let CommandKind::New(n) = cmd.kind {
                if !owns(n.instrument) {
                    prop_assert!(
                        matches!(
                            events.as_slice(),
                            [OrderEvent {
                                data: OrderEventData::Rejected {
                                    reject: Reject::InstrumentNotOnThisEngine,
                                    ..
                                },
                                ..
                            }]
                        ),
                        "{:?}",
                        events
                    );
                }
            }
        }
    }
    Ok(())
}

/// Every order and fill id the run reported carries `shard` in its top 8 bits.
fn ids_are_of_shard(acked: &[(Step, Vec<OrderEvent>)], shard: u8) -> Result<(), TestCaseError> {
    use stocksblitz_engine::orders::{shard_of_fill, shard_of_order};
    for e in acked.iter().flat_map(|(_, e)| e) {
        match e.data {
            OrderEventData::Order { order, .. } => prop_assert_eq!(shard_of_order(order.id), shard),
            OrderEventData::Fill(f) => {
                prop_assert_eq!(shard_of_fill(f.id), shard);
                prop_assert_eq!(shard_of_order(f.order), shard);
            }
            _ => {}
        }
    }
    Ok(())
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
        // Some without a client order id.
        apply(&mut r, &varied_new(n, n % 5 == 1), n);
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

/// One op of the golden stream below, in about the mix of the property tests' [`op`].
fn golden_op(g: &mut Gen) -> Op {
    fn within(g: &mut Gen, lo: i64, hi: i64) -> i64 {
        lo + (g.next() % (hi - lo) as u64) as i64
    }
    match g.next() % 24 {
        0..=9 => Op::New {
            account: (g.next() % 2) as u32,
            paper: g.one_in(3),
            side: g.one_in(2),
            kind: if g.one_in(5) { (g.next() % 4) as u8 } else { 0 },
            tif: if g.one_in(4) { (g.next() % 5) as u8 } else { 0 },
            offset: within(g, -6, 6),
            qty: within(g, 1, 20),
            post_only: g.one_in(10),
            no_client_id: g.one_in(3),
        },
        10..=13 => Op::Cancel(g.next() as usize),
        14..=15 => Op::Replace {
            pick: g.next() as usize,
            qty: (!g.one_in(3)).then(|| within(g, 1, 20)),
            offset: (!g.one_in(3)).then(|| within(g, -6, 6)),
        },
        16 => Op::MassCancel((g.next() % 2) as u32),
        // Admin commands; a switch or a state engaged is released by a later one.
        17 => match g.next() % 4 {
            0 => Op::Kill(g.one_in(4)),
            1 => Op::KillScope((g.next() % 2) as u8, g.one_in(4)),
            2 => Op::State(
                (g.next() % 2) as u32,
                if g.one_in(3) { within(g, 1, 4) as u8 } else { 0 },
            ),
            _ => Op::Limits((g.next() % 2) as u32, within(g, 1, 15) as u32),
        },
        18..=19 => Op::Quote(within(g, -6, 0), within(g, 1, 6), within(g, 0, 15)),
        20..=21 => Op::Trade(within(g, -6, 6), within(g, 1, 15)),
        _ => Op::Advance(within(g, 1, 400)),
    }
}

/// The state hash the golden stream ends in. Pinned by the order path before the
/// engine took commands one ahead with a prefetch hint (issue 20), and unchanged by
/// it: a change of the order path that moves it changes behaviour, which must be
/// deliberate (update it with a note on why).
const PINNED_GOLDEN_STATE: &str = "6141c7763fa1255924101422aa995bd49a435701e32bdecdf52d799686d28262";

/// Issue 20's equivalence check: a fixed stream (seeded, the same on every machine)
/// of new orders of every type, cancels, replaces, admin commands, market data and
/// time, with commands queued up to 64 at a time so that the engine takes them one
/// ahead and hints each next one to the order path, as in production. The live state
/// ends in the pinned hash, and the journal replays to it (recovery and a restart).
#[test]
fn a_fixed_stream_ends_in_its_pinned_state_hash_and_its_journal_replays_to_it() {
    let dir = temp_dir("golden");
    let _cleanup = Cleanup(dir.clone());
    let mut r = rig(&dir, FsyncPolicy::None, 1 << 20, u64::MAX);
    let mut g = Gen(0x0901_de45_7ea3);
    let mut queued = 0;
    for n in 0..3_000 {
        let op = golden_op(&mut g);
        match command_of(&r, &op, n) {
            Some((account, kind, key)) if queued < 64 => {
                r.queue_command(account, kind, key);
                queued += 1;
            }
            _ => {
                r.settle();
                queued = 0;
                apply(&mut r, &op, n);
            }
        }
    }
    r.settle();
    let count =
        |want: fn(&OrderEventData) -> bool| r.events.iter().flat_map(|(_, e)| e).filter(|e| want(&e.data)).count();
    let (accepted, fills, rejected) = (
        count(|d| {
            matches!(
                d,
                OrderEventData::Order {
                    kind: OrderEventKind::Accepted,
                    ..
                }
            )
        }),
        count(|d| matches!(d, OrderEventData::Fill(_))),
        count(|d| matches!(d, OrderEventData::Rejected { .. })),
    );
    let mut codes = std::collections::BTreeMap::new();
    for e in r.events.iter().flat_map(|(_, e)| e) {
        if let OrderEventData::Rejected { reject, .. } = e.data {
            *codes.entry(reject.code()).or_insert(0) += 1;
        }
    }
    let work = format!("{accepted} accepted, {fills} fills, {rejected} rejected: {codes:?}");
    assert!(
        accepted > 300 && fills > 100 && rejected > 50,
        "the stream exercises the path: {work}"
    );
    let hash = r.manager().state_hash();
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex, PINNED_GOLDEN_STATE,
        "the golden stream's end state changed ({work})"
    );
    let (m, _, _) = recover_into(&dir).expect("the journal replays");
    assert_eq!(
        m.state_hash(),
        hash,
        "recovery from the journal rebuilds the pinned state"
    );
    // A restart (snapshot-less replay into a running engine) checks hash, open orders
    // and read model.
    drop(r.restart());
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
        assert!(
            s == store_upto(&acked, s.last_seq()),
            "a prefix of what was acknowledged"
        );
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

/// The issue's two reports: a length field off by one in the middle of the last
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

/// Flips a byte near the end of a snapshot file (its read model: the checksum fails).
fn damage(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read snapshot");
    let n = bytes.len();
    bytes[n - 3] ^= 0xFF;
    std::fs::write(path, &bytes).expect("write snapshot");
}

/// The first record the directory's segments hold.
fn first_kept(dir: &Path) -> u64 {
    journal::reader::segments(dir)
        .expect("segments")
        .first()
        .map_or(1, |s| s.first_seq)
}

/// Checks what retention promises about the directory as it is: every record after
/// the oldest kept snapshot's record minus the margin is still in a segment.
fn retention_kept_enough(dir: &Path, margin: u64) -> Result<(), TestCaseError> {
    if let Some((oldest, _)) = journal::snapshot::list(dir).expect("list").last() {
        let floor = oldest.saturating_sub(margin);
        let first = first_kept(dir);
        prop_assert!(
            first <= floor + 1,
            "the journal starts at record {first}, after the floor {floor} (oldest snapshot {oldest}, margin {margin})"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Retention on small segments over generated order flow with restarts, some of
    /// them with the newest snapshot damaged first (recovery must fall back to the
    /// older one, whose records retention must have kept): every restart rebuilds
    /// exactly what was acknowledged (the rig checks it), the journal still verifies
    /// from its first kept segment, and only with every snapshot gone does recovery
    /// refuse a trimmed journal, with the typed error saying what to restore.
    #[test]
    fn retention_never_removes_a_segment_recovery_needs(
        ops in prop::collection::vec(op(), 1..120),
        damage_at_restart in prop::collection::vec(any::<bool>(), 120),
        snapshot_every in 1..30u64,
        margin in prop_oneof![Just(0u64), 0..40u64],
        archive: bool,
        // The QuestDB sink's order export, at a record it has not stored yet (0: none).
        hold in prop_oneof![Just(0u64), 1..200u64],
    ) {
        let dir = temp_dir("retention");
        let _cleanup = Cleanup(dir.clone());
        let retention = Retention {
            action: if archive { RetentionAction::Archive } else { RetentionAction::Delete },
            margin_records: margin,
        };
        let mut r = rig_with(&dir, FsyncPolicy::None, 1 << 10, snapshot_every, retention, hold);
        // A damaged snapshot, while its file is still there: only one at a time (two
        // damaged snapshots is a double fault no retention setting can cover).
        let mut damaged: Option<PathBuf> = None;
        for (n, op) in ops.iter().enumerate() {
            if matches!(op, Op::Restart) {
                if damaged.as_ref().is_some_and(|p| !p.exists()) {
                    damaged = None;
                }
                let snaps = journal::snapshot::list(&dir).expect("list");
                if damage_at_restart[n] && damaged.is_none() && !snaps.is_empty() {
                    damage(&snaps[0].1);
                    damaged = Some(snaps[0].1.clone());
                }
                r = r.restart();
            } else {
                apply(&mut r, op, n);
            }
            retention_kept_enough(&dir, margin)?;
            if hold > 0 {
                prop_assert!(first_kept(&dir) <= hold, "record {} the export still needs was removed", hold);
            }
        }
        prop_assert_eq!(r.stats.retention_errors.get(), 0);
        prop_assert_eq!(r.stats.snapshot_errors.get(), 0);
        let live_hash = r.manager().state_hash();
        drop(r);
        let first = first_kept(&dir);
        if archive {
            // Every removed segment is in the archive, and the archive continues
            // exactly where the journal now starts.
            let archived = journal::reader::segments(&dir.join(journal::retention::ARCHIVE_DIR)).expect("archive");
            prop_assert_eq!(archived.is_empty(), first == 1);
            if let Some(a) = archived.first() {
                prop_assert_eq!(a.first_seq, 1);
            }
        }

        // The chain verifies from the first kept segment to the head.
        let (m, _, rec) = recover_into(&dir).expect("recovers");
        prop_assert_eq!(m.state_hash(), live_hash);
        let tail = journal::scan(&dir, |_, _| Ok(())).expect("a trimmed journal verifies");
        prop_assert_eq!(tail.next_seq, rec.tail.next_seq);
        prop_assert_eq!(tail.last_hash, rec.tail.last_hash);
        prop_assert_eq!(tail.records, rec.tail.next_seq - first);

        // The newest snapshot damaged now: the older one (if any) still has its records.
        let snaps = journal::snapshot::list(&dir).expect("list");
        if snaps.len() == 2 && damaged.is_none() {
            damage(&snaps[0].1);
            let (m, _, rec) = recover_into(&dir).expect("recovers from the older snapshot");
            prop_assert_eq!(rec.snapshot, Some(snaps[1].0));
            prop_assert_eq!(m.state_hash(), live_hash);
        }

        // No snapshot at all: a full replay, possible only on an untrimmed journal.
        remove_snapshots(&dir);
        match recover_into(&dir) {
            Ok((m, _, rec)) => {
                prop_assert_eq!(first, 1, "a full replay of a journal starting at {}", first);
                prop_assert_eq!(rec.snapshot, None);
                prop_assert_eq!(m.state_hash(), live_hash);
            }
            Err(JournalError::Trimmed { first_seq, what, .. }) => {
                prop_assert!(first > 1);
                prop_assert_eq!(first_seq, first);
                prop_assert!(what.contains("there is no snapshot") && what.contains("archive"), "{}", what);
            }
            Err(e) => prop_assert!(false, "unexpected error: {e}"),
        }
    }
}

#[test]
fn retention_archives_behind_the_oldest_snapshot_and_a_trimmed_journal_says_what_to_restore() {
    let dir = temp_dir("retention-archive");
    let _cleanup = Cleanup(dir.clone());
    let retention = Retention {
        action: RetentionAction::Archive,
        margin_records: 5,
    };
    let mut r = rig_with(&dir, FsyncPolicy::None, 1 << 10, 10, retention, 0);
    r.quote(MID - 1, MID + 1, 5);
    for n in 0..40 {
        apply(&mut r, &varied_new(n, false), n);
    }
    let hash = r.manager().state_hash();
    let stats = Arc::clone(&r.stats);
    // A reader (the QuestDB sink's order-event export) from the start of a trimmed
    // journal starts at the first kept record; a saved position before it is refused.
    let first = first_kept(&dir);
    assert!(first > 1, "segments were removed");
    assert!(stats.segments_removed.get() > 0);
    assert_eq!(stats.first_record.get(), first);
    let mut tailer = journal::JournalTailer::after(&dir, None).expect("tailer");
    let mut seen = Vec::new();
    tailer
        .poll(stats.head.get(), |seq, _| {
            seen.push(seq);
            Ok(())
        })
        .expect("reads the kept records");
    assert_eq!(seen.first(), Some(&first));
    assert_eq!(seen.last(), Some(&stats.head.get()));
    let err = journal::JournalTailer::after(&dir, Some((first - 2, [0; 32])))
        .err()
        .expect("trimmed");
    assert!(matches!(err, JournalError::Trimmed { .. }), "{err}");
    drop(r);

    let snaps = journal::snapshot::list(&dir).expect("list");
    assert_eq!(snaps.len(), 2);
    let oldest = snaps[1].0;
    assert!(first <= oldest - 5 + 1, "first kept {first}, oldest snapshot {oldest}");
    // Nothing more could have gone: the segment before the first kept one held records
    // above the floor... or the first kept one holds the floor's successor.
    let archive = dir.join(journal::retention::ARCHIVE_DIR);
    let mut archived: Vec<PathBuf> = std::fs::read_dir(&archive)
        .expect("archive")
        .map(|e| e.expect("entry").path())
        .collect();
    archived.sort();
    assert_eq!(archived.len() as u64, stats.segments_removed.get());

    // Both snapshots unusable: a typed error naming the first kept record, the
    // snapshot it would need and where removed segments are.
    for (_, p) in &snaps {
        damage(p);
    }
    let err = recover_into(&dir).err().expect("no full replay of a trimmed journal");
    let text = err.to_string();
    assert!(
        matches!(err, JournalError::Trimmed { first_seq, .. } if first_seq == first),
        "{text}"
    );
    assert!(
        text.contains(&format!("starts at record {first}"))
            && text.contains(&format!("snapshot taken at record {} or later", first - 1))
            && text.contains("no snapshot fits it")
            && text.contains("checksum")
            && text.contains("archive/"),
        "{text}"
    );
    // Restoring the archived segments makes the full replay possible again.
    for p in &archived {
        std::fs::rename(p, dir.join(p.file_name().expect("name"))).expect("restore segment");
    }
    let (m, _, rec) = recover_into(&dir).expect("full replay");
    assert_eq!((rec.snapshot, m.state_hash()), (None, hash));
    assert_eq!(rec.skipped.len(), 2);
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

/// The owned instruments are configuration that decides what history did: a change
/// between runs is journaled, so every run replays with the set it had, from
/// snapshots and from the journal alone, and a run that does not change it records
/// nothing.
#[test]
fn owned_instruments_replay_as_each_run_had_them() {
    let dir = temp_dir("owned");
    let _cleanup = Cleanup(dir.clone());
    let new = |r: &mut Rig, paper: bool, n: usize| {
        let op = Op::New {
            account: 0,
            paper,
            side: n.is_multiple_of(2),
            kind: 0,
            tif: 0,
            offset: if n.is_multiple_of(2) { -3 } else { 3 },
            qty: 2,
            post_only: false,
            no_client_id: false,
        };
        apply(r, &op, n);
        r.events.last().map(|(_, e)| e.clone()).unwrap_or_default()
    };
    let records = |dir: &Path| scan_payloads(dir).expect("scan").1.len();
    let rejected = |events: &[OrderEvent]| {
        events.iter().any(|e| {
            matches!(
                e.data,
                OrderEventData::Rejected {
                    reject: Reject::InstrumentNotOnThisEngine,
                    ..
                }
            )
        })
    };
    // Run 1 owns the internal instrument only.
    let only_internal = Node {
        shard: 0,
        owned: Some(vec![INTERNAL]),
    };
    let mut r = rig_sharded(
        &dir,
        FsyncPolicy::None,
        1 << 20,
        7,
        Retention::default(),
        0,
        only_internal,
    );
    r.quote(MID - 1, MID + 1, 5);
    for n in 0..12 {
        let events = new(&mut r, n % 2 == 0, n);
        assert_eq!(
            rejected(&events),
            n % 2 == 0,
            "paper orders are not this engine's: {events:?}"
        );
    }
    // A restart with the same configuration journals no ownership record.
    let before = records(&dir);
    let r = r.restart();
    assert_eq!(records(&dir), before + 1, "only the run's start record");
    // Run 3 owns everything: paper orders are taken, and history still replays.
    let mut r = r.restart_as(Node::default());
    for n in 12..20 {
        let events = new(&mut r, n % 2 == 0, n);
        assert!(!rejected(&events), "{events:?}");
    }
    let hash = r.manager().state_hash();
    drop(r);
    let (m, _, rec) = recover_into(&dir).expect("recovers");
    assert!(rec.snapshot.is_some());
    assert_eq!(m.state_hash(), hash);
    assert_eq!(m.owned(), None);
    remove_snapshots(&dir);
    let (m, _, _) = recover_into(&dir).expect("replays");
    assert_eq!(m.state_hash(), hash);
}

#[test]
fn a_journal_of_another_shard_is_refused_naming_both_shards() {
    use stocksblitz_engine::orders::ShardMismatch;
    let dir = temp_dir("shard");
    let _cleanup = Cleanup(dir.clone());
    let mut r = rig_sharded(
        &dir,
        FsyncPolicy::None,
        1 << 20,
        10,
        Retention::default(),
        0,
        Node::shard(5),
    );
    r.quote(MID - 1, MID + 1, 5);
    for n in 0..30 {
        let op = varied_new(n, false);
        apply(&mut r, &op, n);
        if n % 4 == 0 {
            r.trade(MID, 2);
        }
    }
    let hash = r.manager().state_hash();
    drop(r);
    assert!(
        !journal::snapshot::list(&dir).expect("list").is_empty(),
        "snapshots taken"
    );
    let refused = |dir: &Path| {
        for other in [0u8, 6] {
            let err = recover_shard(dir, other).err().expect("another shard is refused");
            assert!(matches!(err, JournalError::Shard { .. }), "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains("shard 5") && msg.contains(&format!("shard {other}")) && msg.contains("cluster.shard"),
                "{msg}"
            );
        }
    };
    // From a snapshot, then from the journal alone.
    refused(&dir);
    let (mut m, _, rec) = recover_shard(&dir, 5).expect("its own shard recovers");
    assert!(rec.snapshot.is_some());
    assert_eq!(m.state_hash(), hash);
    assert_eq!(
        m.set_shard(0),
        Err(ShardMismatch {
            configured: 0,
            found: 5
        }),
        "the recovered orders are shard 5's"
    );
    assert_eq!(m.set_shard(5), Ok(()));
    remove_snapshots(&dir);
    refused(&dir);
    let (m, _, _) = recover_shard(&dir, 5).expect("its own shard replays");
    assert_eq!(m.state_hash(), hash);
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

/// The journal's bytes, pinned: every record kind, every step input, every command and
/// event variant, and a snapshot file, encoded from fixed, fully populated values and
/// compared with hex written here (generated once from the format as it shipped). A
/// change to any field's encoding, a reordered variant or field, fails; the pinned bytes
/// also decode back to the same values. A deliberate format change bumps
/// `FORMAT_VERSION` and regenerates these.
mod journal_bytes {
    use super::*;
    use stocksblitz_engine::journal::record::{decode, Record, RecordRef};
    use stocksblitz_engine::journal::snapshot;
    use stocksblitz_engine::orders::{AccountRisk, Order};
    use stocksblitz_engine::orders::{
        CancelReason, DayClock, Depth, Fill, Input, Liquidity, MarketRef, Mtm, NewOrder, OrderStatus, Placement,
        Position, SelfTradeMode, StepContext, SweepEnd,
    };
    use stocksblitz_engine::surveillance::{Action, Anomaly, Rule, Severity};
    use stocksblitz_engine::{DataQuality, InstrumentId};

    fn hex(bytes: &[u8]) -> String {
        let mut s = String::new();
        for (i, b) in bytes.iter().enumerate() {
            if i > 0 && i % 48 == 0 {
                s.push('\n');
            }
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    fn unhex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex digit"))
            .collect()
    }

    fn pinned(name: &str) -> Option<Vec<u8>> {
        PINNED.iter().find(|(n, _)| *n == name).map(|(_, h)| unhex(h))
    }

    /// Compares `bytes` with the pinned hex for `name`; on a mismatch prints the actual
    /// hex (to regenerate after a deliberate, version-bumped format change).
    fn check(name: &str, bytes: &[u8], failures: &mut Vec<String>) {
        match pinned(name) {
            Some(want) if want == bytes => {}
            Some(_) => failures.push(format!(
                "{name}: encoding changed; now:\n(\"{name}\", \"{}\"),",
                hex(bytes)
            )),
            None => failures.push(format!("{name}: not pinned; now:\n(\"{name}\", \"{}\"),", hex(bytes))),
        }
    }

    fn limits_a() -> RiskLimits {
        RiskLimits {
            max_order_qty: 1_234_500_000_000,
            max_order_notional: 98_765_432_100_000_000,
            price_collar_bps: 250,
            max_open_orders: 77,
            max_position_qty: 5_000_000_000_001,
            max_gross_exposure: 1 << 70,
            daily_loss_limit: 3_000_000_000_007,
            orders_per_sec: 10,
            cancels_per_sec: 20,
            self_trade: SelfTradeMode::CancelOldest,
        }
    }

    fn limits_b() -> RiskLimits {
        RiskLimits {
            self_trade: SelfTradeMode::CancelBoth,
            orders_per_sec: 300,
            ..limits_a()
        }
    }

    fn limits_c() -> RiskLimits {
        RiskLimits {
            self_trade: SelfTradeMode::CancelNewest,
            ..limits_a()
        }
    }

    const AT: UnixNanos = UnixNanos(T0 + 123_456_789);

    fn new_a() -> NewOrder {
        NewOrder {
            instrument: InstrumentId(2),
            client_id: ClientOrderId::new("client-7").expect("id"),
            side: Side::Sell,
            kind: OrderType::StopLimit,
            tif: TimeInForce::Gtd(UnixNanos(T0 + 5_000)),
            price: Price(12_345),
            stop_price: Price(12_300),
            qty: Qty(75),
            post_only: true,
            reduce_only: true,
        }
    }

    fn new_b() -> NewOrder {
        NewOrder {
            instrument: InstrumentId(1),
            client_id: ClientOrderId::EMPTY,
            side: Side::Buy,
            kind: OrderType::Market,
            tif: TimeInForce::Ioc,
            price: Price(0),
            stop_price: Price(0),
            qty: Qty(1_500),
            post_only: false,
            reduce_only: false,
        }
    }

    fn idem() -> IdemTag {
        IdemTag {
            key: [
                0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x01,
            ],
            body: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
        }
    }

    /// Every command variant (and every value of its enums' fields).
    fn commands() -> Vec<(&'static str, CommandKind)> {
        let order = OrderId((7 << 24) | 3);
        vec![
            ("cmd_new", CommandKind::New(new_a())),
            ("cmd_test", CommandKind::Test(new_b())),
            ("cmd_cancel", CommandKind::Cancel { order }),
            (
                "cmd_replace",
                CommandKind::Replace {
                    order,
                    qty: Some(Qty(50)),
                    price: Some(Price(12_350)),
                },
            ),
            (
                "cmd_replace_none",
                CommandKind::Replace {
                    order,
                    qty: None,
                    price: None,
                },
            ),
            ("cmd_mass_cancel_all", CommandKind::MassCancel { instrument: None }),
            (
                "cmd_mass_cancel_one",
                CommandKind::MassCancel {
                    instrument: Some(InstrumentId(2)),
                },
            ),
            (
                "cmd_kill_global",
                CommandKind::KillSwitch {
                    scope: KillScope::Global,
                    on: true,
                },
            ),
            (
                "cmd_kill_account",
                CommandKind::KillSwitch {
                    scope: KillScope::Account(AccountId(1)),
                    on: false,
                },
            ),
            (
                "cmd_kill_instrument",
                CommandKind::KillSwitch {
                    scope: KillScope::Instrument(InstrumentId(2)),
                    on: true,
                },
            ),
            (
                "cmd_set_limits",
                CommandKind::SetLimits {
                    target: AccountId(1),
                    limits: limits_b(),
                },
            ),
            ("cmd_query_risk", CommandKind::QueryRisk),
            (
                "cmd_state_active",
                CommandKind::SetTradingState {
                    target: AccountId(1),
                    state: TradingState::Active,
                },
            ),
            (
                "cmd_state_reduce_only",
                CommandKind::SetTradingState {
                    target: AccountId(0),
                    state: TradingState::ReduceOnly,
                },
            ),
            (
                "cmd_state_throttled",
                CommandKind::SetTradingState {
                    target: AccountId(0),
                    state: TradingState::Throttled,
                },
            ),
            (
                "cmd_state_blocked",
                CommandKind::SetTradingState {
                    target: AccountId(0),
                    state: TradingState::Blocked,
                },
            ),
        ]
    }

    fn context() -> StepContext {
        let mut depth = Depth::new(InstrumentId(1), Side::Sell);
        depth.push(Price(10_010), Qty(300));
        depth.push(Price(10_020), Qty(4_000));
        depth.end = SweepEnd::Collar;
        StepContext {
            depth,
            mtm: Mtm {
                unrealized: -123_456_789_012,
                exposure: 987_654_321_098,
            },
            clock: DayClock {
                offset_ns: 19_800 * 1_000_000_000,
                roll_ns: 3_600 * 1_000_000_000,
            },
        }
    }

    fn market_ref() -> MarketRef {
        MarketRef {
            bid: Price(10_000),
            bid_qty: Qty(250),
            ask: Price(10_010),
            ask_qty: Qty(300),
            last: Price(10_005),
            quality: DataQuality::Stale,
        }
    }

    fn anomaly(rule: Rule, severity: Severity, action: Action) -> Anomaly {
        Anomaly {
            rule,
            severity,
            action,
            account: Some(AccountId(1)),
            instrument: Some(InstrumentId(2)),
            observed: 4_200,
            threshold: -3_000,
            scale: 3,
            at: AT,
        }
    }

    fn order(kind: OrderType, tif: TimeInForce, status: OrderStatus, place: Placement) -> Order {
        Order {
            id: OrderId((9 << 24) | 5),
            account: AccountId(1),
            instrument: InstrumentId(2),
            client_id: ClientOrderId::new("order-client-id-of-36-characters-max").expect("id"),
            side: Side::Buy,
            kind,
            tif,
            post_only: true,
            reduce_only: false,
            price: Price(10_005),
            stop_price: Price(9_990),
            qty: Qty(1_000),
            filled: Qty(400),
            status,
            triggered: true,
            created: UnixNanos(T0),
            updated: AT,
            fill_cost: 4_002_000,
            notional_price: Price(10_005),
            reserved: 600_300_000_000,
            last_trade: 31,
            place,
        }
    }

    fn event(seq: u64, data: OrderEventData) -> OrderEvent {
        OrderEvent {
            seq,
            request: 77,
            account: AccountId(1),
            at: AT,
            last: seq.is_multiple_of(2),
            data,
        }
    }

    fn account_risk() -> AccountRisk {
        let mut r = AccountRisk::new(limits_a());
        r.state = TradingState::Throttled;
        r.killed = true;
        r.open_orders = 3;
        r.open_notional = 12_000_000_000;
        r.position_exposure = 34_000_000_000;
        r.realized_today = -5_600_000;
        r.day = 20_424;
        r.realized_today_24x7 = 7_800_000;
        r.day_24x7 = 20_425;
        assert!(r.orders.try_take(AT, 10));
        assert!(r.cancels.try_take(UnixNanos(AT.0 + 1), 20));
        r.unrealized = -90_000;
        r.marked_exposure = 45_000_000_000;
        r
    }

    /// Order events: every event kind, every cancel reason, every order type, time in
    /// force, status and placement.
    fn order_events() -> Vec<OrderEvent> {
        let kinds = [
            OrderEventKind::Accepted,
            OrderEventKind::Triggered,
            OrderEventKind::PartiallyFilled,
            OrderEventKind::Filled,
            OrderEventKind::Replaced,
            OrderEventKind::Expired,
        ]
        .into_iter()
        .chain(
            [
                CancelReason::User,
                CancelReason::Mass,
                CancelReason::Unfilled,
                CancelReason::SelfTrade,
                CancelReason::KillSwitch,
                CancelReason::Risk,
                CancelReason::PriceCollar,
                CancelReason::DepthLimit,
            ]
            .map(OrderEventKind::Cancelled),
        );
        let types = [
            OrderType::Limit,
            OrderType::Market,
            OrderType::Stop,
            OrderType::StopLimit,
        ];
        let tifs = [
            TimeInForce::Gtc,
            TimeInForce::Day,
            TimeInForce::Ioc,
            TimeInForce::Fok,
            TimeInForce::Gtd(UnixNanos(T0 + 9)),
        ];
        let statuses = [
            OrderStatus::Open,
            OrderStatus::PartiallyFilled,
            OrderStatus::Filled,
            OrderStatus::Cancelled,
            OrderStatus::Expired,
            OrderStatus::Rejected,
        ];
        let places = [Placement::None, Placement::Book, Placement::Stops];
        kinds
            .enumerate()
            .map(|(i, kind)| {
                let o = order(types[i % 4], tifs[i % 5], statuses[i % 6], places[i % 3]);
                event(i as u64 + 1, OrderEventData::Order { kind, order: o })
            })
            .collect()
    }

    /// Every rejection, with and without an instrument, client id and order.
    /// The first 37 rejections (as pinned before the cluster's), or the later ones.
    fn reject_events(later: bool) -> Vec<OrderEvent> {
        let (skip, take) = if later { (37, usize::MAX) } else { (0, 37) };
        Reject::ALL
            .iter()
            .enumerate()
            .skip(skip)
            .take(take)
            .map(|(i, &reject)| {
                let full = i % 2 == 0;
                event(
                    100 + i as u64,
                    OrderEventData::Rejected {
                        reject,
                        instrument: full.then_some(InstrumentId(2)),
                        client_id: if full {
                            ClientOrderId::new("r").expect("id")
                        } else {
                            ClientOrderId::EMPTY
                        },
                        order: full.then_some(OrderId(42)),
                    },
                )
            })
            .collect()
    }

    /// The other event kinds, and an anomaly for every rule, severity and action.
    fn other_events() -> Vec<OrderEvent> {
        let fill = |liquidity| Fill {
            id: 555,
            order: OrderId((9 << 24) | 5),
            client_id: ClientOrderId::new("f-1").expect("id"),
            account: AccountId(1),
            instrument: InstrumentId(0),
            side: Side::Sell,
            price: Price(10_001),
            qty: Qty(17),
            liquidity,
            trade_id: 9_876,
            at: AT,
        };
        let mut v = vec![
            event(200, OrderEventData::Fill(fill(Liquidity::Maker))),
            event(201, OrderEventData::Fill(fill(Liquidity::Taker))),
            event(
                202,
                OrderEventData::Position {
                    instrument: InstrumentId(2),
                    position: Position {
                        qty: -35,
                        cost: -350_175,
                        realized: 1_234,
                    },
                },
            ),
            event(203, OrderEventData::Risk(account_risk())),
            event(
                204,
                OrderEventData::TestPassed {
                    instrument: InstrumentId(1),
                },
            ),
            event(205, OrderEventData::Done { count: 65_537 }),
        ];
        let severities = [Severity::Low, Severity::Medium, Severity::High, Severity::Critical];
        let actions = [Action::Alert, Action::Throttle, Action::Block, Action::Kill];
        for (i, rule) in Rule::ALL.into_iter().enumerate() {
            let mut a = anomaly(rule, severities[i % 4], actions[(i / 2) % 4]);
            if i % 3 == 0 {
                a.account = None;
            }
            if i % 3 == 1 {
                a.instrument = None;
            }
            v.push(event(300 + i as u64, OrderEventData::Anomaly(a)));
        }
        v
    }

    fn step(input: Input, market: Option<(InstrumentId, MarketRef)>, events: u32) -> Step {
        Step {
            input,
            market,
            events,
            ctx: context(),
        }
    }

    /// Every record the journal writes: a run start, and steps for every input and
    /// command variant, and events of every kind.
    fn records() -> Vec<(String, Record)> {
        let mut v = vec![(
            "start".to_owned(),
            Record::Start(RunStart {
                format: journal::FORMAT_VERSION,
                at: UnixNanos(T0),
                engine: "1.2.3".into(),
                instruments: 3,
                accounts: 3,
                max_orders: 65_536,
                limits: vec![limits_a(), limits_b(), limits_c()],
            }),
        )];
        for (i, (name, kind)) in commands().into_iter().enumerate() {
            let cmd = Command {
                request: 1_000 + i as u64,
                account: AccountId(i as u32 % 2),
                at: AT,
                kind,
                idempotency: (i % 2 == 0).then(idem),
            };
            let market = (i % 3 != 2).then(|| (InstrumentId(2), market_ref()));
            let events = vec![event(1, OrderEventData::Done { count: i as u32 })];
            v.push((
                format!("step_{name}"),
                Record::Step {
                    step: step(Input::Command(cmd), market, 1),
                    events,
                },
            ));
        }
        let inputs = [
            (
                "step_quote",
                Input::Quote {
                    instrument: InstrumentId(0),
                    bid: Price(9_999),
                    bid_qty: Qty(11),
                    ask: Price(10_001),
                    ask_qty: Qty(13),
                    at: AT,
                },
            ),
            (
                "step_trade",
                Input::Trade {
                    instrument: InstrumentId(1),
                    price: Price(10_002),
                    qty: Qty(19),
                    trade_id: u64::MAX - 3,
                    at: AT,
                },
            ),
            ("step_timer", Input::Timer { at: AT }),
            (
                "step_anomaly",
                Input::Anomaly(anomaly(Rule::Layering, Severity::Critical, Action::Kill)),
            ),
        ];
        for (name, input) in inputs {
            v.push((
                name.to_owned(),
                Record::Step {
                    step: step(input, Some((InstrumentId(0), market_ref())), 0),
                    events: vec![],
                },
            ));
        }
        for (name, events) in [
            ("events_orders", order_events()),
            ("events_rejects", reject_events(false)),
            ("events_rejects_cluster", reject_events(true)),
            ("events_other", other_events()),
        ] {
            v.push((
                name.to_owned(),
                Record::Step {
                    step: step(Input::Timer { at: AT }, None, events.len() as u32),
                    events,
                },
            ));
        }
        v.push(("owned_all".to_owned(), Record::Owned(None)));
        v.push((
            "owned_some".to_owned(),
            Record::Owned(Some(vec![InstrumentId(0), InstrumentId(2)])),
        ));
        v
    }

    fn encode_ref(r: &Record) -> Vec<u8> {
        let borrowed = match r {
            Record::Start(s) => RecordRef::Start(s),
            Record::Step { step, events } => RecordRef::Step { step, events },
            Record::Owned(o) => RecordRef::Owned(o.as_deref()),
        };
        postcard::to_stdvec(&borrowed).expect("encode")
    }

    #[test]
    fn every_journal_record_encodes_to_its_pinned_bytes_and_back() {
        let mut failures = Vec::new();
        for (name, record) in records() {
            let bytes = postcard::to_stdvec(&record).expect("encode");
            assert_eq!(
                encode_ref(&record),
                bytes,
                "{name}: borrowed and owned encodings differ"
            );
            check(&name, &bytes, &mut failures);
            if let Some(want) = pinned(&name) {
                assert_eq!(decode(&want).expect("pinned bytes decode"), record, "{name}");
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// A snapshot file of a manager with resting, filled, stop and killed state and a
    /// read model with one of everything (its maps hold one entry each, so their
    /// encoding does not depend on hash order).
    fn small_manager() -> OrderManager {
        OrderManager::new(
            &registry(),
            &[VenueKind::Internal, VenueKind::Paper, VenueKind::Paper],
            &[100_000_000, 100_000_000, 100_000_000],
            &[limits_a(), limits_b()],
            OrderCapacity {
                orders: 4,
                levels: 2,
                stops: 1,
                day_offset_secs: 19_800,
            },
        )
    }

    fn snapshot_state() -> (OrderManager, OrderStore) {
        let mut m = small_manager();
        m.set_day_roll(3_600);
        let mut at = 0;
        let mut send = |m: &mut OrderManager, account: u32, kind: CommandKind| {
            at += 1_000_000;
            run(m, account, at, kind)
        };
        send(
            &mut m,
            0,
            CommandKind::New(limit(INTERNAL, "rest", Side::Buy, 10_000, 40)),
        );
        send(
            &mut m,
            1,
            CommandKind::New(limit(INTERNAL, "hit", Side::Sell, 10_000, 15)),
        );
        let mut stop = new_order(INTERNAL, "stop", Side::Sell, OrderType::Stop, TimeInForce::Day, 0, 5);
        stop.stop_price = Price(9_000);
        send(&mut m, 1, CommandKind::New(stop));
        // No client id: the engine generates one (its counter is in the image).
        let mut auto = limit(INTERNAL, "x", Side::Buy, 9_990, 7);
        auto.client_id = ClientOrderId::EMPTY;
        send(&mut m, 0, CommandKind::New(auto));
        send(
            &mut m,
            0,
            CommandKind::KillSwitch {
                scope: KillScope::Instrument(NSE),
                on: true,
            },
        );
        send(
            &mut m,
            1,
            CommandKind::SetTradingState {
                target: AccountId(1),
                state: TradingState::ReduceOnly,
            },
        );
        m.apply_anomaly(&anomaly(Rule::OrderRate, Severity::High, Action::Throttle));
        let mut store = OrderStore::new(2, 16);
        let cmd = Command {
            request: 5,
            account: AccountId(1),
            at: AT,
            kind: CommandKind::New(new_a()),
            idempotency: Some(idem()),
        };
        let o = order(
            OrderType::Limit,
            TimeInForce::Gtc,
            OrderStatus::PartiallyFilled,
            Placement::Book,
        );
        let events = [
            event(
                1,
                OrderEventData::Order {
                    kind: OrderEventKind::PartiallyFilled,
                    order: o,
                },
            ),
            other_events()[0],
            other_events()[2],
            other_events()[6],
        ];
        store.apply_step(&step(Input::Command(cmd), None, 4), &events);
        (m, store)
    }

    #[test]
    fn a_snapshot_file_has_its_pinned_bytes_and_restores() {
        let dir = temp_dir("pinned-snapshot");
        let _cleanup = Cleanup(dir.clone());
        std::fs::create_dir_all(&dir).expect("dir");
        let (m, store) = snapshot_state();
        let path = snapshot::write(&dir, 1_234, &[0xab; 32], &m, &store, 1).expect("write");
        let bytes = std::fs::read(&path).expect("read");
        let mut failures = Vec::new();
        check("snapshot_file", &bytes, &mut failures);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        // The pinned file reads back into the same manager and read model.
        let pinned_path = dir.join("pinned.sbzs");
        std::fs::write(&pinned_path, pinned("snapshot_file").expect("pinned")).expect("write");
        let snap = snapshot::read(&pinned_path).expect("pinned snapshot reads");
        assert_eq!((snap.seq, snap.chain), (1_234, [0xab; 32]));
        let mut fresh = small_manager();
        assert_ne!(fresh.state_hash(), m.state_hash());
        fresh.restore_image(snap.image()).expect("restores");
        assert_eq!(fresh.state_hash(), m.state_hash());
        assert_eq!(snap.state, m.state_hash());
        let restored: OrderStore = postcard::from_bytes(snap.store()).expect("read model decodes");
        assert_eq!(restored, store);
    }

    /// Generated once from the format as it shipped; see the module doc.
    const PINNED: &[(&str, &str)] = &[
        (
            "snapshot_file",
            "\
             53425a534e415032e004000000000000a4587179d204000000000000abababababababababababababababababababab\
             abababababababababababab7024e9ad140841b8f3f6918355290ed7a9951758a1dd27dc9c7de697b55a583cc9020000\
             000000000401010180808008000004726573740000000000a09c0100501e0101808984babfdeb3ed318092febabfdeb3\
             ed31e0a712a09c0180cab5ee010101010001818080080100036869740100000000a09c01001e1e02018092febabfdeb3\
             ed318092febabfdeb3ed31e0a712a09c010001000101018280800801000473746f70010201000000d08c010a00000080\
             9bf8bbbfdeb3ed31809bf8bbbfdeb3ed3100a09c0180c2d72f0002010101838080080000066175746f2d310000000000\
             8c9c01000e00000180a4f2bcbfdeb3ed3180a4f2bcbfdeb3ed31008c9c01a0b0d8420001010104ffffffffffffffffff\
             01ffffffffffffffffff01ffffffffffffffffff01ffffffffffffffffff0104ffffffffffffffffff01ffffffffffff\
             ffffff01ffffffffffffffffff01ffffffffffffffffff01ffffff0703028c9c010e018380800883808008a09c013201\
             8080800880808008000000000003018280800800000280e4f8deed4780c4c486e4a8f1de02fa014d82c0caf384a30280\
             808080808080808080028ec0f9decfae010a1401000002a0fa8db10280c6868f0100ffffffffffffffffff0100eac402\
             8091e2f8c0deb3ed3100000080e4f8deed4780c4c486e4a8f1de02fa014d82c0caf384a3028080808080808080808002\
             8ec0f9decfae01ac02140202000180c2d72f80c6868f0100ffffffffffffffffff0100eac402d4f8abc1bfdeb3ed3100\
             0000061ee0a712000000000000001ddfa712000000000000000680c6868f01000080c6868f0100000300066175746f2d\
             318380800800047265737480808008010473746f708280800800030000010d0203010000ffffffffffffffffff010102\
             80e4f8deed4780c4c486e4a8f1de02fa014d82c0caf384a30280808080808080808080028ec0f9decfae010a140180e4\
             f8deed4780c4c486e4a8f1de02fa014d82c0caf384a30280808080808080808080028ec0f9decfae01ac021402018580\
             804801858080480102246f726465722d636c69656e742d69642d6f662d33362d636861726163746572732d6d61780000\
             000100aa9c018c9c01d00fa006010180808ab9bfdeb3ed31aab4e8aec0deb3ed31a0c3e803aa9c0180ccd8caf8221f01\
             0200010185808048020001ab048580804803662d31010001a29c012200944daab4e8aec0deb3ed3101010245bddf2aa4\
             13100101112233445566778899aabbccddeeff010102030405060708090a0b0c0d0e0f10aab4e8aec0deb3ed3104014d\
             01aab4e8aec0deb3ed31000002858080480102246f726465722d636c69656e742d69642d6f662d33362d636861726163\
             746572732d6d61780000000100aa9c018c9c01d00fa006010180808ab9bfdeb3ed31aab4e8aec0deb3ed31a0c3e803aa\
             9c0180ccd8caf8221f01c8014d01aab4e8aec0deb3ed310102ab048580804803662d31010001a29c012200944daab4e8\
             aec0deb3ed31ca014d01aab4e8aec0deb3ed3101030245bddf2aa413ac024d01aab4e8aec0deb3ed3101070000000001\
             02d041ef2e03aab4e8aec0deb3ed3101aab4e8aec0deb3ed3101112233445566778899aabbccddeeff0101ac02000000\
             000102d041ef2e03aab4e8aec0deb3ed31ac0203",
        ),
        (
            "start",
            "\
             000280808ab9bfdeb3ed3105312e322e3303038080040380e4f8deed4780c4c486e4a8f1de02fa014d82c0caf384a302\
             80808080808080808080028ec0f9decfae010a140180e4f8deed4780c4c486e4a8f1de02fa014d82c0caf384a3028080\
             8080808080808080028ec0f9decfae01ac02140280e4f8deed4780c4c486e4a8f1de02fa014d82c0caf384a302808080\
             80808080808080028ec0f9decfae010a1400",
        ),
        (
            "step_cmd_new",
            "\
             0100e80700aab4e8aec0deb3ed31000208636c69656e742d3701030490ce8ab9bfdeb3ed31f2c00198c0019601010101\
             112233445566778899aabbccddeeff010102030405060708090a0b0c0d0e0f100102a09c01f403b49c01d804aa9c0102\
             0101010102b49c01d804c89c01c03e02a7e8c8e9970794cfc7ccbe3980c0bbbfc180098080c58bc6d10101014d01aab4\
             e8aec0deb3ed31000600",
        ),
        (
            "step_cmd_test",
            "\
             0100e90701aab4e8aec0deb3ed310101000001020000b8170000000102a09c01f403b49c01d804aa9c01020101010102\
             b49c01d804c89c01c03e02a7e8c8e9970794cfc7ccbe3980c0bbbfc180098080c58bc6d10101014d01aab4e8aec0deb3\
             ed31000601",
        ),
        (
            "step_cmd_cancel",
            "\
             0100ea0700aab4e8aec0deb3ed31028380803801112233445566778899aabbccddeeff010102030405060708090a0b0c\
             0d0e0f10000101010102b49c01d804c89c01c03e02a7e8c8e9970794cfc7ccbe3980c0bbbfc180098080c58bc6d10101\
             014d01aab4e8aec0deb3ed31000602",
        ),
        (
            "step_cmd_replace",
            "\
             0100eb0701aab4e8aec0deb3ed310383808038016401fcc001000102a09c01f403b49c01d804aa9c01020101010102b4\
             9c01d804c89c01c03e02a7e8c8e9970794cfc7ccbe3980c0bbbfc180098080c58bc6d10101014d01aab4e8aec0deb3ed\
             31000603",
        ),
        (
            "step_cmd_replace_none",
            "\
             0100ec0700aab4e8aec0deb3ed310383808038000001112233445566778899aabbccddeeff010102030405060708090a\
             0b0c0d0e0f100102a09c01f403b49c01d804aa9c01020101010102b49c01d804c89c01c03e02a7e8c8e9970794cfc7cc\
             be3980c0bbbfc180098080c58bc6d10101014d01aab4e8aec0deb3ed31000604",
        ),
        (
            "step_cmd_mass_cancel_all",
            "\
             0100ed0701aab4e8aec0deb3ed31040000000101010102b49c01d804c89c01c03e02a7e8c8e9970794cfc7ccbe3980c0\
             bbbfc180098080c58bc6d10101014d01aab4e8aec0deb3ed31000605",
        ),
        (
            "step_cmd_mass_cancel_one",
            "\
             0100ee0700aab4e8aec0deb3ed3104010201112233445566778899aabbccddeeff010102030405060708090a0b0c0d0e\
             0f100102a09c01f403b49c01d804aa9c01020101010102b49c01d804c89c01c03e02a7e8c8e9970794cfc7ccbe3980c0\
             bbbfc180098080c58bc6d10101014d01aab4e8aec0deb3ed31000606",
        ),
        (
            "step_cmd_kill_global",
            "\
             0100ef0701aab4e8aec0deb3ed31050001000102a09c01f403b49c01d804aa9c01020101010102b49c01d804c89c01c0\
             3e02a7e8c8e9970794cfc7ccbe3980c0bbbfc180098080c58bc6d10101014d01aab4e8aec0deb3ed31000607",
        ),
        (
            "step_cmd_kill_account",
            "\
             0100f00700aab4e8aec0deb3ed310501010001112233445566778899aabbccddeeff010102030405060708090a0b0c0d\
             0e0f10000101010102b49c01d804c89c01c03e02a7e8c8e9970794cfc7ccbe3980c0bbbfc180098080c58bc6d1010101\
             4d01aab4e8aec0deb3ed31000608",
        ),
        (
            "step_cmd_kill_instrument",
            "\
             0100f10701aab4e8aec0deb3ed3105020201000102a09c01f403b49c01d804aa9c01020101010102b49c01d804c89c01\
             c03e02a7e8c8e9970794cfc7ccbe3980c0bbbfc180098080c58bc6d10101014d01aab4e8aec0deb3ed31000609",
        ),
        (
            "step_cmd_set_limits",
            "\
             0100f20700aab4e8aec0deb3ed31060180e4f8deed4780c4c486e4a8f1de02fa014d82c0caf384a30280808080808080\
             808080028ec0f9decfae01ac02140201112233445566778899aabbccddeeff010102030405060708090a0b0c0d0e0f10\
             0102a09c01f403b49c01d804aa9c01020101010102b49c01d804c89c01c03e02a7e8c8e9970794cfc7ccbe3980c0bbbf\
             c180098080c58bc6d10101014d01aab4e8aec0deb3ed3100060a",
        ),
        (
            "step_cmd_query_risk",
            "\
             0100f30701aab4e8aec0deb3ed310700000101010102b49c01d804c89c01c03e02a7e8c8e9970794cfc7ccbe3980c0bb\
             bfc180098080c58bc6d10101014d01aab4e8aec0deb3ed3100060b",
        ),
        (
            "step_cmd_state_active",
            "\
             0100f40700aab4e8aec0deb3ed3108010001112233445566778899aabbccddeeff010102030405060708090a0b0c0d0e\
             0f100102a09c01f403b49c01d804aa9c01020101010102b49c01d804c89c01c03e02a7e8c8e9970794cfc7ccbe3980c0\
             bbbfc180098080c58bc6d10101014d01aab4e8aec0deb3ed3100060c",
        ),
        (
            "step_cmd_state_reduce_only",
            "\
             0100f50701aab4e8aec0deb3ed31080001000102a09c01f403b49c01d804aa9c01020101010102b49c01d804c89c01c0\
             3e02a7e8c8e9970794cfc7ccbe3980c0bbbfc180098080c58bc6d10101014d01aab4e8aec0deb3ed3100060d",
        ),
        (
            "step_cmd_state_throttled",
            "\
             0100f60700aab4e8aec0deb3ed3108000201112233445566778899aabbccddeeff010102030405060708090a0b0c0d0e\
             0f10000101010102b49c01d804c89c01c03e02a7e8c8e9970794cfc7ccbe3980c0bbbfc180098080c58bc6d10101014d\
             01aab4e8aec0deb3ed3100060e",
        ),
        (
            "step_cmd_state_blocked",
            "\
             0100f70701aab4e8aec0deb3ed31080003000102a09c01f403b49c01d804aa9c01020101010102b49c01d804c89c01c0\
             3e02a7e8c8e9970794cfc7ccbe3980c0bbbfc180098080c58bc6d10101014d01aab4e8aec0deb3ed3100060f",
        ),
        (
            "step_quote",
            "\
             0101009e9c0116a29c011aaab4e8aec0deb3ed310100a09c01f403b49c01d804aa9c01020001010102b49c01d804c89c\
             01c03e02a7e8c8e9970794cfc7ccbe3980c0bbbfc180098080c58bc6d10100",
        ),
        (
            "step_trade",
            "\
             010201a49c0126fcffffffffffffffff01aab4e8aec0deb3ed310100a09c01f403b49c01d804aa9c01020001010102b4\
             9c01d804c89c01c03e02a7e8c8e9970794cfc7ccbe3980c0bbbfc180098080c58bc6d10100",
        ),
        (
            "step_timer",
            "\
             0103aab4e8aec0deb3ed310100a09c01f403b49c01d804aa9c01020001010102b49c01d804c89c01c03e02a7e8c8e997\
             0794cfc7ccbe3980c0bbbfc180098080c58bc6d10100",
        ),
        (
            "step_anomaly",
            "\
             010407030301010102d041ef2e03aab4e8aec0deb3ed310100a09c01f403b49c01d804aa9c01020001010102b49c01d8\
             04c89c01c03e02a7e8c8e9970794cfc7ccbe3980c0bbbfc180098080c58bc6d10100",
        ),
        (
            "events_orders",
            "\
             0103aab4e8aec0deb3ed31000e01010102b49c01d804c89c01c03e02a7e8c8e9970794cfc7ccbe3980c0bbbfc1800980\
             80c58bc6d1010e014d01aab4e8aec0deb3ed31000000858080480102246f726465722d636c69656e742d69642d6f662d\
             33362d636861726163746572732d6d61780000000100aa9c018c9c01d00fa006000180808ab9bfdeb3ed31aab4e8aec0\
             deb3ed31a0c3e803aa9c0180ccd8caf8221f00024d01aab4e8aec0deb3ed31010001858080480102246f726465722d63\
             6c69656e742d69642d6f662d33362d636861726163746572732d6d61780001010100aa9c018c9c01d00fa00601018080\
             8ab9bfdeb3ed31aab4e8aec0deb3ed31a0c3e803aa9c0180ccd8caf8221f01034d01aab4e8aec0deb3ed310000028580\
             80480102246f726465722d636c69656e742d69642d6f662d33362d636861726163746572732d6d61780002020100aa9c\
             018c9c01d00fa006020180808ab9bfdeb3ed31aab4e8aec0deb3ed31a0c3e803aa9c0180ccd8caf8221f02044d01aab4\
             e8aec0deb3ed31010003858080480102246f726465722d636c69656e742d69642d6f662d33362d636861726163746572\
             732d6d61780003030100aa9c018c9c01d00fa006030180808ab9bfdeb3ed31aab4e8aec0deb3ed31a0c3e803aa9c0180\
             ccd8caf8221f00054d01aab4e8aec0deb3ed31000005858080480102246f726465722d636c69656e742d69642d6f662d\
             33362d636861726163746572732d6d617800000492808ab9bfdeb3ed310100aa9c018c9c01d00fa006040180808ab9bf\
             deb3ed31aab4e8aec0deb3ed31a0c3e803aa9c0180ccd8caf8221f01064d01aab4e8aec0deb3ed310100068580804801\
             02246f726465722d636c69656e742d69642d6f662d33362d636861726163746572732d6d61780001000100aa9c018c9c\
             01d00fa006050180808ab9bfdeb3ed31aab4e8aec0deb3ed31a0c3e803aa9c0180ccd8caf8221f02074d01aab4e8aec0\
             deb3ed3100000400858080480102246f726465722d636c69656e742d69642d6f662d33362d636861726163746572732d\
             6d61780002010100aa9c018c9c01d00fa006000180808ab9bfdeb3ed31aab4e8aec0deb3ed31a0c3e803aa9c0180ccd8\
             caf8221f00084d01aab4e8aec0deb3ed3101000401858080480102246f726465722d636c69656e742d69642d6f662d33\
             362d636861726163746572732d6d61780003020100aa9c018c9c01d00fa006010180808ab9bfdeb3ed31aab4e8aec0de\
             b3ed31a0c3e803aa9c0180ccd8caf8221f01094d01aab4e8aec0deb3ed3100000402858080480102246f726465722d63\
             6c69656e742d69642d6f662d33362d636861726163746572732d6d61780000030100aa9c018c9c01d00fa00602018080\
             8ab9bfdeb3ed31aab4e8aec0deb3ed31a0c3e803aa9c0180ccd8caf8221f020a4d01aab4e8aec0deb3ed310100040385\
             8080480102246f726465722d636c69656e742d69642d6f662d33362d636861726163746572732d6d617800010492808a\
             b9bfdeb3ed310100aa9c018c9c01d00fa006030180808ab9bfdeb3ed31aab4e8aec0deb3ed31a0c3e803aa9c0180ccd8\
             caf8221f000b4d01aab4e8aec0deb3ed3100000404858080480102246f726465722d636c69656e742d69642d6f662d33\
             362d636861726163746572732d6d61780002000100aa9c018c9c01d00fa006040180808ab9bfdeb3ed31aab4e8aec0de\
             b3ed31a0c3e803aa9c0180ccd8caf8221f010c4d01aab4e8aec0deb3ed3101000405858080480102246f726465722d63\
             6c69656e742d69642d6f662d33362d636861726163746572732d6d61780003010100aa9c018c9c01d00fa00605018080\
             8ab9bfdeb3ed31aab4e8aec0deb3ed31a0c3e803aa9c0180ccd8caf8221f020d4d01aab4e8aec0deb3ed310000040685\
             8080480102246f726465722d636c69656e742d69642d6f662d33362d636861726163746572732d6d61780000020100aa\
             9c018c9c01d00fa006000180808ab9bfdeb3ed31aab4e8aec0deb3ed31a0c3e803aa9c0180ccd8caf8221f000e4d01aa\
             b4e8aec0deb3ed3101000407858080480102246f726465722d636c69656e742d69642d6f662d33362d63686172616374\
             6572732d6d61780001030100aa9c018c9c01d00fa006010180808ab9bfdeb3ed31aab4e8aec0deb3ed31a0c3e803aa9c\
             0180ccd8caf8221f01",
        ),
        (
            "events_rejects",
            "\
             0103aab4e8aec0deb3ed31002501010102b49c01d804c89c01c03e02a7e8c8e9970794cfc7ccbe3980c0bbbfc1800980\
             80c58bc6d10125644d01aab4e8aec0deb3ed3101010001020172012a654d01aab4e8aec0deb3ed31000101000000664d\
             01aab4e8aec0deb3ed3101010201020172012a674d01aab4e8aec0deb3ed31000103000000684d01aab4e8aec0deb3ed\
             3101010401020172012a694d01aab4e8aec0deb3ed310001050000006a4d01aab4e8aec0deb3ed310101060102017201\
             2a6b4d01aab4e8aec0deb3ed310001070000006c4d01aab4e8aec0deb3ed3101010801020172012a6d4d01aab4e8aec0\
             deb3ed310001090000006e4d01aab4e8aec0deb3ed3101010a01020172012a6f4d01aab4e8aec0deb3ed3100010b0000\
             00704d01aab4e8aec0deb3ed3101010c01020172012a714d01aab4e8aec0deb3ed3100010d000000724d01aab4e8aec0\
             deb3ed3101010e01020172012a734d01aab4e8aec0deb3ed3100010f000000744d01aab4e8aec0deb3ed310101100102\
             0172012a754d01aab4e8aec0deb3ed31000111000000764d01aab4e8aec0deb3ed3101011201020172012a774d01aab4\
             e8aec0deb3ed31000113000000784d01aab4e8aec0deb3ed3101011401020172012a794d01aab4e8aec0deb3ed310001\
             150000007a4d01aab4e8aec0deb3ed3101011601020172012a7b4d01aab4e8aec0deb3ed310001170000007c4d01aab4\
             e8aec0deb3ed3101011801020172012a7d4d01aab4e8aec0deb3ed310001190000007e4d01aab4e8aec0deb3ed310101\
             1a01020172012a7f4d01aab4e8aec0deb3ed3100011b00000080014d01aab4e8aec0deb3ed3101011c01020172012a81\
             014d01aab4e8aec0deb3ed3100011d00000082014d01aab4e8aec0deb3ed3101011e01020172012a83014d01aab4e8ae\
             c0deb3ed3100011f00000084014d01aab4e8aec0deb3ed3101012001020172012a85014d01aab4e8aec0deb3ed310001\
             2100000086014d01aab4e8aec0deb3ed3101012201020172012a87014d01aab4e8aec0deb3ed3100012300000088014d\
             01aab4e8aec0deb3ed3101012401020172012a",
        ),
        (
            "events_other",
            "\
             0103aab4e8aec0deb3ed31001401010102b49c01d804c89c01c03e02a7e8c8e9970794cfc7ccbe3980c0bbbfc1800980\
             80c58bc6d10114c8014d01aab4e8aec0deb3ed310102ab048580804803662d31010001a29c012200944daab4e8aec0de\
             b3ed31c9014d01aab4e8aec0deb3ed310002ab048580804803662d31010001a29c012201944daab4e8aec0deb3ed31ca\
             014d01aab4e8aec0deb3ed3101030245bddf2aa413cb014d01aab4e8aec0deb3ed31000480e4f8deed4780c4c486e4a8\
             f1de02fa014d82c0caf384a30280808080808080808080028ec0f9decfae010a140102010380e08bb45980d0f6a8fd01\
             ffcbab0590bf028093b80792bf02aab8978ec1deb3ed31acf6bfdec0deb3ed319ffe0a8088aca3cf02cc014d01aab4e8\
             aec0deb3ed31010501cd014d01aab4e8aec0deb3ed310006818004ac024d01aab4e8aec0deb3ed310107000000000102\
             d041ef2e03aab4e8aec0deb3ed31ad024d01aab4e8aec0deb3ed310007010100010100d041ef2e03aab4e8aec0deb3ed\
             31ae024d01aab4e8aec0deb3ed31010702020101010102d041ef2e03aab4e8aec0deb3ed31af024d01aab4e8aec0deb3\
             ed310007030301000102d041ef2e03aab4e8aec0deb3ed31b0024d01aab4e8aec0deb3ed310107040002010100d041ef\
             2e03aab4e8aec0deb3ed31b1024d01aab4e8aec0deb3ed31000705010201010102d041ef2e03aab4e8aec0deb3ed31b2\
             024d01aab4e8aec0deb3ed310107060203000102d041ef2e03aab4e8aec0deb3ed31b3024d01aab4e8aec0deb3ed3100\
             07070303010100d041ef2e03aab4e8aec0deb3ed31b4024d01aab4e8aec0deb3ed31010708000001010102d041ef2e03\
             aab4e8aec0deb3ed31b5024d01aab4e8aec0deb3ed310007090100000102d041ef2e03aab4e8aec0deb3ed31b6024d01\
             aab4e8aec0deb3ed3101070a0201010100d041ef2e03aab4e8aec0deb3ed31b7024d01aab4e8aec0deb3ed3100070b03\
             0101010102d041ef2e03aab4e8aec0deb3ed31b8024d01aab4e8aec0deb3ed3101070c0002000102d041ef2e03aab4e8\
             aec0deb3ed31b9024d01aab4e8aec0deb3ed3100070d0102010100d041ef2e03aab4e8aec0deb3ed31",
        ),
        // Added with the cluster (issue 21): new variants, existing bytes unchanged.
        (
            "events_rejects_cluster",
            "\
             0103aab4e8aec0deb3ed31000101010102b49c01d804c89c01c03e02a7e8c8e9970794cfc7ccbe3980c0bbbfc1800980\
             80c58bc6d1010189014d01aab4e8aec0deb3ed31000125000000",
        ),
        ("owned_all", "0200"),
        ("owned_some", "0201020002"),
    ];
}

/// A directory on a tmpfs of `size` bytes of its own (unmounted on drop), so a full
/// disk is a real ENOSPC; `None` where mounting is not allowed (not root). System
/// calls, not `mount`/`df` processes: a child forked while another test holds a
/// journal's lock would hold it too until it execs.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn new(name: &str, size: u64) -> Option<Self> {
        use rustix::mount::{mount, MountFlags};
        let dir = temp_dir(name);
        std::fs::create_dir_all(&dir).expect("mount point");
        let data = std::ffi::CString::new(format!("size={size}")).expect("no NUL");
        if mount("tmpfs", &dir, "tmpfs", MountFlags::empty(), data.as_c_str()).is_err() {
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
        Some(Self(dir))
    }

    /// Fills the disk but for `free` bytes (page granularity: tmpfs allocates pages).
    fn fill_leaving(&self, free: u64) {
        use std::io::Write;
        let vfs = rustix::fs::statvfs(&self.0).expect("statvfs");
        let avail = vfs.f_bavail * vfs.f_frsize;
        let mut f = std::fs::File::create(self.0.join("filler")).expect("filler");
        let want = avail.saturating_sub(free);
        let chunk = vec![0u8; 4096];
        let mut written = 0;
        while written < want {
            let n = (want - written).min(4096) as usize;
            if f.write_all(&chunk[..n]).is_err() {
                break;
            }
            written += n as u64;
        }
        f.sync_all().expect("sync");
    }

    fn empty(&self) {
        let _ = std::fs::remove_file(self.0.join("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn partial_snapshots(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

/// A snapshot that cannot be written whole (the disk fills at any point of it) leaves
/// nothing behind: no half-written file holding the space the journal needs, no file
/// recovery would read; with the space back, the next one is written and used.
#[test]
fn a_snapshot_cut_off_by_a_full_disk_leaves_nothing_behind() {
    let Some(disk) = SmallDisk::new("full", 16 << 20) else {
        eprintln!("skipped: mounting a tmpfs needs root (scripts/test.sh runs as root)");
        return;
    };
    let dir = disk.0.join("journal");
    std::fs::create_dir_all(&dir).expect("dir");
    let (acked, hash, _) = sample_run(&dir, FsyncPolicy::None, 1 << 20);
    let (m, s, rec) = recover_into(&dir).expect("recovers");
    assert_eq!(m.state_hash(), hash);
    let tail = rec.tail.next_seq - 1;
    let mut whole = Vec::new();
    m.encode_image(&mut whole).expect("encode");
    let size = whole.len() as u64 + postcard::to_allocvec(&s).expect("encode").len() as u64;
    let chain = rec.tail.last_hash;
    // Every amount of free space from none to more than the snapshot needs.
    let mut failed = 0;
    for free in (0..size + 3 * 4096).step_by(4096) {
        disk.fill_leaving(free);
        let written = journal::snapshot::write(&dir, tail, &chain, &m, &s, 2);
        disk.empty();
        assert_eq!(
            partial_snapshots(&dir),
            Vec::<String>::new(),
            "{free} bytes free: a partial file was left"
        );
        match written {
            Ok(path) => {
                let (m2, s2, rec2) = recover_into(&dir).expect("recovers from the snapshot");
                assert_eq!(
                    (rec2.snapshot, m2.state_hash()),
                    (Some(tail), hash),
                    "{free} bytes free"
                );
                assert!(s2 == store_upto(&acked, u64::MAX));
                std::fs::remove_file(path).expect("remove");
            }
            Err(e) => {
                failed += 1;
                assert!(e.to_string().contains("No space left"), "{free} bytes free: {e}");
                assert!(
                    journal::snapshot::list(&dir).expect("list").is_empty(),
                    "{free} bytes free"
                );
            }
        }
    }
    assert!(failed > 0, "the disk filled during some writes");

    // The snapshot thread: a snapshot the full disk refused is retried once another
    // interval has passed, and nothing is left half-written meanwhile.
    let mut r = rig(&dir, FsyncPolicy::None, 1 << 20, 20);
    let before = r.stats.snapshots.get();
    disk.fill_leaving(64 << 10);
    let order = |n: u32| CommandKind::New(limit(INTERNAL, &format!("full-{n}"), Side::Sell, MID + 500, 1));
    for n in 0..30 {
        r.send(n % 2, order(n));
    }
    assert!(r.stats.snapshot_errors.get() > 0, "the snapshot did not fit");
    assert_eq!(r.stats.snapshots.get(), before);
    assert_eq!(partial_snapshots(&dir), Vec::<String>::new());
    disk.empty();
    for n in 30..60 {
        r.send(n % 2, order(n));
    }
    assert!(r.stats.snapshots.get() > before, "taken again once there was room");
    let hash = r.manager().state_hash();
    drop(r);
    let (m, _, rec) = recover_into(&dir).expect("recovers");
    assert_eq!(m.state_hash(), hash);
    assert!(rec.snapshot.is_some_and(|s| s > tail));
    // A partial file a crash left (the process killed mid-write) is deleted when the
    // snapshot thread starts.
    std::fs::write(dir.join(format!("{}.tmp", journal::snapshot::name(tail))), b"half").expect("write");
    let r = rig(&dir, FsyncPolicy::None, 1 << 20, u64::MAX);
    assert_eq!(partial_snapshots(&dir), Vec::<String>::new());
    drop(r);
}

/// The `n`th new limit order of the journal tests' streams: both accounts, paper and
/// internal, both sides, prices around the mid.
fn varied_new(n: usize, no_client_id: bool) -> Op {
    Op::New {
        account: (n % 2) as u32,
        paper: n.is_multiple_of(3),
        side: n.is_multiple_of(2),
        kind: 0,
        tif: 0,
        offset: (n % 5) as i64 - 2,
        qty: 3,
        post_only: false,
        no_client_id,
    }
}
