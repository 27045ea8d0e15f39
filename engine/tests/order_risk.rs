//! Every pre-trade check at its limit (accepted) and one step past it (rejected with
//! its stable code, nothing changed); bad inputs; kill switches and trading states.

mod orders_common;

use orders_common::*;
use stocksblitz_engine::orders::{
    AccountId, CommandKind, KillScope, NewOrder, OrderManager, OrderType, RiskLimits, TimeInForce, TradingState,
};
use stocksblitz_engine::{Price, Qty, Side, UnixNanos};

/// Places `o` for account 0 and returns the rejection code, if any.
fn try_new(m: &mut OrderManager, at: i64, o: NewOrder) -> Option<&'static str> {
    rejection(&run(m, 0, at, CommandKind::New(o)))
}

fn with(f: impl Fn(&mut RiskLimits)) -> OrderManager {
    let mut l = loose();
    f(&mut l);
    manager_with(&[l, loose()])
}

/// Sets a last trade price on the paper instrument (the reference for collars).
fn last_price(m: &mut OrderManager, price: i64) {
    m.on_trade(PAPER, Price(price), Qty(1), 1, UnixNanos(T0));
    m.clear();
}

const UNIT: i128 = 100_000_000; // one unit at the limits' 8 decimals

#[test]
fn max_order_qty() {
    let mut m = with(|l| l.max_order_qty = 5 * UNIT);
    assert_eq!(try_new(&mut m, 0, limit(PAPER, "a", Side::Buy, 100, 5_000)), None);
    assert_eq!(
        try_new(&mut m, 1, limit(PAPER, "b", Side::Buy, 100, 5_001)),
        Some("MAX_ORDER_QTY")
    );
}

#[test]
fn max_order_notional() {
    let mut m = with(|l| l.max_order_notional = 100 * UNIT);
    // 100.00 x 1.000 = 100
    assert_eq!(try_new(&mut m, 0, limit(PAPER, "a", Side::Buy, 10_000, 1_000)), None);
    assert_eq!(
        try_new(&mut m, 1, limit(PAPER, "b", Side::Buy, 10_000, 1_001)),
        Some("MAX_ORDER_NOTIONAL")
    );
}

#[test]
fn price_collar_around_the_last_trade() {
    let mut m = with(|l| l.price_collar_bps = 100);
    last_price(&mut m, 10_000);
    assert_eq!(
        try_new(&mut m, 0, limit(PAPER, "a", Side::Buy, 9_900, 1)),
        None,
        "1% below"
    );
    assert_eq!(
        try_new(&mut m, 1, limit(PAPER, "b", Side::Sell, 10_100, 1)),
        None,
        "1% above"
    );
    assert_eq!(
        try_new(&mut m, 2, limit(PAPER, "c", Side::Sell, 10_101, 1)),
        Some("PRICE_COLLAR")
    );
    assert_eq!(
        try_new(&mut m, 3, limit(PAPER, "d", Side::Buy, 9_899, 1)),
        Some("PRICE_COLLAR")
    );
}

#[test]
fn max_open_orders() {
    let mut m = with(|l| l.max_open_orders = 2);
    assert_eq!(try_new(&mut m, 0, limit(PAPER, "a", Side::Buy, 100, 1)), None);
    assert_eq!(try_new(&mut m, 1, limit(PAPER, "b", Side::Buy, 100, 1)), None);
    assert_eq!(
        try_new(&mut m, 2, limit(PAPER, "c", Side::Buy, 100, 1)),
        Some("MAX_OPEN_ORDERS")
    );
}

#[test]
fn position_limit_counts_the_order_as_filled() {
    let mut m = with(|l| l.max_position_qty = 10 * UNIT);
    assert_eq!(try_new(&mut m, 0, limit(PAPER, "a", Side::Buy, 100, 10_000)), None);
    assert_eq!(
        try_new(&mut m, 1, limit(PAPER, "b", Side::Sell, 100, 10_001)),
        Some("POSITION_LIMIT")
    );
}

#[test]
fn gross_exposure_includes_open_orders() {
    let mut m = with(|l| l.max_gross_exposure = 1_000 * UNIT);
    assert_eq!(
        try_new(&mut m, 0, limit(PAPER, "a", Side::Buy, 10_000, 6_000)),
        None,
        "600"
    );
    assert_eq!(
        try_new(&mut m, 1, limit(PAPER, "b", Side::Buy, 10_000, 4_000)),
        None,
        "1000 total"
    );
    assert_eq!(
        try_new(&mut m, 2, limit(PAPER, "c", Side::Buy, 100, 1)),
        Some("BUYING_POWER")
    );
    // Cancelling releases exactly what was reserved.
    let id = m
        .open_orders()
        .find(|o| o.client_id.as_str() == "b")
        .map(|o| o.id)
        .unwrap();
    assert_eq!(rejection(&run(&mut m, 0, 3, CommandKind::Cancel { order: id })), None);
    assert_eq!(m.account(AccountId(0)).unwrap().open_notional, 600 * UNIT);
    assert_eq!(try_new(&mut m, 4, limit(PAPER, "c", Side::Buy, 10_000, 4_000)), None);
}

#[test]
fn daily_loss_stops_opening_orders_but_not_reducing_ones() {
    let mut m = with(|l| l.daily_loss_limit = 10 * UNIT);
    // Buy 1 at 100, sell it at 90: realized -10.
    m.on_quote(
        PAPER,
        Price(9_900),
        Qty(10_000),
        Price(10_000),
        Qty(10_000),
        UnixNanos(T0),
    );
    assert_eq!(try_new(&mut m, 0, market(PAPER, "a", Side::Buy, 2_000)), None);
    m.on_quote(
        PAPER,
        Price(9_000),
        Qty(10_000),
        Price(9_100),
        Qty(10_000),
        UnixNanos(T0),
    );
    assert_eq!(try_new(&mut m, 1, market(PAPER, "b", Side::Sell, 1_000)), None);
    assert_eq!(m.account(AccountId(0)).unwrap().realized_today, -10 * UNIT);
    assert_eq!(
        try_new(&mut m, 2, limit(PAPER, "c", Side::Buy, 9_000, 1)),
        Some("DAILY_LOSS_LIMIT")
    );
    assert_eq!(
        try_new(&mut m, 3, market(PAPER, "d", Side::Sell, 1_000)),
        None,
        "reducing is allowed"
    );
    // The next trading day (IST) starts from zero.
    let next_day = 24 * 3_600 * 1_000_000_000;
    assert_eq!(try_new(&mut m, next_day, limit(PAPER, "e", Side::Buy, 9_000, 1)), None);
}

#[test]
fn order_rate_is_ten_per_second_by_default_and_recovers() {
    let mut m = with(|l| l.orders_per_sec = 10);
    for k in 0..10 {
        assert_eq!(
            try_new(&mut m, 0, limit(PAPER, &format!("o{k}"), Side::Buy, 100, 1)),
            None
        );
    }
    assert_eq!(
        try_new(&mut m, 0, limit(PAPER, "o10", Side::Buy, 100, 1)),
        Some("ORDER_RATE_LIMIT")
    );
    assert_eq!(
        try_new(&mut m, 100_000_000, limit(PAPER, "o11", Side::Buy, 100, 1)),
        None
    );
}

#[test]
fn cancel_rate() {
    let mut m = with(|l| l.cancels_per_sec = 1);
    try_new(&mut m, 0, limit(PAPER, "a", Side::Buy, 100, 1));
    try_new(&mut m, 0, limit(PAPER, "b", Side::Buy, 100, 1));
    let ids: Vec<_> = m.open_orders().map(|o| o.id).collect();
    assert_eq!(
        rejection(&run(&mut m, 0, 1, CommandKind::Cancel { order: ids[0] })),
        None
    );
    assert_eq!(
        rejection(&run(&mut m, 0, 2, CommandKind::Cancel { order: ids[1] })),
        Some("CANCEL_RATE_LIMIT")
    );
}

#[test]
fn shape_of_the_order() {
    let mut m = manager(2);
    let cases: Vec<(NewOrder, &str)> = vec![
        (limit(PAPER, "q0", Side::Buy, 100, 0), "INVALID_QUANTITY"),
        (limit(PAPER, "q1", Side::Buy, 100, -5), "INVALID_QUANTITY"),
        (limit(PAPER, "p0", Side::Buy, 0, 1), "PRICE_REQUIRED"),
        (limit(PAPER, "p1", Side::Buy, -100, 1), "INVALID_PRICE"),
        (limit(NSE, "tick", Side::Buy, 10_003, 5), "TICK_SIZE"),
        (limit(NSE, "lot", Side::Buy, 10_000, 7), "LOT_SIZE"),
        (
            NewOrder {
                price: Price(100),
                ..market(PAPER, "mp", Side::Buy, 1)
            },
            "PRICE_NOT_ALLOWED",
        ),
        (
            new_order(PAPER, "mg", Side::Buy, OrderType::Market, TimeInForce::Gtc, 0, 1),
            "INVALID_TIME_IN_FORCE",
        ),
        (
            new_order(PAPER, "st", Side::Buy, OrderType::Stop, TimeInForce::Gtc, 0, 1),
            "STOP_PRICE_REQUIRED",
        ),
        (
            limit(stocksblitz_engine::InstrumentId(9), "u", Side::Buy, 100, 1),
            "UNKNOWN_INSTRUMENT",
        ),
        (
            NewOrder {
                tif: TimeInForce::Gtd(UnixNanos(T0 - 3_600_000_000_001)),
                ..limit(PAPER, "gtd", Side::Buy, 100, 1)
            },
            "INVALID_TIME_IN_FORCE",
        ),
    ];
    for (o, code) in cases {
        // An hour before T0: the NSE session is open.
        assert_eq!(try_new(&mut m, -3_600_000_000_000, o), Some(code), "{o:?}");
    }
    assert_eq!(m.open_orders().count(), 0, "nothing was placed");
    // Lot size at its multiple and one past it (NSE lots of 5).
    let hour = 3_600_000_000_000;
    assert_eq!(try_new(&mut m, -hour, limit(NSE, "l10", Side::Buy, 10_000, 10)), None);
    assert_eq!(
        try_new(&mut m, -hour, limit(NSE, "l11", Side::Buy, 10_000, 11)),
        Some("LOT_SIZE")
    );
}

#[test]
fn duplicate_client_ids_only_among_open_orders() {
    let mut m = manager(2);
    assert_eq!(try_new(&mut m, 0, limit(PAPER, "dup", Side::Buy, 100, 1)), None);
    assert_eq!(
        try_new(&mut m, 1, limit(PAPER, "dup", Side::Buy, 100, 1)),
        Some("DUPLICATE_CLIENT_ORDER_ID")
    );
    // Another account may use the same id.
    assert_eq!(
        rejection(&run(
            &mut m,
            1,
            2,
            CommandKind::New(limit(PAPER, "dup", Side::Buy, 100, 1))
        )),
        None
    );
    let id = m
        .open_orders()
        .find(|o| o.account == AccountId(0))
        .map(|o| o.id)
        .unwrap();
    run(&mut m, 0, 3, CommandKind::Cancel { order: id });
    assert_eq!(
        try_new(&mut m, 4, limit(PAPER, "dup", Side::Buy, 100, 1)),
        None,
        "free again once closed"
    );
}

#[test]
fn accounts_cannot_touch_each_others_orders() {
    let mut m = manager(2);
    try_new(&mut m, 0, limit(PAPER, "mine", Side::Buy, 100, 1));
    let id = m.open_orders().next().map(|o| o.id).unwrap();
    let ev = run(&mut m, 1, 1, CommandKind::Cancel { order: id });
    assert_eq!(rejection(&ev), Some("ORDER_NOT_FOUND"));
    let ev = run(
        &mut m,
        1,
        2,
        CommandKind::Replace {
            order: id,
            qty: Some(Qty(2)),
            price: None,
        },
    );
    assert_eq!(rejection(&ev), Some("ORDER_NOT_FOUND"));
    assert!(m.order(id).unwrap().status.is_open());
}

#[test]
fn kill_switches_and_trading_states() {
    let mut m = manager(2);
    try_new(&mut m, 0, limit(PAPER, "resting", Side::Buy, 100, 1));
    for (scope, blocked_for_1) in [
        (KillScope::Global, true),
        (KillScope::Account(AccountId(0)), false),
        (KillScope::Instrument(PAPER), true),
    ] {
        run(&mut m, 1, 1, CommandKind::KillSwitch { scope, on: true });
        assert_eq!(m.open_orders().count(), 0, "engaging cancels what is in scope");
        assert_eq!(
            try_new(&mut m, 2, limit(PAPER, "k", Side::Buy, 100, 1)),
            Some("KILL_SWITCH_ACTIVE")
        );
        let other = rejection(&run(
            &mut m,
            1,
            3,
            CommandKind::New(limit(PAPER, "o", Side::Buy, 100, 1)),
        ));
        assert_eq!(other.is_some(), blocked_for_1, "{scope:?}");
        run(&mut m, 1, 4, CommandKind::MassCancel { instrument: None });
        run(&mut m, 1, 5, CommandKind::KillSwitch { scope, on: false });
        assert_eq!(
            try_new(&mut m, 6, limit(PAPER, "k", Side::Buy, 100, 1)),
            None,
            "released"
        );
        run(&mut m, 0, 7, CommandKind::MassCancel { instrument: None });
    }
    let set = |m: &mut OrderManager, state| {
        run(
            m,
            1,
            8,
            CommandKind::SetTradingState {
                target: AccountId(0),
                state,
            },
        )
    };
    set(&mut m, TradingState::Blocked);
    assert_eq!(
        try_new(&mut m, 9, limit(PAPER, "b", Side::Buy, 100, 1)),
        Some("ACCOUNT_BLOCKED")
    );
    set(&mut m, TradingState::ReduceOnly);
    assert_eq!(
        try_new(&mut m, 10, limit(PAPER, "r", Side::Buy, 100, 1)),
        Some("ACCOUNT_REDUCE_ONLY")
    );
    set(&mut m, TradingState::Active);
    let reduce = NewOrder {
        reduce_only: true,
        ..limit(PAPER, "ro", Side::Sell, 100, 1)
    };
    assert_eq!(try_new(&mut m, 11, reduce), Some("REDUCE_ONLY_WOULD_INCREASE"));
}

#[test]
fn market_session() {
    let mut m = manager(1);
    let hour = 3_600 * 1_000_000_000i64;
    // T0 is 15:30 IST on a Wednesday: closed; 14:30 is open.
    assert_eq!(
        try_new(&mut m, 0, limit(NSE, "late", Side::Buy, 150_000, 5)),
        Some("MARKET_CLOSED")
    );
    assert_eq!(try_new(&mut m, -hour, limit(NSE, "open", Side::Buy, 150_000, 5)), None);
    assert_eq!(
        try_new(&mut m, -hour - 1, limit(NSE, "open2", Side::Buy, 150_000, 5)),
        None
    );
}

#[test]
fn dry_run_checks_everything_and_places_nothing() {
    let mut m = with(|l| l.max_order_qty = 5 * UNIT);
    let ev = run(
        &mut m,
        0,
        0,
        CommandKind::Test(limit(PAPER, "t", Side::Buy, 100, 5_000)),
    );
    assert!(matches!(
        ev.last().unwrap().data,
        stocksblitz_engine::orders::OrderEventData::TestPassed { .. }
    ));
    let ev = run(
        &mut m,
        0,
        0,
        CommandKind::Test(limit(PAPER, "t", Side::Buy, 100, 5_001)),
    );
    assert_eq!(rejection(&ev), Some("MAX_ORDER_QTY"));
    assert_eq!(m.open_orders().count(), 0);
}

#[test]
fn replace_rules() {
    let mut m = manager(1);
    try_new(&mut m, 0, limit(PAPER, "r", Side::Buy, 100, 10));
    let id = m.open_orders().next().unwrap().id;
    let replace = |m: &mut OrderManager, qty: Option<i64>, price: Option<i64>| {
        rejection(&run(
            m,
            0,
            1,
            CommandKind::Replace {
                order: id,
                qty: qty.map(Qty),
                price: price.map(Price),
            },
        ))
    };
    assert_eq!(replace(&mut m, Some(10), Some(100)), Some("REPLACE_NO_CHANGE"));
    assert_eq!(replace(&mut m, Some(0), None), Some("REPLACE_BELOW_FILLED"));
    assert_eq!(replace(&mut m, None, Some(101)), None);
    assert_eq!(m.order(id).unwrap().price, Price(101));
    assert_eq!(replace(&mut m, Some(4), None), None);
    assert_eq!(m.order(id).unwrap().qty, Qty(4));
}

#[test]
fn self_trade_prevention_modes() {
    use stocksblitz_engine::orders::SelfTradeMode;
    for (mode, resting_left, incoming_filled) in [
        (SelfTradeMode::CancelNewest, true, 0),
        (SelfTradeMode::CancelOldest, false, 3),
        (SelfTradeMode::CancelBoth, false, 0),
    ] {
        let mut m = with(|l| l.self_trade = mode);
        // Account 1 rests a sell behind account 0's own sell at the same price.
        assert_eq!(
            rejection(&run(
                &mut m,
                0,
                0,
                CommandKind::New(limit(INTERNAL, "mine", Side::Sell, 10_000, 5))
            )),
            None
        );
        assert_eq!(
            rejection(&run(
                &mut m,
                1,
                1,
                CommandKind::New(limit(INTERNAL, "theirs", Side::Sell, 10_000, 3))
            )),
            None
        );
        let ev = run(
            &mut m,
            0,
            2,
            CommandKind::New(limit(INTERNAL, "buy", Side::Buy, 10_000, 3)),
        );
        let buy = accepted_id(&ev).expect("accepted");
        let mine_open = m.open_orders().any(|o| o.client_id.as_str() == "mine");
        assert_eq!(mine_open, resting_left, "{mode:?}: the resting own order");
        assert_eq!(
            m.order(buy).unwrap().filled,
            Qty(incoming_filled),
            "{mode:?}: the incoming order"
        );
        assert!(
            !m.order(buy).unwrap().status.is_open(),
            "{mode:?}: filled or cancelled, never left resting"
        );
    }
}
