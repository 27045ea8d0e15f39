//! The paper venue against a live market, stops, expiries and positions.

mod orders_common;

use orders_common::*;
use stocksblitz_engine::orders::{
    AccountId, CommandKind, NewOrder, OrderEventData, OrderEventKind, OrderStatus, OrderType, TimeInForce,
};
use stocksblitz_engine::{Price, Qty, Side, UnixNanos};

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
