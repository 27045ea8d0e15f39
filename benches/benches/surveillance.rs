//! Surveillance cost: the engine with order entry on, fed market ticks (5 instruments,
//! synthetic random walk) and an order command every 8 ticks (new limit orders from 3
//! accounts, a third of them cancelled), with every surveillance rule on versus off,
//! in the same run. Goal: under 10% slower with the rules on.
//!
//! Each measured operation is one tick through `Engine::process` plus, every 8th, one
//! command through `Engine::poll` (risk, paper venue, events, journal ring hand-off,
//! and with surveillance the order-flow and market-data rules and any anomaly steps).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use stocksblitz_benches::{batched, iters, print_table, synthetic_ticks, Row};
use stocksblitz_engine::orders::gateway::{command_queue, CommandQueue, OrderGateway, OrderOutput};
use stocksblitz_engine::orders::{
    AccountId, ClientOrderId, Command, CommandKind, NewOrder, OrderCapacity, OrderId, OrderManager, OrderType,
    TimeInForce, VenueKind,
};
use stocksblitz_engine::ring::{ring, RingConsumer};
use stocksblitz_engine::surveillance::{Surveillance, SurveillanceConfig};
use stocksblitz_engine::tick_ring::tick_ring;
use stocksblitz_engine::{
    Engine, EngineConfig, EngineEvent, InstrumentConfig, InstrumentId, InstrumentRegistry, Price, Qty, Side, Tick,
    UnixNanos,
};
use stocksblitz_feed_handlers::SimSpec;
use stocksblitz_testkit::instruments::crypto_spot;

const INSTRUMENTS: u32 = 5;
const START_NS: i64 = 1_700_000_000 * UnixNanos::NANOS_PER_SEC;

fn registry() -> InstrumentRegistry {
    let list: Vec<InstrumentConfig> = (0..INSTRUMENTS)
        .map(|i| InstrumentConfig {
            currency: "INR".into(),
            ..crypto_spot(&format!("S{i}"), "sim")
        })
        .collect();
    InstrumentRegistry::from_config(&list).expect("registry")
}

fn engine(
    surveillance: bool,
) -> (
    Engine,
    CommandQueue,
    RingConsumer<EngineEvent>,
    RingConsumer<OrderOutput>,
) {
    let reg = registry();
    let limits = stocksblitz_benches::unlimited();
    let manager = OrderManager::new(
        &reg,
        &[VenueKind::Paper; INSTRUMENTS as usize],
        &[100_000_000; INSTRUMENTS as usize],
        &[limits; 3],
        OrderCapacity {
            orders: 1 << 20,
            levels: 4096,
            stops: 16,
            day_offset_secs: 19_800,
        },
    );
    let (_in_tx, in_rx) = tick_ring("in", 1024);
    let (out_tx, out_rx) = ring::<EngineEvent>("out", 1 << 16);
    let (order_tx, order_rx) = ring::<OrderOutput>("orders", 1 << 20);
    let queue = command_queue(1024);
    let mut e = Engine::new(
        &EngineConfig::default(),
        INSTRUMENTS as usize,
        vec![in_rx],
        vec![out_tx],
    )
    .with_orders(
        manager,
        OrderGateway::new(queue.clone(), order_tx, 1 << 16),
        UnixNanos(START_NS),
    );
    if surveillance {
        let t = SurveillanceConfig::design_defaults()
            .alerts_only()
            .thresholds()
            .expect("valid");
        e = e.with_surveillance(Surveillance::new(t, &reg, 3));
    }
    (e, queue, out_rx, order_rx)
}

fn run(name: &str, surveillance: bool, ticks: &[Tick], clients: &[ClientOrderId]) -> Row {
    let (mut e, queue, mut out, mut orders) = engine(surveillance);
    let mut placed: Vec<OrderId> = Vec::with_capacity(ticks.len() / 8);
    let mut n_cmd = 0usize;
    let mut row = batched(name, ticks.len() as u64, 16, |i| {
        let t = &ticks[i as usize];
        e.process(t);
        if i % 8 == 7 {
            let k = n_cmd;
            n_cmd += 1;
            let account = AccountId((k % 3) as u32);
            let kind = if k % 3 == 2 && !placed.is_empty() {
                CommandKind::Cancel {
                    order: placed[k % placed.len()],
                }
            } else {
                let side = if k.is_multiple_of(2) { Side::Buy } else { Side::Sell };
                // Resting a little away from the market.
                let px = 6_400_000 + (k % 50) as i64 * 100;
                placed.push(OrderId(0));
                CommandKind::New(NewOrder {
                    instrument: InstrumentId((k % INSTRUMENTS as usize) as u32),
                    client_id: clients[k % clients.len()],
                    side,
                    kind: OrderType::Limit,
                    tif: TimeInForce::Gtc,
                    price: Price(if side == Side::Buy { px } else { px + 400_000 }),
                    stop_price: Price(0),
                    qty: Qty(1_000),
                    post_only: false,
                    reduce_only: false,
                })
            };
            let _ = queue.push(Command {
                request: k as u64 + 1,
                account,
                at: t.recv_ts,
                kind,
                idempotency: None,
            });
            e.poll();
        }
        if i % 256 == 255 {
            while out.pop().is_some() {}
            while let Some(o) = orders.pop() {
                if let OrderOutput::Event(ev) = o {
                    if let stocksblitz_engine::orders::OrderEventData::Order {
                        kind: stocksblitz_engine::orders::OrderEventKind::Accepted,
                        order,
                    } = ev.data
                    {
                        if let Some(slot) = placed.iter_mut().rev().find(|p| p.0 == 0) {
                            *slot = order.id;
                        }
                    }
                }
            }
        }
    });
    // Housekeeping publishes the surveillance counters.
    if let Some(last) = ticks.last() {
        e.housekeeping(last.recv_ts.saturating_add_nanos(2_000_000));
    }
    let s = e.handles().stats;
    row.note = format!(
        "{} commands, {} anomalies, {} suppressed by cooldown",
        n_cmd,
        s.anomalies.get(),
        s.anomalies_suppressed.get()
    );
    row
}

fn main() {
    let n = iters(1_000_000) as usize;
    let specs: Vec<SimSpec> = (0..INSTRUMENTS)
        .map(|i| SimSpec {
            id: InstrumentId(i),
            tick_size: Price(1),
            lot_size: Qty(1_000),
            start_price: Price(6_500_000 + i64::from(i) * 10_000),
        })
        .collect();
    // 200 us of market time per tick: a minute of market every 300k ticks.
    let ticks = synthetic_ticks(&specs, n, UnixNanos(START_NS), 200_000);
    let clients: Vec<ClientOrderId> = (0..n / 8 + 1)
        .map(|i| ClientOrderId::new(&format!("c{i}")).expect("client id"))
        .collect();
    let rows = vec![
        run(
            "engine, order entry on, surveillance off (baseline)",
            false,
            &ticks,
            &clients,
        ),
        run(
            "engine, order entry on, every surveillance rule on",
            true,
            &ticks,
            &clients,
        ),
    ];
    print_table(
        "surveillance: engine per tick (+ a command every 8 ticks), rules on vs off",
        &rows,
    );
}
