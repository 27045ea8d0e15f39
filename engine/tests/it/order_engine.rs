//! The order path inside the engine loop: commands in through the queue, events out
//! through the order ring, paper fills driven by feed ticks, the internal venue's
//! trades and book published as market data; no heap allocation per command after
//! warm-up (the testkit's per-thread counting allocator); surveillance sees admin commands that clear an account.

use crate::orders_common;

use orders_common::*;
use stocksblitz_engine::orders::gateway::{command_queue, OrderGateway, OrderOutput};
use stocksblitz_engine::orders::{AccountId, Command, CommandKind, OrderEvent, OrderEventData};
use stocksblitz_engine::ring::{ring, RingConsumer};
use stocksblitz_engine::surveillance::{Surveillance, SurveillanceConfig};
use stocksblitz_engine::tick_ring::{tick_ring, TickProducer};
use stocksblitz_engine::{
    BookFlags, Engine, EngineConfig, EngineEvent, EventData, Price, Qty, Side, Tick, TickData, UnixNanos,
};
use stocksblitz_testkit::alloc;

struct Rig {
    engine: Engine,
    feed: TickProducer,
    market: RingConsumer<EngineEvent>,
    orders: RingConsumer<OrderOutput>,
    queue: stocksblitz_engine::orders::gateway::CommandQueue,
    next_request: u64,
}

fn rig() -> Rig {
    rig_with(false)
}

/// With `surveillance`, every rule on (alerts only, so the accounts keep trading).
fn rig_with(surveillance: bool) -> Rig {
    rig_surveilled(surveillance.then(|| SurveillanceConfig::design_defaults().alerts_only()))
}

/// With surveillance as configured by `config`, if any.
fn rig_surveilled(config: Option<SurveillanceConfig>) -> Rig {
    let (feed, input) = tick_ring("feed", 1024);
    let (out, market) = ring("api", 65_536);
    let (order_out, orders) = ring("orders", 64);
    let queue = command_queue(1024);
    let mut engine = Engine::new(&EngineConfig::default(), 3, vec![input], vec![out]).with_orders(
        manager(2),
        OrderGateway::new(queue.clone(), order_out, 65_536),
        UnixNanos(T0),
    );
    if let Some(config) = config {
        let t = config.thresholds().expect("valid");
        engine = engine.with_surveillance(Surveillance::new(t, &registry(), 2));
    }
    Rig {
        engine,
        feed,
        market,
        orders,
        queue,
        next_request: 1,
    }
}

impl Rig {
    fn send(&mut self, account: u32, kind: CommandKind) -> u64 {
        let request = self.next_request;
        self.next_request += 1;
        assert!(self
            .queue
            .push(Command {
                request,
                account: AccountId(account),
                at: UnixNanos(T0),
                kind,
                idempotency: None,
            })
            .is_ok());
        request
    }

    fn order_events(&mut self) -> Vec<OrderEvent> {
        let mut v = Vec::new();
        loop {
            self.engine.poll();
            let before = v.len();
            while let Some(item) = self.orders.pop() {
                if let OrderOutput::Event(e) = item {
                    v.push(e);
                }
            }
            if v.len() == before {
                return v;
            }
        }
    }

    /// Feeds one tick of the paper instrument.
    fn paper_tick(&mut self, data: TickData) {
        assert!(self.feed.push(Tick {
            exchange_ts: UnixNanos(T0),
            recv_ts: UnixNanos(T0),
            instrument: PAPER,
            data,
        }));
    }

    /// Sets paper book levels (qty 0 deletes), the last one ending the batch.
    fn paper_levels(&mut self, levels: &[(Side, i64, i64)]) {
        for (k, &(side, p, q)) in levels.iter().enumerate() {
            self.paper_tick(TickData::BookDelta {
                side,
                price: Price(p),
                qty: Qty(q),
                update_id: 0,
                flags: if k + 1 == levels.len() {
                    BookFlags::END_OF_BATCH
                } else {
                    BookFlags::NONE
                },
            });
        }
    }

    fn market_events(&mut self) -> Vec<EngineEvent> {
        let mut v = Vec::new();
        while let Some(e) = self.market.pop() {
            v.push(e);
        }
        v
    }
}

#[test]
fn commands_in_events_out_in_sequence_never_dropped() {
    let mut r = rig();
    // More events than the 64-slot order ring holds: they wait, none is lost.
    for k in 0..100 {
        r.send(0, CommandKind::New(limit(PAPER, &format!("o{k}"), Side::Buy, 100, 1)));
    }
    let events = r.order_events();
    assert_eq!(events.len(), 100, "one Accepted per order, all delivered");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "contiguous sequence");
    }
    assert!(events.iter().filter(|e| e.last).count() == 100);
    let (stats, _) = r.engine.handles().orders.unwrap();
    assert!(stats.backlogged.get() > 0, "the ring filled and events waited");
    assert_eq!(stats.backlog.get(), 0);
}

#[test]
fn feed_ticks_fill_paper_orders_and_internal_trades_are_market_data() {
    let mut r = rig();
    // Before its feed is LIVE, the paper venue takes no order.
    r.send(0, CommandKind::New(limit(PAPER, "p", Side::Buy, 10_000, 5)));
    let ev = r.order_events();
    assert!(ev.iter().any(|e| matches!(
        e.data,
        OrderEventData::Rejected { reject, .. } if reject.code() == "MARKET_DATA_UNAVAILABLE"
    )));
    r.paper_tick(TickData::Status {
        status: stocksblitz_engine::FeedStatus::Live,
        detail: 0,
    });
    r.paper_levels(&[(Side::Buy, 9_800, 10)]);
    r.engine.poll();
    let req = r.send(0, CommandKind::New(limit(PAPER, "p", Side::Buy, 10_000, 5)));
    let ev = r.order_events();
    assert!(ev.iter().all(|e| e.request == req));
    assert!(accepted_id(&ev).is_some(), "{ev:?}");
    // The feed's BBO reaches the order: a paper fill, unsolicited (request 0).
    let tick = |data| Tick {
        exchange_ts: UnixNanos(T0),
        recv_ts: UnixNanos(T0),
        instrument: PAPER,
        data,
    };
    assert!(r.feed.push(tick(TickData::Status {
        status: stocksblitz_engine::FeedStatus::Live,
        detail: 0
    })));
    for (side, p, q) in [(Side::Buy, 9_900, 10), (Side::Sell, 10_000, 3)] {
        assert!(r.feed.push(tick(TickData::BookDelta {
            side,
            price: Price(p),
            qty: Qty(q),
            update_id: 0,
            flags: BookFlags::END_OF_BATCH
        })));
    }
    let ev = r.order_events();
    let fill = ev.iter().find_map(|e| match e.data {
        OrderEventData::Fill(f) => Some((e.request, f.price.0, f.qty.0)),
        _ => None,
    });
    assert_eq!(fill, Some((0, 10_000, 3)));

    // Internal venue: two accounts trade; the trade and the book reach the market ring.
    r.market_events();
    r.send(0, CommandKind::New(limit(INTERNAL, "s", Side::Sell, 20_000, 7)));
    r.send(1, CommandKind::New(limit(INTERNAL, "b", Side::Buy, 20_000, 2)));
    let ev = r.order_events();
    assert_eq!(
        ev.iter().filter(|e| matches!(e.data, OrderEventData::Fill(_))).count(),
        2
    );
    let md = r.market_events();
    assert!(md.iter().any(|e| e.instrument == INTERNAL
        && matches!(e.data, EventData::Trade { price, qty, .. } if price.0 == 20_000 && qty.0 == 2)));
    assert!(md.iter().any(|e| e.instrument == INTERNAL
        && matches!(e.data, EventData::Quote { ask, ask_qty, .. } if ask.0 == 20_000 && ask_qty.0 == 5)));
}

#[test]
fn no_allocation_per_command_after_warm_up() {
    no_allocation(false);
}

#[test]
fn no_allocation_per_command_with_surveillance_on() {
    no_allocation(true);
}

fn no_allocation(surveillance: bool) {
    let mut r = rig_with(surveillance);
    // A LIVE paper book with depth: paper market orders sweep it.
    r.paper_tick(TickData::Status {
        status: stocksblitz_engine::FeedStatus::Live,
        detail: 0,
    });
    let mut book = vec![(Side::Buy, 9_900, 10)];
    book.extend((0..20).map(|i| (Side::Sell, 10_000 + 10 * i, 2 + i)));
    r.paper_levels(&book);
    let cycle = |r: &mut Rig, k: usize| {
        // The best ask changes (a new quote refreshes what earlier sweeps took), then
        // a market buy sweeps three levels.
        r.paper_levels(&[(Side::Sell, 10_000, 3 + (k % 2) as i64)]);
        r.send(0, CommandKind::New(market(PAPER, "m", Side::Buy, 8)));
        // A resting sell, a crossing buy from the other account, a paper order and
        // its cancel: matching, fills, positions, market data, cancels.
        r.send(
            0,
            CommandKind::New(limit(INTERNAL, "s", Side::Sell, 20_000 + (k % 5) as i64, 3)),
        );
        r.send(1, CommandKind::New(limit(INTERNAL, "b", Side::Buy, 20_010, 3)));
        r.send(0, CommandKind::New(limit(PAPER, "p", Side::Buy, 100, 1)));
        r.engine.poll();
        while r.orders.pop().is_some() {}
        while r.market.pop().is_some() {}
        let open = r
            .engine
            .order_manager()
            .and_then(|m| m.open_orders().next().map(|o| o.id));
        if let Some(id) = open {
            r.send(0, CommandKind::Cancel { order: id });
        }
        r.engine.poll();
        while r.orders.pop().is_some() {}
        while r.market.pop().is_some() {}
    };
    for k in 0..50 {
        cycle(&mut r, k);
    }
    // The counter works on this thread: an allocation while armed is seen.
    let (probe, n) = alloc::count_allocations(|| std::hint::black_box(vec![1u8; 16]));
    drop(probe);
    assert!(n > 0, "the counting allocator is installed and counting");
    alloc::reset();
    alloc::arm();
    for k in 0..500 {
        cycle(&mut r, k);
    }
    alloc::disarm();
    assert_eq!(alloc::count(), 0, "heap allocations on the order path");
    if surveillance {
        // The rules ran (the order rate is far past 30 a minute) and reported.
        r.engine.housekeeping(UnixNanos(T0 + 1_000_000_000));
        assert!(r.engine.handles().stats.anomalies.get() >= 1);
    }
    let m = r.engine.order_manager().unwrap();
    assert_eq!(m.open_orders().count(), 0);
    assert_eq!(
        m.position(AccountId(0), PAPER).map(|p| (p.qty, p.cost)),
        // 550 cycles, alternately 3 at 100.00 + 3 at 100.10 + 2 at 100.20 and 4 at
        // 100.00 + 3 at 100.10 + 1 at 100.20.
        Some((
            550 * 8,
            275 * (3 * 10_000 + 3 * 10_010 + 2 * 10_020) + 275 * (4 * 10_000 + 3 * 10_010 + 10_020)
        )),
        "every market order swept the depth in full"
    );
}

/// Through the engine: the paper venue takes orders only while the instrument's data
/// quality, as the engine derives it from the feed, is LIVE, in every other state.
/// The engine shows surveillance every command before the order path handles it: an
/// admin clearing an account through the command queue (trading state back to active,
/// or its kill switch off) restarts its escalation ladder, while lifting a block to
/// throttled does not.
#[test]
fn an_admin_clear_through_the_engine_restarts_the_escalation_ladder() {
    let account_kill_off = CommandKind::KillSwitch {
        scope: stocksblitz_engine::orders::KillScope::Account(AccountId(0)),
        on: false,
    };
    let set_state = |state| CommandKind::SetTradingState {
        target: AccountId(0),
        state,
    };
    use stocksblitz_engine::orders::TradingState;
    use stocksblitz_engine::surveillance::Action;
    let cases = [
        (account_kill_off, Action::Throttle),
        (set_state(TradingState::Active), Action::Throttle),
        (set_state(TradingState::Throttled), Action::Block),
    ];
    for (clear, want) in cases {
        // Every order over 0.5 units is a HIGH finding, none suppressed.
        let mut c = SurveillanceConfig::design_defaults();
        c.max_order_qty = "0.5".into();
        c.severity.insert("large_qty".into(), "HIGH".into());
        c.cooldown_ms = 0;
        let mut r = rig_surveilled(Some(c));
        let mut n = 0;
        let mut big = |r: &mut Rig| {
            n += 1;
            r.send(
                0,
                CommandKind::New(limit(INTERNAL, &format!("b{n}"), Side::Buy, 10_000, 1_000)),
            );
            let found: Vec<Action> = r
                .order_events()
                .iter()
                .filter_map(|e| match e.data {
                    OrderEventData::Anomaly(a) => Some(a.action),
                    _ => None,
                })
                .collect();
            found
        };
        // Up the ladder until the account is blocked.
        let mut rung = Vec::new();
        for _ in 0..10 {
            rung = big(&mut r);
            if rung == [Action::Block] {
                break;
            }
        }
        assert_eq!(rung, [Action::Block], "the ladder reaches a block");
        r.send(1, clear);
        r.order_events();
        if !matches!(clear, CommandKind::SetTradingState { .. }) {
            // The kill switch was off already: lift the block to let orders through.
            r.send(1, set_state(TradingState::Throttled));
            r.order_events();
        }
        let next = big(&mut r);
        assert_eq!(next.first(), Some(&want), "after {clear:?}: {next:?}");
    }
}

#[test]
fn the_paper_venue_follows_the_engine_s_data_quality() {
    use stocksblitz_engine::{DataQuality, FeedStatus};
    let mut r = rig();
    let mut n = 0;
    let mut place = |r: &mut Rig| -> Option<&'static str> {
        n += 1;
        r.send(0, CommandKind::New(limit(PAPER, &format!("q{n}"), Side::Buy, 9_000, 1)));
        rejection(&r.order_events())
    };
    let status = |r: &mut Rig, status: FeedStatus| {
        r.paper_tick(TickData::Status { status, detail: 0 });
        r.engine.poll();
    };
    let quality = |r: &Rig| r.engine.state(PAPER).map(|s| s.quality());
    assert_eq!(quality(&r), Some(DataQuality::Syncing));
    assert_eq!(place(&mut r), Some("MARKET_DATA_UNAVAILABLE"));
    status(&mut r, FeedStatus::Live);
    r.paper_levels(&[(Side::Buy, 9_900, 5), (Side::Sell, 10_000, 5)]);
    r.engine.poll();
    assert_eq!(quality(&r), Some(DataQuality::Live));
    assert_eq!(place(&mut r), None);

    status(&mut r, FeedStatus::Halted);
    assert_eq!(quality(&r), Some(DataQuality::Halted));
    assert_eq!(place(&mut r), Some("MARKET_DATA_UNAVAILABLE"));
    status(&mut r, FeedStatus::Resumed);
    assert_eq!(place(&mut r), None);

    status(&mut r, FeedStatus::Gap);
    assert_eq!(quality(&r), Some(DataQuality::Gapped));
    assert_eq!(place(&mut r), Some("MARKET_DATA_UNAVAILABLE"));
    status(&mut r, FeedStatus::Live);
    assert_eq!(place(&mut r), None);

    r.paper_levels(&[(Side::Buy, 10_100, 1)]);
    r.engine.poll();
    assert_eq!(quality(&r), Some(DataQuality::Crossed));
    assert_eq!(place(&mut r), Some("MARKET_DATA_UNAVAILABLE"));
    r.paper_levels(&[(Side::Buy, 10_100, 0)]);
    r.engine.poll();
    assert_eq!(place(&mut r), None);

    status(&mut r, FeedStatus::Syncing);
    assert_eq!(quality(&r), Some(DataQuality::Syncing));
    assert_eq!(place(&mut r), Some("MARKET_DATA_UNAVAILABLE"));
    status(&mut r, FeedStatus::Live);
    assert_eq!(place(&mut r), None);

    // Silence: the engine's staleness timer.
    r.engine.housekeeping(UnixNanos(T0 + 600 * 1_000_000_000));
    assert_eq!(quality(&r), Some(DataQuality::Stale));
    assert_eq!(place(&mut r), Some("MARKET_DATA_UNAVAILABLE"));
    r.paper_levels(&[(Side::Sell, 10_000, 6)]);
    r.engine.poll();
    assert_eq!(quality(&r), Some(DataQuality::Live));
    assert_eq!(place(&mut r), None);
}
