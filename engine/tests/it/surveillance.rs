//! Surveillance rules at, just below and just past their thresholds (times in IST
//! where the session matters, including its edges and the day roll), the cooldown, the
//! escalation ladder on a real order manager, and journal replay of anomaly steps.
// Prices are written as units_cents (100_00 is 100.00).
#![allow(clippy::inconsistent_digit_grouping)]

use crate::orders_common;

use orders_common::*;
use stocksblitz_engine::event::EventData;
use stocksblitz_engine::orders::{
    AccountId, Command, CommandKind, Input, OrderCapacity, OrderEventData, OrderManager, RiskLimits, TradingState,
    VenueKind,
};
use stocksblitz_engine::surveillance::{Action, Anomaly, Rule, Severity, Surveillance};
use stocksblitz_engine::{
    DataQuality, InstrumentConfig, InstrumentId, InstrumentRegistry, Price, Qty, Side, UnixNanos,
};
use stocksblitz_testkit::instruments::{crypto_spot, infy};

const SECOND: i64 = 1_000_000_000;
/// 2026-12-02 (a Wednesday) 10:00 IST, as an offset from T0 (15:30 IST that day).
const IST_10_00: i64 = -(5 * 3600 + 30 * 60) * SECOND;

/// 20 crypto pairs on the paper venue (24x7, UTC days), then the NSE equity.
fn registry() -> InstrumentRegistry {
    let mut list: Vec<InstrumentConfig> = (0..20).map(|i| crypto_spot(&format!("C{i}USDT"), "binance")).collect();
    list.push(infy());
    InstrumentRegistry::from_config(&list).expect("registry")
}

const NSE_EQ: InstrumentId = InstrumentId(20);

fn config() -> stocksblitz_engine::surveillance::SurveillanceConfig {
    let mut c = stocksblitz_engine::surveillance::SurveillanceConfig::design_defaults();
    // The ladder tests below were written against the EWMA weight of 5%.
    c.ewma_weight_pct = 5;
    c
}

struct Rig {
    m: OrderManager,
    s: Surveillance,
    next_client: u64,
}

impl Rig {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(c: stocksblitz_engine::surveillance::SurveillanceConfig) -> Self {
        let reg = registry();
        let venues = vec![VenueKind::Paper; reg.len()];
        let rates = vec![100_000_000i128; reg.len()];
        let mut m = OrderManager::new(
            &reg,
            &venues,
            &rates,
            &[loose(), loose()],
            OrderCapacity {
                orders: 8192,
                levels: 256,
                stops: 16,
                day_offset_secs: 19_800,
            },
        );
        // Paper orders need LIVE data (as the engine reports once the feeds are synced).
        for i in 0..reg.len() {
            m.set_quality(InstrumentId(i as u32), DataQuality::Live);
        }
        let s = Surveillance::new(c.thresholds().expect("valid"), &reg, 2);
        Self { m, s, next_client: 0 }
    }

    /// Runs a command through the manager and surveillance (as the engine does);
    /// returns the anomalies it raised.
    /// Runs a command as the engine does: surveillance sees it first, then the order path.
    fn cmd(&mut self, account: u32, at_ns: i64, kind: CommandKind) -> Vec<Anomaly> {
        self.m.clear();
        let cmd = Command {
            request: 1,
            account: AccountId(account),
            at: UnixNanos(T0 + at_ns),
            kind,
            idempotency: None,
        };
        self.s.observe_command(&cmd);
        self.m.handle(&cmd);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Anomaly> {
        let events = self.m.events().to_vec();
        self.s.observe_orders(&self.m, &events);
        self.m.clear();
        let mut found = Vec::new();
        let m = &mut self.m;
        self.s.take_pending(|a| {
            found.push(*a);
            m.apply_anomaly(a);
        });
        found
    }

    fn buy(&mut self, account: u32, at_ns: i64, instrument: InstrumentId, price: i64, qty: i64) -> Vec<Anomaly> {
        self.next_client += 1;
        let o = limit(instrument, &format!("c{}", self.next_client), Side::Buy, price, qty);
        self.cmd(account, at_ns, CommandKind::New(o))
    }

    fn market(&mut self, id: InstrumentId, quality: DataQuality, data: EventData, at_ns: i64) -> Vec<Anomaly> {
        self.s.observe_market(id, quality, &data, UnixNanos(T0 + at_ns));
        let mut found = Vec::new();
        self.s.take_pending(|a| found.push(*a));
        found
    }
}

fn rules(a: &[Anomaly]) -> Vec<Rule> {
    a.iter().map(|a| a.rule).collect()
}

fn c(i: u32) -> InstrumentId {
    InstrumentId(i)
}

#[test]
fn order_rate_at_just_below_and_past_the_threshold() {
    // (The order-to-trade rule would also see 31 orders without a fill.)
    let mut r = Rig::with({
        let mut c = config();
        c.order_to_trade_min_orders = 1_000;
        c
    });
    // 30 orders within one minute: at the limit, no anomaly.
    for i in 0..30 {
        assert!(r.buy(0, i * SECOND, c(0), 100_00, 1).is_empty(), "order {i}");
    }
    // The 31st inside the same minute is past it.
    let a = r.buy(0, 59 * SECOND, c(0), 100_00, 1);
    assert_eq!(rules(&a), [Rule::OrderRate]);
    assert_eq!(
        (a[0].observed, a[0].threshold, a[0].severity),
        (31, 30, Severity::Medium)
    );
    assert_eq!(a[0].account, Some(AccountId(0)));
    assert_eq!(a[0].action, Action::Alert);
    // Another account is not affected; the window slides.
    assert!(r.buy(1, 59 * SECOND, c(0), 100_00, 1).is_empty());
}

#[test]
fn order_size_and_value() {
    let mut r = Rig::new();
    // 50,000 shares is the limit; one lot more is past it. Notional 10,00,000 INR.
    assert!(
        r.buy(0, IST_10_00, NSE_EQ, 10_00, 50_000).is_empty(),
        "at the qty limit"
    );
    let a = r.buy(0, IST_10_00 + SECOND, NSE_EQ, 10_00, 50_005);
    assert_eq!(rules(&a), [Rule::LargeQty]);
    assert_eq!((a[0].threshold, a[0].scale), (50_000 * 100_000_000, 8));
    assert_eq!(a[0].action, Action::Throttle, "HIGH -> throttle");

    let mut r = Rig::new();
    assert!(
        r.buy(0, IST_10_00, NSE_EQ, 2_000_00, 500).is_empty(),
        "exactly 10,00,000"
    );
    assert!(
        r.buy(0, IST_10_00 + SECOND, NSE_EQ, 1_999_95, 500).is_empty(),
        "just below"
    );
    let a = r.buy(0, IST_10_00 + 2 * SECOND, NSE_EQ, 2_000_00, 505);
    assert_eq!(rules(&a), [Rule::LargeNotional]);
    assert_eq!(a[0].observed, 1_010_000 * 100_000_000);
}

#[test]
fn orders_outside_the_nse_session_edges_in_ist() {
    let mut r = Rig::new();
    let open = IST_10_00 - 45 * 60 * SECOND; // 09:15 IST
    let close = 0; // 15:30 IST (T0)
    assert_eq!(
        rules(&r.buy(0, open - SECOND, NSE_EQ, 10_00, 5)),
        [Rule::OutsideSession],
        "09:14:59"
    );
    assert!(r.buy(0, open, NSE_EQ, 10_00, 5).is_empty(), "09:15:00 is open");
    assert!(
        r.buy(0, close - SECOND, NSE_EQ, 10_00, 5).is_empty(),
        "15:29:59 is open"
    );
    // 15:30:00 is closed (the close is exclusive).
    assert_eq!(rules(&r.buy(0, close, NSE_EQ, 10_00, 5)), [Rule::OutsideSession]);
    // Within the cooldown a second finding of the same rule is suppressed...
    assert!(r.buy(0, close + 30 * SECOND, NSE_EQ, 10_00, 5).is_empty());
    assert_eq!(r.s.stats.suppressed, 1);
    // ...after it, reported again.
    assert_eq!(
        rules(&r.buy(0, close + 61 * SECOND, NSE_EQ, 10_00, 5)),
        [Rule::OutsideSession]
    );
    // Crypto is 24x7.
    assert!(r.buy(1, close + 3 * 3600 * SECOND, c(0), 100_00, 1).is_empty());
}

#[test]
fn distinct_symbols_per_day_and_the_day_roll() {
    let mut r = Rig::new();
    // T0 is 10:00 UTC; crypto days are UTC days. 15 symbols are allowed.
    let late = 13 * 3600 * SECOND; // 23:00 UTC
    for i in 0..15 {
        assert!(
            r.buy(0, late + i64::from(i) * 61 * SECOND, c(i), 100_00, 1).is_empty(),
            "symbol {i}"
        );
    }
    // The same symbols again: still 15.
    assert!(r.buy(0, late + 16 * 61 * SECOND, c(3), 100_00, 1).is_empty());
    // The 16th symbol just before midnight UTC is past the limit...
    let before_midnight = 14 * 3600 * SECOND - SECOND; // 23:59:59
    let a = r.buy(0, before_midnight, c(15), 100_00, 1);
    assert_eq!(rules(&a), [Rule::SymbolSpread]);
    assert_eq!((a[0].observed, a[0].threshold, a[0].severity), (16, 15, Severity::Low));
    // ...after midnight the count starts again.
    assert!(r.buy(0, before_midnight + 2 * SECOND, c(16), 100_00, 1).is_empty());
}

#[test]
fn symbols_per_day_roll_at_the_configured_time_for_24x7_instruments() {
    let mut r = Rig::new();
    // 24x7 instruments' trading day starts at 06:00 UTC.
    r.m.set_day_roll(6 * 3600);
    let late = 13 * 3600 * SECOND; // 23:00 UTC
    for i in 0..15 {
        assert!(r.buy(0, late + i64::from(i) * 61 * SECOND, c(i), 100_00, 1).is_empty());
    }
    // Midnight UTC is not the roll any more: a 16th symbol after it is past the limit.
    let a = r.buy(0, 14 * 3600 * SECOND + SECOND, c(15), 100_00, 1);
    assert_eq!(rules(&a), [Rule::SymbolSpread]);
    let roll = 20 * 3600 * SECOND; // 06:00 UTC
    let a = r.buy(0, roll - SECOND, c(16), 100_00, 1);
    assert_eq!(rules(&a), [Rule::SymbolSpread], "05:59:59 is the same trading day");
    assert!(
        r.buy(0, roll, c(17), 100_00, 1).is_empty(),
        "the count starts again at the roll"
    );
}

#[test]
fn cancel_rate_and_order_to_trade() {
    let mut r = Rig::new();
    let mut ids = Vec::new();
    for i in 0..21 {
        r.m.clear();
        r.buy(0, i * 100_000_000, c(i as u32 % 4), 100_00, 1);
        ids.push(i);
    }
    // Orders rest: cancel them (orders ids from the manager's open list).
    let open: Vec<_> = r.m.open_orders().map(|o| o.id).collect();
    assert_eq!(open.len(), 21);
    let mut found = Vec::new();
    for (n, id) in open.iter().enumerate() {
        let a = r.cmd(
            0,
            10 * SECOND + n as i64 * 10_000_000,
            CommandKind::Cancel { order: *id },
        );
        if n < 20 {
            assert!(a.is_empty(), "cancel {n}: {a:?}");
        }
        found.extend(a);
    }
    assert_eq!(rules(&found), [Rule::CancelRate]);
    assert_eq!((found[0].observed, found[0].threshold), (21, 20));

    // Order-to-trade: 25 orders and no fill in a minute (ratio 25 > 20 per fill).
    let mut r = Rig::with({
        let mut c = config();
        c.max_orders_per_min = 1_000;
        c
    });
    let mut last = Vec::new();
    for i in 0..25 {
        last = r.buy(1, i * SECOND, c(0), 100_00, 1);
        if i < 24 {
            assert!(last.is_empty(), "order {i}: {last:?}");
        }
    }
    assert_eq!(rules(&last), [Rule::OrderToTrade]);
}

#[test]
fn layering_after_an_opposite_fill() {
    let mut r = Rig::new();
    // Five buys resting on a paper instrument, then a sell that fills against the
    // market, then the buys cancelled within 2 s of it.
    for i in 0..5 {
        r.buy(0, i * 1_000_000, c(0), 99_00, 1);
    }
    let buys: Vec<_> = r.m.open_orders().map(|o| o.id).collect();
    r.m.clear();
    r.m.on_quote(
        c(0),
        Price(100_00),
        Qty(1_000),
        Price(100_01),
        Qty(1_000),
        UnixNanos(T0 + SECOND),
    );
    r.drain();
    let sell = market(c(0), "s1", Side::Sell, 1);
    r.cmd(0, SECOND + 1_000, CommandKind::New(sell));
    let mut found = Vec::new();
    for (n, id) in buys.iter().enumerate() {
        found.extend(r.cmd(
            0,
            SECOND + 100_000_000 * (n as i64 + 1),
            CommandKind::Cancel { order: *id },
        ));
    }
    assert_eq!(rules(&found), [Rule::Layering], "{found:?}");
    assert_eq!(found[0].action, Action::Throttle);

    // The same cancels 2 s after the fill are not the pattern.
    let mut r = Rig::new();
    for i in 0..5 {
        r.buy(0, i * 1_000_000, c(1), 99_00, 1);
    }
    let buys: Vec<_> = r.m.open_orders().map(|o| o.id).collect();
    r.m.clear();
    r.m.on_quote(
        c(1),
        Price(100_00),
        Qty(1_000),
        Price(100_01),
        Qty(1_000),
        UnixNanos(T0 + SECOND),
    );
    r.drain();
    r.cmd(0, SECOND + 1_000, CommandKind::New(market(c(1), "s1", Side::Sell, 1)));
    for (n, id) in buys.iter().enumerate() {
        let a = r.cmd(0, 4 * SECOND + n as i64, CommandKind::Cancel { order: *id });
        assert!(a.is_empty(), "{a:?}");
    }
}

#[test]
fn the_escalation_ladder_and_an_admin_clear() {
    let mut r = Rig::new();
    let big = |r: &mut Rig, minute: i64| r.buy(0, IST_10_00 + minute * 61 * SECOND, NSE_EQ, 10_00, 60_000);
    let state = |r: &Rig| {
        let a = r.m.account(AccountId(0)).expect("account");
        (a.state, a.killed)
    };
    // HIGH anomalies: throttle, throttle, then the third escalates to block...
    assert_eq!(big(&mut r, 0)[0].action, Action::Throttle);
    assert_eq!(state(&r), (TradingState::Throttled, false));
    assert_eq!(big(&mut r, 1)[0].action, Action::Throttle);
    let third = big(&mut r, 2);
    assert_eq!(third[0].action, Action::Block);
    assert_eq!(state(&r), (TradingState::Blocked, false));
    // A blocked account's new orders are refused before surveillance sees them. An
    // admin lifts the block to throttled; the ladder remembers its rung: the next HIGH
    // findings block again, and the sixth strike pulls the kill switch.
    for minute in 3..6 {
        r.cmd(
            0,
            IST_10_00 + minute * 61 * SECOND - 1,
            CommandKind::SetTradingState {
                target: AccountId(0),
                state: TradingState::Throttled,
            },
        );
        let a = big(&mut r, minute);
        let want = if minute == 5 { Action::Kill } else { Action::Block };
        assert_eq!(a[0].action, want, "minute {minute}");
    }
    assert!(state(&r).1, "the kill switch is on after the sixth strike");
    // An admin clears the account: the ladder starts again.
    r.cmd(
        0,
        IST_10_00 + 10 * 61 * SECOND,
        CommandKind::KillSwitch {
            scope: stocksblitz_engine::orders::KillScope::Account(AccountId(0)),
            on: false,
        },
    );
    r.cmd(
        0,
        IST_10_00 + 10 * 61 * SECOND + 1,
        CommandKind::SetTradingState {
            target: AccountId(0),
            state: TradingState::Active,
        },
    );
    assert_eq!(big(&mut r, 11)[0].action, Action::Throttle);
}

/// Either way an admin clears an account (its kill switch off, or its trading state set
/// back to active) resets its place on the ladder; other admin commands leave it.
#[test]
fn an_admin_clear_resets_the_ladder_and_nothing_else_does() {
    let account_kill_off = CommandKind::KillSwitch {
        scope: stocksblitz_engine::orders::KillScope::Account(AccountId(0)),
        on: false,
    };
    let set_state = |state| CommandKind::SetTradingState {
        target: AccountId(0),
        state,
    };
    let cases = [
        (account_kill_off, Action::Throttle),
        (set_state(TradingState::Active), Action::Throttle),
        // Lifting a block to throttled or reduce-only is not a clear.
        (set_state(TradingState::Throttled), Action::Block),
        (set_state(TradingState::ReduceOnly), Action::Block),
        (
            CommandKind::KillSwitch {
                scope: stocksblitz_engine::orders::KillScope::Global,
                on: false,
            },
            Action::Block,
        ),
    ];
    for (clear, want) in cases {
        let mut r = Rig::new();
        let big = |r: &mut Rig, minute: i64| r.buy(0, IST_10_00 + minute * 61 * SECOND, NSE_EQ, 10_00, 60_000);
        // Two HIGH findings: two strikes, the account throttled.
        assert_eq!(big(&mut r, 0)[0].action, Action::Throttle);
        assert_eq!(big(&mut r, 1)[0].action, Action::Throttle);
        r.cmd(0, IST_10_00 + 2 * 61 * SECOND - 1, clear);
        let after = r.m.account(AccountId(0)).expect("account").state;
        if after == TradingState::Blocked || after == TradingState::ReduceOnly {
            // The order would be refused before surveillance sees it: let it through.
            r.cmd(0, IST_10_00 + 2 * 61 * SECOND - 1, set_state(TradingState::Throttled));
        }
        assert_eq!(big(&mut r, 2)[0].action, want, "after {clear:?}");
    }
}

#[test]
fn anomaly_steps_replay_to_the_same_events_and_state() {
    let mut r = Rig::new();
    r.buy(0, IST_10_00, NSE_EQ, 10_00, 60_000);
    r.m.clear();
    let a = r.buy(0, IST_10_00 + 61 * SECOND, NSE_EQ, 10_00, 60_000);
    assert_eq!(a.len(), 1);
    // The anomaly step as the journal would hold it.
    let mut m2 = manager_like(&r);
    let before = m2.events().len();
    m2.replay(&stocksblitz_engine::orders::Step {
        input: Input::Anomaly(a[0]),
        market: None,
        events: 1,
        ctx: Default::default(),
    });
    let evs = &m2.events()[before..];
    assert!(matches!(evs[0].data, OrderEventData::Anomaly(x) if x == a[0]));
    assert_eq!(m2.account(AccountId(0)).map(|x| x.state), Some(TradingState::Throttled));
}

fn manager_like(_r: &Rig) -> OrderManager {
    let reg = registry();
    let mut m = OrderManager::new(
        &reg,
        &vec![VenueKind::Paper; reg.len()],
        &vec![100_000_000i128; reg.len()],
        &[loose(), loose()] as &[RiskLimits],
        OrderCapacity {
            orders: 1024,
            levels: 64,
            stops: 16,
            day_offset_secs: 19_800,
        },
    );
    for i in 0..reg.len() {
        m.set_quality(InstrumentId(i as u32), DataQuality::Live);
    }
    m
}

fn trade(price: i64, qty: i64) -> EventData {
    EventData::Trade {
        price: Price(price),
        qty: Qty(qty),
        trade_id: 1,
        aggressor: stocksblitz_engine::Aggressor::Buy,
    }
}

#[test]
fn price_jumps_against_the_ewma_of_returns() {
    let mut r = Rig::new();
    // Alternating +-0.1% returns: sigma is 1000 ppm. 60 returns warm the EWMA up.
    let mut p = 100_000_00i64;
    for i in 0..61 {
        p = if i % 2 == 0 { p + p / 1000 } else { p - p / 1000 };
        assert!(r.market(c(0), DataQuality::Live, trade(p, 1), i * SECOND).is_empty());
    }
    // 5.9 sigma: below; 6.1 sigma: past.
    let below = p + p * 59 / 10_000;
    assert!(r
        .market(c(0), DataQuality::Live, trade(below, 1), 100 * SECOND)
        .is_empty());
    let mut r2 = Rig::new();
    let mut p = 100_000_00i64;
    for i in 0..61 {
        p = if i % 2 == 0 { p + p / 1000 } else { p - p / 1000 };
        r2.market(c(0), DataQuality::Live, trade(p, 1), i * SECOND);
    }
    let a = r2.market(c(0), DataQuality::Live, trade(p + p * 62 / 10_000, 1), 100 * SECOND);
    assert_eq!(rules(&a), [Rule::PriceJump]);
    assert!((600..=640).contains(&a[0].observed), "{} sigma x100", a[0].observed);
    assert_eq!((a[0].threshold, a[0].scale, a[0].account), (600, 2, None));
    assert_eq!(a[0].action, Action::Alert, "market data: alert only");
}

#[test]
fn a_one_tick_move_in_a_quiet_market_is_not_a_jump() {
    let mut r = Rig::new();
    // INFY trades at 1520.00 again and again (zero returns: the EWMA sigma is ~0);
    // one tick (0.05) is not a 6-sigma jump, seven ticks are.
    for i in 0..60 {
        assert!(r
            .market(NSE_EQ, DataQuality::Live, trade(1_520_00, 5), i * SECOND)
            .is_empty());
    }
    assert!(r
        .market(NSE_EQ, DataQuality::Live, trade(1_520_05, 5), 61 * SECOND)
        .is_empty());
    assert!(r
        .market(NSE_EQ, DataQuality::Live, trade(1_520_00, 5), 62 * SECOND)
        .is_empty());
    let a = r.market(NSE_EQ, DataQuality::Live, trade(1_520_35, 5), 63 * SECOND);
    assert_eq!(rules(&a), [Rule::PriceJump]);
}

#[test]
fn book_and_feed_state_rules() {
    let mut r = Rig::new();
    let quote = |bid: i64, ask: i64| EventData::Quote {
        bid: Price(bid),
        bid_qty: Qty(1),
        ask: Price(ask),
        ask_qty: Qty(1),
    };
    assert!(r.market(c(0), DataQuality::Live, quote(100_00, 100_01), 0).is_empty());
    assert_eq!(
        rules(&r.market(c(0), DataQuality::Live, quote(100_01, 100_01), 1)),
        [Rule::LockedBook]
    );
    // Still locked/crossed: one report per episode.
    assert!(r
        .market(c(0), DataQuality::Crossed, quote(100_02, 100_01), 2)
        .is_empty());
    assert!(r.market(c(0), DataQuality::Live, quote(100_00, 100_01), 3).is_empty());
    assert_eq!(
        rules(&r.market(c(1), DataQuality::Crossed, quote(100_02, 100_01), 4)),
        [Rule::CrossedBook]
    );

    let status = |previous| EventData::Status { previous };
    // Stale during the NSE session: HIGH; outside it: nothing.
    let a = r.market(NSE_EQ, DataQuality::Stale, status(DataQuality::Live), IST_10_00);
    assert_eq!((rules(&a), a[0].severity), (vec![Rule::StaleFeed], Severity::High));
    assert!(r
        .market(NSE_EQ, DataQuality::Stale, status(DataQuality::Live), 3600 * SECOND)
        .is_empty());
    // A sequence gap.
    assert_eq!(
        rules(&r.market(c(2), DataQuality::Gapped, status(DataQuality::Live), 5)),
        [Rule::SequenceGap]
    );
}

/// A stale feed reports how long the instrument was silent against the engine's
/// threshold (seconds, three decimals), not a bare 1 against 0; over many silences.
#[test]
fn a_stale_feed_reports_its_silence_against_the_threshold() {
    let mut r = Rig::new();
    r.s.set_stale_after(5 * SECOND);
    let status = |previous| EventData::Status { previous };
    let mut at = IST_10_00;
    for silent_ms in [5_001i64, 7_250, 60_000, 3_000] {
        assert!(r.market(NSE_EQ, DataQuality::Live, trade(1_520_00, 5), at).is_empty());
        at += silent_ms * 1_000_000;
        let a = r.market(NSE_EQ, DataQuality::Stale, status(DataQuality::Live), at);
        assert_eq!(rules(&a), [Rule::StaleFeed]);
        assert_eq!((a[0].observed, a[0].threshold, a[0].scale), (silent_ms, 5_000, 3));
        let text = a[0].describe(Some("INFY"), None);
        assert!(
            text.contains("no market data for") && text.contains("stale after 5.000 s"),
            "{text}"
        );
        // Past the cooldown before the next episode.
        at += 120 * SECOND;
    }
}

#[test]
fn volume_spikes_against_the_rolling_baseline() {
    let mut r = Rig::new();
    let minute = 60 * SECOND;
    // Five minutes of 100 units a minute build the baseline.
    for m in 0..5 {
        for i in 0..10 {
            assert!(r
                .market(c(0), DataQuality::Live, trade(100_00, 10), m * minute + i * SECOND)
                .is_empty());
        }
    }
    // Ten times the baseline is the limit (1,000); 1,001 is past it, once a minute.
    assert!(r
        .market(c(0), DataQuality::Live, trade(100_00, 1_000), 5 * minute + SECOND)
        .is_empty());
    let a = r.market(c(0), DataQuality::Live, trade(100_00, 1), 5 * minute + 2 * SECOND);
    assert_eq!(rules(&a), [Rule::VolumeSpike]);
    assert_eq!((a[0].observed, a[0].threshold, a[0].scale), (1_001, 1_000, 3));
    assert!(r
        .market(c(0), DataQuality::Live, trade(100_00, 5_000), 5 * minute + 3 * SECOND)
        .is_empty());
}

#[test]
fn config_is_validated_with_the_key_at_fault() {
    let mut c = config();
    c.severity.remove("layering");
    assert_eq!(c.thresholds().unwrap_err().0, "severity.layering");
    let mut c = config();
    c.severity.insert("spoofing".into(), "HIGH".into());
    assert_eq!(c.thresholds().unwrap_err().0, "severity.spoofing");
    let mut c = config();
    c.actions.high = "alert".into();
    c.actions.medium = "block".into();
    assert_eq!(c.thresholds().unwrap_err().0, "actions");
    let mut c = config();
    c.max_order_qty = "-1".into();
    assert_eq!(c.thresholds().unwrap_err().0, "max_order_qty");
}
