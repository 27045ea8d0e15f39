//! Rows into an ILP buffer (questdb-rs), one table per row kind. Prices and quantities
//! become doubles here, at the edge: `mantissa as f64 / 10^scale` is the correctly
//! rounded double of the exact decimal (both operands are exact, IEEE division rounds
//! once).
//!
//! Tables and their DEDUP UPSERT KEYS (see [`super::ddl`]), each unique per real event:
//! `trades` (ts, symbol, recv_ts, seq), `quotes` (ts, symbol, seq), `bars` (ts, symbol,
//! interval, recv_ts, seq), `order_events` (ts, seq), `fills` (ts, fill_id), `anomalies`
//! (ts, seq). Text goes in symbol columns (the only text type every ILP server takes),
//! except the client order id.

use questdb::ingress::{Buffer, TimestampNanos};
use stocksblitz_engine::InstrumentRegistry;

use super::row::{SinkRow, ANOMALIES, BARS, FILLS, ORDER_EVENTS, QUOTES, TRADES};

/// What rows need to become lines: symbol names, scales and account names.
pub struct Names {
    symbols: Vec<String>,
    price_scale: Vec<f64>,
    qty_scale: Vec<f64>,
    accounts: Vec<String>,
}

impl Names {
    pub fn new(registry: &InstrumentRegistry, accounts: &[String]) -> Self {
        Self {
            symbols: registry.iter().map(|i| i.symbol.clone()).collect(),
            price_scale: registry.iter().map(|i| 10f64.powi(i32::from(i.price_scale))).collect(),
            qty_scale: registry.iter().map(|i| 10f64.powi(i32::from(i.qty_scale))).collect(),
            accounts: accounts.to_vec(),
        }
    }

    fn symbol(&self, i: stocksblitz_engine::InstrumentId) -> &str {
        self.symbols.get(i.index()).map_or("?", String::as_str)
    }

    fn price(&self, i: stocksblitz_engine::InstrumentId, m: i64) -> f64 {
        m as f64 / self.price_scale.get(i.index()).copied().unwrap_or(1.0)
    }

    fn qty(&self, i: stocksblitz_engine::InstrumentId, m: i64) -> f64 {
        m as f64 / self.qty_scale.get(i.index()).copied().unwrap_or(1.0)
    }

    fn account(&self, a: stocksblitz_engine::orders::AccountId) -> &str {
        self.accounts.get(a.index()).map_or("?", String::as_str)
    }
}

fn id(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Appends one row as one line.
pub fn write_row(buf: &mut Buffer, row: &SinkRow, n: &Names) -> questdb::Result<()> {
    match *row {
        SinkRow::Trade {
            ts,
            recv,
            instrument,
            price,
            qty,
            trade_id,
            aggressor,
            seq,
        } => buf
            .table(TRADES)?
            .symbol("symbol", n.symbol(instrument))?
            .symbol("aggressor", aggressor.as_str())?
            .column_f64("price", n.price(instrument, price.0))?
            .column_f64("qty", n.qty(instrument, qty.0))?
            .column_i64("trade_id", id(trade_id))?
            .column_ts("recv_ts", TimestampNanos::new(recv))?
            .column_i64("seq", id(seq))?
            .at(TimestampNanos::new(ts)),
        SinkRow::Quote {
            ts,
            seq,
            instrument,
            bid,
            bid_qty,
            ask,
            ask_qty,
        } => buf
            .table(QUOTES)?
            .symbol("symbol", n.symbol(instrument))?
            .column_f64_opt("bid", (bid_qty.0 > 0).then(|| n.price(instrument, bid.0)))?
            .column_f64_opt("bid_qty", (bid_qty.0 > 0).then(|| n.qty(instrument, bid_qty.0)))?
            .column_f64_opt("ask", (ask_qty.0 > 0).then(|| n.price(instrument, ask.0)))?
            .column_f64_opt("ask_qty", (ask_qty.0 > 0).then(|| n.qty(instrument, ask_qty.0)))?
            .column_i64("seq", id(seq))?
            .at(TimestampNanos::new(ts)),
        SinkRow::Bar {
            ts,
            recv,
            seq,
            instrument,
            interval_secs,
            open,
            high,
            low,
            close,
            volume,
            trades,
            revised,
        } => buf
            .table(BARS)?
            .symbol("symbol", n.symbol(instrument))?
            .symbol("interval", if interval_secs == 60 { "1m" } else { "1s" })?
            .column_f64("open", n.price(instrument, open.0))?
            .column_f64("high", n.price(instrument, high.0))?
            .column_f64("low", n.price(instrument, low.0))?
            .column_f64("close", n.price(instrument, close.0))?
            .column_f64("volume", n.qty(instrument, volume.0))?
            .column_i64("trades", i64::from(trades))?
            .column_bool("revised", revised)?
            .column_ts("recv_ts", TimestampNanos::new(recv))?
            .column_i64("seq", id(seq))?
            .at(TimestampNanos::new(ts)),
        SinkRow::Order {
            ts,
            seq,
            account,
            order,
            instrument,
            event,
            status,
            side,
            kind,
            price,
            qty,
            filled,
            client_id,
        } => buf
            .table(ORDER_EVENTS)?
            .symbol("account", n.account(account))?
            .symbol("symbol", n.symbol(instrument))?
            .symbol("event", event.as_str())?
            .symbol("status", status.as_str())?
            .symbol("side", side.as_str())?
            .symbol("type", kind.as_str())?
            .column_i64("seq", id(seq))?
            .column_i64("order_id", id(order.0))?
            .column_f64("price", n.price(instrument, price.0))?
            .column_f64("qty", n.qty(instrument, qty.0))?
            .column_f64("filled", n.qty(instrument, filled.0))?
            .column_str("client_order_id", client_id.as_str())?
            .at(TimestampNanos::new(ts)),
        SinkRow::Fill {
            ts,
            fill_id,
            order,
            account,
            instrument,
            side,
            price,
            qty,
            liquidity,
            trade_id,
        } => buf
            .table(FILLS)?
            .symbol("account", n.account(account))?
            .symbol("symbol", n.symbol(instrument))?
            .symbol("side", side.as_str())?
            .symbol("liquidity", liquidity.as_str())?
            .column_i64("fill_id", id(fill_id))?
            .column_i64("order_id", id(order.0))?
            .column_f64("price", n.price(instrument, price.0))?
            .column_f64("qty", n.qty(instrument, qty.0))?
            .column_i64("trade_id", id(trade_id))?
            .at(TimestampNanos::new(ts)),
        SinkRow::Anomaly { ts, seq, anomaly: a } => {
            let scale = 10f64.powi(i32::from(a.scale));
            buf.table(ANOMALIES)?
                .symbol("rule", a.rule.as_str())?
                .symbol("severity", a.severity.as_str())?
                .symbol("action", a.action.as_str())?
                .symbol("account", a.account.map_or("", |x| n.account(x)))?
                .symbol("symbol", a.instrument.map_or("", |i| n.symbol(i)))?
                .column_i64("seq", id(seq))?
                .column_f64("observed", a.observed as f64 / scale)?
                .column_f64("threshold", a.threshold as f64 / scale)?
                .at(TimestampNanos::new(ts))
        }
    }
}
