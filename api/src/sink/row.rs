//! One row for the time-series store, as the sink queues and spills it: fixed-size,
//! `Copy`, prices still fixed-point (converted to doubles only when serialized).
//!
//! Row identity (the tables' DEDUP keys, see [`super::ddl`]): a market data row carries
//! the engine's per-instrument sequence (`seq`, unique within a run) and its receive time
//! in nanoseconds (which tells runs apart), so two distinct events never share a key,
//! even two trades in the same exchange second without a venue trade id (Kite), while a
//! re-sent row carries exactly the same key and values.

use stocksblitz_engine::bars::BarState;
use stocksblitz_engine::orders::AccountId;
use stocksblitz_engine::orders::{
    ClientOrderId, Fill, Liquidity, Order, OrderEvent, OrderEventData, OrderEventKind, OrderId, OrderStatus, OrderType,
};
use stocksblitz_engine::{Aggressor, EngineEvent, EventData, InstrumentId, Price, Qty, Side, UnixNanos};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SinkRow {
    Trade {
        /// Exchange time when known, else receive time (the designated timestamp).
        ts: i64,
        recv: i64,
        instrument: InstrumentId,
        price: Price,
        qty: Qty,
        trade_id: u64,
        aggressor: Aggressor,
        /// The engine's per-instrument sequence on the API output.
        seq: u64,
    },
    Quote {
        /// Receive time (nanoseconds).
        ts: i64,
        seq: u64,
        instrument: InstrumentId,
        bid: Price,
        bid_qty: Qty,
        ask: Price,
        ask_qty: Qty,
    },
    Bar {
        /// The bar's start.
        ts: i64,
        /// When the engine closed (or revised) it, and its sequence: a revision is a row
        /// of its own (`revised`), the latest `seq` of a bar is its final version.
        recv: i64,
        seq: u64,
        instrument: InstrumentId,
        /// Seconds per bar.
        interval_secs: u32,
        open: Price,
        high: Price,
        low: Price,
        close: Price,
        volume: Qty,
        trades: u32,
        revised: bool,
    },
    Order {
        ts: i64,
        /// The engine's order event sequence (unique).
        seq: u64,
        account: AccountId,
        order: OrderId,
        instrument: InstrumentId,
        event: OrderEventKind,
        status: OrderStatus,
        side: Side,
        kind: OrderType,
        price: Price,
        qty: Qty,
        filled: Qty,
        client_id: ClientOrderId,
    },
    Fill {
        ts: i64,
        fill_id: u64,
        order: OrderId,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        price: Price,
        qty: Qty,
        liquidity: Liquidity,
        trade_id: u64,
    },
    Anomaly {
        ts: i64,
        /// The engine's order event sequence (unique).
        seq: u64,
        anomaly: stocksblitz_engine::surveillance::Anomaly,
    },
}

/// The tables' names.
pub const TRADES: &str = "trades";
pub const QUOTES: &str = "quotes";
pub const BARS: &str = "bars";
pub const ORDER_EVENTS: &str = "order_events";
pub const FILLS: &str = "fills";
pub const ANOMALIES: &str = "anomalies";

/// The tables the sink writes, one per row kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Trades,
    Quotes,
    Bars,
    OrderEvents,
    Fills,
    Anomalies,
}

impl Table {
    pub const ALL: [Table; 6] = [
        Table::Trades,
        Table::Quotes,
        Table::Bars,
        Table::OrderEvents,
        Table::Fills,
        Table::Anomalies,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Trades => TRADES,
            Table::Quotes => QUOTES,
            Table::Bars => BARS,
            Table::OrderEvents => ORDER_EVENTS,
            Table::Fills => FILLS,
            Table::Anomalies => ANOMALIES,
        }
    }

    /// Position in [`Table::ALL`] (for per-table counters).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The table an engine event is stored in, if it is stored (what
    /// [`SinkRow::from_market`] keeps), without building the row.
    #[inline]
    pub fn of_market(e: &EngineEvent) -> Option<Table> {
        Self::of_data(&e.data)
    }

    #[inline]
    fn of_data(d: &EventData) -> Option<Table> {
        match *d {
            EventData::Trade { .. } => Some(Table::Trades),
            EventData::Quote { .. } => Some(Table::Quotes),
            EventData::Bar { state, .. } if state != BarState::Open => Some(Table::Bars),
            _ => None,
        }
    }

    /// Whether the store keeps this market event: what the engine's recorder output
    /// to the sink selects.
    #[inline]
    pub fn stored(d: &EventData) -> bool {
        Self::of_data(d).is_some()
    }
}

impl SinkRow {
    pub fn table(&self) -> Table {
        match self {
            SinkRow::Trade { .. } => Table::Trades,
            SinkRow::Quote { .. } => Table::Quotes,
            SinkRow::Bar { .. } => Table::Bars,
            SinkRow::Order { .. } => Table::OrderEvents,
            SinkRow::Fill { .. } => Table::Fills,
            SinkRow::Anomaly { .. } => Table::Anomalies,
        }
    }

    /// When the row came to be here (receive time for market data, the event's time
    /// for order events), for the sink's lag: a bar's designated timestamp is its start.
    pub fn received(&self) -> i64 {
        match *self {
            SinkRow::Trade { recv, .. } | SinkRow::Bar { recv, .. } => recv,
            _ => self.ts(),
        }
    }

    /// The designated timestamp (nanoseconds).
    pub fn ts(&self) -> i64 {
        match *self {
            SinkRow::Trade { ts, .. }
            | SinkRow::Quote { ts, .. }
            | SinkRow::Bar { ts, .. }
            | SinkRow::Order { ts, .. }
            | SinkRow::Fill { ts, .. }
            | SinkRow::Anomaly { ts, .. } => ts,
        }
    }

    /// The market data row an engine event becomes: trades, quotes and closed (or
    /// revised) bars. Book deltas, forming bars and status changes are not stored.
    pub fn from_market(e: &EngineEvent) -> Option<SinkRow> {
        let ts = if e.exchange_ts == UnixNanos::UNKNOWN {
            e.recv_ts.0
        } else {
            e.exchange_ts.0
        };
        match e.data {
            EventData::Trade {
                price,
                qty,
                trade_id,
                aggressor,
            } => Some(SinkRow::Trade {
                ts,
                recv: e.recv_ts.0,
                instrument: e.instrument,
                price,
                qty,
                trade_id,
                aggressor,
                seq: e.seq,
            }),
            EventData::Quote {
                bid,
                bid_qty,
                ask,
                ask_qty,
            } => Some(SinkRow::Quote {
                ts: e.recv_ts.0,
                seq: e.seq,
                instrument: e.instrument,
                bid,
                bid_qty,
                ask,
                ask_qty,
            }),
            EventData::Bar { bar, state } if state != BarState::Open => Some(SinkRow::Bar {
                ts: bar.start.0,
                recv: e.recv_ts.0,
                seq: e.seq,
                instrument: e.instrument,
                interval_secs: (bar.interval.nanos() / UnixNanos::NANOS_PER_SEC) as u32,
                open: bar.open,
                high: bar.high,
                low: bar.low,
                close: bar.close,
                volume: bar.volume,
                trades: bar.trades,
                revised: state == BarState::Revised,
            }),
            _ => None,
        }
    }

    /// The row an order event becomes: order state changes, fills and anomalies.
    pub fn from_order(e: &OrderEvent) -> Option<SinkRow> {
        match e.data {
            OrderEventData::Order { kind, order } => Some(order_row(e, kind, &order)),
            OrderEventData::Fill(f) => Some(fill_row(&f)),
            OrderEventData::Anomaly(anomaly) => Some(SinkRow::Anomaly {
                ts: anomaly.at.0,
                seq: e.seq,
                anomaly,
            }),
            _ => None,
        }
    }
}

fn order_row(e: &OrderEvent, event: OrderEventKind, o: &Order) -> SinkRow {
    SinkRow::Order {
        ts: e.at.0,
        seq: e.seq,
        account: o.account,
        order: o.id,
        instrument: o.instrument,
        event,
        status: o.status,
        side: o.side,
        kind: o.kind,
        price: o.price,
        qty: o.qty,
        filled: o.filled,
        client_id: o.client_id,
    }
}

fn fill_row(f: &Fill) -> SinkRow {
    SinkRow::Fill {
        ts: f.at.0,
        fill_id: f.id,
        order: f.order,
        account: f.account,
        instrument: f.instrument,
        side: f.side,
        price: f.price,
        qty: f.qty,
        liquidity: f.liquidity,
        trade_id: f.trade_id,
    }
}
