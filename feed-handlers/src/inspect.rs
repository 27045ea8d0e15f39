//! `stocksblitz feed parse|book`: what a person debugging a feed wants to see.
//!
//! `parse` prints every normalized tick of a capture as one JSON object per line;
//! `book` replays a capture with the venue's sync rules and prints the final book with
//! the gaps and resyncs seen. Both run the production normalizers.

use std::io::Write;

use serde_json::{json, Value};
use stocksblitz_engine::tick::{BookFlags, FeedStatus};
use stocksblitz_engine::{InstrumentRegistry, L2Book, Tick, TickData, UnixNanos};

use crate::capture::Record;
use crate::replay::{replay, ReplayOptions, ReplaySummary};
use crate::stats::FeedStats;
use crate::venue::{FrameError, VenueNormalizer};

fn ns(t: UnixNanos) -> Value {
    t.known().map_or(Value::Null, |t| json!(t.0))
}

fn status_name(s: FeedStatus) -> &'static str {
    match s {
        FeedStatus::Syncing => "syncing",
        FeedStatus::Live => "live",
        FeedStatus::Gap => "gap",
        FeedStatus::Stale => "stale",
        FeedStatus::Halted => "halted",
        FeedStatus::Resumed => "resumed",
    }
}

/// One tick as the JSON object `feed parse` prints.
pub fn tick_json(registry: &InstrumentRegistry, t: &Tick) -> Value {
    let Some(inst) = registry.get(t.instrument) else {
        return json!({ "instrument_id": t.instrument.0, "kind": "unknown" });
    };
    let p = |v: stocksblitz_engine::Price| v.decimal(inst.price_scale).to_string();
    let q = |v: stocksblitz_engine::Qty| v.decimal(inst.qty_scale).to_string();
    let mut o = match t.data {
        TickData::Trade {
            price,
            qty,
            trade_id,
            aggressor,
        } => {
            json!({ "kind": "trade", "price": p(price), "qty": q(qty), "side": aggressor.as_str(), "trade_id": trade_id })
        }
        TickData::Quote {
            bid,
            bid_qty,
            ask,
            ask_qty,
        } => json!({ "kind": "quote", "bid": p(bid), "bid_qty": q(bid_qty), "ask": p(ask), "ask_qty": q(ask_qty) }),
        TickData::BookDelta {
            side,
            price,
            qty,
            update_id,
            flags,
        } => {
            let names: Vec<&str> = [
                (BookFlags::CLEAR, "clear"),
                (BookFlags::SNAPSHOT, "snapshot"),
                (BookFlags::END_OF_BATCH, "end"),
            ]
            .into_iter()
            .filter(|(f, _)| flags.contains(*f))
            .map(|(_, n)| n)
            .collect();
            json!({ "kind": "book", "side": side.as_str(), "price": p(price), "qty": q(qty), "update_id": update_id, "flags": names })
        }
        TickData::Status { status, detail } => {
            json!({ "kind": "status", "status": status_name(status), "detail": detail })
        }
        TickData::LastPrice { price, qty } => json!({ "kind": "last", "price": p(price), "qty": q(qty) }),
        TickData::DayStats { open, high, low, close } => {
            json!({ "kind": "day", "open": p(open), "high": p(high), "low": p(low), "close": p(close) })
        }
    };
    if let Some(m) = o.as_object_mut() {
        m.insert("symbol".into(), json!(inst.symbol));
        m.insert("exchange_ts_ns".into(), ns(t.exchange_ts));
        m.insert("recv_ts_ns".into(), ns(t.recv_ts));
    }
    o
}

fn report_error(err: &mut impl Write, records: &[Record], i: usize, e: FrameError) {
    let ts = records.get(i).map_or(0, |r| r.recv_ts.0);
    let _ = writeln!(err, "frame {} (recv {ts}): {e}", i + 1);
}

/// `feed parse`: NDJSON ticks to `out`, frame errors to `err`.
pub fn parse(
    registry: &InstrumentRegistry,
    normalizer: &mut VenueNormalizer,
    records: &[Record],
    out: &mut impl Write,
    err: &mut impl Write,
) -> std::io::Result<ReplaySummary> {
    let stats = FeedStats::default();
    let mut io = Ok(());
    let mut errors = Vec::new();
    let summary = replay(
        records,
        normalizer,
        ReplayOptions::ANALYSIS,
        &stats,
        |t| {
            if io.is_ok() {
                io = writeln!(out, "{}", tick_json(registry, &t));
            }
        },
        |i, e| errors.push((i, e)),
    );
    io?;
    for (i, e) in errors {
        report_error(err, records, i, e);
    }
    Ok(summary)
}

/// `feed book`: the final book of `symbol` after replaying with sync rules.
pub fn book(
    registry: &InstrumentRegistry,
    normalizer: &mut VenueNormalizer,
    records: &[Record],
    symbol: &str,
    depth: usize,
    err: &mut impl Write,
) -> Result<Value, String> {
    let inst = registry
        .by_symbol(symbol)
        .ok_or_else(|| format!("{symbol:?} is not a configured instrument"))?;
    let stats = FeedStats::default();
    let mut book = L2Book::new(depth.max(1).max(5_000));
    let mut state = "syncing";
    let mut gaps = Vec::new();
    let mut errors = Vec::new();
    let summary = replay(
        records,
        normalizer,
        ReplayOptions::ANALYSIS,
        &stats,
        |t| {
            if t.instrument != inst.id {
                return;
            }
            book.apply_tick(&t.data);
            if let TickData::Status { status, detail } = t.data {
                state = status_name(status);
                if status == FeedStatus::Gap {
                    gaps.push(json!({ "recv_ts_ns": t.recv_ts.0, "expected": detail }));
                }
            }
        },
        |i, e| errors.push((i, e)),
    );
    for (i, e) in errors {
        report_error(err, records, i, e);
    }
    let side = |ls: &[stocksblitz_engine::Level]| -> Vec<[String; 2]> {
        ls.iter()
            .take(depth)
            .map(|l| {
                [
                    l.price.decimal(inst.price_scale).to_string(),
                    l.qty.decimal(inst.qty_scale).to_string(),
                ]
            })
            .collect()
    };
    Ok(json!({
        "symbol": inst.symbol,
        "state": state,
        "bids": side(book.bids()),
        "asks": side(book.asks()),
        "gaps": gaps,
        "resyncs": stats.resyncs.get(),
        "snapshot_requests": summary.snapshot_requests,
        "frames": summary.frames,
        "errors": summary.errors,
    }))
}
