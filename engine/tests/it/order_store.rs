//! The API's read model (`OrderStore`) against a model of what it promises: open
//! orders are always kept, the newest `history` finished orders and fills per account
//! are kept, pages are newest first by arrival. Generated event streams (orders
//! arriving, changing, finishing in any order, on several accounts, with small
//! histories so that trimming happens all the time), checked after every event, and
//! through a snapshot round trip at every position (the finished index is derived and
//! rebuilt when a snapshot is read).

use crate::orders_common;

use orders_common::*;
use proptest::prelude::*;
use stocksblitz_engine::orders::store::OrderStore;
use stocksblitz_engine::orders::{
    AccountId, CommandKind, Order, OrderEvent, OrderEventData, OrderEventKind, OrderId, OrderStatus,
};
use stocksblitz_engine::{Side, UnixNanos};

const ACCOUNTS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// A new order arrives (open, or finished at once like an IOC).
    New { account: u32, finished: bool },
    /// The `k`-th known order changes (to open or finished; finished orders do not
    /// change again, as in the engine).
    Update { k: usize, finished: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..ACCOUNTS as u32, any::<bool>()).prop_map(|(account, finished)| Op::New { account, finished }),
        (any::<usize>(), any::<bool>()).prop_map(|(k, finished)| Op::Update { k, finished }),
    ]
}

/// The model: every order in arrival order, trimmed by the definition (drop the
/// oldest finished while more than `history` are finished).
#[derive(Default, Clone)]
struct Model {
    by_account: Vec<Vec<(u64, Order)>>,
}

impl Model {
    fn apply(&mut self, seq: u64, order: Order, history: usize) {
        let list = &mut self.by_account[order.account.index()];
        match list.iter_mut().find(|(_, o)| o.id == order.id) {
            Some((_, o)) => *o = order,
            None => list.push((seq, order)),
        }
        while list.iter().filter(|(_, o)| !o.status.is_open()).count() > history {
            let oldest = list.iter().position(|(_, o)| !o.status.is_open()).expect("counted one");
            list.remove(oldest);
        }
    }
}

/// An order the real manager made, as a template.
fn template() -> Order {
    let mut m = manager(ACCOUNTS);
    let events = run(
        &mut m,
        0,
        0,
        CommandKind::New(limit(INTERNAL, "tmpl", Side::Buy, 100_000, 1)),
    );
    events
        .iter()
        .find_map(|e| match e.data {
            OrderEventData::Order { order, .. } => Some(order),
            _ => None,
        })
        .expect("the template order was accepted")
}

fn event(seq: u64, order: Order) -> OrderEvent {
    OrderEvent {
        seq,
        request: seq,
        account: order.account,
        at: UnixNanos(T0),
        last: true,
        data: OrderEventData::Order {
            kind: if order.status.is_open() {
                OrderEventKind::Accepted
            } else {
                OrderEventKind::Filled
            },
            order,
        },
    }
}

fn same(store: &OrderStore, model: &Model) -> Result<(), TestCaseError> {
    for (a, list) in model.by_account.iter().enumerate() {
        let account = AccountId(a as u32);
        let got: Vec<(u64, Order)> = store.orders(account, None).map(|r| (r.seq, r.order)).collect();
        let want: Vec<(u64, Order)> = list.iter().rev().copied().collect();
        prop_assert_eq!(&got, &want, "account {}", a);
        // A page below any cursor is the same list cut there.
        if let Some(&(cursor, _)) = want.get(want.len() / 2) {
            let page: Vec<u64> = store.orders(account, Some(cursor)).map(|r| r.seq).collect();
            let cut: Vec<u64> = want.iter().map(|(s, _)| *s).filter(|s| *s < cursor).collect();
            prop_assert_eq!(page, cut);
        }
        for (_, o) in list {
            prop_assert_eq!(store.order(account, o.id).map(|r| r.order), Some(*o));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_read_model_keeps_open_orders_and_the_newest_finished(
        ops in prop::collection::vec(op(), 1..160),
        history in 1..6usize,
    ) {
        let base = template();
        let mut store = OrderStore::new(ACCOUNTS, history);
        let mut model = Model { by_account: vec![Vec::new(); ACCOUNTS] };
        let mut known: Vec<Order> = Vec::new();
        let mut seq = 0;
        for op in &ops {
            seq += 1;
            let order = match *op {
                Op::New { account, finished } => {
                    let mut o = base;
                    o.id = OrderId(seq);
                    o.account = AccountId(account);
                    o.status = if finished { OrderStatus::Filled } else { OrderStatus::Open };
                    o
                }
                Op::Update { k, finished } => {
                    let open: Vec<&Order> = known.iter().filter(|o| o.status.is_open()).collect();
                    let Some(&&o) = open.get(k % open.len().max(1)) else {
                        seq -= 1;
                        continue;
                    };
                    let mut o = o;
                    o.updated = UnixNanos(T0 + seq as i64);
                    o.status = if finished { OrderStatus::Cancelled } else { OrderStatus::PartiallyFilled };
                    o
                }
            };
            match known.iter_mut().find(|o| o.id == order.id) {
                Some(o) => *o = order,
                None => known.push(order),
            }
            store.apply(&event(seq, order));
            model.apply(seq, order, history);
            same(&store, &model)?;
            // A snapshot taken here restores the same store, which goes on the same.
            let bytes = postcard::to_allocvec(&store).expect("encode");
            let restored: OrderStore = postcard::from_bytes(&bytes).expect("decode");
            prop_assert!(restored == store, "a snapshot round trip at event {} changed the store", seq);
        }
        prop_assert_eq!(store.seq_gaps(), 0);
    }
}

/// Keyed answers (an `Idempotency-Key`'s original answer, replayed after a restart) are
/// bounded by count as well as by the 24-hour window: generated streams of keys, some
/// answered again, with time jumping past the window now and then, against a model
/// that keeps the newest `cap` keys still inside the window.
mod keyed {
    use super::*;
    use std::collections::VecDeque;
    use stocksblitz_engine::orders::store::KEYED_TTL_NS;
    use stocksblitz_engine::orders::{Command, IdemTag};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn at_most_the_newest_keys_inside_the_window_are_kept(
            ops in prop::collection::vec((0..10u8, 0..4u8), 1..120),
            cap in 1..6usize,
        ) {
            let mut m = manager(1);
            let mut store = OrderStore::new(1, 10).with_keyed_max(cap);
            // Live keys, oldest first, with when they were answered.
            let mut model: VecDeque<(u8, i64)> = VecDeque::new();
            let mut at = T0;
            for (i, &(key, dt)) in ops.iter().enumerate() {
                at += if dt == 3 { KEYED_TTL_NS / 2 + 1 } else { i64::from(dt) };
                let tag = IdemTag::new(&format!("k{key}"), b"{}");
                m.clear();
                m.handle(&Command {
                    request: i as u64 + 1,
                    account: AccountId(0),
                    at: UnixNanos(at),
                    kind: CommandKind::Cancel { order: OrderId(1_000_000) },
                    idempotency: Some(tag),
                });
                let step = *m.steps().last().expect("a step");
                store.apply_step(&step, m.events());

                model.retain(|&(_, t)| t > at - KEYED_TTL_NS);
                let known = model.iter().position(|&(k, _)| k == key);
                match known {
                    Some(p) => {
                        model.remove(p);
                    }
                    None if model.len() >= cap => {
                        model.pop_front();
                    }
                    None => {}
                }
                model.push_back((key, at));

                prop_assert_eq!(store.keyed_len(), model.len());
                for k in 0..10u8 {
                    let tag = IdemTag::new(&format!("k{k}"), b"{}");
                    let kept = store.keyed(AccountId(0), &tag.key, UnixNanos(at)).map(|e| e.at.0);
                    let want = model.iter().find(|&&(mk, _)| mk == k).map(|&(_, t)| t);
                    prop_assert_eq!(kept, want, "key {} after op {}", k, i);
                }
            }
        }
    }
}

/// What the read model's memory grows with, measured: heap bytes held per order for a
/// realistic mix (every command keyed, as careful clients send them; a third of the
/// orders cancelled, a third replaced, most of the rest filled against each other).
/// The server holds the read model twice (the API's and the snapshot thread's copy),
/// which README's memory sizing and the soak's memory limit count.
mod memory {
    use super::*;
    use stocksblitz_engine::orders::{Command, IdemTag, OrderManager, Step};
    use stocksblitz_engine::{Price, Qty};
    use stocksblitz_testkit::alloc::live_bytes;

    /// Heap bytes one copy of the read model holds per order of that mix, at most.
    pub const MAX_BYTES_PER_ORDER: i64 = 1_536;

    fn keyed(
        m: &mut OrderManager,
        n: u64,
        account: u32,
        kind: CommandKind,
        out: &mut Vec<(Step, Vec<OrderEvent>)>,
    ) -> Vec<OrderEvent> {
        m.clear();
        m.handle(&Command {
            request: n,
            account: AccountId(account),
            at: UnixNanos(T0 + n as i64),
            kind,
            idempotency: Some(IdemTag::new(&format!("key-{n}"), b"{}")),
        });
        let mut events = m.events();
        for step in m.steps() {
            let (mine, rest) = events.split_at(step.events as usize);
            out.push((*step, mine.to_vec()));
            events = rest;
        }
        m.events().to_vec()
    }

    #[test]
    fn the_read_model_holds_a_bounded_amount_per_order() {
        let mut m = manager(2);
        let mut steps = Vec::new();
        let mut open: Vec<Vec<OrderId>> = vec![Vec::new(); 2];
        let mut n = 0;
        for i in 0..20_000u32 {
            let account = i % 2;
            let side = if account == 0 { Side::Buy } else { Side::Sell };
            let price = 10_000 + i64::from(i % 7) - 3;
            n += 1;
            let events = keyed(
                &mut m,
                n,
                account,
                CommandKind::New(limit(INTERNAL, &format!("c{i}"), side, price, 5)),
                &mut steps,
            );
            if let Some(id) = accepted_id(&events) {
                open[account as usize].push(id);
            }
            let Some(&oldest) = open[account as usize].first() else {
                continue;
            };
            n += 1;
            match i % 3 {
                0 => {
                    keyed(&mut m, n, account, CommandKind::Cancel { order: oldest }, &mut steps);
                    open[account as usize].remove(0);
                }
                1 => {
                    let kind = CommandKind::Replace {
                        order: oldest,
                        qty: Some(Qty(6)),
                        price: Some(Price(price)),
                    };
                    keyed(&mut m, n, account, kind, &mut steps);
                }
                _ => {}
            }
        }
        let mut store = OrderStore::new(2, 1_000_000);
        let ((), bytes) = live_bytes(|| {
            for (step, events) in &steps {
                store.apply_step(step, events);
            }
        });
        let held = store.held();
        let per_order = bytes / held.orders as i64;
        eprintln!(
            "read model: {bytes} bytes for {} orders, {} fills, {} keyed answers: {per_order} bytes per order",
            held.orders, held.fills, held.keyed
        );
        assert!(
            held.orders >= 20_000 && held.fills > 1_000 && held.keyed > 30_000,
            "{held:?}"
        );
        assert!(per_order <= MAX_BYTES_PER_ORDER, "{per_order} bytes per order");
    }
}
