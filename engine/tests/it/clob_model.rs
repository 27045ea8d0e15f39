//! Model-based test of the internal venue's CLOB: generated command streams run
//! against the engine and against a naive reference (a flat list of resting orders,
//! best price then earliest arrival found by scanning). After every step the resting
//! orders (ids, prices, remaining quantities, in priority order) and the fills must be
//! identical; the book is never crossed at rest; quantity is conserved.

use crate::orders_common;

use orders_common::*;
use proptest::prelude::*;
use stocksblitz_engine::orders::{CommandKind, OrderEventData, OrderId, OrderManager, OrderType, TimeInForce};
use stocksblitz_engine::{Price, Qty, Side};

#[derive(Debug, Clone)]
enum Op {
    New {
        account: u32,
        side: Side,
        kind: OrderType,
        tif: TimeInForce,
        price: i64,
        qty: i64,
    },
    Cancel {
        pick: usize,
    },
    Replace {
        pick: usize,
        qty: i64,
        price: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
    let new = (0u32..3, side, 0u8..10, 100i64..=110, 1i64..=20).prop_map(|(account, side, k, p, qty)| {
        let (kind, tif) = match k {
            0 => (OrderType::Market, TimeInForce::Ioc),
            1 => (OrderType::Limit, TimeInForce::Ioc),
            2 => (OrderType::Limit, TimeInForce::Fok),
            _ => (OrderType::Limit, TimeInForce::Gtc),
        };
        let price = if kind == OrderType::Market { 0 } else { p * 100 };
        Op::New {
            account,
            side,
            kind,
            tif,
            price,
            qty,
        }
    });
    prop_oneof![
        6 => new,
        2 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        2 => (any::<usize>(), 1i64..=25, 100i64..=110).prop_map(|(pick, qty, p)| Op::Replace { pick, qty, price: p * 100 }),
    ]
}

#[derive(Debug, Clone, Copy)]
struct Resting {
    id: u64,
    account: u32,
    side: Side,
    price: i64,
    qty: i64,
    filled: i64,
    arrival: u64,
}

/// The reference: everything by linear scans, no cleverness.
#[derive(Default)]
struct Model {
    resting: Vec<Resting>,
    arrivals: u64,
}

impl Model {
    fn crosses(side: Side, limit: Option<i64>, price: i64) -> bool {
        match (side, limit) {
            (_, None) => true,
            (Side::Buy, Some(l)) => price <= l,
            (Side::Sell, Some(l)) => price >= l,
        }
    }

    fn best(&self, side: Side, limit: Option<i64>) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, r) in self.resting.iter().enumerate() {
            if r.side == side.opposite() && Self::crosses(side, limit, r.price) {
                let better = best.is_none_or(|b| {
                    let b = self.resting[b];
                    let price_better = match side {
                        Side::Buy => r.price < b.price,
                        Side::Sell => r.price > b.price,
                    };
                    price_better || r.price == b.price && r.arrival < b.arrival
                });
                if better {
                    best = Some(i);
                }
            }
        }
        best
    }

    /// Matches an incoming order; returns fills (order, price, qty) and whether the
    /// remainder rests.
    fn incoming(&mut self, mut o: Resting, limit: Option<i64>, rests: bool, fills: &mut Vec<(u64, i64, i64)>) {
        while o.qty - o.filled > 0 {
            let Some(i) = self.best(o.side, limit) else { break };
            if self.resting[i].account == o.account {
                return; // self-trade prevention: cancel newest
            }
            let r = &mut self.resting[i];
            let q = (o.qty - o.filled).min(r.qty - r.filled);
            fills.push((r.id, r.price, q));
            fills.push((o.id, r.price, q));
            r.filled += q;
            o.filled += q;
            if r.qty == r.filled {
                self.resting.remove(i);
            }
        }
        if rests && o.qty > o.filled {
            self.arrivals += 1;
            o.arrival = self.arrivals;
            self.resting.push(o);
        }
    }

    fn available(&self, side: Side, limit: Option<i64>) -> i64 {
        self.resting
            .iter()
            .filter(|r| r.side == side.opposite() && Self::crosses(side, limit, r.price))
            .map(|r| r.qty - r.filled)
            .sum()
    }

    fn sorted(&self, side: Side) -> Vec<(u64, i64, i64)> {
        let mut v: Vec<Resting> = self.resting.iter().filter(|r| r.side == side).copied().collect();
        v.sort_by_key(|r| (if side == Side::Buy { -r.price } else { r.price }, r.arrival));
        v.iter().map(|r| (r.id, r.price, r.qty - r.filled)).collect()
    }
}

fn engine_resting(m: &OrderManager, side: Side) -> Vec<(u64, i64, i64)> {
    let mut v = Vec::new();
    m.for_each_resting(INTERNAL, side, |id, p, q| v.push((id.0, p.0, q.0)));
    v
}

fn run_stream(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut m = manager(3);
    let mut model = Model::default();
    let mut ids: Vec<u64> = Vec::new();
    let (mut bought, mut sold) = (0i64, 0i64);
    for (step, op) in ops.iter().enumerate() {
        let at = step as i64 * 1_000_000;
        let mut expected_fills = Vec::new();
        let events = match *op {
            Op::New {
                account,
                side,
                kind,
                tif,
                price,
                qty,
            } => {
                let client = format!("c{step}");
                let events = run(
                    &mut m,
                    account,
                    at,
                    CommandKind::New(new_order(INTERNAL, &client, side, kind, tif, price, qty)),
                );
                let limit = (kind == OrderType::Limit).then_some(price);
                let no_liquidity = kind == OrderType::Market && model.best(side, None).is_none();
                let fok_short = tif == TimeInForce::Fok && model.available(side, limit) < qty;
                match accepted_id(&events) {
                    Some(id) => {
                        prop_assert!(!no_liquidity && !fok_short, "step {step}: accepted {op:?}");
                        ids.push(id.0);
                        let o = Resting {
                            id: id.0,
                            account,
                            side,
                            price,
                            qty,
                            filled: 0,
                            arrival: 0,
                        };
                        model.incoming(o, limit, tif == TimeInForce::Gtc, &mut expected_fills);
                    }
                    None => {
                        let code = rejection(&events);
                        prop_assert!(
                            no_liquidity && code == Some("NO_LIQUIDITY")
                                || fok_short && code == Some("FOK_NOT_FILLABLE"),
                            "step {step}: {op:?} rejected {code:?}"
                        );
                    }
                }
                events
            }
            Op::Cancel { pick } => {
                let Some(&id) = ids.get(pick % ids.len().max(1)) else {
                    continue;
                };
                let account = m.order(OrderId(id)).map_or(0, |o| o.account.0);
                let events = run(&mut m, account, at, CommandKind::Cancel { order: OrderId(id) });
                let was_resting = model.resting.iter().position(|r| r.id == id);
                match was_resting {
                    Some(i) => {
                        model.resting.remove(i);
                        prop_assert_eq!(rejection(&events), None);
                    }
                    None => prop_assert!(rejection(&events).is_some()),
                }
                events
            }
            Op::Replace { pick, qty, price } => {
                let Some(&id) = ids.get(pick % ids.len().max(1)) else {
                    continue;
                };
                let account = m.order(OrderId(id)).map_or(0, |o| o.account.0);
                let events = run(
                    &mut m,
                    account,
                    at,
                    CommandKind::Replace {
                        order: OrderId(id),
                        qty: Some(Qty(qty)),
                        price: Some(Price(price)),
                    },
                );
                match model.resting.iter().position(|r| r.id == id) {
                    Some(i) => {
                        let r = model.resting[i];
                        let valid = qty > r.filled && (qty != r.qty || price != r.price);
                        if !valid {
                            prop_assert!(rejection(&events).is_some(), "step {step}: {op:?}");
                        } else {
                            prop_assert_eq!(rejection(&events), None, "step {}: {:?}", step, op);
                            if price == r.price && qty < r.qty {
                                model.resting[i].qty = qty;
                            } else {
                                model.resting.remove(i);
                                let o = Resting { qty, price, ..r };
                                model.incoming(o, Some(price), true, &mut expected_fills);
                            }
                        }
                    }
                    None => prop_assert!(rejection(&events).is_some()),
                }
                events
            }
        };
        let got = fills(&events);
        prop_assert_eq!(&got, &expected_fills, "step {}: fills of {:?}", step, op);
        for e in &events {
            if let OrderEventData::Fill(f) = e.data {
                match f.side {
                    Side::Buy => bought += f.qty.0,
                    Side::Sell => sold += f.qty.0,
                }
                let o = m.order(f.order).expect("filled order readable");
                prop_assert!(o.filled.0 <= o.qty.0, "overfill");
            }
        }
        prop_assert_eq!(bought, sold, "every fill has two sides");
        for side in [Side::Buy, Side::Sell] {
            prop_assert_eq!(
                engine_resting(&m, side),
                model.sorted(side),
                "step {}: {:?} book after {:?}",
                step,
                side,
                op
            );
        }
        let book = m.book(INTERNAL).expect("book");
        if let (Some(b), Some(a)) = (book.best(Side::Buy), book.best(Side::Sell)) {
            prop_assert!(b.price < a.price, "crossed at rest");
        }
        // Level totals equal the sum of their orders.
        for side in [Side::Buy, Side::Sell] {
            for level in book.levels(side) {
                let sum: i64 = model
                    .sorted(side)
                    .iter()
                    .filter(|r| r.1 == level.price.0)
                    .map(|r| r.2)
                    .sum();
                prop_assert_eq!(level.qty.0, sum);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn clob_matches_the_reference_model(ops in proptest::collection::vec(op(), 1..120)) {
        run_stream(&ops)?;
    }
}

#[test]
fn price_time_priority_by_hand() {
    let mut m = manager(3);
    let a = accepted_id(&run(
        &mut m,
        0,
        0,
        CommandKind::New(limit(INTERNAL, "a", Side::Sell, 10_100, 5)),
    ))
    .unwrap();
    let b = accepted_id(&run(
        &mut m,
        1,
        1,
        CommandKind::New(limit(INTERNAL, "b", Side::Sell, 10_000, 5)),
    ))
    .unwrap();
    let c = accepted_id(&run(
        &mut m,
        0,
        2,
        CommandKind::New(limit(INTERNAL, "c", Side::Sell, 10_000, 5)),
    ))
    .unwrap();
    let ev = run(
        &mut m,
        2,
        3,
        CommandKind::New(limit(INTERNAL, "t", Side::Buy, 10_100, 12)),
    );
    let t = accepted_id(&ev).unwrap();
    assert_eq!(
        fills(&ev),
        vec![
            (b.0, 10_000, 5),
            (t.0, 10_000, 5),
            (c.0, 10_000, 5),
            (t.0, 10_000, 5),
            (a.0, 10_100, 2),
            (t.0, 10_100, 2)
        ]
    );
    assert_eq!(engine_resting(&m, Side::Sell), vec![(a.0, 10_100, 3)]);
    let ticks = m.ticks();
    assert!(ticks
        .iter()
        .any(|t| matches!(t.data, stocksblitz_engine::TickData::Trade { .. })));
    assert!(ticks.iter().any(|t| matches!(t.data, stocksblitz_engine::TickData::BookDelta { flags, .. } if flags.contains(stocksblitz_engine::BookFlags::END_OF_BATCH))));
}
