//! The order path: the engine's `OrderManager` (pre-trade risk, price-time matching,
//! fills, positions, events) against the order books a user would otherwise pick, on
//! the same command stream: limit orders around a mid price from three accounts (some
//! cross), and cancels of recent orders. The others match only (no risk, no positions,
//! no events): orderbook-rs with the engine's self-trade rule, lobster (which has no
//! self-trade prevention), and the book a user would write by hand
//! (`BTreeMap<price, VecDeque<order>>` per side plus a `HashMap` for cancels).
//!
//! Every implementation runs the whole stream on a fresh book once per round, in
//! alternation (each round starts with the next one), so a noisy neighbour hits them
//! alike. Throughput is the median round; latency (per-command mean of 16-command
//! batches) goes into one histogram across rounds. Each row's note is the book's end
//! state, so a reader sees which books did the same work.
//!
//! `BENCH_ORDERS_ONLY=engine` runs the engine's row alone (cachegrind and callgrind
//! runs, timed A/B of two builds of the order path); `BENCH_ORDERS_ROUNDS=n` sets the
//! rounds; `BENCH_ORDERS_HINT=0` leaves out the next-command prefetch hint that the
//! engine loop gives the order path (an A/B of the hint in one build). After the
//! table, the engine's `state_hash` at the end of the stream (read after each timed
//! round; every round must agree): a change of the order path must leave it unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use stocksblitz_benches::{histogram, iters, keep, median_ratio, print_table, quick, Row};
use stocksblitz_engine::instrument::InstrumentKind;
use stocksblitz_engine::orders::{
    AccountId, ClientOrderId, Command, CommandKind, NewOrder, OrderCapacity, OrderEventData, OrderEventKind, OrderId,
    OrderManager, OrderType, TimeInForce, VenueKind,
};
use stocksblitz_engine::{InstrumentConfig, InstrumentId, InstrumentRegistry, Price, Qty, Side, UnixNanos};

#[derive(Clone, Copy)]
enum Op {
    New {
        account: u32,
        side: Side,
        price: i64,
        qty: i64,
    },
    /// Cancel the `n`-th new order of the stream.
    Cancel { n: usize },
}

fn stream(len: usize) -> Vec<Op> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut ops = Vec::with_capacity(len);
    let mut news = 0usize;
    while ops.len() < len {
        let r = rnd();
        // Cancels (about 45%) hit one of the last 1000 orders, as a quoting strategy
        // would, so the book stays a realistic size.
        if r % 20 < 9 && news > 0 {
            ops.push(Op::Cancel {
                n: news - 1 - (rnd() as usize) % news.min(1000),
            });
        } else {
            let side = if r & 8 == 0 { Side::Buy } else { Side::Sell };
            // Buys around 9_990..10_009, sells around 9_995..10_014: some cross.
            let base = if side == Side::Buy { 9_990 } else { 9_995 };
            ops.push(Op::New {
                account: (r >> 8) as u32 % 3,
                side,
                price: base + (rnd() % 20) as i64,
                qty: 1 + (rnd() % 10) as i64,
            });
            news += 1;
        }
    }
    ops
}

fn manager() -> OrderManager {
    let registry = InstrumentRegistry::from_config(&[InstrumentConfig {
        symbol: "SBZ".into(),
        venue: "internal".into(),
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
    OrderManager::new(
        &registry,
        &[VenueKind::Internal],
        &[100_000_000],
        &[limits; 3],
        OrderCapacity {
            orders: 1 << 20,
            levels: 4096,
            stops: 16,
            day_offset_secs: 19_800,
        },
    )
}

/// The baseline: matching only, standard collections.
#[derive(Default)]
struct NaiveBook {
    bids: BTreeMap<i64, VecDeque<(u64, u32, i64)>>,
    asks: BTreeMap<i64, VecDeque<(u64, u32, i64)>>,
    index: HashMap<u64, (Side, i64)>,
    next: u64,
    fills: u64,
    filled_qty: u64,
    /// The id given to the stream's n-th new order (cancels refer to it).
    ids: Vec<u64>,
}

impl NaiveBook {
    fn with_capacity(orders: usize) -> Self {
        Self {
            ids: Vec::with_capacity(orders),
            ..Self::default()
        }
    }

    fn new_order(&mut self, account: u32, side: Side, price: i64, mut qty: i64) -> u64 {
        self.next += 1;
        let id = self.next;
        loop {
            if qty == 0 {
                return id;
            }
            let best = match side {
                Side::Buy => self.asks.first_entry().filter(|e| *e.key() <= price),
                Side::Sell => self.bids.last_entry().filter(|e| *e.key() >= price),
            };
            let Some(mut level) = best else { break };
            let Some(front) = level.get_mut().front_mut() else {
                break;
            };
            if front.1 == account {
                return id; // self-trade: cancel newest
            }
            let q = qty.min(front.2);
            front.2 -= q;
            qty -= q;
            self.fills += 1;
            self.filled_qty += q as u64;
            if front.2 == 0 {
                let done = front.0;
                level.get_mut().pop_front();
                self.index.remove(&done);
                if level.get().is_empty() {
                    level.remove();
                }
            }
        }
        let book = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        book.entry(price).or_default().push_back((id, account, qty));
        self.index.insert(id, (side, price));
        id
    }

    fn cancel(&mut self, id: u64) {
        let Some((side, price)) = self.index.remove(&id) else {
            return;
        };
        let book = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        if let Some(q) = book.get_mut(&price) {
            q.retain(|o| o.0 != id);
            if q.is_empty() {
                book.remove(&price);
            }
        }
    }
}

/// What a book holds after the stream; equal end states mean the same work was done.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct EndState {
    trades: u64,
    traded_qty: u64,
    open: u64,
    bid_qty: u64,
    ask_qty: u64,
}

impl EndState {
    fn note(&self) -> String {
        format!(
            "{} trades (qty {}), {} open, resting qty bid {} / ask {}",
            self.trades, self.traded_qty, self.open, self.bid_qty, self.ask_qty
        )
    }
}

/// One implementation under test: applies the stream's `i`-th command, and reports
/// its end state (read after the timed round).
trait Book {
    /// Told the next command before `apply` runs the current one, as the engine loop
    /// tells the order path (`OrderManager::prefetch`); the others do nothing with it.
    fn hint(&mut self, _i: usize, _op: Op) {}
    fn apply(&mut self, i: usize, op: Op);
    fn end(&self) -> EndState;
}

/// The engine's `state_hash` after its first round, in hex (later rounds must agree).
static ENGINE_HASH: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The engine: every command through `OrderManager::handle`.
struct Engine<'a> {
    m: OrderManager,
    /// Client order ids are unique among open orders: one per command, made up front.
    clients: &'a [ClientOrderId],
    /// The engine's id of the stream's n-th new order (cancels refer to it).
    ids: Vec<OrderId>,
    fills: u64,
    filled_qty: u64,
    /// Whether the next command is hinted (`BENCH_ORDERS_HINT=0`: not, for an A/B).
    hint: bool,
}

impl<'a> Engine<'a> {
    fn new(clients: &'a [ClientOrderId]) -> Self {
        Self {
            m: manager(),
            clients,
            ids: Vec::with_capacity(clients.len()),
            fills: 0,
            filled_qty: 0,
            hint: std::env::var("BENCH_ORDERS_HINT").map_or(true, |v| v != "0"),
        }
    }
}

impl Book for Engine<'_> {
    // Not inlined, so callgrind can count it (`--toggle-collect='*Book*hint*'`).
    #[inline(never)]
    fn hint(&mut self, i: usize, op: Op) {
        if !self.hint {
            return;
        }
        match op {
            Op::New { account, .. } => {
                if let Some(c) = self.clients.get(i) {
                    self.m.prefetch_new(AccountId(account), c);
                }
            }
            Op::Cancel { n } => {
                if let Some(&id) = self.ids.get(n) {
                    self.m.prefetch_order(id);
                }
            }
        }
    }

    fn apply(&mut self, i: usize, op: Op) {
        let at = UnixNanos(1_700_000_000_000_000_000 + i as i64 * 1_000);
        let (account, kind) = match op {
            Op::New {
                account,
                side,
                price,
                qty,
            } => (
                account,
                CommandKind::New(NewOrder {
                    instrument: InstrumentId(0),
                    client_id: self.clients[i],
                    side,
                    kind: OrderType::Limit,
                    tif: TimeInForce::Gtc,
                    price: Price(price),
                    stop_price: Price(0),
                    qty: Qty(qty),
                    post_only: false,
                    reduce_only: false,
                }),
            ),
            Op::Cancel { n } => {
                let order = self.ids.get(n).copied().unwrap_or(OrderId(0));
                let account = self.m.order(order).map_or(0, |o| o.account.0);
                (account, CommandKind::Cancel { order })
            }
        };
        self.m.handle(&Command {
            request: i as u64,
            account: AccountId(account),
            at,
            kind,
            idempotency: None,
        });
        if matches!(op, Op::New { .. }) {
            // Cancels refer to the n-th new order: remember its engine id.
            let id = self.m.events().iter().find_map(|e| match e.data {
                OrderEventData::Order {
                    kind: OrderEventKind::Accepted,
                    order,
                } => Some(order.id),
                _ => None,
            });
            self.ids.push(id.unwrap_or(OrderId(0)));
        }
        for e in self.m.events() {
            if let OrderEventData::Fill(f) = &e.data {
                self.fills += 1;
                self.filled_qty += f.qty.0 as u64;
            }
        }
        self.m.clear();
    }

    fn end(&self) -> EndState {
        let hash: String = self.m.state_hash().iter().map(|b| format!("{b:02x}")).collect();
        let mut seen = ENGINE_HASH.lock().unwrap();
        match &*seen {
            Some(first) => assert_eq!(*first, hash, "engine: a round ended in another state"),
            None => *seen = Some(hash),
        }
        let (mut open, mut bid_qty, mut ask_qty) = (0, 0, 0);
        for o in self.m.open_orders() {
            open += 1;
            match o.side {
                Side::Buy => bid_qty += o.leaves().0 as u64,
                Side::Sell => ask_qty += o.leaves().0 as u64,
            }
        }
        // Each trade is two fills, one per side.
        EndState {
            trades: self.fills / 2,
            traded_qty: self.filled_qty / 2,
            open,
            bid_qty,
            ask_qty,
        }
    }
}

/// orderbook-rs with self-trade prevention `CancelTaker`, the engine's
/// `cancel_newest`: the incoming order trades with the other accounts' orders queued
/// ahead of its own, and its remainder is cancelled. Order ids are the caller's:
/// the n-th new order is `Id::sequential(n + 1)`, which its cancel names.
struct OrderbookRs {
    book: orderbook_rs::OrderBook<()>,
    /// Filled by the trade listener: every trade reaches it, including those of an
    /// order whose remainder self-trade prevention then cancels (the submit returns
    /// `SelfTradePrevented` for it, not the trades).
    trades: Arc<AtomicU64>,
    traded_qty: Arc<AtomicU64>,
    news: u64,
}

impl OrderbookRs {
    fn new() -> Self {
        let mut book = orderbook_rs::OrderBook::<()>::with_stp_mode("SBZ", orderbook_rs::STPMode::CancelTaker);
        let trades = Arc::new(AtomicU64::new(0));
        let traded_qty = Arc::new(AtomicU64::new(0));
        let (t, q) = (Arc::clone(&trades), Arc::clone(&traded_qty));
        book.set_trade_listener(Arc::new(move |r: &orderbook_rs::TradeResult| {
            let list = r.match_result.trades().as_vec();
            t.fetch_add(list.len() as u64, Ordering::Relaxed);
            q.fetch_add(list.iter().map(|x| x.quantity().as_u64()).sum(), Ordering::Relaxed);
        }));
        Self {
            book,
            trades,
            traded_qty,
            news: 0,
        }
    }
}

impl Book for OrderbookRs {
    fn apply(&mut self, i: usize, op: Op) {
        match op {
            Op::New {
                account,
                side,
                price,
                qty,
            } => {
                self.news += 1;
                let side = match side {
                    Side::Buy => orderbook_rs::Side::Buy,
                    Side::Sell => orderbook_rs::Side::Sell,
                };
                // STP needs a non-zero owner: the account number plus one.
                let mut user = [0u8; 32];
                user[..4].copy_from_slice(&(account + 1).to_le_bytes());
                match self.book.add_limit_order_with_user(
                    orderbook_rs::Id::sequential(self.news),
                    price as u128,
                    qty as u64,
                    side,
                    orderbook_rs::TimeInForce::Gtc,
                    pricelevel::Hash32::from(user),
                    None,
                ) {
                    Ok(_) | Err(orderbook_rs::OrderBookError::SelfTradePrevented { .. }) => {}
                    Err(e) => panic!("orderbook-rs refused command {i}: {e}"),
                }
            }
            Op::Cancel { n } => {
                // Ok(None): the order no longer rests (filled, cancelled, or its
                // remainder never rested), as the engine's rejected cancel.
                if let Err(e) = self.book.cancel_order(orderbook_rs::Id::sequential(n as u64 + 1)) {
                    panic!("orderbook-rs refused command {i}: {e}");
                }
            }
        }
    }

    fn end(&self) -> EndState {
        let (bid_qty, ask_qty) = self.book.buy_sell_pressure().expect("resting quantity");
        EndState {
            trades: self.trades.load(Ordering::Relaxed),
            traded_qty: self.traded_qty.load(Ordering::Relaxed),
            open: self.book.get_all_orders().len() as u64,
            bid_qty,
            ask_qty,
        }
    }
}

/// lobster, which has no self-trade prevention: an order matches its own account's
/// resting orders like anyone's. Ids are the caller's: the n-th new order is `n + 1`.
struct Lobster {
    book: lobster::OrderBook,
    news: u128,
    trades: u64,
    traded_qty: u64,
    /// Open orders, counted by [`lobster_open_orders`] after the rounds: lobster
    /// does not expose them, and counting them needs bookkeeping the timed rounds
    /// leave out.
    open: Option<u64>,
}

impl Lobster {
    fn new() -> Self {
        Self {
            // Room for as many orders as the engine's pool; default queue capacity;
            // no stats (the bench counts the trades itself).
            book: lobster::OrderBook::new(1 << 20, 10, false),
            news: 0,
            trades: 0,
            traded_qty: 0,
            open: None,
        }
    }

    /// Applies one command, returning lobster's event for it.
    fn execute(&mut self, op: Op) -> lobster::OrderEvent {
        let event = match op {
            Op::New { side, price, qty, .. } => {
                self.news += 1;
                self.book.execute(lobster::OrderType::Limit {
                    id: self.news,
                    side: match side {
                        Side::Buy => lobster::Side::Bid,
                        Side::Sell => lobster::Side::Ask,
                    },
                    qty: qty as u64,
                    price: price as u64,
                })
            }
            Op::Cancel { n } => self.book.execute(lobster::OrderType::Cancel { id: n as u128 + 1 }),
        };
        if let lobster::OrderEvent::Filled { filled_qty, fills, .. }
        | lobster::OrderEvent::PartiallyFilled { filled_qty, fills, .. } = &event
        {
            self.trades += fills.len() as u64;
            self.traded_qty += filled_qty;
        }
        event
    }
}

impl Book for Lobster {
    fn apply(&mut self, _i: usize, op: Op) {
        keep(self.execute(op));
    }

    fn end(&self) -> EndState {
        let depth = self.book.depth(64);
        EndState {
            trades: self.trades,
            traded_qty: self.traded_qty,
            open: self.open.unwrap_or(0),
            bid_qty: depth.bids.iter().map(|l| l.qty).sum(),
            ask_qty: depth.asks.iter().map(|l| l.qty).sum(),
        }
    }
}

/// lobster's end state with its open orders, from an untimed run of the stream that
/// follows every order's resting quantity through lobster's events. The resting
/// quantity per side it arrives at must be the book's own (else the count is wrong).
fn lobster_end(ops: &[Op]) -> EndState {
    let mut lob = Lobster::new();
    let news = ops.iter().filter(|op| matches!(op, Op::New { .. })).count();
    // By lobster id (the n-th new order is n + 1): side and quantity while it rests.
    let mut resting: Vec<Option<(Side, u64)>> = vec![None; news + 1];
    let mut next = 0usize;
    for &op in ops {
        let event = lob.execute(op);
        let fills = match (&event, op) {
            (lobster::OrderEvent::Placed { .. }, Op::New { side, qty, .. }) => {
                next += 1;
                resting[next] = Some((side, qty as u64));
                &[][..]
            }
            // A limit order partially filled rests its remainder.
            (lobster::OrderEvent::PartiallyFilled { filled_qty, fills, .. }, Op::New { side, qty, .. }) => {
                next += 1;
                resting[next] = Some((side, qty as u64 - filled_qty));
                &fills[..]
            }
            (lobster::OrderEvent::Filled { fills, .. }, Op::New { .. }) => {
                next += 1;
                &fills[..]
            }
            (_, Op::Cancel { n }) => {
                resting[n + 1] = None;
                &[][..]
            }
            (e, _) => panic!("lobster: unexpected event {e:?} for a limit order"),
        };
        for f in fills {
            let maker = &mut resting[f.order_2 as usize];
            if let Some((_, left)) = maker {
                *left -= f.qty;
                if *left == 0 {
                    *maker = None;
                }
            }
        }
    }
    lob.open = Some(resting.iter().flatten().count() as u64);
    let end = lob.end();
    let side_qty = |s: Side| resting.iter().flatten().filter(|o| o.0 == s).map(|o| o.1).sum::<u64>();
    assert_eq!(
        (side_qty(Side::Buy), side_qty(Side::Sell)),
        (end.bid_qty, end.ask_qty),
        "lobster: the open-order count's bookkeeping disagrees with the book"
    );
    end
}

/// The hand-written baseline.
impl Book for NaiveBook {
    fn apply(&mut self, _i: usize, op: Op) {
        match op {
            Op::New {
                account,
                side,
                price,
                qty,
            } => {
                let id = self.new_order(account, side, price, qty);
                self.ids.push(id);
            }
            Op::Cancel { n } => self.cancel(self.ids.get(n).copied().unwrap_or(0)),
        }
        keep(&*self);
    }

    fn end(&self) -> EndState {
        let side_qty =
            |book: &BTreeMap<i64, VecDeque<(u64, u32, i64)>>| book.values().flatten().map(|o| o.2 as u64).sum::<u64>();
        EndState {
            trades: self.fills,
            traded_qty: self.filled_qty,
            open: self.index.len() as u64,
            bid_qty: side_qty(&self.bids),
            ask_qty: side_qty(&self.asks),
        }
    }
}

/// Commands per latency sample: a clock read costs about as much as the cheapest
/// command, so each sample is the mean of a small batch.
const BATCH: usize = 16;

/// One timed round: the whole stream through a fresh `book`. Returns the round's
/// time and the book's end state.
fn round<B: Book>(mut book: B, ops: &[Op], hist: &mut Histogram<u64>) -> (Duration, EndState) {
    let start = Instant::now();
    let mut i = 0;
    while i < ops.len() {
        let n = BATCH.min(ops.len() - i);
        let t = Instant::now();
        for (k, &op) in ops[i..i + n].iter().enumerate() {
            if let Some(&next) = ops.get(i + k + 1) {
                book.hint(i + k + 1, next);
            }
            book.apply(i + k, op);
        }
        let _ = hist.record((t.elapsed().as_nanos() as u64 / n as u64).max(1));
        i += n;
    }
    let took = start.elapsed();
    let end = book.end();
    drop(book);
    (took, end)
}

/// One timed round of a contender on a fresh book, recording into its histogram.
type TimedRound<'a> = Box<dyn FnMut(&mut Histogram<u64>) -> (Duration, EndState) + 'a>;

/// A contender: its row name, a note on its rules, and its timed round.
struct Contender<'a> {
    name: &'static str,
    rule: &'static str,
    run: TimedRound<'a>,
}

/// The contenders' places in the table (the engine first: the others compare to it).
const ENGINE: usize = 0;
const ORDERBOOK_RS: usize = 1;
const LOBSTER: usize = 2;
const BASELINE: usize = 3;

fn main() {
    let n = iters(2_000_000) as usize;
    let rounds: usize = std::env::var("BENCH_ORDERS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick() { 2 } else { 5 });
    let engine_only = std::env::var("BENCH_ORDERS_ONLY").is_ok_and(|v| v == "engine");
    let ops = stream(n);
    let clients: Vec<ClientOrderId> = (0..n)
        .map(|i| ClientOrderId::new(&format!("c{i}")).expect("client id"))
        .collect();
    let (ops, clients) = (&ops[..], &clients[..]);

    // In the order of ENGINE, ORDERBOOK_RS, LOBSTER, BASELINE.
    let mut contenders = [
        Contender {
            name: "OrderManager::handle (risk, matching, positions, events)",
            rule: "",
            run: Box::new(move |h: &mut Histogram<u64>| round(Engine::new(clients), ops, h)),
        },
        Contender {
            name: "orderbook-rs 0.15.3 OrderBook, matching only",
            rule: "self-trade: STPMode::CancelTaker, the engine's cancel_newest",
            run: Box::new(move |h: &mut Histogram<u64>| round(OrderbookRs::new(), ops, h)),
        },
        Contender {
            name: "lobster 0.7 OrderBook, matching only",
            rule: "no self-trade prevention: an account's orders trade with each other, hence more trades",
            run: Box::new(move |h: &mut Histogram<u64>| round(Lobster::new(), ops, h)),
        },
        Contender {
            name: "BTreeMap + VecDeque + HashMap book, matching only (baseline)",
            rule: "",
            run: Box::new(move |h: &mut Histogram<u64>| round(NaiveBook::with_capacity(ops.len()), ops, h)),
        },
    ];

    let k = if engine_only { 1 } else { contenders.len() };
    let mut hists: Vec<Histogram<u64>> = (0..k).map(|_| histogram()).collect();
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); k];
    let mut ends: Vec<Option<EndState>> = vec![None; k];
    for r in 0..rounds {
        for j in 0..k {
            let c = (j + r) % k;
            let (took, end) = (contenders[c].run)(&mut hists[c]);
            times[c].push(took);
            // The stream is deterministic: every round must end the same way.
            match ends[c] {
                Some(first) => assert_eq!(first, end, "{}: round {r} ended differently", contenders[c].name),
                None => ends[c] = Some(end),
            }
        }
    }
    // lobster's open orders come from an untimed run; its timed rounds must agree
    // with that run on everything else.
    if let Some(end) = ends.get(LOBSTER).copied().flatten() {
        let counted = lobster_end(ops);
        assert_eq!(
            (end.trades, end.traded_qty, end.bid_qty, end.ask_qty),
            (counted.trades, counted.traded_qty, counted.bid_qty, counted.ask_qty),
            "lobster: the untimed run ended differently"
        );
        ends[LOBSTER] = Some(counted);
    }

    let engine_end = ends[ENGINE];
    let mut rows = Vec::new();
    let mut per_round: Vec<Vec<f64>> = Vec::with_capacity(k);
    for (at, ((c, hist), (t, end))) in contenders
        .iter()
        .take(k)
        .zip(hists)
        .zip(times.iter().zip(&ends))
        .enumerate()
    {
        per_round.push(t.iter().map(|d| n as f64 / d.as_secs_f64().max(1e-12)).collect());
        let mut sorted = t.clone();
        sorted.sort();
        let mut note = end.map(|e| e.note()).unwrap_or_default();
        if !c.rule.is_empty() {
            note = format!("{note}; {}", c.rule);
        }
        if at != ENGINE {
            let same = if *end == engine_end { "same as" } else { "differs from" };
            note = format!("{note}; end state {same} the engine's");
        }
        rows.push(Row {
            case: c.name.to_owned(),
            ops: n as u64,
            elapsed: sorted.get(sorted.len() / 2).copied().unwrap_or_default(),
            hist,
            note,
        });
    }
    print_table(
        &format!(
            "order path: new and cancel commands on one internal-venue book (median of {rounds} interleaved rounds)"
        ),
        &rows,
    );
    let hash = ENGINE_HASH.lock().ok().and_then(|h| h.clone()).unwrap_or_default();
    println!("\nengine state hash at the end of the stream: {hash}");
    if engine_only {
        return;
    }
    println!(
        "\nOrderManager::handle throughput against each, median of the per-round ratios: {:.2}x orderbook-rs, {:.2}x lobster, {:.2}x the baseline (issue 20 goals: 3x orderbook-rs, 2x lobster)",
        median_ratio(&per_round, ENGINE, &[ORDERBOOK_RS]),
        median_ratio(&per_round, ENGINE, &[LOBSTER]),
        median_ratio(&per_round, ENGINE, &[BASELINE]),
    );
}
