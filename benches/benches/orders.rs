//! The order path: the engine's `OrderManager` (pre-trade risk, price-time matching,
//! fills, positions, events) against the order book a user would otherwise write
//! (`BTreeMap<price, VecDeque<order>>` per side plus a `HashMap` for cancels, matching
//! only: no risk, no positions, no events), on the same command stream: limit orders
//! around a mid price from three accounts (some cross), and cancels of recent orders.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, VecDeque};

use stocksblitz_benches::{batched, iters, keep, print_table};
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
}

impl NaiveBook {
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

fn main() {
    let n = iters(2_000_000) as usize;
    let ops = stream(n);
    let mut rows = Vec::new();

    let mut m = manager();
    let mut ids: Vec<OrderId> = Vec::with_capacity(n);
    // Client order ids are unique among open orders: one per order, made up front.
    let clients: Vec<ClientOrderId> = (0..n)
        .map(|i| ClientOrderId::new(&format!("c{i}")).expect("client id"))
        .collect();
    let mut fills = 0u64;
    let mut row = batched(
        "OrderManager::handle (risk, matching, positions, events)",
        n as u64,
        16,
        |i| {
            let op = ops[i as usize];
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
                        client_id: clients[i as usize],
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
                    let order = ids.get(n).copied().unwrap_or(OrderId(0));
                    let account = m.order(order).map_or(0, |o| o.account.0);
                    (account, CommandKind::Cancel { order })
                }
            };
            m.handle(&Command {
                request: i,
                account: AccountId(account),
                at,
                kind,
                idempotency: None,
            });
            if matches!(op, Op::New { .. }) {
                // Cancels refer to the n-th new order: remember its engine id.
                let id = m.events().iter().find_map(|e| match e.data {
                    OrderEventData::Order {
                        kind: OrderEventKind::Accepted,
                        order,
                    } => Some(order.id),
                    _ => None,
                });
                ids.push(id.unwrap_or(OrderId(0)));
            }
            fills += m
                .events()
                .iter()
                .filter(|e| matches!(e.data, OrderEventData::Fill(_)))
                .count() as u64;
            m.clear();
        },
    );
    row.note = format!("{} trades, {} open at the end", fills / 2, m.open_orders().count());
    rows.push(row);

    let mut book = NaiveBook::default();
    let mut naive_ids: Vec<u64> = Vec::with_capacity(n);
    let mut row = batched(
        "BTreeMap + VecDeque + HashMap book, matching only (baseline)",
        n as u64,
        16,
        |i| {
            match ops[i as usize] {
                Op::New {
                    account,
                    side,
                    price,
                    qty,
                } => naive_ids.push(book.new_order(account, side, price, qty)),
                Op::Cancel { n } => book.cancel(naive_ids.get(n).copied().unwrap_or(0)),
            }
            keep(&book);
        },
    );
    row.note = format!("{} trades, {} open at the end", book.fills, book.index.len());
    rows.push(row);
    print_table("order path: new and cancel commands on one internal-venue book", &rows);
}
