//! Shared set-up for the order-path tests: a registry with an internal-venue and a
//! paper-venue instrument, generous default limits, and command builders.

#![allow(dead_code)]

use stocksblitz_engine::orders::{
    AccountId, ClientOrderId, Command, CommandKind, NewOrder, OrderCapacity, OrderEvent, OrderEventData, OrderManager,
    OrderType, RiskLimits, SelfTradeMode, TimeInForce, VenueKind,
};
use stocksblitz_engine::{DataQuality, InstrumentId, InstrumentRegistry, Price, Qty, Side, UnixNanos};
use stocksblitz_testkit::instruments::{crypto_spot, infy};

pub const INTERNAL: InstrumentId = InstrumentId(0);
pub const PAPER: InstrumentId = InstrumentId(1);
/// An NSE equity on the paper venue: session 09:15-15:30 Asia/Kolkata, lots of 5.
pub const NSE: InstrumentId = InstrumentId(2);
/// 2026-12-02 10:00 UTC.
pub const T0: i64 = 1_796_205_600_000_000_000;

pub fn registry() -> InstrumentRegistry {
    InstrumentRegistry::from_config(&[crypto_spot("INT", "internal"), crypto_spot("PAP", "binance"), infy()])
        .expect("registry")
}

/// Limits far above anything the tests send unless a test narrows one.
pub fn loose() -> RiskLimits {
    let big = 1_000_000_000_000_000_000i128;
    RiskLimits {
        max_order_qty: big,
        max_order_notional: big,
        price_collar_bps: 1_000_000,
        max_open_orders: 100_000,
        max_position_qty: big,
        max_gross_exposure: big,
        daily_loss_limit: big,
        orders_per_sec: 1_000_000,
        cancels_per_sec: 1_000_000,
        self_trade: SelfTradeMode::CancelNewest,
    }
}

/// A manager whose instruments' data is LIVE (as the engine reports it once the feeds
/// are synced); tests of other qualities set theirs.
pub fn manager_with(limits: &[RiskLimits]) -> OrderManager {
    let mut m = raw_manager_with(limits);
    for i in 0..3 {
        m.set_quality(InstrumentId(i), DataQuality::Live);
    }
    m
}

/// A manager as constructed: every instrument's data quality is SYNCING.
pub fn raw_manager_with(limits: &[RiskLimits]) -> OrderManager {
    OrderManager::new(
        &registry(),
        &[VenueKind::Internal, VenueKind::Paper, VenueKind::Paper],
        // 1 USDT = 1 base unit, 1 INR = 1 base unit (at 8 decimals).
        &[100_000_000, 100_000_000, 100_000_000],
        limits,
        OrderCapacity {
            orders: 4096,
            levels: 256,
            stops: 256,
            day_offset_secs: 19_800,
        },
    )
}

pub fn manager(accounts: usize) -> OrderManager {
    manager_with(&vec![loose(); accounts])
}

pub fn new_order(
    instrument: InstrumentId,
    client: &str,
    side: Side,
    kind: OrderType,
    tif: TimeInForce,
    price: i64,
    qty: i64,
) -> NewOrder {
    NewOrder {
        instrument,
        client_id: ClientOrderId::new(client).expect("client id"),
        side,
        kind,
        tif,
        price: Price(price),
        stop_price: Price(0),
        qty: Qty(qty),
        post_only: false,
        reduce_only: false,
    }
}

pub fn limit(instrument: InstrumentId, client: &str, side: Side, price: i64, qty: i64) -> NewOrder {
    new_order(instrument, client, side, OrderType::Limit, TimeInForce::Gtc, price, qty)
}

pub fn market(instrument: InstrumentId, client: &str, side: Side, qty: i64) -> NewOrder {
    new_order(instrument, client, side, OrderType::Market, TimeInForce::Ioc, 0, qty)
}

/// Runs one command and returns its events.
pub fn run(m: &mut OrderManager, account: u32, at_ns: i64, kind: CommandKind) -> Vec<OrderEvent> {
    m.clear();
    let cmd = Command {
        request: 1,
        account: AccountId(account),
        at: UnixNanos(T0 + at_ns),
        kind,
        idempotency: None,
    };
    // As the engine loop does for the next command: a hint that must change nothing.
    m.prefetch(&cmd);
    m.handle(&cmd);
    m.events().to_vec()
}

pub fn rejection(events: &[OrderEvent]) -> Option<&'static str> {
    events.iter().find_map(|e| match e.data {
        OrderEventData::Rejected { reject, .. } => Some(reject.code()),
        _ => None,
    })
}

pub fn fills(events: &[OrderEvent]) -> Vec<(u64, i64, i64)> {
    events
        .iter()
        .filter_map(|e| match e.data {
            OrderEventData::Fill(f) => Some((f.order.0, f.price.0, f.qty.0)),
            _ => None,
        })
        .collect()
}

pub fn accepted_id(events: &[OrderEvent]) -> Option<stocksblitz_engine::orders::OrderId> {
    events.iter().find_map(|e| match e.data {
        OrderEventData::Order {
            kind: stocksblitz_engine::orders::OrderEventKind::Accepted,
            order,
        } => Some(order.id),
        _ => None,
    })
}

/// A deterministic generator (xorshift64*): golden runs must see the same cases on
/// every machine and every run.
pub struct Gen(pub u64);

impl Gen {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize]
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}
