//! Applying book deltas: the engine's fixed-capacity sorted-array `L2Book` against the
//! `BTreeMap<price, qty>` per side a user would otherwise write, on the same realistic
//! delta stream (the synthetic market: most activity at the top of a 20-level book),
//! plus the cost of reading the best bid and ask.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use stocksblitz_benches::{batched, iters, keep, print_table};
use stocksblitz_engine::{InstrumentId, L2Book, Price, Qty, Side, TickData, UnixNanos};
use stocksblitz_feed_handlers::{SimSpec, SyntheticMarket, TickBuf};

#[derive(Default)]
struct TreeBook {
    bids: BTreeMap<i64, i64>,
    asks: BTreeMap<i64, i64>,
}

impl TreeBook {
    fn apply(&mut self, side: Side, price: i64, qty: i64) {
        let m = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        if qty == 0 {
            m.remove(&price);
        } else {
            m.insert(price, qty);
        }
    }
    fn best(&self) -> (Option<i64>, Option<i64>) {
        (self.bids.keys().next_back().copied(), self.asks.keys().next().copied())
    }
}

fn deltas(n: usize) -> Vec<(Side, Price, Qty)> {
    let spec = SimSpec {
        id: InstrumentId(0),
        tick_size: Price(1),
        lot_size: Qty(1),
        start_price: Price(1_000_000),
    };
    let mut m = SyntheticMarket::new(7, 20, &[spec]);
    let mut out = Vec::with_capacity(n);
    m.snapshot(0, UnixNanos(0), |t| {
        if let TickData::BookDelta { side, price, qty, .. } = t.data {
            out.push((side, price, qty));
        }
    });
    let mut buf = TickBuf::default();
    while out.len() < n {
        m.step(UnixNanos(0), &mut buf);
        for t in buf.as_slice() {
            if let TickData::BookDelta { side, price, qty, .. } = t.data {
                out.push((side, price, qty));
            }
        }
    }
    out
}

fn main() {
    let n = iters(5_000_000) as usize;
    let stream = deltas(n);
    let mut rows = Vec::new();

    let mut book = L2Book::new(200);
    let mut r = batched("L2Book apply (sorted arrays, cap 200)", n as u64, 32, |i| {
        let (s, p, q) = stream[i as usize];
        keep(book.apply(s, p, q));
    });
    r.note = format!("{} bids / {} asks at end", book.bids().len(), book.asks().len());
    rows.push(r);

    let mut tree = TreeBook::default();
    let mut r = batched("BTreeMap per side (baseline)", n as u64, 32, |i| {
        let (s, p, q) = stream[i as usize];
        tree.apply(s, p.0, q.0);
    });
    r.note = format!("{} bids / {} asks at end", tree.bids.len(), tree.asks.len());
    rows.push(r);

    let reads = iters(20_000_000);
    rows.push(batched("L2Book best bid+ask", reads, 64, |_| {
        keep((book.best_bid(), book.best_ask()));
    }));
    rows.push(batched("BTreeMap best bid+ask (baseline)", reads, 64, |_| {
        keep(tree.best());
    }));
    print_table("order book: apply deltas and read the top", &rows);
}
