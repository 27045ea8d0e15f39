//! The paper venue against a live market, stops, expiries and positions; no fill on
//! data that is not LIVE, depth sweeps up to the collar, the 24x7 trading-day roll.

use crate::orders_common;

use orders_common::*;
use proptest::prelude::*;
use stocksblitz_engine::orders::{
    AccountId, CancelReason, Command, CommandKind, NewOrder, OrderEvent, OrderEventData, OrderEventKind, OrderManager,
    OrderStatus, OrderType, Reject, RiskLimits, Step, TimeInForce, SWEEP_LEVELS,
};
use stocksblitz_engine::{DataQuality, Level, Price, Qty, Side, UnixNanos};

fn quote(
    m: &mut stocksblitz_engine::orders::OrderManager,
    bid: i64,
    bq: i64,
    ask: i64,
    aq: i64,
) -> Vec<(u64, i64, i64)> {
    m.clear();
    m.on_quote(PAPER, Price(bid), Qty(bq), Price(ask), Qty(aq), UnixNanos(T0));
    fills(m.events())
}

fn trade(m: &mut stocksblitz_engine::orders::OrderManager, price: i64, qty: i64, id: u64) -> Vec<(u64, i64, i64)> {
    m.clear();
    m.on_trade(PAPER, Price(price), Qty(qty), id, UnixNanos(T0));
    fills(m.events())
}

#[test]
fn entry_takes_the_displayed_best_and_rests_the_rest() {
    let mut m = manager(1);
    quote(&mut m, 9_900, 5, 10_000, 3);
    let ev = run(&mut m, 0, 0, CommandKind::New(limit(PAPER, "b", Side::Buy, 10_000, 5)));
    let id = accepted_id(&ev).unwrap();
    assert_eq!(fills(&ev), vec![(id.0, 10_000, 3)], "only the displayed 3");
    assert_eq!(m.order(id).unwrap().status, OrderStatus::PartiallyFilled);
    // The displayed size was consumed: a second order waits for the next quote.
    let ev = run(&mut m, 0, 1, CommandKind::New(limit(PAPER, "c", Side::Buy, 10_000, 1)));
    assert!(fills(&ev).is_empty());
    // A new quote at the limit fills in time priority up to its size.
    assert_eq!(quote(&mut m, 9_900, 5, 10_000, 2), vec![(id.0, 10_000, 2)]);
    let c = m.open_orders().find(|o| o.client_id.as_str() == "c").unwrap().id;
    assert_eq!(
        quote(&mut m, 9_900, 5, 9_950, 10),
        vec![(c.0, 9_950, 1)],
        "price improvement to the ask"
    );
    assert_eq!(m.order(id).unwrap().status, OrderStatus::Filled);
}

#[test]
fn trades_through_the_limit_fill_once_per_trade() {
    let mut m = manager(1);
    let id = accepted_id(&run(
        &mut m,
        0,
        0,
        CommandKind::New(limit(PAPER, "s", Side::Sell, 10_000, 10)),
    ))
    .unwrap();
    assert!(trade(&mut m, 10_000, 5, 7).is_empty(), "at the limit is not through");
    assert_eq!(
        trade(&mut m, 10_001, 4, 8),
        vec![(id.0, 10_000, 4)],
        "fills at the limit"
    );
    assert!(
        trade(&mut m, 10_001, 4, 8).is_empty(),
        "a duplicated trade does not fill again"
    );
    assert!(trade(&mut m, 10_002, 4, 6).is_empty(), "nor an older one");
    assert_eq!(
        trade(&mut m, 10_005, 100, 9),
        vec![(id.0, 10_000, 6)],
        "never more than the order"
    );
    assert_eq!(m.order(id).unwrap().filled, Qty(10));
}

#[test]
fn market_orders_need_liquidity_and_never_rest() {
    let mut m = manager(1);
    assert_eq!(
        rejection(&run(&mut m, 0, 0, CommandKind::New(market(PAPER, "m", Side::Buy, 5)))),
        Some("NO_LIQUIDITY")
    );
    quote(&mut m, 9_900, 5, 10_000, 3);
    let ev = run(&mut m, 0, 1, CommandKind::New(market(PAPER, "m", Side::Buy, 5)));
    let id = accepted_id(&ev).unwrap();
    assert_eq!(fills(&ev), vec![(id.0, 10_000, 3)]);
    let o = m.order(id).unwrap();
    assert_eq!(o.status, OrderStatus::Cancelled, "remainder cancelled");
    let fok = NewOrder {
        tif: TimeInForce::Fok,
        ..limit(PAPER, "f", Side::Sell, 9_900, 6)
    };
    assert_eq!(
        rejection(&run(&mut m, 0, 2, CommandKind::New(fok))),
        Some("FOK_NOT_FILLABLE")
    );
    let post = NewOrder {
        post_only: true,
        ..limit(PAPER, "p", Side::Sell, 9_900, 1)
    };
    assert_eq!(
        rejection(&run(&mut m, 0, 3, CommandKind::New(post))),
        Some("POST_ONLY_WOULD_TRADE")
    );
}

#[test]
fn stops_trigger_on_the_last_trade() {
    let mut m = manager(1);
    quote(&mut m, 9_900, 50, 10_000, 50);
    trade(&mut m, 9_950, 1, 1);
    let stop = NewOrder {
        stop_price: Price(10_100),
        ..new_order(PAPER, "stop", Side::Buy, OrderType::Stop, TimeInForce::Ioc, 0, 5)
    };
    let id = accepted_id(&run(&mut m, 0, 0, CommandKind::New(stop))).unwrap();
    assert!(m.order(id).unwrap().status.is_open());
    assert!(trade(&mut m, 10_050, 1, 2).is_empty(), "below the stop");
    quote(&mut m, 10_090, 50, 10_110, 50);
    m.clear();
    m.on_trade(PAPER, Price(10_100), Qty(1), 3, UnixNanos(T0));
    let ev = m.events().to_vec();
    assert!(ev.iter().any(|e| matches!(
        e.data,
        OrderEventData::Order {
            kind: OrderEventKind::Triggered,
            ..
        }
    )));
    assert_eq!(
        fills(&ev),
        vec![(id.0, 10_110, 5)],
        "works as a market order once triggered"
    );
}

#[test]
fn day_orders_expire_at_the_close_and_gtd_at_their_time() {
    let mut m = manager(1);
    let hour = 3_600 * 1_000_000_000i64;
    let day = NewOrder {
        tif: TimeInForce::Day,
        ..limit(NSE, "day", Side::Buy, 150_000, 5)
    };
    let id = accepted_id(&run(&mut m, 0, -hour, CommandKind::New(day))).unwrap();
    let gtd = NewOrder {
        tif: TimeInForce::Gtd(UnixNanos(T0 + hour)),
        ..limit(PAPER, "gtd", Side::Buy, 100, 1)
    };
    let g = accepted_id(&run(&mut m, 0, -hour, CommandKind::New(gtd))).unwrap();
    m.on_timer(UnixNanos(T0 - 60_000_000_000));
    assert!(m.order(id).unwrap().status.is_open(), "still in session at 15:29");
    m.on_timer(UnixNanos(T0));
    assert_eq!(
        m.order(id).unwrap().status,
        OrderStatus::Expired,
        "expired at 15:30 IST"
    );
    assert!(m.order(g).unwrap().status.is_open());
    m.on_timer(UnixNanos(T0 + hour));
    assert_eq!(m.order(g).unwrap().status, OrderStatus::Expired);
}

#[test]
fn positions_follow_fills_with_realized_pnl() {
    let mut m = manager(1);
    quote(&mut m, 9_900, 100, 10_000, 100);
    run(&mut m, 0, 0, CommandKind::New(market(PAPER, "b", Side::Buy, 10)));
    quote(&mut m, 10_500, 100, 10_600, 100);
    run(&mut m, 0, 1, CommandKind::New(market(PAPER, "s", Side::Sell, 4)));
    let p = *m.position(AccountId(0), PAPER).unwrap();
    assert_eq!(p.qty, 6);
    assert_eq!(p.average_price(), Price(10_000));
    assert_eq!(p.realized, 4 * 500, "sold 4 at 105.00 against 100.00");
    assert_eq!(p.unrealized(Price(10_550)), 6 * 550);
}

// ---- data quality, depth sweeps, the trading day (issue 15) ----

/// Steps and their events as the journal holds them; replaying them into a fresh
/// manager is what recovery does after a restart.
#[derive(Default)]
struct Tape(Vec<(Step, Vec<OrderEvent>)>);

impl Tape {
    /// Takes the manager's steps and events since its last clear (and clears it).
    fn take(&mut self, m: &mut OrderManager) -> Vec<OrderEvent> {
        let events = m.events().to_vec();
        let mut k = 0;
        for s in m.steps() {
            let n = s.events as usize;
            self.0.push((*s, events[k..k + n].to_vec()));
            k += n;
        }
        assert_eq!(k, events.len(), "every event belongs to a step");
        m.clear();
        events
    }

    /// Replays every step into `m` as recovery does: each must produce exactly its
    /// journaled events.
    fn replay_into(&self, m: &mut OrderManager) {
        m.clear();
        for (n, (step, events)) in self.0.iter().enumerate() {
            m.replay(step);
            assert_eq!(
                m.events(),
                &events[..],
                "step {n} ({:?}) replays to its events",
                step.input
            );
            m.clear();
        }
    }
}

fn at(ns: i64) -> UnixNanos {
    UnixNanos(T0 + ns)
}

fn cmd(m: &mut OrderManager, tape: &mut Tape, account: u32, at_ns: i64, kind: CommandKind) -> Vec<OrderEvent> {
    cmd_depth(m, tape, account, at_ns, kind, &[])
}

fn cmd_depth(
    m: &mut OrderManager,
    tape: &mut Tape,
    account: u32,
    at_ns: i64,
    kind: CommandKind,
    book: &[Level],
) -> Vec<OrderEvent> {
    m.clear();
    m.handle_with_depth(
        &Command {
            request: 1,
            account: AccountId(account),
            at: at(at_ns),
            kind,
            idempotency: None,
        },
        book,
    );
    tape.take(m)
}

fn on_quote(m: &mut OrderManager, tape: &mut Tape, bid: i64, bq: i64, ask: i64, aq: i64) -> Vec<OrderEvent> {
    m.clear();
    m.on_quote(PAPER, Price(bid), Qty(bq), Price(ask), Qty(aq), at(0));
    tape.take(m)
}

fn on_trade(m: &mut OrderManager, tape: &mut Tape, price: i64, qty: i64, id: u64) -> Vec<OrderEvent> {
    m.clear();
    m.on_trade(PAPER, Price(price), Qty(qty), id, at(0));
    tape.take(m)
}

fn levels(l: &[(i64, i64)]) -> Vec<Level> {
    l.iter()
        .map(|&(p, q)| Level {
            price: Price(p),
            qty: Qty(q),
        })
        .collect()
}

/// The reason the order was cancelled with, if it was.
fn cancel_reason(events: &[OrderEvent], id: stocksblitz_engine::orders::OrderId) -> Option<CancelReason> {
    events.iter().find_map(|e| match e.data {
        OrderEventData::Order {
            kind: OrderEventKind::Cancelled(r),
            order,
        } if order.id == id => Some(r),
        _ => None,
    })
}

fn not_live() -> impl Iterator<Item = DataQuality> {
    DataQuality::ALL.into_iter().filter(|q| *q != DataQuality::Live)
}

#[test]
fn nothing_fills_and_no_order_is_taken_while_the_data_is_not_live() {
    for q in not_live() {
        let mut tape = Tape::default();
        let mut m = manager(1);
        on_quote(&mut m, &mut tape, 9_900, 5, 10_000, 5);
        on_trade(&mut m, &mut tape, 9_950, 1, 1);
        // Placed while LIVE: a resting buy and a sell stop.
        let rest = accepted_id(&cmd(
            &mut m,
            &mut tape,
            0,
            0,
            CommandKind::New(limit(PAPER, "r", Side::Buy, 9_950, 3)),
        ))
        .unwrap();
        let stop = NewOrder {
            stop_price: Price(9_800),
            ..new_order(PAPER, "st", Side::Sell, OrderType::Stop, TimeInForce::Ioc, 0, 2)
        };
        let stop = accepted_id(&cmd(&mut m, &mut tape, 0, 0, CommandKind::New(stop))).unwrap();

        m.set_quality(PAPER, q);
        // Every kind of new order and a replace are refused, with the stable code.
        let orders = [
            market(PAPER, "m", Side::Buy, 1),
            limit(PAPER, "l", Side::Buy, 10_000, 1),
            limit(PAPER, "far", Side::Buy, 9_000, 1),
            NewOrder {
                stop_price: Price(10_100),
                ..new_order(PAPER, "s2", Side::Buy, OrderType::Stop, TimeInForce::Ioc, 0, 1)
            },
        ];
        for o in orders {
            for kind in [CommandKind::New(o), CommandKind::Test(o)] {
                let ev = cmd(&mut m, &mut tape, 0, 1, kind);
                assert_eq!(rejection(&ev), Some("MARKET_DATA_UNAVAILABLE"), "{q:?} {o:?}");
            }
        }
        let ev = cmd(
            &mut m,
            &mut tape,
            0,
            2,
            CommandKind::Replace {
                order: rest,
                qty: None,
                price: Some(Price(9_960)),
            },
        );
        assert_eq!(rejection(&ev), Some("MARKET_DATA_UNAVAILABLE"), "{q:?}");
        assert!(Reject::MarketDataUnavailable.message().contains("LIVE"));
        // The order's own mistakes are still named first.
        let ev = cmd(
            &mut m,
            &mut tape,
            0,
            2,
            CommandKind::New(limit(PAPER, "z", Side::Buy, 10_000, 0)),
        );
        assert_eq!(rejection(&ev), Some("INVALID_QUANTITY"), "{q:?}");
        // Quotes through the resting buy and trades through both orders fill nothing
        // and trigger nothing.
        assert!(
            fills(&on_quote(&mut m, &mut tape, 9_800, 5, 9_900, 50)).is_empty(),
            "{q:?}"
        );
        let ev = on_trade(&mut m, &mut tape, 9_700, 10, 2);
        assert!(ev.is_empty(), "{q:?}: {ev:?}");
        assert_eq!(m.order(rest).unwrap().filled, Qty(0));
        assert!(!m.order(stop).unwrap().triggered);
        // Back to LIVE: the next quote fills the resting order, the next trade
        // triggers the stop.
        m.set_quality(PAPER, DataQuality::Live);
        assert_eq!(
            fills(&on_quote(&mut m, &mut tape, 9_800, 5, 9_900, 50)),
            vec![(rest.0, 9_900, 3)]
        );
        let ev = on_trade(&mut m, &mut tape, 9_700, 10, 3);
        assert_eq!(fills(&ev), vec![(stop.0, 9_800, 2)], "{q:?}");
        // A restart replays all of it to the same events and state.
        let mut again = raw_manager_with(&[loose()]);
        tape.replay_into(&mut again);
        assert_eq!(again.state_hash(), m.state_hash());
    }
}

#[derive(Debug, Clone)]
enum Op {
    Quality(usize),
    Quote(i64, i64, i64, i64),
    Trade(i64, i64),
    Market(bool, i64),
    Limit(bool, i64, i64, u8),
    Stop(bool, i64, i64),
    Cancel(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..6usize).prop_map(Op::Quality),
        (9_900..10_000i64, 0..5i64, 0..20i64, 0..5i64).prop_map(|(b, bq, s, aq)| Op::Quote(b, bq, b + 1 + s, aq)),
        (9_880..10_040i64, 1..5i64).prop_map(|(p, q)| Op::Trade(p, q)),
        (any::<bool>(), 1..8i64).prop_map(|(s, q)| Op::Market(s, q)),
        (any::<bool>(), 9_900..10_020i64, 1..8i64, 0..3u8).prop_map(|(s, p, q, t)| Op::Limit(s, p, q, t)),
        (any::<bool>(), 9_880..10_040i64, 1..5i64).prop_map(|(s, p, q)| Op::Stop(s, p, q)),
        (0..8usize).prop_map(Op::Cancel),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Over any sequence of data qualities, quotes, trades and orders: no fill ever
    /// happens in a step taken while the instrument's data is not LIVE, no order is
    /// accepted then, and the journaled steps replay to the same events and state.
    #[test]
    fn no_fill_ever_happens_while_the_data_is_not_live(ops in prop::collection::vec(op(), 1..80)) {
        let mut tape = Tape::default();
        let mut m = raw_manager_with(&[loose()]);
        let mut quality = DataQuality::Syncing;
        let mut trade_id = 0;
        let book = levels(&[(10_030, 3), (10_040, 4), (10_050, 5)]);
        for (n, op) in ops.iter().enumerate() {
            let n = n as i64;
            let client = format!("c{n}");
            let side = |buy: bool| if buy { Side::Buy } else { Side::Sell };
            let ev = match *op {
                Op::Quality(k) => {
                    quality = DataQuality::ALL[k];
                    m.set_quality(PAPER, quality);
                    Vec::new()
                }
                Op::Quote(b, bq, a, aq) => on_quote(&mut m, &mut tape, b, bq, a, aq),
                Op::Trade(p, q) => {
                    trade_id += 1;
                    on_trade(&mut m, &mut tape, p, q, trade_id)
                }
                Op::Market(buy, q) => {
                    let o = market(PAPER, &client, side(buy), q);
                    cmd_depth(&mut m, &mut tape, 0, n, CommandKind::New(o), if buy { &book } else { &[] })
                }
                Op::Limit(buy, p, q, t) => {
                    let tif = [TimeInForce::Gtc, TimeInForce::Ioc, TimeInForce::Fok][usize::from(t)];
                    let o = NewOrder { tif, ..limit(PAPER, &client, side(buy), p, q) };
                    cmd(&mut m, &mut tape, 0, n, CommandKind::New(o))
                }
                Op::Stop(buy, p, q) => {
                    let o = NewOrder {
                        stop_price: Price(p),
                        ..new_order(PAPER, &client, side(buy), OrderType::Stop, TimeInForce::Ioc, 0, q)
                    };
                    cmd(&mut m, &mut tape, 0, n, CommandKind::New(o))
                }
                Op::Cancel(k) => {
                    let open: Vec<_> = m.open_orders().map(|o| o.id).collect();
                    match open.get(k % open.len().max(1)) {
                        Some(&id) => cmd(&mut m, &mut tape, 0, n, CommandKind::Cancel { order: id }),
                        None => Vec::new(),
                    }
                }
            };
            if quality != DataQuality::Live {
                prop_assert!(fills(&ev).is_empty(), "a fill while {:?}: {:?}", quality, ev);
                prop_assert!(accepted_id(&ev).is_none(), "an order accepted while {:?}", quality);
            }
        }
        let mut again = raw_manager_with(&[loose()]);
        tape.replay_into(&mut again);
        prop_assert_eq!(again.state_hash(), m.state_hash());
    }
}

fn collared(bps: u32) -> OrderManager {
    manager_with(&[RiskLimits {
        price_collar_bps: bps,
        ..loose()
    }])
}

#[test]
fn market_orders_sweep_the_depth_up_to_the_collar_and_say_why_the_rest_is_cancelled() {
    let mut tape = Tape::default();
    // 40 bps around the last trade at 100.00: up to 100.40.
    let mut m = collared(40);
    on_quote(&mut m, &mut tape, 9_990, 5, 10_000, 3);
    on_trade(&mut m, &mut tape, 10_000, 1, 1);
    let book = levels(&[(10_000, 3), (10_010, 4), (10_020, 5), (10_050, 10)]);
    let ev = cmd_depth(
        &mut m,
        &mut tape,
        0,
        0,
        CommandKind::New(market(PAPER, "a", Side::Buy, 15)),
        &book,
    );
    let id = accepted_id(&ev).unwrap();
    assert_eq!(
        fills(&ev),
        vec![(id.0, 10_000, 3), (id.0, 10_010, 4), (id.0, 10_020, 5)],
        "level by level"
    );
    assert_eq!(
        cancel_reason(&ev, id),
        Some(CancelReason::PriceCollar),
        "100.50 is beyond the collar"
    );
    assert_eq!(m.position(AccountId(0), PAPER).unwrap().qty, 12);
    // What the sweep took stays taken until the next quote: only the level beyond
    // the collar is left.
    let ev = cmd_depth(
        &mut m,
        &mut tape,
        0,
        1,
        CommandKind::New(market(PAPER, "b", Side::Buy, 1)),
        &book,
    );
    assert_eq!(rejection(&ev), Some("PRICE_COLLAR"));
    // The feed's next quote refreshes the best.
    on_quote(&mut m, &mut tape, 9_990, 5, 10_000, 2);
    let ev = cmd_depth(
        &mut m,
        &mut tape,
        0,
        2,
        CommandKind::New(market(PAPER, "c", Side::Buy, 4)),
        &book,
    );
    let id = accepted_id(&ev).unwrap();
    assert_eq!(fills(&ev), vec![(id.0, 10_000, 2), (id.0, 10_010, 2)]);
    assert_eq!(m.order(id).map(|o| o.status), Some(OrderStatus::Filled));

    // The visible book runs out: the remainder is `unfilled`.
    let mut m = collared(1_000);
    on_quote(&mut m, &mut tape, 9_990, 5, 10_000, 3);
    let book = levels(&[(10_000, 3), (10_010, 4)]);
    let ev = cmd_depth(
        &mut m,
        &mut tape,
        0,
        0,
        CommandKind::New(market(PAPER, "d", Side::Buy, 10)),
        &book,
    );
    let id = accepted_id(&ev).unwrap();
    assert_eq!(fills(&ev), vec![(id.0, 10_000, 3), (id.0, 10_010, 4)]);
    assert_eq!(cancel_reason(&ev, id), Some(CancelReason::Unfilled));

    // More levels than one step may take: `depth_limit`.
    let mut m = collared(1_000);
    on_quote(&mut m, &mut tape, 9_990, 5, 10_000, 1);
    let deep: Vec<(i64, i64)> = (0..30).map(|i| (10_000 + i, 1)).collect();
    let ev = cmd_depth(
        &mut m,
        &mut tape,
        0,
        0,
        CommandKind::New(market(PAPER, "e", Side::Buy, 20)),
        &levels(&deep),
    );
    let id = accepted_id(&ev).unwrap();
    assert_eq!(fills(&ev).len(), SWEEP_LEVELS);
    assert_eq!(cancel_reason(&ev, id), Some(CancelReason::DepthLimit));

    // Sells sweep the bids downwards the same way.
    let mut m = collared(40);
    on_quote(&mut m, &mut tape, 10_000, 2, 10_010, 5);
    on_trade(&mut m, &mut tape, 10_000, 1, 1);
    let bids = levels(&[(10_000, 2), (9_990, 2), (9_950, 9)]);
    let ev = cmd_depth(
        &mut m,
        &mut tape,
        0,
        0,
        CommandKind::New(market(PAPER, "f", Side::Sell, 6)),
        &bids,
    );
    let id = accepted_id(&ev).unwrap();
    assert_eq!(fills(&ev), vec![(id.0, 10_000, 2), (id.0, 9_990, 2)]);
    assert_eq!(
        cancel_reason(&ev, id),
        Some(CancelReason::PriceCollar),
        "99.50 is below the collar"
    );
}

#[test]
fn limit_orders_sweep_to_their_limit_then_rest_or_cancel() {
    let mut tape = Tape::default();
    let mut m = manager(1);
    on_quote(&mut m, &mut tape, 9_990, 5, 10_000, 3);
    let book = levels(&[(10_000, 3), (10_010, 4), (10_020, 5)]);
    // IOC: up to the limit, the rest `unfilled`.
    let ioc = NewOrder {
        tif: TimeInForce::Ioc,
        ..limit(PAPER, "i", Side::Buy, 10_010, 10)
    };
    let ev = cmd_depth(&mut m, &mut tape, 0, 0, CommandKind::New(ioc), &book);
    let id = accepted_id(&ev).unwrap();
    assert_eq!(fills(&ev), vec![(id.0, 10_000, 3), (id.0, 10_010, 4)]);
    assert_eq!(cancel_reason(&ev, id), Some(CancelReason::Unfilled));
    // FOK counts the depth within its limit.
    on_quote(&mut m, &mut tape, 9_990, 5, 10_000, 3);
    let fok = |qty| NewOrder {
        tif: TimeInForce::Fok,
        ..limit(PAPER, "k", Side::Buy, 10_010, qty)
    };
    let ev = cmd_depth(&mut m, &mut tape, 0, 1, CommandKind::New(fok(8)), &book);
    assert_eq!(rejection(&ev), Some("FOK_NOT_FILLABLE"));
    let ev = cmd_depth(&mut m, &mut tape, 0, 2, CommandKind::New(fok(7)), &book);
    assert_eq!(fills(&ev).iter().map(|f| f.2).sum::<i64>(), 7);
    // GTC: the remainder rests at its limit.
    on_quote(&mut m, &mut tape, 9_990, 5, 10_000, 3);
    let ev = cmd_depth(
        &mut m,
        &mut tape,
        0,
        3,
        CommandKind::New(limit(PAPER, "g", Side::Buy, 10_010, 10)),
        &book,
    );
    let id = accepted_id(&ev).unwrap();
    assert_eq!(fills(&ev), vec![(id.0, 10_000, 3), (id.0, 10_010, 4)]);
    assert_eq!(m.order(id).unwrap().status, OrderStatus::PartiallyFilled);
    assert_eq!(m.order(id).unwrap().place, stocksblitz_engine::orders::Placement::Book);
    let mut again = raw_manager_with(&[loose()]);
    tape.replay_into(&mut again);
    assert_eq!(again.state_hash(), m.state_hash());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Any visible book, order and collar: the sweep takes levels best first, each at
    /// most its size, never beyond the limit, the collar or SWEEP_LEVELS levels, fills
    /// exactly what a level-by-level model fills, and names the reason the model
    /// gives for the remainder; the journaled step replays to the same events.
    #[test]
    fn a_paper_sweep_matches_the_level_by_level_model(
        gaps in prop::collection::vec((1..30i64, 1..6i64), 1..24),
        qty in 1..60i64,
        limit_at in prop::option::of(0..400i64),
        bps in 1..200u32,
        buy in any::<bool>(),
        tif_ioc in any::<bool>(),
    ) {
        let mut tape = Tape::default();
        let mut m = collared(bps);
        let last = 10_000;
        // Levels moving away from the touch (asks up, bids down).
        let dir = if buy { 1 } else { -1 };
        let mut price = last;
        let book: Vec<(i64, i64)> = gaps.iter().map(|&(g, q)| { let p = price; price += dir * g; (p, q) }).collect();
        let (bid, ask) = if buy { ((last - 10, 5), book[0]) } else { (book[0], (last + 10, 5)) };
        on_quote(&mut m, &mut tape, bid.0, bid.1, ask.0, ask.1);
        on_trade(&mut m, &mut tape, last, 1, 1);
        let side = if buy { Side::Buy } else { Side::Sell };
        let limit_price = limit_at.map(|d| last + dir * d);
        let o = match limit_price {
            Some(p) => NewOrder {
                tif: if tif_ioc { TimeInForce::Ioc } else { TimeInForce::Gtc },
                ..limit(PAPER, "o", side, p, qty)
            },
            None => market(PAPER, "o", side, qty),
        };
        // The model.
        let mut expected = Vec::new();
        let mut left = qty;
        let mut reason = CancelReason::Unfilled;
        for (k, &(p, q)) in book.iter().enumerate() {
            if left == 0 { break; }
            if limit_price.is_some_and(|l| (p - l) * dir > 0) { reason = CancelReason::Unfilled; break; }
            if (p - last) * dir * 10_000 > i64::from(bps) * last { reason = CancelReason::PriceCollar; break; }
            if k == SWEEP_LEVELS { reason = CancelReason::DepthLimit; break; }
            let take = left.min(q);
            expected.push((p, take));
            left -= take;
        }
        let collar_ok = limit_price.is_none_or(|l| (l - last).abs() * 10_000 <= i64::from(bps) * last);
        let ev = cmd_depth(&mut m, &mut tape, 0, 0, CommandKind::New(o), &levels(&book));
        if !collar_ok {
            prop_assert_eq!(rejection(&ev), Some("PRICE_COLLAR"));
        } else if limit_price.is_none() && expected.is_empty() {
            prop_assert_eq!(rejection(&ev), Some("PRICE_COLLAR"), "only liquidity beyond the collar");
        } else {
            let id = accepted_id(&ev).expect("accepted");
            let got: Vec<(i64, i64)> = fills(&ev).iter().map(|f| (f.1, f.2)).collect();
            prop_assert_eq!(&got, &expected);
            let immediate = limit_price.is_none() || tif_ioc;
            if left > 0 && immediate {
                prop_assert_eq!(cancel_reason(&ev, id), Some(reason));
            } else if left > 0 {
                prop_assert!(m.order(id).is_some_and(|o| o.status.is_open()), "a GTC remainder rests");
            }
        }
        let mut again = raw_manager_with(&[RiskLimits { price_collar_bps: bps, ..loose() }]);
        tape.replay_into(&mut again);
        prop_assert_eq!(again.state_hash(), m.state_hash());
    }
}

const HOUR: i64 = 3_600 * 1_000_000_000;

#[test]
fn day_orders_on_24x7_instruments_expire_at_the_day_roll() {
    // T0 is 10:00 UTC. Default roll 00:00 UTC: 14 h later; at 08:00: 22 h later.
    for (roll_secs, until_roll) in [(None, 14 * HOUR), (Some(8 * 3600), 22 * HOUR)] {
        let mut tape = Tape::default();
        let mut m = manager(1);
        if let Some(s) = roll_secs {
            m.set_day_roll(s);
        }
        let day = NewOrder {
            tif: TimeInForce::Day,
            ..limit(PAPER, "d", Side::Buy, 9_000, 1)
        };
        let id = accepted_id(&cmd(&mut m, &mut tape, 0, 0, CommandKind::New(day))).unwrap();
        let gtc = accepted_id(&cmd(
            &mut m,
            &mut tape,
            0,
            0,
            CommandKind::New(limit(PAPER, "g", Side::Buy, 9_000, 1)),
        ))
        .unwrap();
        let mut before = m.clone();
        before.on_timer(at(until_roll - 1));
        assert!(before.order(id).unwrap().status.is_open(), "open until the roll");
        m.on_timer(at(until_roll));
        assert_eq!(
            m.order(id).map(|o| o.status),
            Some(OrderStatus::Expired),
            "expired at the roll"
        );
        let ev = tape.take(&mut m);
        assert!(ev.iter().any(
            |e| matches!(e.data, OrderEventData::Order { kind: OrderEventKind::Expired, order } if order.id == id)
        ));
        assert!(m.order(gtc).unwrap().status.is_open(), "GTC is not a DAY order");
        // A DAY order placed right at the roll lives until the next one.
        let day2 = NewOrder {
            tif: TimeInForce::Day,
            ..limit(PAPER, "d2", Side::Buy, 9_000, 1)
        };
        let id2 = accepted_id(&cmd(&mut m, &mut tape, 0, until_roll, CommandKind::New(day2))).unwrap();
        let mut before = m.clone();
        before.on_timer(at(until_roll + 24 * HOUR - 1));
        assert!(before.order(id2).unwrap().status.is_open());
        m.on_timer(at(until_roll + 24 * HOUR));
        assert_eq!(m.order(id2).map(|o| o.status), Some(OrderStatus::Expired));
    }
}

#[test]
fn a_restart_that_spans_the_roll_expires_the_day_orders_and_resets_the_daily_loss() {
    let mut tape = Tape::default();
    let limits = RiskLimits {
        // 1.00 in the base currency.
        daily_loss_limit: 100_000_000,
        ..loose()
    };
    let mut m = manager_with(&[limits]);
    m.set_day_roll(8 * 3600);
    on_quote(&mut m, &mut tape, 9_990, 10_000, 10_000, 10_000);
    let day = NewOrder {
        tif: TimeInForce::Day,
        ..limit(PAPER, "d", Side::Buy, 9_000, 1)
    };
    // One placed at 07:00 UTC expired at this run's 08:00 roll (a journaled timer
    // step that the restarted configuration, rolling at 00:00, would not expire).
    let early = NewOrder {
        client_id: stocksblitz_engine::orders::ClientOrderId::new("early").unwrap(),
        ..day
    };
    let early = accepted_id(&cmd(&mut m, &mut tape, 0, -3 * HOUR, CommandKind::New(early))).unwrap();
    m.clear();
    m.on_timer(at(-1));
    tape.take(&mut m);
    assert_eq!(m.order(early).map(|o| o.status), Some(OrderStatus::Expired));
    let id = accepted_id(&cmd(&mut m, &mut tape, 0, 0, CommandKind::New(day))).unwrap();
    // Buy 1.000 at 100.00, sell it at 98.00: a realized loss of 2.00, past the limit.
    cmd(
        &mut m,
        &mut tape,
        0,
        1,
        CommandKind::New(market(PAPER, "b", Side::Buy, 1_000)),
    );
    on_quote(&mut m, &mut tape, 9_800, 10_000, 9_810, 10_000);
    cmd(
        &mut m,
        &mut tape,
        0,
        2,
        CommandKind::New(market(PAPER, "s", Side::Sell, 1_000)),
    );
    let ev = cmd(
        &mut m,
        &mut tape,
        0,
        3,
        CommandKind::New(market(PAPER, "x", Side::Buy, 1)),
    );
    assert_eq!(rejection(&ev), Some("DAILY_LOSS_LIMIT"));

    // Restart with another roll configured (00:00 UTC): history replays with the
    // roll it was decided under (the 08:00 expiry above), the new one applies from
    // now on: the DAY order expires at 00:00 UTC, and the loss in a 24x7 instrument
    // counts until then (not until the accounts' IST day ends at 18:30 UTC).
    let mut restarted = raw_manager_with(&[limits]);
    restarted.set_day_roll(0);
    tape.replay_into(&mut restarted);
    assert_eq!(restarted.state_hash(), m.state_hash());
    assert!(restarted.order(id).unwrap().status.is_open());
    restarted.set_quality(PAPER, DataQuality::Live);
    let minute = 60 * 1_000_000_000;
    let mut tape2 = Tape::default();
    let buy = |c: &str| CommandKind::New(market(PAPER, c, Side::Buy, 1));
    let ev = cmd(&mut restarted, &mut tape2, 0, 8 * HOUR + 30 * minute, buy("y"));
    assert_eq!(rejection(&ev), Some("DAILY_LOSS_LIMIT"), "18:30 UTC: {ev:?}");
    let ev = cmd(&mut restarted, &mut tape2, 0, 14 * HOUR - 1, buy("y"));
    assert_eq!(rejection(&ev), Some("DAILY_LOSS_LIMIT"), "just before the roll: {ev:?}");
    let mut before = restarted.clone();
    before.on_timer(at(14 * HOUR - 1));
    assert!(before.order(id).unwrap().status.is_open(), "before 00:00 UTC");
    restarted.on_timer(at(14 * HOUR));
    assert_eq!(
        restarted.order(id).map(|o| o.status),
        Some(OrderStatus::Expired),
        "expired at the configured roll"
    );
    let ev = cmd(&mut restarted, &mut tape2, 0, 14 * HOUR, buy("z"));
    assert!(accepted_id(&ev).is_some(), "a new 24x7 trading day: {ev:?}");
}
